// The cloud's lists for a cloud node's combos (web/gpugeek_cloud_lists.js): which combos a node has, a combo's list
// in the server's answer, the values it offers in the cloud (the current value kept, so nothing a workflow names
// is lost), what the user
// typed as names, and the line that says where a list came from and when. Pure: no DOM, no ComfyUI.

// the combo widgets of a node (the frontend's own combos: type "combo", values in options.values)
export function comboWidgets(node) {
  return (node?.widgets || []).filter((w) => w && w.type === "combo" && w.name && w.options);
}

// what a cloud node's combo offers: the cloud's list, and the current value where no list knows it
export function withCurrent(values, current) {
  const out = Array.isArray(values) ? values.slice() : [];
  if (current !== undefined && current !== null && current !== "" && !out.includes(current)) out.unshift(current);
  return out;
}

// one combo's list in an answer of POST /gpugeek/lists: each distinct list is sent once (data.values) and each
// class's input names its place there ({list, sources}, and cut: the whole list's length where the answer, bounded
// in bytes, holds only its first names); null where the answer has none for it
export function listOf(data, cls, input) {
  const entry = data?.lists?.[cls]?.[input];
  const values = Number.isInteger(entry?.list) ? data?.values?.[entry.list] : undefined;
  if (!Array.isArray(values)) return null;
  const cut = Number.isInteger(entry.cut) && entry.cut > values.length ? entry.cut : null;
  return { values, sources: Array.isArray(entry.sources) ? entry.sources : [], cut };
}

// names as a user types them: one per line or separated by commas, trimmed, each once
export function parseNames(text) {
  const seen = new Set();
  for (const n of String(text || "").split(/[\n,]/)) {
    const name = n.trim();
    if (name) seen.add(name);
  }
  return [...seen];
}

// "12:03" for today, else the date and time, in the editor's locale
export function when(at, now = Date.now(), locale = undefined) {
  if (!at) return "";
  const d = new Date(at * 1000);
  const today = new Date(now).toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleString(locale, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

// one line: where the list came from and when, best source first ("from the server 12:03 · 2 added by you")
export function describe(sources, tr, now = Date.now(), locale = undefined) {
  return lineOf({ sources }, tr, now, locale);
}

// the line of a combo's list (listOf): first, where the answer held only its first names, how many of how many
// (the line is shortened at its end on a narrow node); then where it came from and when
export function lineOf(entry, tr, now = Date.now(), locale = undefined) {
  const parts = (entry?.sources || []).map((s) => tr(`listSrc_${s.source}`, { n: s.count, when: when(s.at, now, locale) }));
  if (entry?.cut) parts.unshift(tr("listCut", { n: entry.values.length, total: entry.cut }));
  return parts.length ? tr("listFrom", { sources: parts.join(" · ") }) : "";
}

// the request for one gateway's cloud nodes: {class: [combo names]}
export function wanted(nodes) {
  const out = {};
  for (const node of nodes) {
    const cls = node.comfyClass || node.type;
    const names = comboWidgets(node).map((w) => w.name);
    if (!cls || !names.length) continue;
    out[cls] = [...new Set([...(out[cls] || []), ...names])];
  }
  return out;
}
