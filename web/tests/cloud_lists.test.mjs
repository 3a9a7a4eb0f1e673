// The pure parts of the cloud's lists in the editor (web/lib/cloud_lists.js): which combos, the values a cloud
// node's combo offers (its current value kept), names as typed, and the line that says where a list came from.
import { test } from "node:test";
import assert from "node:assert/strict";
import { comboWidgets, withCurrent, parseNames, describe, lineOf, wanted, when, listOf } from "../lib/cloud_lists.js";
import { t } from "../lib/i18n.js";
import { installTexts } from "./texts.mjs";

const combo = (name, value, values) => ({ name, type: "combo", value, options: { values } });
const loader = () => ({ id: 4, type: "CheckpointLoaderSimple", comfyClass: "CheckpointLoaderSimple",
  widgets: [combo("ckpt_name", "mine.safetensors", []), { name: "seed", type: "number", value: 1, options: {} }] });

test("only combos, and the request names each class's combos once", () => {
  assert.deepEqual(comboWidgets(loader()).map((w) => w.name), ["ckpt_name"]);
  const sampler = { id: 3, type: "KSampler", widgets: [combo("sampler_name", "euler", ["euler"]), combo("scheduler", "normal", [])] };
  assert.deepEqual(wanted([loader(), loader(), sampler, { id: 9, type: "Note", widgets: [] }]),
    { CheckpointLoaderSimple: ["ckpt_name"], KSampler: ["sampler_name", "scheduler"] });
});

test("a cloud combo offers the cloud's list and keeps a value no list knows", () => {
  assert.deepEqual(withCurrent(["a.safetensors", "b.safetensors"], "mine.safetensors"),
    ["mine.safetensors", "a.safetensors", "b.safetensors"]);
  assert.deepEqual(withCurrent(["a.safetensors"], "a.safetensors"), ["a.safetensors"]);
  assert.deepEqual(withCurrent(undefined, ""), []);
  const list = ["x"];
  withCurrent(list, "y");
  assert.deepEqual(list, ["x"]);   // the answer itself is not changed
});

test("names as typed: lines or commas, trimmed, each once", () => {
  assert.deepEqual(parseNames(" a.safetensors, b.safetensors\n\nb.safetensors ,"), ["a.safetensors", "b.safetensors"]);
  assert.deepEqual(parseNames(null), []);
});

test("the line says every source, best first, in the editor's language", () => {
  installTexts();
  const now = Date.UTC(2026, 11, 2, 12, 0) ;
  const at = now / 1000 - 60;
  const sources = [{ source: "server", at, count: 3 }, { source: "user", at, count: 2 }];
  const en = describe(sources, (k, v) => t("en", k, v), now, "en-GB");
  assert.match(en, /^☁ list: the server's, \d\d:\d\d · 2 added by you$/);
  const zh = describe(sources, (k, v) => t("zh", k, v), now, "zh-CN");
  assert.notEqual(zh, en);
  assert.ok(!zh.includes("{"), zh);
  assert.equal(describe([], (k) => k), "");
  assert.equal(when(null), "");
  assert.notEqual(when(at - 86400 * 3, now, "en-GB"), when(at, now, "en-GB"));   // another day shows its date
});

test("an answer sends each distinct list once: every input that offers it names its place", () => {
  const sources = [{ source: "server", at: 1, count: 2 }];
  const data = { ok: true, values: [["a.safetensors", "b.safetensors"], ["euler"]],
    lists: { LoraLoader: { lora_name: { list: 0, sources } }, MyLoader: { lora_name: { list: 0, sources } },
      KSampler: { sampler_name: { list: 1, sources: [] } }, Broken: { x: { list: 7 }, y: { list: "0" } } } };
  const a = listOf(data, "LoraLoader", "lora_name");
  assert.deepEqual(a, { values: ["a.safetensors", "b.safetensors"], sources, cut: null });
  assert.equal(listOf(data, "MyLoader", "lora_name").values, a.values);   // one list, not a copy per class
  assert.deepEqual(listOf(data, "KSampler", "sampler_name").values, ["euler"]);
  for (const [cls, input] of [["Broken", "x"], ["Broken", "y"], ["KSampler", "seed"], ["Nope", "x"]]) {
    assert.equal(listOf(data, cls, input), null);
  }
  assert.equal(listOf(undefined, "LoraLoader", "lora_name"), null);
  // the answer itself is not changed by a combo that offers it with its current value
  const values = withCurrent(a.values, "mine.safetensors");
  assert.deepEqual(values, ["mine.safetensors", "a.safetensors", "b.safetensors"]);
  assert.deepEqual(data.values[0], ["a.safetensors", "b.safetensors"]);
});

test("an answer past its byte bound holds a list's first names and says how many the whole has", () => {
  installTexts();
  const sources = [{ source: "server", at: 1, count: 5000 }];
  const first = ["a.safetensors", "b.safetensors"];
  const data = { ok: true, values: [first, ["euler"]],
    lists: { LoraLoader: { lora_name: { list: 0, sources, cut: 5000 } },
      KSampler: { sampler_name: { list: 1, sources: [] } }, Odd: { x: { list: 1, cut: "9" }, y: { list: 1, cut: 1 } } } };
  const lora = listOf(data, "LoraLoader", "lora_name");
  assert.deepEqual(lora, { values: first, sources, cut: 5000 });
  assert.deepEqual(withCurrent(lora.values, "z.safetensors"), ["z.safetensors", ...first]);   // the first names shown
  assert.equal(listOf(data, "KSampler", "sampler_name").cut, null);
  assert.equal(listOf(data, "Odd", "x").cut, null);   // not a count, or not more than the names sent: not cut
  assert.equal(listOf(data, "Odd", "y").cut, null);
  const en = lineOf(lora, (k, v) => t("en", k, v), 0, "en-GB");
  assert.match(en, /^☁ list: the first 2 of 5000 shown \(too long to send whole\) · the server's, /);
  const zh = lineOf(lora, (k, v) => t("zh", k, v), 0, "zh-CN");
  assert.ok(zh.includes("5000") && zh.includes("2") && !zh.includes("{") && zh !== en, zh);
  const whole = listOf(data, "KSampler", "sampler_name");
  assert.equal(lineOf(whole, (k, v) => t("en", k, v)), "");
  assert.equal(lineOf({ ...whole, sources }, (k, v) => t("en", k, v), 0, "en-GB"),
    describe(sources, (k, v) => t("en", k, v), 0, "en-GB"));
});
