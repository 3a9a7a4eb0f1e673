// Run in the cloud: the switch per workflow and what it adds to a queued prompt.
import { test } from "node:test";
import assert from "node:assert/strict";
import { switchOf, setSwitch, withSwitch, planRequest, whole, runsOf, setRuns } from "../lib/whole.js";

test("a workflow's own switch wins; without one, the server's default", () => {
  assert.equal(switchOf({}, false), false);
  assert.equal(switchOf({}, true), true);
  assert.equal(switchOf({ gpugeek_whole_workflow: false }, true), false);
  assert.equal(switchOf({ gpugeek_whole_workflow: true }, false), true);
  assert.equal(switchOf(undefined, true), true);
  whole.fallback = true;
  assert.equal(switchOf({}), true);
  whole.fallback = false;
  const extra = {};
  setSwitch(extra, 1);
  assert.deepEqual(extra, { gpugeek_whole_workflow: true });
});

test("a queued prompt carries the switch, on or off, and the language; its own extra_data kept", () => {
  const body = JSON.stringify({ client_id: "c", prompt: { 1: {} }, extra_data: { extra_pnginfo: { workflow: {} } } });
  const on = JSON.parse(withSwitch(body, true, "zh"));
  assert.deepEqual(on.extra_data, { extra_pnginfo: { workflow: {} }, gpugeek_whole_workflow: true, gpugeek_lang: "zh" });
  assert.equal(JSON.parse(withSwitch(body, false, "en")).extra_data.gpugeek_whole_workflow, false);
  // anything else goes as it was
  assert.equal(withSwitch("not json", true, "en"), "not json");
  assert.equal(withSwitch(JSON.stringify({ delete: ["x"] }), true, "en"), JSON.stringify({ delete: ["x"] }));
  assert.deepEqual(planRequest({ 1: {} }, "en", true).extra_data, { gpugeek_whole_workflow: true });
});

test("a workflow's runs at once go with the switch on, bounded; off or one run, nothing is added", () => {
  assert.equal(runsOf(undefined), 1);
  assert.equal(runsOf({ gpugeek_runs: "4" }), 4);
  assert.equal(runsOf({ gpugeek_runs: 0 }), 1);
  assert.equal(runsOf({ gpugeek_runs: 1000 }), 8);
  assert.equal(runsOf({ gpugeek_runs: 9 }), 8);
  assert.equal(runsOf({ gpugeek_runs: "x" }), 1);
  assert.deepEqual(setRuns({}, 3), { gpugeek_runs: 3 });
  const body = JSON.stringify({ prompt: { 1: {} } });
  assert.equal(JSON.parse(withSwitch(body, true, "en", 4)).extra_data.gpugeek_runs, 4);
  assert.equal(JSON.parse(withSwitch(body, false, "en", 4)).extra_data.gpugeek_runs, undefined);
  assert.equal(JSON.parse(withSwitch(body, true, "en", 1)).extra_data.gpugeek_runs, undefined);
});
