// The pure parts of the marking and of the language feature: the language input of a prompt's gateways,
// and the follower that plans the graph again after an edit (debounced, one run at a time).
import { test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { addLanguage, withoutLanguage, hasGateway } from "../lib/prompt.js";
import { GATEWAY, LANG_INPUT } from "../lib/names.js";
import { follower } from "../lib/follow.js";

const prompt = () => ({
  1: { class_type: "EmptyImage", inputs: { width: 8 } },
  2: { class_type: GATEWAY, inputs: { workflow_id: "1", image_1: ["1", 0] } },
  3: { class_type: GATEWAY },
});

test("every gateway of the prompt carries the language, and only gateways", () => {
  const p = addLanguage(prompt(), "zh");
  assert.equal(p[2].inputs[LANG_INPUT], "zh");
  assert.deepEqual(p[2].inputs.image_1, ["1", 0]);
  assert.deepEqual(p[3].inputs, { [LANG_INPUT]: "zh" });
  assert.equal(LANG_INPUT in p[1].inputs, false);
  assert.deepEqual(withoutLanguage(p), { ...prompt(), 3: { class_type: GATEWAY, inputs: {} } });
  assert.equal(hasGateway(p), true);
  assert.equal(hasGateway({ 1: prompt()[1] }), false);
  assert.deepEqual(addLanguage(undefined, "en"), undefined);
});

function harness(runMs) {
  const h = { v: 0, runs: [], active: 0, most: 0 };
  // the version is checked by hand here (pollMs is long), so that the timing of the test cannot matter
  h.f = follower({
    version: () => h.v, pollMs: 100000, debounceMs: 20, sweepMs: 100000,
    run: async () => {
      h.active += 1;
      h.most = Math.max(h.most, h.active);
      h.runs.push(h.v);
      await sleep(runMs);
      h.active -= 1;
    },
  });
  return h;
}

async function until(cond, ms = 3000) {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await sleep(2);
  return cond();
}

test("a burst of edits is planned once, after the debounce", async () => {
  const h = harness(1);
  h.f.start();                        // the first look
  assert.ok(await until(() => h.runs.length === 1 && !h.f.busy));
  for (let i = 1; i <= 5; i++) { h.v = i; h.f.check(); }
  assert.equal(h.runs.length, 1);     // not before the debounce
  assert.ok(await until(() => h.runs.length === 2));
  await sleep(50);
  h.f.stop();
  assert.deepEqual(h.runs, [0, 5]);
});

test("never two runs at once; an edit during a run is planned right after it", async () => {
  const h = harness(80);
  h.f.start();
  assert.ok(await until(() => h.active === 1));
  h.v = 1;
  h.f.check();
  assert.ok(await until(() => h.runs.length === 2 && h.active === 0));
  await sleep(50);
  h.f.stop();
  assert.equal(h.most, 1);
  assert.deepEqual(h.runs, [0, 1]);
});

test("no edit, no run; a forced check runs anyway; a failing run is logged and the next one happens", async () => {
  const warned = [];
  let n = 0;
  const f = follower({ version: () => 7, pollMs: 100000, debounceMs: 5, sweepMs: 100000, warn: (...a) => warned.push(a),
    run: async () => { n += 1; if (n === 1) throw new Error("server down"); } });
  f.start();
  assert.ok(await until(() => n === 1 && !f.busy));
  assert.equal(f.check(), false);
  assert.equal(f.check(true), true);
  assert.ok(await until(() => n === 2));
  f.stop();
  assert.equal(n, 2);
  assert.equal(warned.length, 1);
});
