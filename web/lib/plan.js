// The queue-time plan's rules, in the browser: which nodes run in the cloud for each gateway, which
// crossings are refused. A port of offload/plan.py (roles, regions, groups, refusals); both run the same
// test vectors (tests/fixtures/plan_vectors.json), so the marking in the editor cannot drift from what
// the server will do. Pure: no DOM, no ComfyUI.

export const GATEWAY = "GPUGeekCloudExecute";
export const UPLOAD = "GPUGeekUploadImage";
export const IMAGE_INPUTS = ["image_1", "image_2", "image_3", "image_4"];
export const MASK_INPUTS = ["mask_1", "mask_2"];
export const GATEWAY_OUTPUTS = [...IMAGE_INPUTS, ...MASK_INPUTS];
const SCALARS = new Set(["STRING", "INT", "FLOAT", "BOOLEAN"]);
const PIXELS = new Set(["IMAGE", "MASK"]);

export function isLink(v) {
  return Array.isArray(v) && v.length === 2 && (typeof v[0] === "string" || typeof v[0] === "number") &&
    Number.isInteger(v[1]) && typeof v[1] !== "boolean";
}

function* links(node) {
  for (const [name, v] of Object.entries((node && node.inputs) || {})) {
    if (isLink(v)) yield [name, String(v[0]), v[1]];
  }
}

function label(prompt, id) {
  const node = prompt[id] || {};
  const title = (node._meta && node._meta.title) || node.class_type || "?";
  return `#${id} ${title}`;
}

function outType(prompt, classes, id, slot, consumer) {
  const info = classes[(prompt[id] || {}).class_type];
  if (info && slot >= 0 && slot < (info.outputs || []).length) return info.outputs[slot];
  if (consumer) {
    const c = classes[(prompt[consumer[0]] || {}).class_type];
    if (c && c.inputs && consumer[1] in c.inputs) return c.inputs[consumer[1]];
  }
  return null;
}

function isOutput(node, classes, id, consumers) {
  const info = classes[node.class_type];
  if (info) return !!info.output_node;
  return !consumers.has(id) && node.class_type !== GATEWAY && node.class_type !== UPLOAD;
}

const sorted = (it) => [...it].sort();

// a value made of plain values only (a seed, a prompt text) can run here as well; one computed from cloud
// work (an image's size, a model's output) cannot
function scalarOnly(prompt, classes, start, owner) {
  const seen = new Set();
  const stack = [start];
  while (stack.length) {
    const n = stack.pop();
    if (seen.has(n) || !(n in owner)) continue;
    seen.add(n);
    const info = classes[(prompt[n] || {}).class_type];
    if (!info || !(info.outputs || []).length || info.outputs.some((o) => !SCALARS.has(o))) return false;
    for (const [, src] of links(prompt[n])) stack.push(src);
  }
  return true;
}
// gateways share a task only where they run in the same place: same workflow id and target
const wf = (prompt, g) => `${String((prompt[g].inputs || {}).workflow_id ?? "").trim()}|${String((prompt[g].inputs || {}).target ?? "").trim()}`;

function findCycle(prompt, nodes) {
  const color = new Map();
  const srcs = (n) => sorted([...links(prompt[n])].map(([, s]) => s).filter((s) => nodes.has(s)));
  for (const start of sorted(nodes)) {
    if (color.has(start)) continue;
    const stack = [[start, srcs(start), 0]];
    const path = [start];
    color.set(start, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      if (top[2] >= top[1].length) {
        color.set(top[0], 2);
        stack.pop();
        path.pop();
        continue;
      }
      const nxt = top[1][top[2]++];
      if (color.get(nxt) === 1) return [...path.slice(path.indexOf(nxt)), nxt];
      if (!color.has(nxt)) {
        color.set(nxt, 1);
        path.push(nxt);
        stack.push([nxt, srcs(nxt), 0]);
      }
    }
  }
  return null;
}

/**
 * @param {object} prompt API prompt {id: {class_type, inputs}}
 * @param {object} classes class_type -> {outputs: [type], output_node: bool, inputs: {name: type}}
 * @returns {{roles, refusals, groups, regions, localNodes, owner}}
 */
