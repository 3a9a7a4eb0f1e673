// Marks, as the user edits, the nodes that will run in the cloud for each gateway, flags crossings that
// would be refused, and shows on each gateway the expected price and run time of its cloud part (median
// of earlier runs in the journal; drawn by gpugeek_status.js). Everything comes from the server's plan (POST
// /gpugeek/plan): the editor has no planner of its own, so the marking is what queueing the graph would do.
// With Run in the cloud on (gpugeek_whole.js), a graph with no gateway is planned as one cloud part: every
// node is marked, inside subgraphs too.
import { app, api, call, tr, lang, textsReady, EXT } from "./gpugeek_common.js";
import { drawAfter } from "./lib/draw.js";
import { GATEWAY, WHOLE } from "./lib/names.js";
import { switchOf, planRequest } from "./lib/whole.js";
import { executionId, forget } from "./lib/exec_id.js";
import { runningCloudNodes } from "./lib/live.js";
import { follower } from "./lib/follow.js";
import { withoutLanguage, hasGateway } from "./lib/prompt.js";
import { plan, setPlan, setPlanner } from "./lib/plan_state.js";

const CLOUD = "#3b82f6";   // readable on dark and light canvases
const BOTH = "#14b8a6";
const REFUSED = "#ef4444";
const EMPTY = { ok: true, roles: {}, owner: {}, refusals: {}, flagged: [], groups: {}, expected: {} };
// what is drawn (the last plan applied, shared in lib/plan_state.js), and the last answer by prompt (a graph
// whose prompt did not change, e.g. a node moved, is not planned again)
const state = Object.assign(plan, { applied: null, last: null, failing: false, plans: 0 });
// test-only: the end-to-end tests read the marking from here (tests/test_e2e_comfyui.py)
globalThis.__gpugeekMarking = state;

function marking() {
  return app.extensionManager?.setting?.get("GPUGeek.MarkCloud") !== false;
}

function drawRunning(node, ctx, run) {
  // the cloud node that runs now (a ComfyUI server target reports it): a green frame and its steps
  const title = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  outline(ctx, node, "#22c55e", title);
  if (run.max) {
    ctx.save();
    ctx.fillStyle = "rgba(34,197,94,0.85)";
    ctx.fillRect(0, node.size[1] - 4, node.size[0] * Math.min(1, run.value / run.max), 4);
    ctx.restore();
  }
}

function drawMark(node, ctx) {
  if (!marking()) return;
  const id = executionId(node, app.rootGraph ?? app.graph);  // "12:3" inside a subgraph, as the plan names it
  const run = runningCloudNodes().get(id);
  if (run) { drawRunning(node, ctx, run); return; }
  const role = state.roles[id];
  const title = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  const g = state.owner[id];
  const refused = g && state.refusals[g];
  if (node.type === GATEWAY && state.refusals[id]) {
    outline(ctx, node, REFUSED, title);
    return;
  }
  if (state.flagged.has(id)) {
    outline(ctx, node, REFUSED, title);
    badge(ctx, tr("refusedHere"), REFUSED, title);
    return;
  }
  if (!role || role === "local") return;
  const color = refused ? REFUSED : role === "both" ? BOTH : CLOUD;
  outline(ctx, node, color, title);
  const cloudOf = g === WHOLE ? tr("cloudWhole") : tr("cloudOf", { g });
  const text = refused ? tr("refused") : `${cloudOf}${role === "both" ? " · " + tr("both") : ""}`;
  badge(ctx, text, color, title);
}

function badge(ctx, text, color, title) {
  ctx.save();
  ctx.font = "bold 11px sans-serif";
  const w = ctx.measureText(text).width + 10;
  ctx.fillStyle = color;
  ctx.beginPath();
  ctx.roundRect ? ctx.roundRect(0, -title - 18, w, 16, 4) : ctx.rect(0, -title - 18, w, 16);
  ctx.fill();
  ctx.fillStyle = "#fff";
  ctx.fillText(text, 5, -title - 6);
  ctx.restore();
}

