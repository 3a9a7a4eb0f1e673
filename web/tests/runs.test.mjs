// A gateway with runs > 1 (a fan-out): its line of runs, its cells, its expected line (the price of all
// runs, or an estimate scaled from other sizes or steps), and the tasks tab's groups of runs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { money } from "../lib/i18n.js";
import { runCells, runsLine, runsKind, doneRecord, isFanOut } from "../lib/runs.js";
import { statusLines, expectedLine, gatewayBox } from "../lib/status.js";
import { groupTasks, groupSummary } from "../lib/tasks.js";
import { installTexts, editorTexts } from "./texts.mjs";

installTexts();
const zh = editorTexts("zh");
const fill = (s, vars) => s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k]));
// a record as the server sends it while run 4 of 8 runs
const live = { node: "10", status: 2, run_ms: 2100, task_id: "p3", run: 3, runs: 8, runs_done: 3,
  run_states: [3, 3, 2, 3, 2, 1, 1, 0] };

test("a fan-out's runs: one cell per run in run order, and a line that counts them", () => {
  assert.equal(isFanOut(live), true);
  assert.deepEqual(runCells(live), ["done", "done", "running", "done", "running", "queued", "queued", "waiting"]);
  assert.equal(runsLine(live, "en"), "3/8 done · 2 running · 2 queued · 1 submitting");
  assert.equal(runsLine({ ...live, run_states: [3, 3, 3, 4, 5, 5, 3, 9] }, "en"),
    "3/8 done · 1 submitting · 1 failed · 2 cancelled");   // the server's runs_done counts; 9: not known here
  const zhLine = runsLine(live, "zh");
  assert.ok(zhLine.startsWith(fill(zh.runsDone, { done: 3, runs: 8 })), zhLine);
  assert.ok(zhLine.includes(fill(zh.runs_running, { n: 2 })), zhLine);
  assert.equal(runsLine({ status: 2, run_ms: 5 }, "en"), null);         // runs = 1: no such fields, no line
  assert.deepEqual(runCells({ runs: 1, run_states: [2] }), []);
});

test("a fan-out's colour: a failure first, then work under way, then all done", () => {
  assert.equal(runsKind(["done", "running", "queued"]), "running");
  assert.equal(runsKind(["done", "failed", "running"]), "failed");
  assert.equal(runsKind(["queued", "waiting"]), "queued");
  assert.equal(runsKind(["done", "queued"]), "running");
  assert.equal(runsKind(["done", "cancelled"]), "cancelled");
  assert.equal(runsKind(["done", "done"]), "done");
});

test("the gateway's lines during a fan-out: the count, then the run the update is about", () => {
  assert.deepEqual(statusLines(live, "en"), ["3/8 done · 2 running · 2 queued · 1 submitting", "run 4: running 2.1 s", "task p3"]);
  const zhLines = statusLines(live, "zh");
  assert.equal(zhLines[1], fill(zh.runOf, { run: 4, text: fill(zh.running, { t: "2.1 s" }) }));
  // a single task's lines are as before
  assert.deepEqual(statusLines({ status: 2, run_ms: 2100, task_id: "p" }, "en"), ["running 2.1 s", "task p"]);
});

test("the box: the cells under the progress text too (it only counts the runs); the whole status when alone", () => {
  assert.deepEqual(gatewayBox({ live, progressShown: true }, "en"), { kind: "runs", lines: [], cells: runCells(live) });
  const alone = gatewayBox({ live, progressShown: false }, "en");
  assert.equal(alone.kind, "status");
  assert.equal(alone.lines[0], "3/8 done · 2 running · 2 queued · 1 submitting");
  assert.equal(alone.cells.length, 8);
  assert.equal(gatewayBox({ live: { status: 2, run_ms: 1 }, progressShown: true }, "en"), null);
});

test("once the prompt ran: every run done, the summed price, every task id", () => {
  const rec = doneRecord({ state: "done", task_id: "a,b,c", task_ids: ["a", "b", "c"], run_ms: 1000, price: 0.75 });
  assert.deepEqual(rec.run_states, [3, 3, 3]);
  assert.deepEqual(statusLines(rec, "en"), ["3/3 done", "done in 1.0 s, price 0.75", "task a, b, c"]);
  assert.equal(statusLines(rec, "zh")[0], fill(zh.runsDone, { done: 3, runs: 3 }));
  const one = doneRecord({ state: "done", task_id: "a", task_ids: ["a"], run_ms: 1000, price: 0.25 });
  assert.deepEqual(one, { status: 3, task_id: "a", run_ms: 1000, price: 0.25, bytes_down: undefined,
    bytes_up: undefined, transfer: undefined });
});

test("a finished run says how its images came back and the bytes it moved, in both languages", () => {
  const info = { state: "done", task_id: "a", task_ids: ["a"], run_ms: 1000, price: 0.25, bytes_down: 4_780_000,
    uploaded_bytes: 0, transfer: "compact" };
  assert.deepEqual(statusLines(doneRecord(info), "en"),
    ["done in 1.0 s, price 0.25", "4.8 MB back (compact), 0 KB up", "task a"]);
  assert.equal(statusLines(doneRecord({ ...info, transfer: "lossless" }), "en")[1], "4.8 MB back (lossless), 0 KB up");
  assert.equal(statusLines(doneRecord(info), "zh")[1],
    fill(zh.broughtBack, { down: "4.8 MB", up: "0 KB", how: zh.transferCompact }));
  // before the files came (the cloud's own "done" status), no such line
  assert.deepEqual(statusLines({ status: 3, run_ms: 1000, price: 0.25, task_id: "a" }, "en"),
    ["done in 1.0 s, price 0.25", "task a"]);
});

