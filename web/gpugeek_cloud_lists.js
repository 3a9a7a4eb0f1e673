// A cloud node's lists are the cloud's: the combos of a node that runs only in the cloud (the plan's role
// "cloud") offer what its gateway's target has (POST /gpugeek/lists: a ComfyUI server's node definitions, what
// the cloud's refusals and successful runs taught, names the user added), the current value always kept; a
// node that runs here keeps this machine's list, and gets it back when an edit takes it out of the cloud. A
// small line under the node says where its list came from and when; the node's menu adds names by hand (for a
// GPUGeek workflow, which has no call that lists models) and reads the lists again. The key and the server's
// token never reach the browser: the server resolves the gateway's target and workflow id.
import { app, api, call, tr, lang, textsReady, toast, EXT } from "./gpugeek_common.js";
import { drawAfter } from "./lib/draw.js";
import { GATEWAY, WHOLE } from "./lib/names.js";
import { plan, onPlan } from "./lib/plan_state.js";
import { isCloudOnly } from "./lib/models.js";
import { comboWidgets, withCurrent, parseNames, lineOf, wanted, listOf } from "./lib/cloud_lists.js";

const LINE_COLOR = "#93c5fd";
// an answer is asked again after this long (a plan change within it reuses it)
const FRESH_MS = 30000;
const local = new WeakMap();   // widget -> this machine's values, given back when the node runs here again
const ours = new WeakMap();    // widget -> the values this feature set
const lines = new Map();       // node id -> where its list came from
const answers = new Map();     // request -> {at, data}
const told = new Set();        // problems already shown (once each)
let running = null;
let again = null;
// test-only: what this feature did (tests/test_e2e_cloud_lists.py)
const seen = { updates: 0, asked: 0, applied: {}, lines, problems: [] };
globalThis.__gpugeekCloudLists = seen;

const nodeById = (id) => app.graph?.getNodeById?.(id) ?? app.graph?.getNodeById?.(Number(id));
const widgetValue = (node, name) => node?.widgets?.find((w) => w.name === name)?.value ?? "";

// where a gateway runs: its own target and workflow id (empty: the settings', resolved by the server)
function placeOf(gatewayId) {
  if (String(gatewayId) === WHOLE) return { target: "", workflow_id: "" };  // Run in the cloud: the settings' cloud
  const gw = nodeById(gatewayId);
  return gw?.type === GATEWAY ? { target: String(widgetValue(gw, "target") || ""),
    workflow_id: String(widgetValue(gw, "workflow_id") || "") } : null;
}

function giveBack(node) {
  for (const w of comboWidgets(node)) {
    if (!local.has(w)) continue;
    if (w.options.values === ours.get(w)) w.options.values = local.get(w);
    local.delete(w);
    ours.delete(w);
  }
  delete seen.applied[String(node.id)];
  return lines.delete(String(node.id));
}

// the lists of an answer (each distinct list once) on a cloud node's combos
function apply(node, data) {
  const cls = node.comfyClass || node.type;
  const applied = {};
  let line = "";
  let cut = false;
  for (const w of comboWidgets(node)) {
    const entry = listOf(data, cls, w.name);
    if (!entry) {
      if (local.has(w) && w.options.values === ours.get(w)) w.options.values = local.get(w);
      local.delete(w);
      ours.delete(w);
      continue;
    }
    // the frontend may have set its own list since (a refresh of the node definitions): that is the local one
    if (!local.has(w) || w.options.values !== ours.get(w)) local.set(w, w.options.values);
    const values = withCurrent(entry.values, w.value);
    w.options.values = values;
    ours.set(w, values);
    applied[w.name] = values;
    // the first list's line, or the first cut one's: a list the answer held only the first names of says so
    if (!line || (entry.cut && !cut)) line = lineOf(entry, tr, Date.now(), lang() === "zh" ? "zh-CN" : undefined);
    cut = cut || !!entry.cut;
  }
  const id = String(node.id);
  if (Object.keys(applied).length) {
    seen.applied[id] = applied;
    lines.set(id, line);
  } else {
    delete seen.applied[id];
    lines.delete(id);
  }
}

async function ask(place, nodes, fresh) {
  const body = { ...place, nodes: wanted(nodes), lang: lang() };
  const sig = JSON.stringify(body);
  const hit = answers.get(sig);
  if (!fresh && hit && Date.now() - hit.at < FRESH_MS) return hit.data;
  seen.asked += 1;
  const data = await call("lists", body);
  answers.set(sig, { at: Date.now(), data });
  return data;
}

function tell(problems) {
  for (const p of problems || []) {
    seen.problems.push(p);
    if (told.has(p)) continue;
    told.add(p);
    toast("warn", tr("listProblem"), p);
  }
}