function outline(ctx, node, color, title) {
  ctx.save();
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.setLineDash([6, 3]);
  ctx.strokeRect(-3, -title - 3, node.size[0] + 6, node.size[1] + title + 6);
  ctx.restore();
}

function patch(node) {
  drawAfter(node, "__gpugeekMarked", (n, ctx) => drawMark(n, ctx), "mark");
}

const nodesOf = (graph) => graph._nodes || graph.nodes || [];

// the graph's change counter (and its subgraphs'), and which graph it is: cheap, checked every 100 ms
const graphIds = new WeakMap();
function versionOf(graph) {
  if (!graph) return "none";
  if (!graphIds.has(graph)) graphIds.set(graph, graphIds.size + 1 + Math.random());
  const subs = graph.subgraphs?.values ? [...graph.subgraphs.values()].map((g) => g._version).join(",") : "";
  return `${graphIds.get(graph)}|${graph._version}|${subs}|${wholeSwitch()}`;
}

// Run in the cloud, as the workflow says (gpugeek_whole.js keeps it in the root graph's extra)
const wholeSwitch = () => switchOf((app.rootGraph ?? app.graph)?.extra);

function apply(answer) {
  if (answer === state.applied) return;
  state.applied = answer;
  forget();
  setPlan(answer);
  app.graph?.setDirtyCanvas?.(true, true);
}

function failed(message) {
  if (!state.failing) console.warn("[GPUGeek] the server's plan failed; the marking stays as it was:", message);
  state.failing = true;
}

async function replan() {
  const graph = app.graph;
  if (!graph) return;
  const before = versionOf(graph);
  for (const n of nodesOf(graph)) patch(n);
  for (const sub of graph.subgraphs?.values?.() || []) for (const n of nodesOf(sub)) patch(n);
  const { output } = await app.graphToPrompt();
  withoutLanguage(output);
  const on = wholeSwitch();
  if (!hasGateway(output) && !on) { apply(EMPTY); return; }
  const code = lang();
  const key = `${code}|${on}|${JSON.stringify(output)}`;
  if (state.last?.key === key) { apply(state.last.answer); return; }
  let answer;
  try { answer = await call("plan", planRequest(output, code, on)); } catch (e) { failed(e); return; }
  if (!answer?.ok) { failed(answer?.message); return; }
  state.failing = false;
  state.plans += 1;
  state.last = { key, answer };
  // stale: the graph changed while the server planned it; the run that follows plans it as it is now
  if (graph === app.graph && versionOf(graph) === before) apply(answer);
}

const follow = follower({ version: () => versionOf(app.graph), run: replan, pollMs: 100, debounceMs: 60 });
setPlanner(() => follow.now());

// estimates change when a run ends: plan again even if the graph did not change; so does what the queue sent ahead
// (its price and the limit left after it: the server's gpugeek.ahead messages, nodes/ahead.py), when a part starts,
// ends or leaves (not at each change of its place in the cloud's queue)
const AHEAD_CHANGES = new Set(["waiting", "running", "ready", "taken", "cancelled", "failed"]);
const aheadStates = new Map();
function replanAfterRuns() {
  for (const ev of ["execution_success", "execution_error", "execution_interrupted"]) {
    api.addEventListener(ev, () => { state.last = null; follow.check(true); });
  }
  api.addEventListener("gpugeek.ahead", ({ detail }) => {
    if (!detail?.token || !AHEAD_CHANGES.has(detail.state) || aheadStates.get(detail.token) === detail.state) return;
    if (detail.state === "taken" || detail.state === "cancelled") aheadStates.delete(detail.token);
    else aheadStates.set(detail.token, detail.state);
    state.last = null;
    follow.check(true);
  });
}

app.registerExtension({
  name: `${EXT}.marking`,
  async setup() {
    await textsReady();
    replanAfterRuns();
    follow.start();
  },
  nodeCreated(node) { patch(node); },
  loadedGraphNode(node) { patch(node); },
});
