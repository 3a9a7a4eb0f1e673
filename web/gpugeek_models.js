// No missing-model warning for a node that runs only in the cloud: its model comes from the cloud's lists,
// not this machine's. A node that runs here keeps its warning.
//
// Frontend 1.58 checks models itself: on loading a workflow (and on refresh) it scans every combo widget
// whose value is a model file (.safetensors, .ckpt, ...) and is not among the widget's choices, and puts
// those entries into its "missingModel" store, which drives the warning toast, the Errors tab and the red
// outline of the node. The frontend has no extension hook for it, so this feature filters that store: every
// list set into it loses the entries of cloud-only nodes (the plan's role), and entries already there go when
// the plan makes their node cloud-only. The plan comes from the server, so a loaded workflow is planned before
// the frontend's check runs (afterLoadGraph is awaited before it); a node that leaves the cloud has the
// frontend's check run again (app.refreshMissingModels). Frontend 1.27 warns only about models that a workflow
// embeds with a download URL (its "models" list), in a dialog shown before any node exists; it does not scan
// widget values, so there is nothing to filter there (the pack's example workflows embed none).
import { app, EXT } from "./gpugeek_common.js";
import { plan, onPlan, planNow } from "./lib/plan_state.js";
import { keepLocal, cloudEntries, leftCloud } from "./lib/models.js";

const STORE = "missingModel";
const FILTERED = ["setMissingModels", "addMissingModels"];
const PLAN_WAIT_MS = 2000;
const hooked = new WeakSet();
// test-only: what this feature did (tests/test_e2e_comfyui.py)
const seen = { hooked: false, removed: 0, refreshed: 0 };
globalThis.__gpugeekModels = seen;

// The frontend's stores are Pinia stores; the workspace store it hands extensions (app.extensionManager)
// knows the others by id. Absent (another frontend, another build): nothing is filtered.
function store() {
  try {
    return app.extensionManager?._p?._s?.get?.(STORE) || null;
  } catch {
    return null;
  }
}

function hook() {
  const s = store();
  if (!s || hooked.has(s) || typeof s.$onAction !== "function") return s;
  hooked.add(s);
  seen.hooked = true;
  // an action's arguments are the array it is then called with: the list is filtered before it is stored
  s.$onAction(({ name, args }) => {
    if (FILTERED.includes(name) && Array.isArray(args[0])) args[0] = keepLocal(args[0], plan.roles);
  });
  return s;
}

function prune(s) {
  const gone = new Set(cloudEntries(s.missingModelCandidates, plan.roles).map((c) => String(c.nodeId)));
  for (const id of gone) s.removeMissingModelsByNodeId?.(id);
  seen.removed += gone.size;
  return gone.size;
}

function onPlanChange(_plan, before) {
  const s = hook();
  if (!s) return;
  const removed = prune(s);
  if (leftCloud(before, plan.roles).length && typeof app.refreshMissingModels === "function") {
    seen.refreshed += 1;
    app.refreshMissingModels({ silent: true, reloadDefs: false })
      .catch((e) => console.warn("[GPUGeek] refreshing the missing models", e));
  }
  if (removed) app.graph?.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: `${EXT}.models`,
  setup() {
    hook();
    onPlan(onPlanChange);
  },
  // 1.58 runs its model check right after this hook: plan the new graph first (bounded wait)
  async afterLoadGraph() {
    hook();
    await Promise.race([planNow(), new Promise((done) => setTimeout(done, PLAN_WAIT_MS))]);
  },
});
