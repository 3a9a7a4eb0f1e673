// Queued prompts whose cloud part was sent ahead (the server's gpugeek.ahead messages, nodes/ahead.py), as lines
// (pure: the drawing is in gpugeek_ahead.js). A record: {token, prompt_id, number, state, started, position}.
import { t, seconds } from "./i18n.js";

// states the server sends that end an entry's line (taken: the prompt now runs and its node shows the task)
const ENDED = new Set(["taken", "cancelled"]);

// the board after one record: token -> the latest record; an ended entry leaves it
export function aheadUpdate(board, record) {
  if (!record || !record.token) return board;
  if (ENDED.has(record.state)) board.delete(record.token);
  else board.set(record.token, { ...(board.get(record.token) || {}), ...record });
  return board;
}

function promptName(r) {
  return r.number === null || r.number === undefined ? "…" : String(r.number);
}

// one prompt's line: its cloud part waiting for a slot, queued in the cloud (position), running (time), or ready
export function aheadLine(r, lang, nowS) {
  const n = promptName(r);
  if (r.state === "waiting") return t(lang, "aheadWaiting", { n });
  if (r.state === "ready") return t(lang, "aheadReady", { n });
  if (r.state === "failed") return t(lang, "aheadFailed", { n });
  if (r.position) return t(lang, "aheadQueued", { n, pos: r.position });
  const ms = r.started ? Math.max(0, nowS - r.started) * 1000 : 0;
  return t(lang, "aheadRunning", { n, t: seconds(ms) });
}

const inOrder = (records) => [...records].sort((a, b) => (a.number ?? Infinity) - (b.number ?? Infinity));

// every prompt of the queue with a part ahead, in the queue's order
export function aheadLines(board, lang, nowS) {
  return inOrder(board.values()).map((r) => aheadLine(r, lang, nowS));
}

// The badge on a prompt's own entry in the editor's queue list (its number and place there are the list's): its cloud
// part waiting for a slot, queued in the cloud (position), running (whole seconds: it ticks each second), or done.
export function badgeText(r, lang, nowS) {
  if (r.state === "waiting") return t(lang, "aheadBadgeWaiting");
  if (r.state === "ready") return t(lang, "aheadBadgeReady");
  if (r.state === "failed") return t(lang, "aheadBadgeFailed");
  if (r.position) return t(lang, "aheadBadgeQueued", { pos: r.position });
  return t(lang, "aheadBadgeRunning", { s: r.started ? Math.max(0, Math.floor(nowS - r.started)) : 0 });
}

// The badges of the queue list's rows (``ids``: each row's job id, which is the prompt's id), in the rows' order: a
// row whose prompt has a part ahead gets one, the others none.
export function badgesFor(ids, board, lang, nowS) {
  const byPrompt = new Map([...board.values()].filter((r) => r.prompt_id).map((r) => [String(r.prompt_id), r]));
  return ids.filter((id) => byPrompt.has(String(id)))
    .map((id) => ({ id: String(id), text: badgeText(byPrompt.get(String(id)), lang, nowS) }));
}

// What the box beside the queue still says: the parts whose prompt no row of the queue list shows (``shown``: the
// prompt ids badged), in the queue's order. All of them where the list is closed or the editor's rows carry no id.
export function boxRecords(board, shown) {
  return inOrder([...board.values()].filter((r) => !r.prompt_id || !shown.has(String(r.prompt_id))));
}
