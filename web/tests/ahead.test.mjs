// The queue's prompts whose cloud part was sent ahead: the lines the box shows (web/gpugeek_ahead.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { aheadUpdate, aheadLines, aheadLine } from "../lib/aheadBoard.js";
import { installTexts, editorTexts } from "./texts.mjs";

installTexts();
const fill = (s, vars) => s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k]));

test("a prompt's part ahead: waiting for a slot, queued in the cloud, running with its time, ready", () => {
  const now = 1000;
  assert.equal(aheadLine({ number: 3, state: "waiting" }, "en", now), fill(editorTexts("en").aheadWaiting, { n: 3 }));
  assert.equal(aheadLine({ number: 3, state: "running", position: 2, started: 990 }, "en", now),
    fill(editorTexts("en").aheadQueued, { n: 3, pos: 2 }));
  assert.equal(aheadLine({ number: 3, state: "running", started: 987.5 }, "en", now),
    fill(editorTexts("en").aheadRunning, { n: 3, t: "12.5 s" }));
  assert.equal(aheadLine({ number: 3, state: "ready" }, "zh", now), fill(editorTexts("zh").aheadReady, { n: 3 }));
  assert.equal(aheadLine({ state: "running", started: 1000 }, "zh", now),
    fill(editorTexts("zh").aheadRunning, { n: "…", t: "0.0 s" }));   // not yet seen in ComfyUI's queue
});

test("the board follows the server's records, in the queue's order; a part taken or cancelled leaves it", () => {
  const board = new Map();
  aheadUpdate(board, { token: "b", number: 5, state: "waiting" });
  aheadUpdate(board, { token: "a", number: 4, state: "running", started: 0 });
  aheadUpdate(board, { token: "a", position: 1 });
  const lines = aheadLines(board, "en", 10);
  assert.equal(lines.length, 2);
  assert.equal(lines[0], fill(editorTexts("en").aheadQueued, { n: 4, pos: 1 }));
  aheadUpdate(board, { token: "a", state: "taken" });
  aheadUpdate(board, { token: "b", state: "cancelled" });
  assert.deepEqual(aheadLines(board, "en", 10), []);
  aheadUpdate(board, null);   // nothing to read: nothing changes
  assert.equal(board.size, 0);
});

test("every line has its words in both languages", () => {
  for (const lang of ["en", "zh"]) {
    for (const key of ["aheadTitle", "aheadWaiting", "aheadQueued", "aheadRunning", "aheadReady", "aheadFailed"]) {
      assert.ok(editorTexts(lang)[key], `${lang}: ${key}`);
    }
  }
});

test("the gateway's estimate says what the queue already sent ahead and the limit left after it", async () => {
  const { gatewayBox, aheadMoneyLine } = await import("../lib/status.js");
  const expected = { price: 0.25, run_ms: 4000, runs: 3, basis: "exact" };
  assert.equal(aheadMoneyLine({ tasks: 0, price: 0, unpriced: 0, left: null }, "en"), null);   // nothing ahead
  assert.equal(aheadMoneyLine(null, "en"), null);
  const ahead = { tasks: 3, price: 0.75, unpriced: 0, left: 1.25 };
  for (const lang of ["en", "zh"]) {
    const T = editorTexts(lang);
    const line = fill(T.aheadMoneyLeft, { text: fill(T.aheadMoney, { n: 3, price: "0.75" }), left: "1.25" });
    assert.equal(aheadMoneyLine(ahead, lang), line);
    assert.deepEqual(gatewayBox({ expected, ahead }, lang).lines.at(-1), line);
  }
  // no daily limit: nothing left to say; a part of unknown price is counted as such, never as 0
  assert.equal(aheadMoneyLine({ tasks: 2, price: 0.25, unpriced: 1, left: null }, "en"),
    fill(editorTexts("en").aheadMoneyUnknown, { n: 2, price: "0.25", unknown: 1 }));
  assert.deepEqual(gatewayBox({ expected }, "en").lines.length, 1);   // no queue: the estimate alone
});

test("the queue's entries carry a badge: running ahead with its time, queued in the cloud, waiting, done (en, zh)", async () => {
  const { badgeText, badgesFor, boxRecords } = await import("../lib/aheadBoard.js");
  const now = 1000;
  const running = { token: "a", prompt_id: "p-a", number: 4, state: "running", started: 988 };
  for (const lang of ["en", "zh"]) {
    const T = editorTexts(lang);
    assert.equal(badgeText(running, lang, now), fill(T.aheadBadgeRunning, { s: 12 }));
    assert.equal(badgeText({ ...running, position: 2 }, lang, now), fill(T.aheadBadgeQueued, { pos: 2 }));
    assert.equal(badgeText({ ...running, state: "waiting" }, lang, now), T.aheadBadgeWaiting);
    assert.equal(badgeText({ ...running, state: "ready" }, lang, now), T.aheadBadgeReady);
    assert.equal(badgeText({ ...running, state: "failed" }, lang, now), T.aheadBadgeFailed);
  }
  assert.equal(badgeText(running, "en", now), "☁ running ahead · 12 s");
  assert.match(badgeText(running, "zh", now), /^☁ .*12/);   // the words are locales/zh/editor.json's
  const board = new Map();
  aheadUpdate(board, running);
  aheadUpdate(board, { token: "b", prompt_id: "p-b", number: 5, state: "waiting" });
  aheadUpdate(board, { token: "c", number: 6, state: "running", started: 999 });   // its prompt id not known yet
  // the queue's rows (their job ids, the prompt ids): a badge on the rows of prompts with a part ahead, none elsewhere
  const rows = ["p-x", "p-a", "p-b"];
  assert.deepEqual(badgesFor(rows, board, "en", now),
    [{ id: "p-a", text: "☁ running ahead · 12 s" }, { id: "p-b", text: editorTexts("en").aheadBadgeWaiting }]);
  // the box keeps what no row shows: a prompt not on screen (the list closed, an editor without job ids)
  assert.deepEqual(boxRecords(board, new Set(["p-a", "p-b"])).map((r) => r.token), ["c"]);
  assert.deepEqual(boxRecords(board, new Set()).map((r) => r.token), ["a", "b", "c"]);
  assert.deepEqual(badgesFor([], board, "en", now), []);
});