export function makePlan(prompt, classes) {
  const ids = Object.keys(prompt).filter((n) => prompt[n] && typeof prompt[n] === "object");
  const gateways = sorted(ids.filter((n) => prompt[n].class_type === GATEWAY));
  if (!gateways.length) {
    return { roles: Object.fromEntries(ids.map((n) => [n, "local"])), refusals: {}, groups: {}, regions: {},
             localNodes: sorted(ids), owner: {} };
  }
  const boundaries = new Set(ids.filter((n) => [GATEWAY, UPLOAD].includes(prompt[n].class_type)));
  const refusals = Object.fromEntries(gateways.map((g) => [g, []]));
  const cloud = gateways.filter((g) => String((prompt[g].inputs || {}).run_on ?? "cloud") !== "local");
  const consumers = new Map();
  for (const n of ids) for (const [name, src, slot] of links(prompt[n])) {
    if (!consumers.has(src)) consumers.set(src, []);
    consumers.get(src).push([n, name, slot]);
  }

  const region = {};
  for (const g of gateways) {
    const linked = [...links(prompt[g])].filter(([name]) => GATEWAY_OUTPUTS.includes(name));
    if (!linked.length) {
      refusals[g].push(`${label(prompt, g)} has nothing connected: connect the image you want back from the cloud to image_1 (or a mask to mask_1).`);
    }
    const seen = new Set();
    const stack = linked.map(([, src]) => src).filter((s) => !boundaries.has(s));
    while (stack.length) {
      const n = stack.pop();
      if (seen.has(n)) continue;
      if (!(n in prompt)) {
        refusals[g].push(`A node links to node #${n}, which is not in the graph: reconnect or delete the link in the cloud part.`);
        continue;
      }
      seen.add(n);
      for (const [, src] of links(prompt[n])) if (!boundaries.has(src) && !seen.has(src)) stack.push(src);
    }
    region[g] = seen;
    for (const [name, src, slot] of linked) {
      const want = MASK_INPUTS.includes(name) ? "MASK" : "IMAGE";
      const t = outType(prompt, classes, src, slot);
      if (t !== null && t !== want) {
        refusals[g].push(`${name} of ${label(prompt, g)} receives ${t} from ${label(prompt, src)}: connect an ${want} there.`);
      }
    }
  }

  const lead = Object.fromEntries(gateways.map((g) => [g, g]));
  const find = (g) => { while (lead[g] !== g) g = lead[g]; return g; };
  for (let i = 0; i < cloud.length; i++) for (const b of cloud.slice(i + 1)) {
    const a = cloud[i];
    const shared = [...region[a]].some((n) => region[b].has(n));
    if (shared && wf(prompt, a) === wf(prompt, b)) {
      const ra = find(a), rb = find(b);
      if (ra !== rb) { const [lo, hi] = [ra, rb].sort(); lead[hi] = lo; }
    }
  }
  const groups = Object.fromEntries(gateways.map((g) => [g, find(g)]));
  const members = {};
  for (const g of cloud) (members[groups[g]] ||= []).push(g);
  const groupRegion = {};
  for (const [L, ms] of Object.entries(members)) groupRegion[L] = new Set(ms.flatMap((g) => [...region[g]]));

  const owner = {};
  for (const L of sorted(Object.keys(groupRegion))) for (const n of sorted(groupRegion[L])) if (!(n in owner)) owner[n] = L;
  for (const n of ids) {
    if (n in owner || boundaries.has(n)) continue;
    const node = prompt[n];
    const info = classes[node.class_type];
    const sink = info ? !!info.output_node : !consumers.has(n);
    const srcs = [...links(node)].map(([, s]) => s);
    if (sink && srcs.length && srcs.every((s) => s in owner) && new Set(srcs.map((s) => owner[s])).size === 1) {
      owner[n] = owner[srcs[0]];
      groupRegion[owner[n]].add(n);
    }
  }
  for (const [L, nodes] of Object.entries(groupRegion)) {
    const cyc = findCycle(prompt, nodes);
    if (cyc) refusals[L].push(`The cloud part has a cycle (${cyc.map((n) => label(prompt, n)).join(" -> ")}): remove one of those links.`);
  }

  const localOutputs = ids.filter((n) => !(n in owner) && isOutput(prompt[n], classes, n, consumers));
  const needed = new Set();
  const rewires = [];
  const flagged = new Set();  // local nodes that a refused crossing reaches: marked in the editor
  const stack = [...localOutputs, ...gateways];
  while (stack.length) {
    const n = stack.pop();
    if (needed.has(n) || !(n in prompt)) continue;
    needed.add(n);
    const node = prompt[n];
    const cloudGw = node.class_type === GATEWAY && cloud.includes(n);
    for (const [name, src, slot] of links(node)) {
      if (!(src in owner)) { stack.push(src); continue; }
      if (cloudGw && GATEWAY_OUTPUTS.includes(name) && (region[n] || new Set()).has(src)) continue;
      const t = outType(prompt, classes, src, slot, [n, name]);
      if (n in owner || (SCALARS.has(t) && scalarOnly(prompt, classes, src, owner))) stack.push(src);
      else if (SCALARS.has(t)) {
        flagged.add(n);
        refusals[owner[src]].push(`${t} cannot cross from the cloud part (${label(prompt, src)}) to the local node ${label(prompt, n)}: it is computed from cloud work. Give ${label(prompt, n)} its own local value, or move it into the cloud part.`);
      } else if (PIXELS.has(t)) rewires.push([n, name, owner[src], src, slot, t]);
      else {
        flagged.add(n);
        refusals[owner[src]].push(`${t || "An output of unknown type"} cannot cross from the cloud part (${label(prompt, src)}) to the local node ${label(prompt, n)}: move ${label(prompt, n)} into the cloud part (so it feeds the gateway) or give it its own local input.`);
      }
    }
  }
  // free gateway outputs for pixel crossings out
  const used = Object.fromEntries(gateways.map((g) => [g, new Set([...links(prompt[g])].map(([n]) => n).filter((n) => GATEWAY_OUTPUTS.includes(n)))]));
  const slotOf = new Map();
  for (const g of cloud) for (const [name, src, slot] of links(prompt[g])) {
    if (GATEWAY_OUTPUTS.includes(name) && region[g].has(src)) {
      const k = `${src}|${slot}|${g}`;
      if (!slotOf.has(k)) slotOf.set(k, GATEWAY_OUTPUTS.indexOf(name));
    }
  }
  rewires.sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
  for (const [n, , L, src, slot, t] of rewires) {
    let done = false;
    for (const g of members[L]) {
      for (const [k, idx] of slotOf) {
        const [s2, sl2, g2] = k.split("|");
        if (g2 === g && s2 === src && Number(sl2) === slot && MASK_INPUTS.includes(GATEWAY_OUTPUTS[idx]) === (t === "MASK")) { done = true; break; }
      }
      if (done) break;
    }
    if (!done) {
      const names = t === "MASK" ? MASK_INPUTS : IMAGE_INPUTS;
      for (const g of members[L]) {
        const free = names.filter((x) => !used[g].has(x));
        if (region[g].has(src) && free.length) {
          used[g].add(free[0]);
          slotOf.set(`${src}|${slot}|${g}`, GATEWAY_OUTPUTS.indexOf(free[0]));
          done = true;
          break;
        }
      }
    }
    if (!done) {
      refusals[L].push(`${label(prompt, n)} needs a ${t} from the cloud part (${label(prompt, src)}) but ${label(prompt, L)} has no free ${t.toLowerCase()} output left: route it through the gateway's outputs instead.`);
    }
  }

  // a merged group is sent as one task: if one of its gateways cannot be sent, none of them can
  for (const ms of Object.values(members)) {
    const bad = ms.filter((g) => refusals[g].length);
    for (const g of ms) {
      if (bad.length && !refusals[g].length) {
        refusals[g].push(`${label(prompt, g)} shares its cloud part with ${label(prompt, bad[0])}, which cannot be sent: fix that gateway first.`);
      }
    }
  }
  const roles = {};
  for (const n of ids) roles[n] = n in owner ? (needed.has(n) ? "both" : "cloud") : "local";
  const refusedGroups = new Set(Object.keys(members).filter((L) => members[L].some((g) => refusals[g].length)));
  const kept = new Set([...refusedGroups].flatMap((L) => [...groupRegion[L]]));
  const local = new Set(ids.filter((n) => !(n in owner) || needed.has(n) || kept.has(n)));
  // nodes no output needs never run; those that read a removed node go too (as the server does)
  for (let changed = true; changed;) {
    changed = false;
    for (const n of [...local]) {
      if (needed.has(n) || n in owner) continue;
      if ([...links(prompt[n])].some(([, src]) => src in prompt && !local.has(src))) { local.delete(n); changed = true; }
    }
  }
  const localNodes = sorted(local);
  const regions = {};
  for (const [L, nodes] of Object.entries(groupRegion)) regions[L] = sorted(nodes);
  return {
    roles,
    refusals: Object.fromEntries(Object.entries(refusals).filter(([, r]) => r.length)),
    groups,
    regions,
    localNodes,
    owner,
    flagged: sorted(flagged),
  };
}
