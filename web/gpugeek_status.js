// The box under each gateway: before a run the expected price and time of its cloud part (or why it would
// be refused), then its task's status: queued (position N of M), running (elapsed), done (time, price),
// failed, cancelled. One status at a time: while the frontend shows the server's progress text on the node
// (in the prompt's language), the box does not repeat it. A gateway with runs > 1 shows how many are done and
// a row of small squares, one per run, coloured by its state (under the progress text too, which only counts
// them). The task id is copyable from the node's menu.
import { app, api, tr, toast, lang, textsReady, EXT } from "./gpugeek_common.js";
import { GATEWAY, PROGRESS_TEXT_WIDGET } from "./lib/names.js";
import { gatewayBox } from "./lib/status.js";
import { live as byNode } from "./lib/live.js";  // gateway node id -> status record from the server
import { plan } from "./lib/plan_state.js";
import { RUN_COLORS, runsKind, doneRecord } from "./lib/runs.js";
import { wrapText } from "./lib/wrap.js";

const REFUSED = "#ef4444";
const CELL = 12;      // a fan-out's run: a square this wide, this far from the next
const GAP = 3;

// one square per run, coloured by its state (one not yet known: an outline), as many rows as it takes
function cellRows(cells, width) {
  const perRow = Math.max(1, Math.floor((width + GAP) / (CELL + GAP)));
  return { perRow, h: Math.ceil(cells.length / perRow) * (CELL + GAP) - GAP };
}

function drawCells(ctx, cells, x0, y0, width) {
  const { perRow } = cellRows(cells, width);
  cells.forEach((kind, i) => {
    const x = x0 + (i % perRow) * (CELL + GAP);
    const y = y0 + Math.floor(i / perRow) * (CELL + GAP);
    if (kind === "waiting") {
      ctx.strokeStyle = RUN_COLORS.waiting;
      ctx.strokeRect(x + 0.5, y + 0.5, CELL - 1, CELL - 1);
    } else {
      ctx.fillStyle = RUN_COLORS[kind];
      ctx.fillRect(x, y, CELL, CELL);
    }
  });
}

// the box's rows: each line wrapped to the width (at most 3 rows), a fan-out's squares after its first
// line (the count of runs done); each row {text} or {cells}, with its height
function boxRows(ctx, lines, cells, width) {
  const rows = [];
  const measure = (s) => ctx.measureText(s).width;
  lines.forEach((line, i) => {
    for (const text of wrapText(line, width, measure, 3)) rows.push({ text, h: 16 });
    if (i === 0 && cells.length) rows.push({ cells, h: cellRows(cells, width).h + 6 });
  });
  if (!lines.length && cells.length) rows.push({ cells, h: cellRows(cells, width).h + 4 });
  return rows;
}

function box(node, ctx, { lines, cells = [] }, color) {
  if (!lines.length && !cells.length) return;
  ctx.save();
  ctx.font = "12px sans-serif";
  const width = node.size[0] - 16;
  const rows = boxRows(ctx, lines, cells, width);
  const h = rows.reduce((a, r) => a + r.h, 8);
  const y = node.size[1] + 6;
  ctx.fillStyle = "rgba(20, 24, 33, 0.85)";
  ctx.strokeStyle = color || "#3b82f6";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.roundRect ? ctx.roundRect(0, y, node.size[0], h, 6) : ctx.rect(0, y, node.size[0], h);
  ctx.fill();
  ctx.stroke();
  let top = y + 4;
  for (const r of rows) {
    if (r.cells) drawCells(ctx, r.cells, 8, top + 3, width);
    else {
      ctx.fillStyle = "#f1f5f9";
      ctx.fillText(r.text, 8, top + 14);
    }
    top += r.h;
  }
  ctx.restore();
}

const progressShown = (node) => !!node.widgets?.some((w) => w.name === PROGRESS_TEXT_WIDGET && w.value);

function drawBox(node, ctx) {
  const id = String(node.id);
  const s = byNode.get(id);
  node.__gpugeekStatus = s;
  const content = gatewayBox({ live: s, progressShown: progressShown(node), refusals: plan.refusals[id],
    expected: plan.expected[id], ahead: plan.ahead }, lang());
  node.__gpugeekBoxShown = content?.kind || null;   // test-only: what the box shows
  node.__gpugeekBoxLines = content?.lines || null;  // test-only
  if (!content) return;
  box(node, ctx, content, content.cells ? RUN_COLORS[runsKind(content.cells)]
    : content.kind === "status" ? colorOf(s) : content.kind === "refused" ? REFUSED : null);
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
        byNode.set(String(this.id), doneRecord(info));   // a fan-out's: every run done
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
