// Live task status on each gateway: queued (position N of M), running (elapsed), done (time, price),
// failed (the cloud's text), cancelled; the task id is copyable from the node's menu.
import { app, api, tr, toast, lang, textsReady, EXT } from "./gpugeek_common.js";
import { GATEWAY } from "./lib/names.js";
import { statusLines } from "./lib/status.js";
import { live as byNode } from "./lib/live.js";  // gateway node id -> status record from the server

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
      this.__gpugeekBox = (c, lines, color) => box(this, c, lines, color);
      const s = byNode.get(String(this.id));
      this.__gpugeekStatus = s;
      if (s) box(this, ctx, statusLines(s, lang()).map(String), colorOf(s));
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
