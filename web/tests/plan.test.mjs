// The editor's plan against the same vectors as the Python suite (tests/fixtures/plan_vectors.json).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { makePlan } from "../lib/plan.js";

const here = dirname(fileURLToPath(import.meta.url));
const fix = join(here, "..", "..", "tests", "fixtures");
const classesRaw = JSON.parse(readFileSync(join(fix, "classes.json"), "utf8"));
const { vectors } = JSON.parse(readFileSync(join(fix, "plan_vectors.json"), "utf8"));

for (const vec of vectors) {
  test(vec.name, () => {
    const classes = { ...classesRaw, ...(vec.classes_extra || {}) };
    const res = makePlan(structuredClone(vec.prompt), classes);
    const exp = vec.expect;
    if (exp.unchanged) {
      assert.deepEqual(Object.values(res.roles).filter((r) => r !== "local"), []);
      return;
    }
    if (exp.refused) {
      assert.deepEqual(Object.keys(res.refusals).sort(), Object.keys(exp.refused).sort());
      for (const [g, words] of Object.entries(exp.refused)) {
        const text = res.refusals[g].join(" ");
        for (const w of words) assert.ok(text.includes(w), `${w} not in ${text}`);
      }
    }
    if (exp.local_nodes) assert.deepEqual(res.localNodes, [...exp.local_nodes].sort());
    for (const [g, nodes] of Object.entries(exp.cloud || {})) assert.deepEqual(res.regions[g], [...nodes].sort());
    for (const [n, role] of Object.entries(exp.roles || {})) assert.equal(res.roles[n], role, n);
    for (const [g, lead] of Object.entries(exp.groups || {})) assert.equal(res.groups[g], lead);
  });
}

test("the same prompt gives the same plan", () => {
  const v = vectors[0];
  assert.deepEqual(makePlan(structuredClone(v.prompt), classesRaw), makePlan(structuredClone(v.prompt), classesRaw));
});

test("local nodes reached by a refused crossing are flagged for the editor", () => {
  const v = vectors.find((x) => x.name.startsWith("LATENT and VAE crossing"));
  const res = makePlan(structuredClone(v.prompt), classesRaw);
  assert.deepEqual(res.flagged, ["13"]);
});
