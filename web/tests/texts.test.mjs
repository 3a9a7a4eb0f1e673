// The editor's texts: locales/<lang>/editor.json, installed as the server sends them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { t, setTexts, hasTexts } from "../lib/i18n.js";
import { editorTexts, installTexts } from "./texts.mjs";

const web = join(dirname(fileURLToPath(import.meta.url)), "..");
const placeholders = (s) => [...String(s).matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

test("before the tables arrive a text is its key", () => {
  assert.equal(hasTexts("en"), false);
  assert.equal(t("en", "cancel"), "cancel");
  assert.equal(t("zh", "taskId", { id: 7 }), "taskId");
});

test("every English text has a Chinese one with the same placeholders, and back", () => {
  const en = editorTexts("en");
  const zh = editorTexts("zh");
  assert.deepEqual(Object.keys(en).sort(), Object.keys(zh).sort());
  for (const k of Object.keys(en)) assert.deepEqual(placeholders(zh[k]), placeholders(en[k]), k);
  for (const v of Object.values(zh)) assert.equal(typeof v, "string");
});

test("installed tables: the language's text, else English, else the key", () => {
  installTexts();
  const zh = editorTexts("zh");
  assert.equal(t("zh-CN", "cancel"), zh.cancel);
  assert.notEqual(zh.cancel, "Cancel");
  assert.equal(t("fr", "cancel"), "Cancel");
  assert.equal(t("en", "taskId", { id: 7 }), "task 7");
  setTexts("zh", { cancel: zh.cancel });  // a table without a key falls back to English
  assert.equal(t("zh", "load"), "Load results");
  assert.equal(t("zh", "no such key"), "no such key");
});

function jsFiles(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? jsFiles(p) : /\.m?js$/.test(e.name) ? [p] : [];
  });
}

test("no Chinese text in the editor's code: it is all in locales/zh/editor.json", () => {
  const bad = jsFiles(web).filter((p) => /[\u4e00-\u9fff]/.test(readFileSync(p, "utf8")));
  assert.deepEqual(bad, []);
});
