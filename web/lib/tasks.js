// How the tasks tab shows a task's error (pure): the cloud's refusal in the editor's language (error_text,
// from GET /gpugeek/tasks?lang=) with the raw answer kept apart, to be shown collapsed. A raw answer that
// is JSON is never the only text: a plain sentence (`fallback`) stands in for it.
const looksRaw = (s) => /^\s*[[{]/.test(s) || /"\w+"\s*:/.test(s);

export function errorView(task, fallback) {
  const raw = task?.error == null || task.error === "" ? null : String(task.error);
  const text = task?.error_text ? String(task.error_text) : null;
  if (text) return { text, raw: raw && raw !== text ? raw : null };
  if (!raw) return { text: null, raw: null };
  return looksRaw(raw) ? { text: fallback, raw } : { text: raw, raw: null };
}

// a task the tab can still cancel (and whose results Load Result waits for)
export const ACTIVE = new Set(["submitting", "queued", "running", "cancelling", "unknown"]);

// The tasks as the tab lists them: the runs of one gateway execution (same `group`) as one entry
// {group, runs} where its newest run stands, its runs in run order; every other task as {task}.
export function groupTasks(tasks) {
  const out = [];
  const groups = new Map();
  for (const task of tasks || []) {
    if (!task) continue;
    if (!task.group) { out.push({ task }); continue; }
    let entry = groups.get(task.group);
    if (!entry) {
      entry = { group: task.group, runs: [] };
      groups.set(task.group, entry);
      out.push(entry);
    }
    entry.runs.push(task);
  }
  for (const entry of groups.values()) entry.runs.sort((a, b) => (a.run ?? 0) - (b.run ?? 0));
  return out;
}

// the state the group shows: one run still active makes it active (the most telling state first), else a
// failure, else a cancellation, else all succeeded
const ACTIVE_ORDER = ["unknown", "running", "cancelling", "queued", "submitting"];

function groupStatus(runs) {
  const has = (s) => runs.some((r) => r.status === s);
  const active = ACTIVE_ORDER.find(has);
  if (active) return active;
  if (has("failed")) return "failed";
  if (has("cancelled")) return "cancelled";
  return runs.length && runs.every((r) => r.status === "succeeded") ? "succeeded" : "unknown";
}

const numeric = (p) => p !== null && p !== undefined && p !== "" && Number.isFinite(Number(p));

// What a group's header says: how many runs, how many done, their summed price, its state, the ids to
// cancel (active runs) and to load (runs done or still active, comma-joined in run order, as Load Result
// takes them), and the estimate of all the runs while some still run (each task's estimate is one run's).
export function groupSummary(runs) {
  const list = runs || [];
  const total = Math.max(list.length, ...list.map((r) => Number(r.runs) || 0));
  const prices = list.map((r) => r.price).filter(numeric);
  const active = list.filter((r) => ACTIVE.has(r.status));
  const each = active.find((r) => r.expected)?.expected;
  const expected = each ? { ...each, price: numeric(each.price) ? Number(each.price) * total : null, runs_at_once: total } : null;
  return {
    total,
    done: list.filter((r) => r.status === "succeeded").length,
    price: prices.length ? prices.reduce((a, p) => a + Number(p), 0) : null,
    status: groupStatus(list),
    cancelIds: active.map((r) => r.prompt_id).filter(Boolean),
    loadIds: list.filter((r) => r.prompt_id && (r.status === "succeeded" || ACTIVE.has(r.status)))
      .map((r) => r.prompt_id).join(","),
    created: list.length ? Math.min(...list.map((r) => r.created || 0)) : 0,
    expected,
  };
}
