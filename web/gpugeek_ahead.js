// The queue's prompts whose cloud part already runs in the cloud (sent ahead when they were queued), fed by the
// server's gpugeek.ahead messages (nodes/ahead.py). Shown on each prompt's own entry of the editor's queue list, a
// badge ("☁ running ahead · 12 s"), where the editor's rows say which prompt they are: editor 1.48 and newer (the queue
// overlay's job list, JobAssetsList, puts the prompt's id on each row as data-job-id; the list is ComfyUI's order).
// Editor 1.27's queue sidebar (TaskItem) puts no id on its entries, and a list that is closed shows none: the parts no
// row shows are told in a small box beside the queue instead, one line a prompt (its number in ComfyUI's queue,
// position in the cloud's queue or time running). All gone once every such prompt has run.
import { api, tr, lang, textsReady, EXT, app } from "./gpugeek_common.js";
import { aheadUpdate, aheadLine, badgesFor, boxRecords } from "./lib/aheadBoard.js";

const board = new Map();
// editor 1.48+: a row of the queue list and the prompt it is (ComfyUI's prompt id is the job's id)
const ROW = "[data-job-id]";
const BADGE = "gpugeek-ahead-badge";
let box = null;
let timer = null;
let watcher = null;
let pending = false;

function badgeOf(row) {
  return [...row.children].find((c) => c.classList.contains(BADGE)) || null;
}

// the queue list's rows on screen get their badge (and lose it once their part is taken); the prompt ids badged
function decorate(nowS) {
  const rows = [...document.querySelectorAll(ROW)];
  const want = new Map(badgesFor(rows.map((r) => r.dataset.jobId), board, lang(), nowS).map((b) => [b.id, b.text]));
  const shown = new Set();
  for (const row of rows) {
    const text = want.get(row.dataset.jobId);
    let badge = badgeOf(row);
    if (!text) { badge?.remove(); continue; }
    if (!badge) {
      badge = document.createElement("span");
      badge.className = BADGE;
      badge.style.cssText = "position:absolute;right:10px;top:50%;transform:translateY(-50%);z-index:2;max-width:60%;"
        + "overflow:hidden;text-overflow:ellipsis;white-space:nowrap;padding:2px 7px;border-radius:9px;"
        + "background:rgba(59,130,246,.18);border:1px solid rgba(59,130,246,.55);color:#93c5fd;"
        + "font:11px/14px sans-serif;pointer-events:none";
      if (getComputedStyle(row).position === "static") row.style.position = "relative";
      row.append(badge);
    }
    if (badge.textContent !== text) badge.textContent = text;
    if (badge.dataset.prompt !== row.dataset.jobId) badge.dataset.prompt = row.dataset.jobId;
    if (row.getClientRects().length) shown.add(row.dataset.jobId);   // a list hidden by style shows nothing
  }
  return shown;
}

function drawBox(records, nowS) {
  if (!records.length) {
    box?.remove();
    box = null;
    return;
  }
  if (!box) {
    box = document.createElement("div");
    box.className = "gpugeek-ahead";
    box.style.cssText = "position:fixed;right:12px;bottom:12px;z-index:1000;max-width:360px;padding:6px 10px;"
      + "border-radius:6px;background:rgba(30,41,59,.92);color:#e2e8f0;font:12px sans-serif;pointer-events:none";
    document.body.append(box);
  }
  box.replaceChildren(Object.assign(document.createElement("div"), { textContent: tr("aheadTitle"), style: "opacity:.7" }),
    ...records.map((r) => Object.assign(document.createElement("div"), { textContent: aheadLine(r, lang(), nowS) })));
}

function draw() {
  pending = false;
  const nowS = Date.now() / 1000;
  const shown = decorate(nowS);
  drawBox(board.size ? boxRecords(board, shown) : [], nowS);
  if (!board.size) {
    clearInterval(timer);
    timer = null;
    watcher?.disconnect();
    watcher = null;
    return;
  }
  if (!timer) timer = setInterval(draw, 1000);   // the time running
  if (!watcher) {
    // the queue list opens, scrolls (its rows are virtual) and re-renders: its rows are decorated again
    watcher = new MutationObserver(() => {
      if (!pending) { pending = true; requestAnimationFrame(draw); }
    });
    watcher.observe(document.body, { childList: true, subtree: true });
  }
}

app.registerExtension({
  name: `${EXT}.ahead`,
  async setup() {
    await textsReady();
    // a row's action buttons show on hover: the badge steps aside
    document.head.append(Object.assign(document.createElement("style"), {
      textContent: `${ROW}:hover > .${BADGE} { opacity: 0; }`,
    }));
    api.addEventListener("gpugeek.ahead", ({ detail }) => { aheadUpdate(board, detail); draw(); });
  },
});
