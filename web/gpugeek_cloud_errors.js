// The cloud's errors on the user's own nodes: when the cloud refuses a cloud part, the server sends
// gpugeek.cloud_errors = {gateway, task_id, errors: [{id, text}]}, one sentence per node in the editor's
// language. Each named node is outlined in red with its sentence under it (wrapped), until that gateway
// runs again or the node is changed (a widget value or an input link).
import { app, api, EXT } from "./gpugeek_common.js";
import { drawAfter } from "./lib/draw.js";
import { wrapText } from "./lib/wrap.js";

const RED = "#ef4444";
const LINE = 15;
const MIN_WIDTH = 260;
// node id -> {gateway, task, text, sig}
const errors = new Map();
// test-only: the end-to-end tests read the errors shown from here (tests/test_e2e_comfyui.py)
globalThis.__gpugeekCloudErrors = errors;

// what the user can change on a node that the cloud's sentence is about
function signature(node) {
  return JSON.stringify([node.type, (node.widgets || []).map((w) => w.value), (node.inputs || []).map((i) => i.link)]);
}

const nodeById = (id) => app.graph?.getNodeById?.(id) ?? app.graph?.getNodeById?.(Number(id));

function show({ gateway, task_id: task, errors: list } = {}) {
  clearGateway(gateway);
  for (const e of list || []) {
    const id = String(e?.id ?? "");
    const node = id && nodeById(id);
    if (!node || !e.text) continue;
    patch(node);
    errors.set(id, { gateway: String(gateway), task, text: String(e.text), sig: signature(node) });
  }
  app.graph?.setDirtyCanvas?.(true, true);
}

function clearGateway(gateway) {
  let changed = false;
  for (const [id, e] of errors) if (e.gateway === String(gateway)) { errors.delete(id); changed = true; }
  if (changed) app.graph?.setDirtyCanvas?.(true, true);
}

function draw(node, ctx) {
  const e = errors.get(String(node.id));
  if (!e) return;
  if (signature(node) !== e.sig) { errors.delete(String(node.id)); return; }
  const title = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  ctx.save();
  ctx.strokeStyle = RED;
  ctx.lineWidth = 3;
  ctx.strokeRect(-6, -title - 6, node.size[0] + 12, node.size[1] + title + 12);
  ctx.font = "12px sans-serif";
  const width = Math.max(node.size[0], MIN_WIDTH);
  const lines = wrapText(e.text, width - 16, (s) => ctx.measureText(s).width);
  const y = node.size[1] + 10;
  const h = LINE * lines.length + 10;
  ctx.fillStyle = "rgba(40, 16, 16, 0.92)";
  ctx.beginPath();
  ctx.roundRect ? ctx.roundRect(0, y, width, h, 6) : ctx.rect(0, y, width, h);
  ctx.fill();
  ctx.stroke();
  ctx.fillStyle = "#fecaca";
  lines.forEach((line, i) => ctx.fillText(line, 8, y + 17 + LINE * i));
  ctx.restore();
}

function patch(node) {
  drawAfter(node, "__gpugeekErrors", (n, ctx) => draw(n, ctx), "cloud errors");
}

// a gateway runs again: ComfyUI says it executes, or its task reports a status
function gatewayRuns(detail) {
  const id = detail && typeof detail === "object" ? detail.node ?? detail.display_node : detail;
  if (id != null) clearGateway(id);
}

app.registerExtension({
  name: `${EXT}.cloudErrors`,
  setup() {
    api.addEventListener("gpugeek.cloud_errors", ({ detail }) => show(detail));
    api.addEventListener("executing", ({ detail }) => gatewayRuns(detail));
    api.addEventListener("gpugeek.status", ({ detail }) => gatewayRuns(detail?.node));
  },
  nodeCreated(node) { patch(node); },
  loadedGraphNode(node) { patch(node); },
});
