"""Queue-time planning: API prompt -> local prompt + one cloud plan per gateway + refusals. Pure: no I/O.

The rules are DESIGN.md's "What goes to the cloud, exactly"; the cases a user hits are decided here:

* Node ids are opaque strings (``"12:5"`` from subgraphs is fine); ids the plan adds start ``gpugeek_``.
* Region R(G): every node reachable upstream from G's linked image/mask inputs, not walking through
  boundaries (``GPUGeekUploadImage`` nodes and other gateways). A gateway input linked straight to a
  boundary is passed through (no cloud work for it).
* An output node (OUTPUT_NODE, or a node of a class not installed locally that nothing consumes) whose
  linked inputs all come from one region joins it; its files come back.
* Crossings in come only from boundaries: IMAGE/MASK travel as uploads read by a cloud LoadImage /
  LoadImageMask; STRING/INT/FLOAT/BOOLEAN are written in as literals at run time.
* Crossings out (a region node feeding a local node other than its gateway): IMAGE/MASK are served from
  the cloud results through a free image/mask output of the gateway (refused when none is free);
  STRING/INT/FLOAT/BOOLEAN made of plain values only (a primitive seed or text, and values computed from
  such) run here as well ("both"); a value computed from cloud work, and any other type, is refused.
* Two cloud gateways whose regions share nodes and that name the same workflow id are merged into one
  cloud task, run by the first of them (by id); the others take their images from that task, so the
  shared part is paid once. With different workflow ids they cannot share a task: each pays its own.
* A gateway set to run here (``run_on = local``) leaves its region local and passes its inputs through.
* Refused: a gateway with nothing linked; a link to a node that does not exist in the cloud part; a cycle
  in the cloud part; a wrong type on a gateway input; a crossing of any other type (LATENT, MODEL,
  CONDITIONING...). Refusals are per gateway, as sentences that name the nodes and say what to do.
* A cloud LoadImage whose file exists in the local input folder (``file_exists`` says) is uploaded and
  pointed at its URL at run time; a file that does not exist here is passed on by name.
* Nodes of a region that no local node needs are removed from the local prompt, so local validation never
  sees cloud-only models, files or node types; a refused group keeps them (no dangling links in ComfyUI's
  report). A prompt without gateways is returned unchanged.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Callable

from .cloud_prompt import _add_save, _cloud_prompt
from .graph import (CROSS_PREFIX, GATEWAY, GATEWAY_OUTPUTS, IMAGE_INPUTS, LEAD_INPUT,  # noqa: F401
                    MASK_INPUTS, PIXELS, PLAN_INPUT, SCALARS, SKIP_UPLOAD_INPUT, TARGET_INPUT, TASK_ID_SLOT,
                    UPLOAD, UPLOAD_URL_SLOT, ClassInfo, ClassTable, node_label, node_links, is_link,
                    out_type, plan_hash, shape_hash)

@dataclass
class PlanResult:
    local_prompt: dict
    plans: dict       # gateway id -> plan dict (JSON-serialisable), also written into the gateway's input
    refusals: dict    # gateway id -> [sentence]
    roles: dict       # node id -> "local" | "cloud" | "both"
    groups: dict      # gateway id -> id of the gateway that runs its task


def make_plan(prompt: dict, classes: ClassTable, file_exists: Callable[[str], bool] | None = None) -> PlanResult:
    file_exists = file_exists or (lambda name: False)
    gateways = sorted(n for n, v in prompt.items() if isinstance(v, dict) and v.get("class_type") == GATEWAY)
    if not gateways:
        return PlanResult(prompt, {}, {}, {n: "local" for n in prompt}, {})
    boundaries = {n for n, v in prompt.items() if isinstance(v, dict) and v.get("class_type") in (GATEWAY, UPLOAD)}
    refusals: dict[str, list[str]] = {g: [] for g in gateways}
    cloud = [g for g in gateways if str(prompt[g].get("inputs", {}).get("run_on", "cloud")) != "local"]

    # consumers: node id -> [(consumer id, input name, slot)]
    consumers: dict[str, list] = {}
    for nid, node in prompt.items():
        for name, src, slot in node_links(node):
            consumers.setdefault(src, []).append((nid, name, slot))

    # ---- regions -------------------------------------------------------------------------------------
    region: dict[str, set] = {}
    for g in gateways:
        linked = [(name, src, slot) for name, src, slot in node_links(prompt[g]) if name in GATEWAY_OUTPUTS]
        if not linked:
            refusals[g].append(f"{node_label(prompt, g)} has nothing connected: connect the image you want back "
                               "from the cloud to image_1 (or a mask to mask_1).")
        seen: set = set()
        stack = [src for _, src, _ in linked if src not in boundaries]
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            if n not in prompt:
                refusals[g].append(f"A node links to node #{n}, which is not in the graph: reconnect or delete "
                                   "the link in the cloud part.")
                continue
            seen.add(n)
            for _, src, _ in node_links(prompt[n]):
                if src not in boundaries and src not in seen:
                    stack.append(src)
        region[g] = seen
        for name, src, slot in linked:
            want = "MASK" if name in MASK_INPUTS else "IMAGE"
            t = out_type(prompt, classes, src, slot)
            if t is not None and t != want:
                refusals[g].append(f"{name} of {node_label(prompt, g)} receives {t} from {node_label(prompt, src)}: "
                                   f"connect an {want} there.")

    # ---- merge cloud gateways whose regions share nodes (same workflow id): pay the shared part once ----
    lead = {g: g for g in gateways}

    def find(g):
        while lead[g] != g:
            g = lead[g]
        return g
    for i, a in enumerate(cloud):
        for b in cloud[i + 1:]:
            if region[a] & region[b] and _wf(prompt, a) == _wf(prompt, b):
                ra, rb = find(a), find(b)
                if ra != rb:
                    lead[max(ra, rb)] = min(ra, rb)
    groups = {g: find(g) for g in gateways}
    members: dict[str, list] = {}
    for g in cloud:
        members.setdefault(groups[g], []).append(g)
    group_region = {L: set().union(*(region[g] for g in ms)) for L, ms in members.items()}

    # cloud output nodes join the region whose nodes feed all their links
    owner: dict[str, str] = {}      # cloud node -> leading gateway
    for L in sorted(group_region):
        for n in sorted(group_region[L]):
            owner.setdefault(n, L)
    for nid, node in prompt.items():
        if nid in owner or nid in boundaries or not isinstance(node, dict):
            continue
        info = classes.get(node.get("class_type"))
        sink = (info.output_node if info is not None else nid not in consumers)
        srcs = [src for _, src, _ in node_links(node)]
        if sink and srcs and all(s in owner for s in srcs) and len({owner[s] for s in srcs}) == 1:
            owner[nid] = owner[srcs[0]]
            group_region[owner[nid]].add(nid)

    # cycles inside a cloud part
    for L, nodes in group_region.items():
        cyc = _find_cycle(prompt, nodes)
        if cyc:
            refusals[L].append("The cloud part has a cycle (" + " -> ".join(node_label(prompt, n) for n in cyc)
                               + "): remove one of those links.")

    # ---- which nodes still run here ------------------------------------------------------------------
    local_outputs = [n for n, v in prompt.items() if isinstance(v, dict) and n not in owner and _is_output(v, classes, n, consumers)]
    needed: set = set()
    rewires: list = []   # (consumer, input, leading gateway, src, slot, type)
    stack = list(local_outputs) + [g for g in gateways]
    while stack:
        n = stack.pop()
        if n in needed or n not in prompt:
            continue
        needed.add(n)
        node = prompt[n]
        is_cloud_gw = node.get("class_type") == GATEWAY and n in cloud
        for name, src, slot in node_links(node):
            if src not in owner:
                stack.append(src)
                continue
            if is_cloud_gw and name in GATEWAY_OUTPUTS and src in region.get(n, ()):  # its own cloud input
                continue
            t = out_type(prompt, classes, src, slot, (n, name))
            if n in owner or (t in SCALARS and _scalar_only(prompt, classes, src, owner)):
                stack.append(src)            # a value made of values only: it runs here as well ("both")
            elif t in SCALARS:
                refusals[owner[src]].append(
                    f"{t} cannot cross from the cloud part ({node_label(prompt, src)}) to the local node "
                    f"{node_label(prompt, n)}: it is computed from cloud work. Give {node_label(prompt, n)} its own "
                    "local value, or move it into the cloud part.")
            elif t in PIXELS:
                rewires.append((n, name, owner[src], src, slot, t))
            else:
                what = t or "An output of unknown type"
                refusals[owner[src]].append(
                    f"{what} cannot cross from the cloud part ({node_label(prompt, src)}) to the local node "
                    f"{node_label(prompt, n)}: move {node_label(prompt, n)} into the cloud part (so it feeds the "
                    "gateway) or give it its own local input.")

    # crossing-out pixels take a free gateway output of the group
    slot_of: dict = {}   # (src, slot) -> (gateway, output index)
    used = {g: {name for name, _, _ in node_links(prompt[g]) if name in GATEWAY_OUTPUTS} for g in gateways}
    for g in cloud:
        for name, src, slot in node_links(prompt[g]):
            if name in GATEWAY_OUTPUTS and src in region[g]:
                slot_of.setdefault((src, slot, g), GATEWAY_OUTPUTS.index(name))
    cross_out: dict = {}   # gateway -> {output index: (src, slot, type)}
    for n, name, L, src, slot, t in sorted(rewires):
        done = None
        for g in members[L]:
            for (s2, sl2, g2), idx in slot_of.items():
                if g2 == g and s2 == src and sl2 == slot and (GATEWAY_OUTPUTS[idx] in MASK_INPUTS) == (t == "MASK"):
                    done = (g, idx)
                    break
            if done:
                break
        if not done:
            names = MASK_INPUTS if t == "MASK" else IMAGE_INPUTS
            for g in members[L]:
                free = [x for x in names if x not in used[g]]
                if src in region[g] and free:
                    used[g].add(free[0])
                    done = (g, GATEWAY_OUTPUTS.index(free[0]))
                    slot_of[(src, slot, g)] = done[1]
                    cross_out.setdefault(g, {})[done[1]] = (src, slot, t)
                    break
        if not done:
            refusals[L].append(f"{node_label(prompt, n)} needs a {t} from the cloud part ({node_label(prompt, src)}) but "
                               f"{node_label(prompt, L)} has no free {t.lower()} output left: route it through the "
                               "gateway's outputs instead.")
            continue
        cross_out.setdefault("__rewire__", []).append((n, name, done[0], done[1]))

    roles = {}
    for n in prompt:
        if n in owner:
            roles[n] = "both" if n in needed else "cloud"
        else:
            roles[n] = "local"

    # ---- build the local prompt and the plans --------------------------------------------------------
    local = copy.deepcopy(prompt)
    # A merged group is sent as one task: if one of its gateways cannot be sent, none of them can.
    for L, ms in members.items():
        bad = [g for g in ms if refusals[g]]
        for g in ms:
            if bad and not refusals[g]:
                refusals[g].append(f"{node_label(prompt, g)} shares its cloud part with {node_label(prompt, bad[0])}, which "
                                   "cannot be sent: fix that gateway first.")
    # A refused group keeps its nodes here, so ComfyUI reports only real problems besides the refusal
    # (never a dangling link); nothing of it runs, as the gateway fails validation.
    refused_groups = {L for L in members if any(refusals[g] for g in members[L])}
    kept = set().union(*(group_region[L] for L in refused_groups)) if refused_groups else set()
    for n in owner:
        if n not in needed and n not in kept:
            local.pop(n, None)
    for n, name, g, idx in cross_out.pop("__rewire__", []):
        if groups[g] not in refused_groups:
            local[n]["inputs"][name] = [g, idx]
    # Nodes that no output needs never run; those that read a removed node go too (no dangling links).
    changed = True
    while changed:
        changed = False
        for n in [n for n in local if n not in needed and n not in owner]:
            if any(src in prompt and src not in local for _, src, _ in node_links(local[n])):
                del local[n]
                changed = True

    plans: dict = {}
    for g in gateways:
        if g not in cloud:
            plans[g] = {"mode": "local", "gateway": g}
            continue
        L = groups[g]
        outs = []
        for name, src, slot in node_links(prompt[g]):
            if name not in GATEWAY_OUTPUTS:
                continue
            idx = GATEWAY_OUTPUTS.index(name)
            if src in boundaries:
                outs.append({"slot": idx, "kind": "pass", "input": name})
            else:
                outs.append({"slot": idx, "kind": "mask" if name in MASK_INPUTS else "image", "src": [src, slot]})
                local[g]["inputs"].pop(name, None)
        for idx, (src, slot, t) in sorted(cross_out.get(g, {}).items()):
            outs.append({"slot": idx, "kind": "mask" if t == "MASK" else "image", "src": [src, slot]})
        plans[g] = {"mode": "cloud", "gateway": g, "lead": L, "outputs": sorted(outs, key=lambda o: o["slot"])}
        if L != g:
            local[g]["inputs"][LEAD_INPUT] = [L, TASK_ID_SLOT]

    for L, ms in members.items():
        cloud_prompt, crossings, files = _cloud_prompt(prompt, classes, group_region[L], boundaries, file_exists)
        save_of = {}
        for g in ms:
            for o in plans[g]["outputs"]:
                if o["kind"] == "pass":
                    continue
                key = (o["src"][0], o["src"][1], o["kind"])
                if key not in save_of:
                    save_of[key] = _add_save(cloud_prompt, o["src"], o["kind"], len(save_of))
                o["save"] = save_of[key]
        user_outputs = sorted(n for n in group_region[L] if _is_output(prompt[n], classes, n, consumers))
        for i, c in enumerate(crossings):
            c["input"] = f"{CROSS_PREFIX}{i}"
            local[L]["inputs"][c["input"]] = list(c["from"])
            target = str(prompt[L].get("inputs", {}).get("target") or "").strip()
            if c["kind"] == "url" and target:  # the Upload Image uploads where this gateway runs
                local[c["from"][0]]["inputs"][TARGET_INPUT] = target
        plans[L].update({"prompt": cloud_prompt, "crossings": crossings, "local_files": files,
                         "user_outputs": user_outputs, "members": ms, "hash": plan_hash(cloud_prompt),
                         "shape": shape_hash(cloud_prompt), "nodes": sorted(group_region[L])})
        for g in ms:
            if g != L:
                plans[g]["hash"], plans[g]["shape"] = plans[L]["hash"], plans[L]["shape"]

    for g in gateways:
        if refusals[g]:
            refused = {"mode": "refused", "gateway": g, "refusals": refusals[g]}
            if "nodes" in plans[g]:
                refused["nodes"] = plans[g]["nodes"]  # what would have gone (the editor marks it)
            plans[g] = refused
        local[g]["inputs"][PLAN_INPUT] = json.dumps(plans[g], sort_keys=True, separators=(",", ":"))

    # An Upload Image whose URL nobody needs any more (its consumers run here) does not upload.
    url_users = {tuple(v) for node in local.values() for v in (node.get("inputs") or {}).values() if is_link(v)}
    for n, node in local.items():
        if node.get("class_type") == UPLOAD and (n, UPLOAD_URL_SLOT) not in {(str(a), b) for a, b in url_users}:
            node["inputs"][SKIP_UPLOAD_INPUT] = True
    return PlanResult(local, plans, {g: r for g, r in refusals.items() if r}, roles, groups)


def _scalar_only(prompt: dict, classes: ClassTable, start: str, owner: dict) -> bool:
    """True when ``start`` and everything upstream of it in the cloud part only make plain values (STRING,
    INT, FLOAT, BOOLEAN: a seed, a prompt text): cheap to compute here as well. A value computed from cloud
    work (an image's size, a model's output) cannot be."""
    seen, stack = set(), [start]
    while stack:
        n = stack.pop()
        if n in seen or n not in owner:
            continue
        seen.add(n)
        info = classes.get((prompt.get(n) or {}).get("class_type"))
        if info is None or not info.outputs or any(o not in SCALARS for o in info.outputs):
            return False
        stack.extend(src for _, src, _ in node_links(prompt[n]))
    return True


def _wf(prompt, g) -> str:
    """Gateways share a task only where they run in the same place: same workflow id and target."""
    inputs = prompt[g].get("inputs", {})
    return f'{str(inputs.get("workflow_id", "") or "").strip()}|{str(inputs.get("target", "") or "").strip()}'


def _is_output(node: dict, classes: ClassTable, nid: str, consumers: dict) -> bool:
    info = classes.get(node.get("class_type"))
    if info is not None:
        return bool(info.output_node)
    return nid not in consumers and node.get("class_type") not in (GATEWAY, UPLOAD)


def _find_cycle(prompt: dict, nodes: set):
    color: dict = {}
    for start in sorted(nodes):
        if start in color:
            continue
        stack = [(start, iter(sorted(src for _, src, _ in node_links(prompt[start]) if src in nodes)))]
        path = [start]
        color[start] = 1
        while stack:
            n, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                color[n] = 2
                stack.pop()
                path.pop()
                continue
            if color.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in color:
                color[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(sorted(src for _, src, _ in node_links(prompt[nxt]) if src in nodes))))
    return None
