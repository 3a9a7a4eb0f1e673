// The GPUGeek tab in the sidebar: every task of the journal (time, workflow, status, durations, price,
// thumbnails), cancel for a running task, "load results" that adds a GPUGeek Load Result node. The runs of
// one gateway execution (its input runs > 1) are one entry ("4 runs · 3 done", their summed price) that
// opens to each run; its Cancel cancels every active run, its Load loads every run (ids comma-joined in run
// order). A task still running shows its estimate, as the gateway does before a run.
import { app, call, tr, toast, lang, textsReady, EXT } from "./gpugeek_common.js";
import { seconds, money, size } from "./lib/i18n.js";
import { errorView, groupTasks, groupSummary, ACTIVE } from "./lib/tasks.js";
import { expectedLine } from "./lib/status.js";

const COLORS = { succeeded: "#22c55e", failed: "#ef4444", cancelled: "#94a3b8", cancelling: "#f97316", unknown: "#f97316", queued: "#eab308", running: "#3b82f6", submitting: "#64748b" };
const ROW = "padding:8px;border-bottom:1px solid rgba(128,128,128,.25);font-size:12px";
const RUN_ROW = "padding:6px 0 6px 8px;border-bottom:1px dashed rgba(128,128,128,.25);font-size:12px";

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

// a GPUGeek Load Result node for one task id, or several separated by commas (a fan-out, in run order)
function addLoadResult(ids) {
  const node = globalThis.LiteGraph.createNode("GPUGeekLoadResult");
  const canvas = app.canvas;
  const [x, y] = canvas?.ds ? [(-canvas.ds.offset[0] + 80), (-canvas.ds.offset[1] + 80)] : [100, 100];
  node.pos = [x, y];
  app.graph.add(node);
  const w = node.widgets?.find((w) => w.name === "prompt_id");
  if (w) w.value = String(ids);
  app.graph.setDirtyCanvas(true, true);
}

