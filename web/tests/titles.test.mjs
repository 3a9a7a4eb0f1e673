import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { t, setTexts } from "../lib/i18n.js";
import { localTitle } from "../lib/titles.js";
import { editorTexts, LANGS } from "./texts.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const nodeDefs = (lang) => JSON.parse(readFileSync(join(root, "locales", lang, "nodeDefs.json"), "utf8"));
// as the server's texts route sends them: the editor's texts and the node names of nodeDefs.json
for (const lang of LANGS) {
  const names = Object.fromEntries(Object.entries(nodeDefs(lang)).map(([c, d]) => [`node_${c}`, d.display_name]));
  setTexts(lang, { ...editorTexts(lang), ...names });
}

test("a pack node with its default name takes the name of the editor's language; a renamed one keeps its own", () => {
  const en = nodeDefs("en").GPUGeekCloudExecute.display_name, zh = nodeDefs("zh").GPUGeekCloudExecute.display_name;
  assert.notEqual(en, zh);
  assert.equal(localTitle({ type: "GPUGeekCloudExecute", title: en }, "zh", t, LANGS), zh);
  assert.equal(localTitle({ type: "GPUGeekCloudExecute", title: zh }, "en", t, LANGS), en);
  assert.equal(localTitle({ type: "GPUGeekCloudExecute", title: zh }, "zh", t, LANGS), null);
  assert.equal(localTitle({ type: "GPUGeekCloudExecute", title: "My cloud" }, "zh", t, LANGS), null);
  assert.equal(localTitle({ type: "KSampler", title: "KSampler" }, "zh", t, LANGS), null);   // not the pack's
});

test("every titled node of the example workflows reads in both languages", () => {
  const dir = join(root, "example_workflows");
  for (const file of ["four_variations_at_once.json", "no_model_demo.json", "two_gateways_in_parallel.json",
    "text_to_image_cloud_upscale_here.json", "local_image_cloud_edit.json", "inpaint_with_mask.json"]) {
    const wf = JSON.parse(readFileSync(join(dir, file), "utf8"));
    for (const node of wf.nodes.filter((n) => n.title)) {
      const key = node.properties?.gpugeek_title;
      assert.ok(key, `${file}: node ${node.id} "${node.title}" has no title key`);
      assert.equal(t("en", key), node.title, `${file}: ${key}`);
      const zh = localTitle(node, "zh", t, LANGS);
      assert.ok(zh && zh !== node.title && /[\u4e00-\u9fff]/.test(zh), `${file}: ${node.title} -> ${zh}`);
      assert.equal(localTitle({ ...node, title: zh }, "en", t, LANGS), node.title);
      assert.equal(localTitle({ ...node, title: "renamed" }, "zh", t, LANGS), null);
    }
  }
});
