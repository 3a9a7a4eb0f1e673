// What the gateway shows about its task, as lines of text (pure: the drawing is in gpugeek_status.js).
import { t, seconds } from "./i18n.js";

export function statusLines(state, lang) {
  if (!state) return [];
  const lines = [];
  const s = state.status;
  if (state.phase === "uploading") lines.push(t(lang, "uploading"));
  else if (s === 1) lines.push(t(lang, "queued", { pos: state.position || "?", size: state.queue_size || "?" }));
  else if (s === 2) lines.push(t(lang, "running", { t: seconds(state.run_ms) }));
  else if (s === 3) lines.push(t(lang, "done", { t: seconds(state.run_ms), price: state.price ?? "?" }));
  else if (s === 4) lines.push(t(lang, "failed", { msg: state.error || "" }));
  else if (s === 5) lines.push(t(lang, "cancelled"));
  if (state.task_id) lines.push(t(lang, "taskId", { id: state.task_id }));
  return lines;
}

export function expectedLine(expected, lang) {
  if (!expected) return t(lang, "expectedNone");
  // which earlier runs the estimate comes from: this very part, its shape (other seeds/texts), the workflow
  const key = expected.basis === "shape" || expected.basis === "workflow" ? `expected_${expected.basis}` : "expected";
  return t(lang, key, { price: expected.price ?? "?", time: seconds(expected.run_ms), n: expected.runs });
}

// What the box under a gateway shows, one status at a time: while a task is known (live), its status only
// where the frontend does not already show the server's progress text on the node (the frontend 1.58 drops
// that text when the run ends, 1.27 keeps it); before a run the refusals, or else the estimate.
export function gatewayBox({ live, progressShown, refusals, expected }, lang) {
  if (live) return progressShown ? null : { kind: "status", lines: statusLines(live, lang).map(String) };
  if (refusals?.length) return { kind: "refused", lines: refusals.map(String) };
  return { kind: "expected", lines: [expectedLine(expected, lang)] };
}
