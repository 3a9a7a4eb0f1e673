// The queue's prompts whose cloud part already runs in the cloud (sent ahead when they were queued): a small box
// beside the queue, one line a prompt (its number in ComfyUI's queue, position in the cloud's queue or time running),
// fed by the server's gpugeek.ahead messages (nodes/ahead.py). Gone once every such prompt has run.
import { api, tr, lang, textsReady, EXT, app } from "./gpugeek_common.js";
import { aheadUpdate, aheadLines } from "./lib/aheadBoard.js";

const board = new Map();
let box = null;
let timer = null;

function draw() {
  const lines = aheadLines(board, lang(), Date.now() / 1000);
  if (!lines.length) {
    box?.remove();
    box = null;
    clearInterval(timer);
    timer = null;
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
    ...lines.map((line) => Object.assign(document.createElement("div"), { textContent: line })));
  if (!timer) timer = setInterval(draw, 1000);   // the time running
}

app.registerExtension({
  name: `${EXT}.ahead`,
  async setup() {
    await textsReady();
    api.addEventListener("gpugeek.ahead", ({ detail }) => { aheadUpdate(board, detail); draw(); });
  },
});
