// The box under each gateway: before a run the expected price and time of its cloud part (or why it would
// be refused), then its task's status: queued (position N of M), running (elapsed), done (time, price),
// failed, cancelled. One status at a time: while the frontend shows the server's progress text on the node
// (in the prompt's language), the box does not repeat it. The task id is copyable from the node's menu.
import { app, api, tr, toast, lang, textsReady, EXT } from "./gpugeek_common.js";
import { GATEWAY, PROGRESS_TEXT_WIDGET } from "./lib/names.js";
import { gatewayBox } from "./lib/status.js";
import { live as byNode } from "./lib/live.js";  // gateway node id -> status record from the server
import { plan } from "./lib/plan_state.js";

const REFUSED = "#ef4444";

function box(node, ctx, lines, color) {
  if (!lines.length) return;
  ctx.save();
  ctx.font = "12px sans-serif";
  const h = 16 * lines.length + 8;
  const y = node.size[1] + 6;
  ctx.fillStyle = "rgba(20, 24, 33, 0.85)";
  ctx.strokeStyle = color || "#3b82f6";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.roundRect ? ctx.roundRect(0, y, node.size[0], h, 6) : ctx.rect(0, y, node.size[0], h);
  ctx.fill();
  ctx.stroke();
  ctx.fillStyle = "#f1f5f9";
  lines.forEach((line, i) => ctx.fillText(line.length > 80 ? line.slice(0, 79) + "…" : line, 8, y + 18 + 16 * i));
  ctx.restore();
}

const progressShown = (node) => !!node.widgets?.some((w) => w.name === PROGRESS_TEXT_WIDGET && w.value);

function drawBox(node, ctx) {
  const id = String(node.id);
  const s = byNode.get(id);
  node.__gpugeekStatus = s;
  const content = gatewayBox({ live: s, progressShown: progressShown(node), refusals: plan.refusals[id],
    expected: plan.expected[id] }, lang());
  node.__gpugeekBoxShown = content?.kind || null;   // test-only: what the box shows
  if (!content) return;
  box(node, ctx, content.lines, content.kind === "status" ? colorOf(s) : content.kind === "refused" ? REFUSED : null);
}

function colorOf(s) {
  return { 1: "#eab308", 2: "#3b82f6", 3: "#22c55e", 4: "#ef4444", 5: "#94a3b8" }[s?.status] || "#3b82f6";
}

app.registerExtension({
  name: `${EXT}.status`,
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== GATEWAY) return;
    const onDraw = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx, ...rest) {
      const r = onDraw?.apply(this, [ctx, ...rest]);
      try { drawBox(this, ctx); } catch (e) { console.warn("[GPUGeek] status", e); }
      return r;
    };
    const menu = nodeType.prototype.getExtraMenuOptions;
    nodeType.prototype.getExtraMenuOptions = function (canvas, options) {
      const r = menu?.apply(this, [canvas, options]);
      const s = byNode.get(String(this.id));
      if (s?.task_id) {
        options.push({ content: tr("copyTask"), callback: async () => {
          await navigator.clipboard?.writeText(String(s.task_id));
          toast("info", tr("copied"), String(s.task_id));
        } });
      }
      return r;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const r = onExecuted?.apply(this, [output]);
      const info = output?.gpugeek?.[0];
      if (info?.state === "done") {
        byNode.set(String(this.id), { status: 3, task_id: info.task_id, run_ms: info.run_ms, price: info.price });
      } else if (info?.state === "local") {
        byNode.delete(String(this.id));
      }
      this.setDirtyCanvas?.(true, true);
      return r;
    };
  },
  async setup() {
    // the server writes its progress text in the language each prompt carries (gpugeek_lang.js)
    await textsReady();
    api.addEventListener("gpugeek.status", ({ detail }) => {
      if (!detail?.node) return;
      byNode.set(String(detail.node), detail);
      app.graph?.setDirtyCanvas?.(true, true);
    });
    api.addEventListener("execution_start", () => {
      byNode.clear();
      app.graph?.setDirtyCanvas?.(true, true);
    });
  },
});
