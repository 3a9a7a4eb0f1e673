// A gateway whose cloud part runs `runs` times at once (a fan-out): where each run stands, as the gateway
// shows it ("3/8 done · 2 running · 3 queued" and a row of coloured cells). The server's gpugeek.status
// records carry run, runs, runs_done and run_states (platform codes per run). Pure: no DOM, no ComfyUI.
import { t } from "./i18n.js";

// platform status codes: 0 not yet known, 1 queued, 2 running, 3 succeeded, 4 failed, 5 cancelled
export const RUN_KINDS = ["waiting", "queued", "running", "done", "failed", "cancelled"];
export const RUN_COLORS = { waiting: "#64748b", queued: "#eab308", running: "#3b82f6", done: "#22c55e",
  failed: "#ef4444", cancelled: "#94a3b8" };

export const isFanOut = (state) => Number(state?.runs) > 1 && Array.isArray(state?.run_states);

// each run's kind, in run order (a code the editor does not know counts as not yet known)
export function runCells(state) {
  if (!isFanOut(state)) return [];
  const out = [];
  for (let i = 0; i < state.runs; i++) out.push(RUN_KINDS[state.run_states[i]] || "waiting");
  return out;
}

export function runCounts(cells) {
  const counts = Object.fromEntries(RUN_KINDS.map((k) => [k, 0]));
  for (const c of cells) counts[c] += 1;
  return counts;
}

// "3/8 done · 2 running · 3 queued": the runs done, then the others by kind (kinds with none left out)
export function runsLine(state, lang) {
  const cells = runCells(state);
  if (!cells.length) return null;
  const counts = runCounts(cells);
  const done = Number.isInteger(state.runs_done) ? state.runs_done : counts.done;
  const parts = [t(lang, "runsDone", { done, runs: cells.length })];
  for (const k of ["running", "queued", "waiting", "failed", "cancelled"]) {
    if (counts[k]) parts.push(t(lang, `runs_${k}`, { n: counts[k] }));
  }
  return parts.join(" · ");
}

// the colour of the whole fan-out: a failure first, then work under way, then all done
export function runsKind(cells) {
  const c = runCounts(cells);
  if (c.failed) return "failed";
  if (c.running) return "running";
  if (c.queued || c.waiting) return c.done ? "running" : "queued";
  if (c.cancelled) return "cancelled";
  return "done";
}

// the gateway's record once its prompt ran (the node's executed message): every run succeeded
export function doneRecord(info) {
  const ids = Array.isArray(info?.task_ids) ? info.task_ids.map(String) : [];
  const rec = { status: 3, task_id: info?.task_id, run_ms: info?.run_ms, price: info?.price,
    bytes_down: info?.bytes_down, bytes_up: info?.uploaded_bytes, transfer: info?.transfer };
  if (ids.length > 1) Object.assign(rec, { runs: ids.length, runs_done: ids.length, run_states: ids.map(() => 3), task_ids: ids });
  return rec;
}
