// The GPUGeek tab in the sidebar: every task of the journal (time, workflow, status, durations, price,
// thumbnails), cancel for a running task, "load results" that adds a GPUGeek Load Result node.
import { app, call, tr, toast, lang, textsReady, EXT } from "./gpugeek_common.js";
import { seconds } from "./lib/i18n.js";
import { errorView } from "./lib/tasks.js";

const ACTIVE = new Set(["submitting", "queued", "running", "cancelling", "unknown"]);
const COLORS = { succeeded: "#22c55e", failed: "#ef4444", cancelled: "#94a3b8", cancelling: "#f97316", unknown: "#f97316", queued: "#eab308", running: "#3b82f6" };

function el(tag, style, text) {
  const e = document.createElement(tag);
  if (style) e.style.cssText = style;
  if (text !== undefined) e.textContent = text;
  return e;
}

function button(label, fn) {
  const b = el("button", "margin-right:4px;font-size:12px;padding:2px 8px;cursor:pointer", label);
  b.className = "p-button p-component p-button-sm p-button-text";
  b.onclick = fn;
  return b;
}

function addLoadResult(pid) {
  const node = globalThis.LiteGraph.createNode("GPUGeekLoadResult");
  const canvas = app.canvas;
  const [x, y] = canvas?.ds ? [(-canvas.ds.offset[0] + 80), (-canvas.ds.offset[1] + 80)] : [100, 100];
  node.pos = [x, y];
  app.graph.add(node);
  const w = node.widgets?.find((w) => w.name === "prompt_id");
  if (w) w.value = String(pid);
  app.graph.setDirtyCanvas(true, true);
}

function thumbs(files) {
  const box = el("div", "display:flex;gap:4px;margin-top:4px;flex-wrap:wrap");
  for (const path of (files || []).slice(0, 4)) {
    const name = String(path).split(/[\\/]/).pop();
    if (!/\.(png|jpe?g|webp|gif)$/i.test(name)) continue;
    const img = el("img", "width:48px;height:48px;object-fit:cover;border-radius:4px");
    img.src = `/view?filename=${encodeURIComponent(name)}&subfolder=gpugeek&type=output`;
    img.loading = "lazy";
    box.append(img);
  }
  return box;
}

// the cloud's refusal in the editor's language, its raw answer collapsed under it (kept open across the
// tab's refreshes once opened)
const rawOpen = new Set();

function errorBlock(task) {
  const { text, raw } = errorView(task, tr("cloudError"));
  const box = el("div", "color:#ef4444;margin-top:2px;word-break:break-word");
  if (text) box.append(el("div", "", text));
  if (raw) {
    const details = el("details", "margin-top:2px;color:inherit;opacity:.85");
    const key = task.key || task.prompt_id;
    details.open = rawOpen.has(key);
    details.ontoggle = () => (details.open ? rawOpen.add(key) : rawOpen.delete(key));
    details.append(el("summary", "cursor:pointer;font-size:11px", tr("rawError")),
      el("pre", "white-space:pre-wrap;font-size:11px;margin:2px 0 0 0", raw));
    box.append(details);
  }
  return box;
}

function row(task, rerender) {
  const r = el("div", "padding:8px;border-bottom:1px solid rgba(128,128,128,.25);font-size:12px");
  const when = new Date((task.created || 0) * 1000).toLocaleString();
  const st = task.status || "unknown";
  const head = el("div", "display:flex;justify-content:space-between;gap:6px");
  head.append(el("span", "", when), el("b", `color:${COLORS[st] || "inherit"}`, tr(`status_${st}`)));
  const meta = el("div", "opacity:.85;margin-top:2px",
    `${tr("taskId", { id: task.prompt_id || "-" })} · wf ${task.workflow_id || "-"} · ` +
    `${seconds(task.queue_ms)} + ${seconds(task.run_ms)}${task.price != null ? ` · ${task.price}` : ""}`);
  r.append(head, meta);
  if ((task.error || task.error_text) && st !== "succeeded") r.append(errorBlock(task));
  r.append(thumbs(task.files));
  const actions = el("div", "margin-top:4px");
  if (task.prompt_id) {
    if (st === "succeeded" || ACTIVE.has(st)) actions.append(button(tr("load"), () => addLoadResult(task.prompt_id)));
    if (ACTIVE.has(st)) actions.append(button(tr("cancel"), async () => {
      const res = await call(`tasks/${encodeURIComponent(task.prompt_id)}/cancel`, {});
      toast(res.ok ? "info" : "error", tr("cancel"), res.message || task.prompt_id);
      rerender();
    }));
    actions.append(button(tr("refresh"), async () => { await call(`tasks/${encodeURIComponent(task.prompt_id)}/refresh`, {}); rerender(); }));
  }
  r.append(actions);
  return r;
}

function render(root) {
  root.innerHTML = "";
  const panel = el("div", "padding:8px;overflow:auto;height:100%;box-sizing:border-box");
  const title = el("h3", "margin:4px 0 8px 0;font-size:14px", tr("tasksTitle"));
  const summary = el("div", "font-size:12px;opacity:.85;margin-bottom:6px");
  const list = el("div");
  panel.append(title, summary, list);
  root.append(panel);
  let timer = null;
  let shown = false;
  const load = async () => {
    // the tab may render before it is attached; stop polling once it has been shown and then closed
    if (root.isConnected) shown = true;
    else if (shown) { clearInterval(timer); return; }
    const data = await call(`tasks?lang=${lang()}`).catch(() => ({ tasks: [] }));
    const tasks = data.tasks || [];
    const today = new Date().toDateString();
    const spent = tasks.filter((t) => new Date((t.created || 0) * 1000).toDateString() === today)
      .reduce((a, t) => a + (Number(t.price) || 0), 0);
    summary.textContent = tr("spentToday", { price: Math.round(spent * 1000) / 1000 });
    list.innerHTML = "";
    if (!tasks.length) list.append(el("div", "opacity:.7;font-size:12px", tr("tasksEmpty")));
    for (const t of tasks) list.append(row(t, load));
  };
  load();
  timer = setInterval(load, 3000);
}

app.registerExtension({
  name: `${EXT}.tasks`,
  async setup() {
    await textsReady();
    app.extensionManager?.registerSidebarTab?.({
      id: "gpugeek-tasks",
      icon: "pi pi-cloud",
      title: "GPUGeek",
      tooltip: tr("tasksTitle"),
      type: "custom",
      render: (el) => render(el),
    });
  },
  commands: [
    { id: "GPUGeek.ShowTasks", label: "Show GPUGeek tasks", icon: "pi pi-cloud",
      function: () => app.extensionManager?.command?.execute?.("Workspace.ToggleSidebarTab.gpugeek-tasks") },
  ],
});
