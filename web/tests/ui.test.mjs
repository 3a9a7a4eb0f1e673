import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { t, langOf } from "../lib/i18n.js";
import { statusLines, expectedLine } from "../lib/status.js";
import { installTexts, editorTexts } from "./texts.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
installTexts();

test("status lines in both languages", () => {
  assert.deepEqual(statusLines({ status: 1, position: 2, queue_size: 5, task_id: "77" }, "en"),
    ["queued: position 2 of 5", "task 77"]);
  const doneZh = editorTexts("zh").done.replace("{t}", "12.5 s").replace("{price}", "0.25");
  assert.equal(statusLines({ status: 3, run_ms: 12500, price: 0.25 }, "zh-CN")[0], doneZh);
  assert.match(doneZh, /12\.5 s.*0\.25/);
  assert.equal(statusLines({ status: 4, error: "CUDA OOM" }, "en")[0], "failed: CUDA OOM");
  assert.equal(expectedLine({ price: 0.3, run_ms: 61000, runs: 3 }, "en"), "expected ~0.3, ~1 min 1 s (3 earlier runs)");
  assert.equal(langOf("zh-TW"), "zh");
  assert.equal(t("fr", "cancel"), "Cancel");
});

test("locale files cover every input and output of the three nodes in both languages", () => {
  for (const lang of ["en", "zh"]) {
    const defs = JSON.parse(readFileSync(join(root, "locales", lang, "nodeDefs.json"), "utf8"));
    const gw = defs.GPUGeekCloudExecute;
    for (const k of ["workflow_id", "run_on", "timeout_s", "image_1", "image_2", "image_3", "image_4", "mask_1", "mask_2"]) {
      assert.ok(gw.inputs[k].name && gw.inputs[k].tooltip, `${lang} ${k}`);
    }
    for (let i = 0; i < 7; i++) assert.ok(gw.outputs[String(i)].name && gw.outputs[String(i)].tooltip, `${lang} out ${i}`);
    for (const k of ["image", "mask"]) assert.ok(defs.GPUGeekUploadImage.inputs[k].tooltip);
    for (const k of ["prompt_id", "urls", "timeout_s"]) assert.ok(defs.GPUGeekLoadResult.inputs[k].tooltip);
    const settings = JSON.parse(readFileSync(join(root, "locales", lang, "settings.json"), "utf8"));
    for (const id of ["GPUGeek_ApiKey", "GPUGeek_BaseURL", "GPUGeek_WorkflowId", "GPUGeek_DailyLimit", "GPUGeek_MarkCloud"]) {
      assert.ok(settings[id] && settings[id].name, `${lang} setting ${id}`);
    }
  }
});

test("the running cloud node is known per gateway", async () => {
  const { live, runningCloudNodes } = await import("../lib/live.js");
  live.set("10", { status: 2, cloud_node: "3", cloud_value: 7, cloud_max: 20 });
  live.set("11", { status: 3, cloud_node: "5" });
  assert.deepEqual([...runningCloudNodes()], [["3", { gateway: "10", value: 7, max: 20 }]]);
});