function thumbs(files, max = 4) {
  const box = el("div", "display:flex;gap:4px;margin-top:4px;flex-wrap:wrap");
  const names = (files || []).map((p) => String(p).split(/[\\/]/).pop()).filter((n) => /\.(png|jpe?g|webp|gif)$/i.test(n));
  for (const name of names.slice(0, max)) {
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

const expectedBlock = (expected) => el("div", "opacity:.85;margin-top:2px;font-style:italic", expectedLine(expected, lang()));
const cancelOne = (pid) => call(`tasks/${encodeURIComponent(pid)}/cancel`, {}).catch((e) => ({ ok: false, message: String(e) }));
const refreshOne = (pid) => call(`tasks/${encodeURIComponent(pid)}/refresh`, {}).catch(() => ({ ok: false }));

function taskActions(task, reload) {
  const st = task.status || "unknown";
  const actions = el("div", "margin-top:4px");
  if (!task.prompt_id) return actions;
  if (st === "succeeded" || ACTIVE.has(st)) actions.append(button(tr("load"), () => addLoadResult(task.prompt_id)));
  if (ACTIVE.has(st)) actions.append(button(tr("cancel"), async () => {
    const res = await cancelOne(task.prompt_id);
    toast(res.ok ? "info" : "error", tr("cancel"), res.message || task.prompt_id);
    reload();
  }));
  actions.append(button(tr("refresh"), async () => { await refreshOne(task.prompt_id); reload(); }));
  return actions;
}

// one task; `label` names a run of a group (in place of the time, which the group's header shows)
function row(task, reload, label) {
  const r = el("div", label ? RUN_ROW : ROW);
  r.dataset.gpugeekTask = task.prompt_id || "";
  if (label) r.dataset.gpugeekRun = String(task.run ?? "");
  const st = task.status || "unknown";
  const head = el("div", "display:flex;justify-content:space-between;gap:6px");
  head.append(el("span", "", label || new Date((task.created || 0) * 1000).toLocaleString()),
    el("b", `color:${COLORS[st] || "inherit"}`, tr(`status_${st}`)));
  const meta = el("div", "opacity:.85;margin-top:2px",
    `${tr("taskId", { id: task.prompt_id || "-" })} · wf ${task.workflow_id || "-"} · ` +
    `${seconds(task.queue_ms)} + ${seconds(task.run_ms)}${task.price != null ? ` · ${money(task.price)}` : ""}` +
    (task.bytes_down != null ? ` · ${tr("bytesMoved", { down: size(task.bytes_down), up: size(task.bytes_up) })}` : ""));
  r.append(head, meta);
  if (ACTIVE.has(st) && task.expected) r.append(expectedBlock(task.expected));
  if ((task.error || task.error_text) && st !== "succeeded") r.append(errorBlock(task));
  r.append(thumbs(task.files), taskActions(task, reload));
  return r;
}

// one small square per run, coloured by its state (the gateway draws the same row)
function cells(runs, total) {
  const box = el("div", "display:flex;gap:3px;flex-wrap:wrap;margin-top:4px");
  for (let i = 0; i < total; i++) {
    const st = runs.find((r) => (r.run ?? -1) === i)?.status;
    const c = el("span", `display:inline-block;width:10px;height:10px;border-radius:2px;box-sizing:border-box;` +
      (st ? `background:${COLORS[st] || COLORS.unknown}` : "border:1px solid #64748b"));
    c.title = `${tr("runLabel", { run: i + 1, runs: total })}: ${st ? tr(`status_${st}`) : "-"}`;
    c.dataset.gpugeekCell = st || "";
    box.append(c);
  }
  return box;
}

function groupActions(s, runs, reload) {
  const actions = el("div", "margin-top:4px");
  if (s.loadIds) actions.append(button(tr("loadAll"), () => addLoadResult(s.loadIds)));
  if (s.cancelIds.length) actions.append(button(tr("cancelAll"), async () => {
    const res = await Promise.all(s.cancelIds.map(cancelOne));
    const bad = res.find((x) => !x.ok);
    toast(bad ? "error" : "info", tr("cancelAll"), bad ? bad.message || "" : tr("cancelledRuns", { n: res.length }));
    reload();
  }));
  const ids = runs.map((r) => r.prompt_id).filter(Boolean);
  if (ids.length) actions.append(button(tr("refresh"), async () => { await Promise.all(ids.map(refreshOne)); reload(); }));
  return actions;
}

// the groups opened by the user, kept across the tab's refreshes
const openGroups = new Set();

function groupRow({ group, runs }, reload, redraw) {
  const s = groupSummary(runs);
  const open = openGroups.has(group);
  const r = el("div", ROW);
  r.dataset.gpugeekGroup = group;
  const head = el("div", "display:flex;justify-content:space-between;gap:6px;cursor:pointer");
  head.title = tr(open ? "hideRuns" : "showRuns");
  head.dataset.gpugeekToggle = open ? "open" : "closed";
  head.onclick = () => { open ? openGroups.delete(group) : openGroups.add(group); redraw(); };
  head.append(el("span", "", `${open ? "\u25be" : "\u25b8"} ${new Date(s.created * 1000).toLocaleString()}`),
    el("b", `color:${COLORS[s.status] || "inherit"}`, tr(`status_${s.status}`)));
  const wf = runs.find((t) => t.workflow_id)?.workflow_id;
  const meta = el("div", "margin-top:2px;font-weight:600", `${tr("groupHead", { runs: s.total, done: s.done })}` +
    `${s.price != null ? ` · ${money(s.price)}` : ""} · wf ${wf || "-"}`);
  meta.dataset.gpugeekGroupHead = "";
  r.append(head, meta, cells(runs, s.total));
  if (s.expected) r.append(expectedBlock(s.expected));
  const failed = runs.find((t) => t.status === "failed" && (t.error || t.error_text));
  if (failed && !open) r.append(errorBlock(failed));
  r.append(thumbs(runs.flatMap((t) => t.files || []), 8), groupActions(s, runs, reload));
  if (open) {
    const list = el("div", "margin:6px 0 0 6px;border-left:2px solid rgba(128,128,128,.35)");
    for (const t of runs) list.append(row(t, reload, tr("runLabel", { run: (t.run ?? 0) + 1, runs: s.total })));
    r.append(list);
  }
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
  let tasks = [];
  const draw = () => {
    list.innerHTML = "";
    if (!tasks.length) list.append(el("div", "opacity:.7;font-size:12px", tr("tasksEmpty")));
    for (const e of groupTasks(tasks)) list.append(e.task ? row(e.task, load) : groupRow(e, load, draw));
  };
  const load = async () => {
    // the tab may render before it is attached; stop polling once it has been shown and then closed
    if (root.isConnected) shown = true;
    else if (shown) { clearInterval(timer); return; }
    const data = await call(`tasks?lang=${lang()}`).catch(() => ({ tasks: [] }));
    tasks = data.tasks || [];
    const today = new Date().toDateString();
    const spent = tasks.filter((t) => new Date((t.created || 0) * 1000).toDateString() === today)
      .reduce((a, t) => a + (Number(t.price) || 0), 0);
    summary.textContent = tr("spentToday", { price: money(spent) });
    draw();
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