async function updateOnce(fresh) {
  seen.updates += 1;
  const groups = new Map();   // gateway id -> its cloud-only nodes with combos
  let changed = false;
  for (const node of app.graph?._nodes || []) {
    if (node.type === GATEWAY || !comboWidgets(node).length) continue;
    const id = String(node.id);
    const g = plan.owner?.[id];
    if (isCloudOnly(plan.roles, id) && g != null) {
      if (!groups.has(String(g))) groups.set(String(g), []);
      groups.get(String(g)).push(node);
    } else if (giveBack(node)) {
      changed = true;
    }
  }
  for (const [g, nodes] of groups) {
    const place = placeOf(g);
    if (!place) continue;
    let data;
    try {
      data = await ask(place, nodes, fresh);
    } catch (e) {
      console.warn("[GPUGeek] the cloud's lists", e);
      continue;
    }
    if (!data?.ok) {
      if (data?.message) tell([data.message]);
      continue;
    }
    tell(data.problems);
    for (const node of nodes) {
      if (isCloudOnly(plan.roles, String(node.id))) apply(node, data);   // still in the cloud
    }
    changed = true;
  }
  if (changed) app.graph?.setDirtyCanvas?.(true, true);
}

// one update at a time; a request during one runs once after it
function update(fresh = false) {
  if (running) {
    again = { fresh: fresh || again?.fresh };
    return running;
  }
  running = (async () => {
    try {
      await textsReady();
      await updateOnce(fresh);
      while (again) {
        const next = again;
        again = null;
        await updateOnce(next.fresh);
      }
    } finally {
      running = null;
    }
  })();
  return running;
}

function drawLine(node, ctx) {
  const text = lines.get(String(node.id));
  if (!text || node.flags?.collapsed || globalThis.__gpugeekCloudErrors?.has?.(String(node.id))) return;
  ctx.save();
  ctx.font = "11px sans-serif";
  ctx.fillStyle = LINE_COLOR;
  let shown = text;
  const room = Math.max(node.size[0] + 120, 300);
  while (shown.length > 4 && ctx.measureText(shown).width > room) shown = shown.slice(0, -2);
  if (shown !== text) shown = shown.slice(0, -1) + "…";
  ctx.fillText(shown, 2, node.size[1] + 14);
  ctx.restore();
}

async function typed(title, message) {
  const dialog = app.extensionManager?.dialog;
  if (typeof dialog?.prompt === "function") return dialog.prompt({ title, message, defaultValue: "" });
  return window.prompt(message, "");
}

async function addNames(node, w) {
  const place = placeOf(plan.owner?.[String(node.id)]);
  if (!place) return;
  const where = place.target || (place.workflow_id ? tr("listWorkflow", { wf: place.workflow_id }) : tr("listDefault"));
  const text = await typed(tr("listAddTitle"), tr("listAddPrompt", { input: w.label || w.name, where }));
  const names = parseNames(text);
  if (!names.length) return;
  const res = await call("lists/add", { ...place, class: node.comfyClass || node.type, input: w.name, names,
    lang: lang() });
  if (!res?.ok) {
    toast("error", tr("listAddTitle"), res?.message || "");
    return;
  }
  answers.clear();
  await update(true);
  toast("success", tr("listAdded", { n: names.length, input: w.label || w.name }), "");
}

async function refresh() {
  answers.clear();
  told.clear();
  // read the servers' definitions again: one request per gateway with refresh set
  const gateways = new Set(Object.values(plan.owner || {}).map(String));
  for (const g of gateways) {
    const place = placeOf(g);
    if (place) {
      const res = await call("lists", { ...place, nodes: {}, refresh: true, lang: lang() });
      if (!res?.ok && res?.message) tell([res.message]);
    }
  }
  await update(true);
}

function menu(node, options) {
  if (!isCloudOnly(plan.roles, String(node.id))) return;
  const combos = comboWidgets(node);
  if (!combos.length) return;
  options.push(null);
  for (const w of combos) {
    options.push({ content: tr("listAdd", { input: w.label || w.name }), callback: () => {
      addNames(node, w).catch((e) => toast("error", tr("listAddTitle"), String(e)));
    } });
  }
  options.push({ content: tr("listRefresh"), callback: () => { refresh().catch((e) => console.warn(e)); } });
}

app.registerExtension({
  name: `${EXT}.cloudLists`,
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name === GATEWAY) return;
    const orig = nodeType.prototype.getExtraMenuOptions;
    nodeType.prototype.getExtraMenuOptions = function (canvas, options) {
      const r = orig?.apply(this, [canvas, options]);
      try { menu(this, options); } catch (e) { console.warn("[GPUGeek] cloud lists menu", e); }
      return r;
    };
  },
  setup() {
    onPlan(() => { update(false); });
    // the editor's own refresh (R) gives every combo this machine's list again: the cloud's are read again too
    const refreshCombos = app.refreshComboInNodes;
    if (typeof refreshCombos === "function") {
      app.refreshComboInNodes = async function (...args) {
        const r = await refreshCombos.apply(this, args);
        refresh().catch((e) => console.warn("[GPUGeek] refreshing the cloud's lists", e));
        return r;
      };
    }
    // a refusal taught the server the cloud's list: ask again now
    api.addEventListener("gpugeek.cloud_errors", () => { answers.clear(); update(true); });
  },
  nodeCreated(node) { drawAfter(node, "__gpugeekLists", drawLine, "cloud lists"); },
  loadedGraphNode(node) { drawAfter(node, "__gpugeekLists", drawLine, "cloud lists"); },
});
