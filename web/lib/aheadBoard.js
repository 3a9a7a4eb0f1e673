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

// every prompt of the queue with a part ahead, in the queue's order
export function aheadLines(board, lang, nowS) {
  return [...board.values()]
    .sort((a, b) => (a.number ?? Infinity) - (b.number ?? Infinity))
    .map((r) => aheadLine(r, lang, nowS));
}
