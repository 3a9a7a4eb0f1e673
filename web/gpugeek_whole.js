// Run in the cloud: one switch next to Run, per workflow. On, a graph with no GPUGeek Cloud Execute node runs
// as one cloud part on the configured target (the server plans it as if a gateway sat after every output node,
// and the output nodes show what came back). The switch is kept in the workflow's `extra` (it travels with the
// workflow); a workflow that does not say takes the default of Settings > GPUGeek or GPUGEEK_WHOLE_WORKFLOW.
// Every queued prompt carries it as extra_data.gpugeek_whole_workflow (off too, so it wins over the default),
// and the marking plans the graph the same way, so the whole graph is marked as cloud while it is on.
import { app, api, call, tr, lang, textsReady, EXT } from "./gpugeek_common.js";
import { WHOLE } from "./lib/names.js";
import { whole, switchOf, setSwitch, withSwitch, runsOf, setRuns } from "./lib/whole.js";
import { statusLines, expectedLine, aheadMoneyLine } from "./lib/status.js";
import { seconds } from "./lib/i18n.js";
import { planNow, onPlan } from "./lib/plan_state.js";

const WRAPPED = Symbol.for("gpugeek.whole");
const ID = "gpugeek-whole-switch";
const state = { status: "", planned: false, expected: null, refused: "", ahead: null };

const root = () => app.rootGraph ?? app.graph;

export function wholeOn() {
  return switchOf(root()?.extra);
}

// how many variations run at once (kept in the workflow like the switch)
function wholeRuns() {
  return runsOf(root()?.extra);
}

const RUNS_ID = "gpugeek-whole-runs";
const RUN_CHOICES = [1, 2, 3, 4, 6, 8];

function runsPicker() {
  let el = document.getElementById(RUNS_ID);
  if (el) return el;
  el = document.createElement("select");
  el.id = RUNS_ID;
  el.style.cssText = "height:32px;margin:0 6px 0 -2px;border-radius:8px;border:1px solid #3b82f6;background:#3b82f6;" +
    "color:#fff;font:600 13px sans-serif;cursor:pointer;pointer-events:auto";
  el.addEventListener("click", (e) => e.stopPropagation());
  el.addEventListener("change", () => {
    const graph = root();
    if (!graph) return;
    graph.extra = graph.extra || {};
    setRuns(graph.extra, Number(el.value));
    try { app.extensionManager?.workflow?.activeWorkflow?.changeTracker?.checkState?.(); } catch { /* older editors */ }
    render();
  });
  return el;
}

function renderRuns(switchEl, on) {
  const el = runsPicker();
  const runs = wholeRuns();
  const choices = RUN_CHOICES.includes(runs) ? RUN_CHOICES : [...RUN_CHOICES, runs].sort((a, b) => a - b);
  if (el.dataset.choices !== choices.join(",")) {
    el.innerHTML = choices.map((n) => `<option value="${n}">\u00d7${n}</option>`).join("");
    el.dataset.choices = choices.join(",");
  }
  el.value = String(runs);
  el.title = tr("wholeRunsTip");
  el.style.display = on ? "" : "none";
  if (switchEl.parentElement && (el.previousSibling !== switchEl || el.parentElement !== switchEl.parentElement)) {
    switchEl.after(el);
  }
}

function flip() {
  const graph = root();
  if (!graph) return;
  graph.extra = graph.extra || {};
  setSwitch(graph.extra, !wholeOn());
  state.status = "";
  // the workflow changed (saved with it); the marking follows at once
  try { app.extensionManager?.workflow?.activeWorkflow?.changeTracker?.checkState?.(); } catch { /* older editors */ }
  graph.setDirtyCanvas?.(true, true);
  render();
  planNow();
}

function button() {
  let el = document.getElementById(ID);
  if (el) return el;
  el = document.createElement("button");
  el.id = ID;
  el.type = "button";
  el.setAttribute("role", "switch");
  el.style.cssText = "display:inline-flex;align-items:center;gap:6px;height:32px;padding:0 10px;margin:0 6px;" +
    "border-radius:8px;border:1px solid #3b82f6;font:600 13px sans-serif;cursor:pointer;white-space:nowrap;" +
    "pointer-events:auto";
  el.innerHTML = '<span data-part="knob" style="display:inline-block;width:26px;height:14px;border-radius:7px;' +
    'position:relative;transition:background .15s"><span style="position:absolute;top:2px;width:10px;' +
    'height:10px;border-radius:5px;background:#fff;transition:left .15s"></span></span>' +
    '<span data-part="label"></span><span data-part="status" style="font-weight:400;opacity:.9;max-width:420px;overflow:hidden;text-overflow:ellipsis"></span>';
  el.addEventListener("click", (e) => { e.stopPropagation(); flip(); });
  return el;
}