test("the expected line: for N runs at once, and scaled from other sizes or steps, in both languages", () => {
  const e = { price: 1, run_ms: 12000, runs: 5, basis: "exact", runs_at_once: 4 };
  assert.equal(expectedLine(e, "en"), "expected ~1 for 4 runs, ~12.0 s (5 earlier runs)");
  assert.equal(expectedLine({ ...e, basis: "shape" }, "en"),
    "expected ~1 for 4 runs, ~12.0 s (from 5 runs of this graph with other seeds or texts)");
  assert.equal(expectedLine({ ...e, basis: "scaled" }, "en"),
    "expected ~1 for 4 runs, ~12.0 s (from 5 runs of this graph at other sizes or steps)");
  assert.equal(expectedLine({ price: 0.123456, run_ms: 3000, runs: 2, basis: "scaled" }, "en"),
    "expected ~0.1235, ~3.0 s (from 2 runs of this graph at other sizes or steps)");
  assert.equal(expectedLine({ ...e, basis: "workflow" }, "zh"),
    fill(zh.expected_runs_workflow, { price: 1, time: "12.0 s", n: 5, runs: 4 }));
  assert.equal(expectedLine({ price: 0.2, run_ms: 3000, runs: 2, basis: "scaled" }, "zh"),
    fill(zh.expected_scaled, { price: 0.2, time: "3.0 s", n: 2 }));
  assert.equal(expectedLine({ price: null, run_ms: 3000, runs: 2, runs_at_once: 3 }, "en"), "expected ~? for 3 runs, ~3.0 s (2 earlier runs)");
  assert.equal(expectedLine({ ...e, runs_at_once: 1 }, "en"), "expected ~1, ~12.0 s (5 earlier runs)");
});

test("prices read as people write them", () => {
  assert.equal(money(0.1 * 3), "0.3");
  assert.equal(money(0.25), "0.25");
  assert.equal(money(12), "12");
  assert.equal(money(0.000123), "0.00012");
  assert.equal(money(0), "0");
  assert.equal(money(null), "?");
  assert.equal(money(undefined), "?");
});

const task = (id, extra = {}) => ({ prompt_id: id, status: "succeeded", created: 100, price: 0.25, ...extra });

test("tasks tab: the runs of one gateway execution are one entry, in run order, where its newest run stands", () => {
  const tasks = [task("x9", { created: 300 }),
    task("g2", { group: "G", run: 2, runs: 3, created: 202 }), task("y", { created: 201 }),
    task("g0", { group: "G", run: 0, runs: 3, created: 200 }), task("g1", { group: "G", run: 1, runs: 3, created: 200 }),
    task("h1", { group: "H", run: 1, runs: 2 }), task("h0", { group: "H", run: 0, runs: 2 }), task("z")];
  const entries = groupTasks(tasks);
  assert.deepEqual(entries.map((e) => e.task ? e.task.prompt_id : e.group), ["x9", "G", "y", "H", "z"]);
  assert.deepEqual(entries[1].runs.map((t) => t.prompt_id), ["g0", "g1", "g2"]);
  assert.deepEqual(entries[3].runs.map((t) => t.prompt_id), ["h0", "h1"]);
  assert.deepEqual(groupTasks([]), []);
  assert.deepEqual(groupTasks(undefined), []);
});

test("tasks tab: a group's header counts, sums, cancels the active runs and loads every run in run order", () => {
  const expected = { price: 0.25, run_ms: 4000, runs: 6, basis: "exact" };
  const runs = [task("a", { run: 0, runs: 4 }), task("b", { run: 1, runs: 4, status: "running", price: null, expected }),
    task("c", { run: 2, runs: 4, status: "queued", price: null, expected, created: 90 }), task("d", { run: 3, runs: 4, status: "failed", price: 0.1 })];
  const s = groupSummary(runs);
  assert.equal(s.total, 4);
  assert.equal(s.done, 1);
  assert.equal(money(s.price), "0.35");
  assert.equal(s.status, "running");
  assert.deepEqual(s.cancelIds, ["b", "c"]);
  assert.equal(s.loadIds, "a,b,c");
  assert.equal(s.created, 90);
  assert.deepEqual(s.expected, { ...expected, price: 1, runs_at_once: 4 });
  assert.equal(expectedLine(s.expected, "en"), "expected ~1 for 4 runs, ~4.0 s (6 earlier runs)");
  const done = groupSummary([task("a", { run: 0, runs: 2 }), task("b", { run: 1, runs: 2 })]);
  assert.deepEqual([done.status, done.done, done.price, done.cancelIds, done.loadIds, done.expected],
    ["succeeded", 2, 0.5, [], "a,b", null]);
  assert.equal(groupSummary([task("a", { status: "failed" }), task("b", { status: "cancelled" })]).status, "failed");
  assert.equal(groupSummary([task("a"), task("b", { status: "cancelled" })]).status, "cancelled");
  // fewer runs listed than ran (the tab lists the newest tasks only): the total is the runs' own count
  assert.equal(groupSummary([task("a", { run: 2, runs: 3 })]).total, 3);
});
