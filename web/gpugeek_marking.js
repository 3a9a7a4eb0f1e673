// Marks, as the user edits, the nodes that will run in the cloud for each gateway, flags crossings that
// would be refused, and shows on each gateway the expected price and run time of its cloud part (median
// of earlier runs in the journal). The rules are lib/plan.js, the same as the server's plan.
import { app, api, call, tr, lang, EXT } from "./gpugeek_common.js";
import { makePlan, GATEWAY } from "./lib/plan.js";
import { classTable, expectedLine } from "./lib/status.js";
import { runningCloudNodes } from "./lib/live.js";

const CLOUD = "#3b82f6";   // readable on dark and light canvases
const BOTH = "#14b8a6";
const REFUSED = "#ef4444";
const state = { roles: {}, owner: {}, refusals: {}, flagged: new Set(), expected: {}, version: null, busy: false, classes: null };

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
  const id = String(node.id);
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
  const text = refused ? tr("refused") : `${tr("cloudOf", { g })}${role === "both" ? " · " + tr("both") : ""}`;
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

function drawExpected(node, ctx) {
  if (node.type !== GATEWAY) return;
  const id = String(node.id);
  if (node.__gpugeekStatus) return;  // live status replaces the estimate (gpugeek_status.js)
  const lines = state.refusals[id] ? state.refusals[id] : [expectedLine(state.expected[id], lang())];
  node.__gpugeekBox?.(ctx, lines, state.refusals[id] ? REFUSED : null);
}

function patch(node) {
  if (node.__gpugeekMarked) return;
  node.__gpugeekMarked = true;
  const orig = node.onDrawForeground;
  node.onDrawForeground = function (ctx, ...rest) {
    const r = orig?.apply(this, [ctx, ...rest]);
    try { drawMark(this, ctx); drawExpected(this, ctx); } catch (e) { console.warn("[GPUGeek] mark", e); }
    return r;
  };
}

async function refresh() {
  const graph = app.graph;
  if (!graph || state.busy) return;
  const version = graph._version ?? Math.random();
  if (version === state.version) return;
  state.busy = true;
  try {
    for (const n of graph._nodes || graph.nodes || []) patch(n);
    const { output } = await app.graphToPrompt();
    const hasGateway = Object.values(output).some((n) => n.class_type === GATEWAY);
    if (!hasGateway) {
      Object.assign(state, { roles: {}, owner: {}, refusals: {}, flagged: new Set(), expected: {} });
    } else {
      const plan = makePlan(output, state.classes || {});
      Object.assign(state, { roles: plan.roles, owner: plan.owner, refusals: plan.refusals, flagged: new Set(plan.flagged) });
      const server = await call("plan", { prompt: output }).catch(() => null);
      if (server?.ok) state.expected = server.expected || {};
    }
    state.version = version;
    graph.setDirtyCanvas?.(true, true);
  } catch (e) {
    console.warn("[GPUGeek] planning in the editor failed", e);
  } finally {
    state.busy = false;
  }
}

app.registerExtension({
  name: `${EXT}.marking`,
  async setup() {
    try { state.classes = classTable(await api.getNodeDefs()); } catch { state.classes = {}; }
    setInterval(refresh, 1000);
    refresh();
  },
  nodeCreated(node) { patch(node); },
  loadedGraphNode(node) { patch(node); },
});