// next to Run: before the Run button's group (frontend 1.27 to 1.58), else floating at the top right
function place(el) {
  const run = document.querySelector('[data-testid="queue-button"]') || document.querySelector(".comfyui-queue-button");
  const group = run?.closest(".queue-button-group") || run?.parentElement;
  if (group?.parentElement) {
    if (el.nextSibling !== group || el.parentElement !== group.parentElement) group.parentElement.insertBefore(el, group);
    el.style.position = "";
    return;
  }
  if (!el.isConnected) document.body.appendChild(el);
  Object.assign(el.style, { position: "fixed", top: "8px", right: "280px", zIndex: 1400 });
}

function render() {
  const el = button();
  place(el);
  const on = wholeOn();
  el.setAttribute("aria-checked", String(on));
  el.dataset.on = String(on);
  // before a run, the expected price and time of the whole graph (earlier runs of it in the journal)
  const queued = aheadMoneyLine(state.ahead, lang());   // what the queue sent ahead adds to today's spending
  const expected = on && state.planned ? expectedLine(state.expected, lang()) + (queued ? `; ${queued}` : "") : "";
  el.title = (on ? tr("wholeOnTip") : tr("wholeOffTip")) + (state.refused ? `\n${state.refused}` : expected ? `\n${expected}` : "");
  // what would refuse the run (no key, a node that only makes sense here), before anything is queued: red
  const refused = on && state.refused && !state.status;
  el.style.background = refused ? "#ef4444" : on ? "#3b82f6" : "transparent";
  el.style.borderColor = refused ? "#ef4444" : "#3b82f6";
  el.style.color = on ? "#fff" : "#3b82f6";
  const knob = el.querySelector('[data-part="knob"]');
  knob.style.background = on ? "rgba(255,255,255,.45)" : "#64748b";
  knob.firstChild.style.left = on ? "14px" : "2px";
  el.querySelector('[data-part="label"]').textContent = `\u2601 ${tr("wholeSwitch")}`;
  const line = state.status || (refused ? state.refused : state.expected ? expected : "");
  el.querySelector('[data-part="status"]').textContent = on && line ? `\u00b7 ${line}` : "";
  renderRuns(el, on);
}

// queued prompts carry the switch: api.queuePrompt builds POST /prompt's body and sends it through fetchApi
function wrapFetch() {
  const original = api.fetchApi;
  if (typeof original !== "function" || original[WRAPPED]) return;
  const wrapped = function (route, options, ...rest) {
    if (route === "/prompt" && options && String(options.method).toUpperCase() === "POST" && typeof options.body === "string") {
      try { options = { ...options, body: withSwitch(options.body, wholeOn(), lang(), wholeRuns()) }; } catch (e) { console.warn("[GPUGeek] switch", e); }
    }
    return original.call(this ?? api, route, options, ...rest);
  };
  wrapped[WRAPPED] = true;
  api.fetchApi = wrapped;
}

// the whole workflow's task, told on the switch (its gateway is no node of the editor)
function followStatus() {
  api.addEventListener("gpugeek.status", ({ detail }) => {
    if (detail?.node !== WHOLE) return;
    // a ComfyUI server names no price: the time alone
    state.status = (detail.status === 3 && detail.price == null ? tr("doneIn", { t: seconds(detail.run_ms) })
      : statusLines(detail, lang())[0]) || "";
    render();
  });
  api.addEventListener("execution_start", () => { state.status = ""; render(); });
}

app.registerExtension({
  name: `${EXT}.whole`,
  init() { wrapFetch(); },
  async setup() {
    wrapFetch();
    await textsReady();
    try { whole.fallback = !!(await call("config"))?.whole_workflow; } catch { /* the default stays off */ }
    followStatus();
    onPlan((plan) => {  // the marking's plan of the graph: is it a whole workflow, and what will it cost
      state.planned = Object.values(plan.owner || {}).includes(WHOLE);
      state.expected = state.planned ? plan.expected?.[WHOLE] ?? null : null;
      state.ahead = plan.ahead;
      state.refused = state.planned ? (plan.refusals?.[WHOLE] || [])[0] || "" : "";
      render();
    });
    render();
    setInterval(render, 500);  // another workflow opened, the editor re-rendered its top bar
  },
});
