// What the gateway shows about its task, as lines of text (pure: the drawing is in gpugeek_status.js).
import { t, seconds, money, size } from "./i18n.js";
import { runCells, runsLine } from "./runs.js";

// one task's state: queued (position), running (elapsed), done (time, price), failed, cancelled
function stateLine(state, lang) {
  const s = state.status;
  if (state.phase === "uploading") return t(lang, "uploading");
  if (s === 1) return t(lang, "queued", { pos: state.position || "?", size: state.queue_size || "?" });
  if (s === 2) return t(lang, "running", { t: seconds(state.run_ms) });
  if (s === 3) return t(lang, "done", { t: seconds(state.run_ms), price: money(state.price) });
  if (s === 4) return t(lang, "failed", { msg: state.error || "" });
  if (s === 5) return t(lang, "cancelled");
  return null;
}

export function statusLines(state, lang) {
  if (!state) return [];
  const lines = [];
  const runs = runsLine(state, lang);   // a fan-out: all runs first, then the run this update is about
  if (runs) lines.push(runs);
  const line = stateLine(state, lang);
  if (line && runs && Number.isInteger(state.run)) lines.push(t(lang, "runOf", { run: state.run + 1, text: line }));
  else if (line) lines.push(line);
  // a finished run: how its images came back (the gateway's transfer) and the bytes it moved
  if (state.status === 3 && state.bytes_down != null) {
    const how = state.transfer === "compact" ? "transferCompact" : "transferLossless";
    lines.push(t(lang, "broughtBack", { down: size(state.bytes_down), up: size(state.bytes_up), how: t(lang, how) }));
  }
  const ids = state.task_ids?.length > 1 ? state.task_ids.join(", ") : state.task_id;
  if (ids) lines.push(t(lang, "taskId", { id: ids }));
  return lines;
}

// which earlier runs the estimate comes from: this very part, its shape (other seeds/texts), the same graph
// at other sizes or steps (scaled), the workflow; with runs_at_once the price is that of all the runs
const BASES = ["shape", "workflow", "scaled"];

export function expectedLine(expected, lang) {
  if (!expected) return t(lang, "expectedNone");
  const many = Number(expected.runs_at_once) > 1 ? "_runs" : "";
  const basis = BASES.includes(expected.basis) ? `_${expected.basis}` : "";
  return t(lang, `expected${many}${basis}`, { price: money(expected.price), time: seconds(expected.run_ms),
    n: expected.runs ?? "?", runs: expected.runs_at_once });
}

// What the queue's prompts already sent ahead are expected to cost (the plan's "ahead": offload/run/ahead.py
// queue_money) and what the daily limit leaves after them; null when nothing went ahead. A part of unknown price is
// said as such, never counted as 0.
export function aheadMoneyLine(ahead, lang) {
  if (!ahead || !(Number(ahead.tasks) > 0)) return null;
  const text = Number(ahead.unpriced) > 0
    ? t(lang, "aheadMoneyUnknown", { n: ahead.tasks, price: money(ahead.price), unknown: ahead.unpriced })
    : t(lang, "aheadMoney", { n: ahead.tasks, price: money(ahead.price) });
  return ahead.left === null || ahead.left === undefined ? text : t(lang, "aheadMoneyLeft", { text, left: money(ahead.left) });
}

// What the box under a gateway shows, one status at a time: while a task is known (live), its status only
// where the frontend does not already show the server's progress text on the node (the frontend 1.58 drops
// that text when the run ends, 1.27 keeps it); before a run the refusals, or else the estimate (and what the queue
// sent ahead). A fan-out's
// runs come as cells (one per run), drawn under the progress text too: the text counts them, the cells
// tell each run's state.
export function gatewayBox({ live, progressShown, refusals, expected, ahead }, lang) {
  if (live) {
    const cells = runCells(live);
    const more = cells.length ? { cells } : {};
    if (progressShown) return cells.length ? { kind: "runs", lines: [], ...more } : null;
    return { kind: "status", lines: statusLines(live, lang).map(String), ...more };
  }
  if (refusals?.length) return { kind: "refused", lines: refusals.map(String) };
  const queued = aheadMoneyLine(ahead, lang);   // the queue's parts sent ahead: what they add to today's spending
  return { kind: "expected", lines: queued ? [expectedLine(expected, lang), queued] : [expectedLine(expected, lang)] };
}
