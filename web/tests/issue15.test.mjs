// The pure parts of the missing-model filter, the cloud's error sentences on nodes, live previews, the one
// status box of a gateway and the tasks tab's error text.
import { test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { keepLocal, cloudEntries, leftCloud, isCloudOnly } from "../lib/models.js";
import { wrapText } from "../lib/wrap.js";
import { dataUrlBytes } from "../lib/preview.js";
import { errorView } from "../lib/tasks.js";
import { gatewayBox } from "../lib/status.js";
import { plan, setPlan, onPlan, setPlanner, planNow } from "../lib/plan_state.js";
import { follower } from "../lib/follow.js";
import { installTexts } from "./texts.mjs";

installTexts();
const roles = { 3: "cloud", 4: "cloud", 5: "both", 20: "local", "7:2": "cloud" };
const entry = (nodeId, name, extra = {}) => ({ nodeId, widgetName: "ckpt_name", name, isMissing: true, ...extra });

test("missing models: a cloud-only node's entries go, a local or both node's stay", () => {
  const list = [entry("4", "sd_xl.safetensors"), entry(20, "here.safetensors"), entry("5", "both.safetensors"),
    entry("9", "unplanned.safetensors"), entry("7", "promoted.safetensors", { sourceExecutionId: "7:2" })];
  assert.deepEqual(keepLocal(list, roles).map((c) => c.name), ["here.safetensors", "both.safetensors", "unplanned.safetensors"]);
  assert.deepEqual(cloudEntries(list, roles).map((c) => c.nodeId), ["4", "7"]);
  assert.deepEqual(keepLocal(list, {}), list);          // no plan yet: every warning stays
  assert.equal(keepLocal(null, roles), null);
  assert.deepEqual(cloudEntries(null, roles), []);
  assert.equal(isCloudOnly(roles, 3), true);
  assert.equal(isCloudOnly(roles, undefined), false);
});

test("missing models: nodes that left the cloud are checked again", () => {
  assert.deepEqual(leftCloud({ 3: "cloud", 4: "cloud", 5: "local" }, { 3: "cloud", 4: "local", 5: "cloud" }), ["4"]);
  assert.deepEqual(leftCloud({ 3: "cloud" }, { 3: "both" }), ["3"]);
  assert.deepEqual(leftCloud({}, roles), []);
});

const mono = (s) => s.length * 7;   // a fixed-width font, 7 px a character

test("a sentence wraps at spaces within the width; a long word is cut; at most max lines", () => {
  const text = "#4 CheckpointLoaderSimple: the cloud has no ckpt_name named sd_xl_base_1.0.safetensors; pick one that workflow 123456789012345 provides.";
  const lines = wrapText(text, 140, mono, 50);
  assert.ok(lines.every((l) => mono(l) <= 140), lines.join("|"));
  assert.equal(lines.join(" ").replace(/\s+/g, ""), text.replace(/\s+/g, ""));
  assert.equal(lines[0], "#4");
  assert.deepEqual(wrapText("a b c", 1000, mono), ["a b c"]);
  assert.deepEqual(wrapText("", 100, mono), []);
  assert.deepEqual(wrapText("abcdefghij", 35, mono), ["abcde", "fghij"]);
  const short = wrapText("one two three four five six", 30, mono, 2);
  assert.equal(short.length, 2);
  assert.ok(short[1].endsWith("\u2026") && mono(short[1]) <= 30, short[1]);
});

test("Chinese text (no spaces) breaks between characters", () => {
  const zh = "\u4e91\u7aef\u6ca1\u6709\u540d\u4e3a X \u7684\u6a21\u578b\uff0c\u8bf7\u9009\u62e9\u5de5\u4f5c\u6d41\u63d0\u4f9b\u7684\u6a21\u578b\u3002";
  const lines = wrapText(zh, 70, mono);
  assert.ok(lines.length > 2 && lines.every((l) => mono(l) <= 70), lines.join("|"));
  assert.equal(lines.join("").replace(/\s+/g, ""), zh.replace(/\s+/g, ""));
});

test("a preview's data URL gives its type and bytes; anything else gives nothing", () => {
  const bytes = [0xff, 0xd8, 0xff, 0xe0, 0, 16, 74, 70];
  const url = `data:image/jpeg;base64,${Buffer.from(bytes).toString("base64")}`;
  const got = dataUrlBytes(url);
  assert.equal(got.mime, "image/jpeg");
  assert.deepEqual([...got.bytes], bytes);
  assert.equal(dataUrlBytes("http://x/y.jpg"), null);
  assert.equal(dataUrlBytes("data:image/png;base64,!!!"), null);
  assert.equal(dataUrlBytes(undefined), null);
});

test("tasks tab: the sentence with the raw answer apart; raw JSON never alone", () => {
  const raw = '{"error": {"type": "prompt_outputs_failed_validation"}, "node_errors": {"4": {}}}';
  assert.deepEqual(errorView({ error: raw, error_text: "#4 CheckpointLoaderSimple: no such model." }, "F"),
    { text: "#4 CheckpointLoaderSimple: no such model.", raw });
  assert.deepEqual(errorView({ error: raw, error_text: null }, "F"), { text: "F", raw });
  assert.deepEqual(errorView({ error: "cancelled from the tasks tab" }, "F"), { text: "cancelled from the tasks tab", raw: null });
  assert.deepEqual(errorView({ error: "same", error_text: "same" }, "F"), { text: "same", raw: null });
  assert.deepEqual(errorView({ error: null }, "F"), { text: null, raw: null });
});

test("the gateway's box: one status at a time", () => {
  const live = { status: 3, run_ms: 1000, price: 0.25, task_id: "77" };
  assert.equal(gatewayBox({ live, progressShown: true }, "en"), null);   // the frontend shows the server's text
  assert.deepEqual(gatewayBox({ live, progressShown: false }, "en"),
    { kind: "status", lines: ["done in 1.0 s, price 0.25", "task 77"] });
  assert.deepEqual(gatewayBox({ refusals: ["LATENT cannot cross"] }, "en"), { kind: "refused", lines: ["LATENT cannot cross"] });
  assert.deepEqual(gatewayBox({ expected: null }, "en"), { kind: "expected", lines: ["no earlier runs of this cloud part"] });
});

test("the shared plan tells its listeners the roles before and after", async () => {
  const calls = [];
  const off = onPlan((p, before) => calls.push([{ ...before }, { ...p.roles }]));
  setPlan({ roles: { 1: "cloud" }, flagged: [3] });
  setPlan({ roles: { 1: "local" } });
  off();
  setPlan({ roles: {} });
  assert.deepEqual(calls, [[{}, { 1: "cloud" }], [{ 1: "cloud" }, { 1: "local" }]]);
  assert.equal(plan.flagged.size, 0);
  let ran = 0;
  setPlanner(async () => { ran += 1; });
  await planNow();
  assert.equal(ran, 1);
});

test("now() plans at once, after a run under way, and settles when done", async () => {
  const runs = [];
  let v = 0;
  const f = follower({ version: () => v, pollMs: 100000, debounceMs: 100000, sweepMs: 100000,
    run: async () => { runs.push(v); await sleep(30); } });
  const first = f.now();
  v = 1;
  const second = f.now();           // during the first run: runs again after it
  await first;
  assert.deepEqual(runs, [0, 1]);
  await second;
  assert.equal(f.busy, false);
  f.stop();
});
