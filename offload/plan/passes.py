"""The planner: API prompt -> local prompt + one :class:`GatewayPlan` per gateway + refusals, as named
passes over one :class:`_Planning` state, in the order :func:`make_plan` runs them. The rules are the
package's (``offload/plan/__init__.py``). Pure: no I/O."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

from .check import check_node
from .cloud_prompt import add_save, cloud_prompt
from .graph import (CLOUD_OUTPUT, CROSS_PREFIX, GATEWAY, GATEWAY_OUTPUTS, IMAGE_INPUTS, LEAD_INPUT, MASK_INPUTS,
                    OUTPUT_CLASS_INPUT, OUTPUT_LANG_INPUT, OUTPUT_NODE_INPUT, OUTPUT_PREFIX_INPUT, PIXELS, PLAN_INPUT,
                    REFUSAL_INPUT, SCALARS, SKIP_UPLOAD_INPUT, TARGET_INPUT, TASK_ID_SLOT, UPLOAD, UPLOAD_URL_SLOT, WHOLE,
                    ClassTable, form_hash, is_link, node_label, node_links, out_type, plan_hash, shape_hash,
                    work_units)
from .model import CLOUD, IMAGE, LOCAL, MASK, PASS, URL, CloudOutput, GatewayPlan, Refusal, refused_plan

# A whole workflow in the cloud refuses what only makes sense on this machine: the pack's own Load Result
# (it reads this machine's journal). A loader's local file of any kind of the table (offload/plan/kinds.py:
# images, video, audio, 3D) is no reason: it goes up with the cloud part.
HERE_ONLY = frozenset({"GPUGeekLoadResult"})


@dataclass
class PlanResult:
    local_prompt: dict
    plans: dict       # gateway id -> GatewayPlan (also written into the gateway's hidden input)
    refusals: dict    # gateway id -> [sentence]
    roles: dict       # node id -> "local" | "cloud" | "both"
    groups: dict      # gateway id -> id of the gateway that runs its task
    owner: dict = field(default_factory=dict)   # cloud node id -> the gateway that runs it
    flagged: list = field(default_factory=list)  # nodes a refusal names: a refused crossing's local node, a
    #                                              cloud node with a wrong value (the editor marks them)


@dataclass
class _Planning:
    """What the passes read and decide, in the order they run."""
    prompt: dict
    classes: ClassTable
    file_exists: Callable[[str], bool]
    gateways: list
    boundaries: set
    cloud: list                                      # gateways that run in the cloud
    consumers: dict                                  # node -> [(consumer, input, slot)]
    refusals: dict                                   # gateway -> [Refusal]
    region: dict = field(default_factory=dict)       # gateway -> its nodes
    groups: dict = field(default_factory=dict)       # gateway -> leading gateway
    members: dict = field(default_factory=dict)      # leading gateway -> [gateways]
    group_region: dict = field(default_factory=dict)  # leading gateway -> nodes of the task
    owner: dict = field(default_factory=dict)        # cloud node -> leading gateway
    needed: set = field(default_factory=set)         # nodes that run here
    rewires: list = field(default_factory=list)      # (consumer, input, lead, src, slot, type) pixels out
    flagged: set = field(default_factory=set)
    cross_out: dict = field(default_factory=dict)    # gateway -> {output index: (src, slot, type)}
    rerouted: list = field(default_factory=list)     # (consumer, input, gateway, output index)
    local: dict = field(default_factory=dict)
    plans: dict = field(default_factory=dict)
    sinks: list = field(default_factory=list)        # whole workflow: the output nodes its gateway sits after
    said_on: dict = field(default_factory=dict)      # node -> [Refusal] told on that node (whole workflow)
    cloud_choices: Callable | None = None            # (gateway, class, input) -> the cloud's values, or None

    def label(self, n) -> str:
        return node_label(self.prompt, n)

    def refuse(self, g, key, **values) -> None:
        self.refusals[g].append(Refusal(key, values))


def make_plan(prompt: dict, classes: ClassTable, file_exists: Callable[[str], bool] | None = None,
              lang: str = "en", whole: bool = False, unavailable: list | None = None,
              cloud_choices: Callable | None = None, targets: list | None = None) -> PlanResult:
    """``whole``: with no gateway, the graph runs as one cloud part, as if a gateway sat after every output
    node (``unavailable``: refusals of the switch itself, e.g. no key configured, told on the output nodes).
    ``cloud_choices(gateway, class, input)``: the values the cloud lists of that gateway's target hold (a value
    there is the cloud's to judge), or None. ``targets``: the output nodes the user queued (ComfyUI's
    ``partial_execution_targets``, *queue selected outputs*): a whole workflow sends only what they need."""
    gateways = sorted(n for n, v in prompt.items() if isinstance(v, dict) and v.get("class_type") == GATEWAY)
    if not gateways and whole:
        return _whole_workflow(prompt, classes, file_exists or (lambda name: False), lang, list(unavailable or []),
                               cloud_choices, targets)
    if not gateways:
        return PlanResult(prompt, {}, {}, {n: LOCAL for n in prompt}, {})
    st = _start(prompt, classes, file_exists or (lambda name: False), gateways)
    st.cloud_choices = cloud_choices
    _passes(st)
    return _finish(st, lang)


def _passes(st: _Planning) -> None:
    _regions(st)
    _merge_groups(st)
    _cloud_outputs(st)
    _cycles(st)
    _check_values(st)
    _crossings_out(st)
    _free_outputs(st)
    _refuse_whole_groups(st)
    _local_prompt(st)
    _gateway_plans(st)
    _cloud_parts(st)


def _start(prompt, classes, file_exists, gateways) -> _Planning:
    consumers: dict = {}
    for nid, node in prompt.items():
        for name, src, slot in node_links(node):
            consumers.setdefault(src, []).append((nid, name, slot))
    return _Planning(
        prompt=prompt, classes=classes, file_exists=file_exists, gateways=gateways,
        boundaries={n for n, v in prompt.items() if isinstance(v, dict) and v.get("class_type") in (GATEWAY, UPLOAD)},
        cloud=[g for g in gateways if str(prompt[g].get("inputs", {}).get("run_on", "cloud")) != LOCAL],
        consumers=consumers, refusals={g: [] for g in gateways})


def _regions(st: _Planning) -> None:
    """Each gateway's region: everything upstream of its linked outputs, up to the boundaries."""
    for g in st.gateways:
        linked = [(name, src, slot) for name, src, slot in node_links(st.prompt[g]) if name in GATEWAY_OUTPUTS]
        if g == WHOLE:  # the whole workflow's gateway sits after every output node
            stack = list(st.sinks)
        else:
            if not linked:
                st.refuse(g, "refuse_nothing_connected", gateway=st.label(g))
            stack = [src for _, src, _ in linked if src not in st.boundaries]
        seen: set = set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            if n not in st.prompt:
                st.refuse(g, "refuse_missing_node", node=n)
                continue
            seen.add(n)
            stack.extend(src for _, src, _ in node_links(st.prompt[n]) if src not in st.boundaries and src not in seen)
        st.region[g] = seen
        for name, src, slot in linked:
            want = "MASK" if name in MASK_INPUTS else "IMAGE"
            t = out_type(st.prompt, st.classes, src, slot)
            if t is not None and t != want:
                st.refuse(g, "refuse_wrong_type", input=name, gateway=st.label(g), got=t, source=st.label(src),
                          want=want)


def _merge_groups(st: _Planning) -> None:
    """Cloud gateways whose regions share nodes and run in the same place are one task, led by the first."""
    lead = {g: g for g in st.gateways}

    def find(g):
        while lead[g] != g:
            g = lead[g]
        return g
    for i, a in enumerate(st.cloud):
        for b in st.cloud[i + 1:]:
            if st.region[a] & st.region[b] and _runs_in(st.prompt, a) == _runs_in(st.prompt, b):
                ra, rb = find(a), find(b)
                if ra != rb:
                    lead[max(ra, rb)] = min(ra, rb)
    st.groups = {g: find(g) for g in st.gateways}
    for g in st.cloud:
        st.members.setdefault(st.groups[g], []).append(g)
    st.group_region = {L: set().union(*(st.region[g] for g in ms)) for L, ms in st.members.items()}


def _runs_in(prompt: dict, g: str) -> tuple:
    """Where a gateway's task runs: its workflow id and target (gateways share a task only there)."""
    inputs = prompt[g].get("inputs", {})
    return (str(inputs.get("workflow_id", "") or "").strip(), str(inputs.get("target", "") or "").strip())


def _cloud_outputs(st: _Planning) -> None:
    """Output nodes fed only by one cloud part join it (their files come back)."""
    for L in sorted(st.group_region):
        for n in sorted(st.group_region[L]):
            st.owner.setdefault(n, L)
    for nid, node in st.prompt.items():
        if nid in st.owner or nid in st.boundaries or not isinstance(node, dict):
            continue
        info = st.classes.get(node.get("class_type"))
        sink = info.output_node if info is not None else nid not in st.consumers
        srcs = [src for _, src, _ in node_links(node)]
        if sink and srcs and all(s in st.owner for s in srcs) and len({st.owner[s] for s in srcs}) == 1:
            st.owner[nid] = st.owner[srcs[0]]
            st.group_region[st.owner[nid]].add(nid)


def _cycles(st: _Planning) -> None:
    for L, nodes in st.group_region.items():
        cyc = _find_cycle(st.prompt, nodes)
        if cyc:
            st.refuse(L, "refuse_cycle", path=" -> ".join(st.label(n) for n in cyc))


def _check_values(st: _Planning) -> None:
    """Cloud nodes whose class is installed here are checked as ComfyUI would, before anything is paid for;
    a mistake refuses the task and marks the node."""
    for n in sorted(st.owner):
        g = st.owner[n]
        choices = None if st.cloud_choices is None else (
            lambda cls, name, g=g: st.cloud_choices(g, cls, name))
        found = check_node(n, st.prompt[n], st.classes, st.label(n), choices)
        st.refusals[st.owner[n]].extend(found)
        if found:
            st.flagged.add(n)
            st.said_on.setdefault(n, []).extend(found)


def _crossings_out(st: _Planning) -> None:
    """Walk back from the local outputs: what still runs here, and what crosses from the cloud part to it."""
    outputs = [n for n, v in st.prompt.items()
               if isinstance(v, dict) and n not in st.owner and _is_output(v, st.classes, n, st.consumers)]
    stack = outputs + list(st.gateways)
    while stack:
        n = stack.pop()
        if n in st.needed or n not in st.prompt:
            continue
        st.needed.add(n)
        cloud_gateway = st.prompt[n].get("class_type") == GATEWAY and n in st.cloud
        for name, src, slot in node_links(st.prompt[n]):
            if src not in st.owner:
                stack.append(src)
            elif not (cloud_gateway and name in GATEWAY_OUTPUTS and src in st.region.get(n, ())):
                _crossing_out(st, stack, n, name, src, slot)


def _crossing_out(st: _Planning, stack: list, n, name, src, slot) -> None:
    t = out_type(st.prompt, st.classes, src, slot, (n, name))
    if n in st.owner or (t in SCALARS and _scalar_only(st, src)):
        stack.append(src)            # a value made of values only: it runs here as well ("both")
    elif t in PIXELS:
        st.rewires.append((n, name, st.owner[src], src, slot, t))
    else:
        st.flagged.add(n)
        key = "refuse_scalar_from_cloud" if t in SCALARS else (
            "refuse_type_crossing" if t else "refuse_unknown_crossing")
        st.refuse(st.owner[src], key, type=t or "", source=st.label(src), node=st.label(n))


def _scalar_only(st: _Planning, start: str) -> bool:
    """True when ``start`` and everything upstream of it in the cloud part only make plain values (STRING,
    INT, FLOAT, BOOLEAN: a seed, a prompt text): cheap to compute here as well. A value computed from cloud
    work (an image's size, a model's output) cannot be."""
    seen, stack = set(), [start]
    while stack:
        n = stack.pop()
        if n in seen or n not in st.owner:
            continue
        seen.add(n)
        info = st.classes.get((st.prompt.get(n) or {}).get("class_type"))
        if info is None or not info.outputs or any(o not in SCALARS for o in info.outputs):
            return False
        stack.extend(src for _, src, _ in node_links(st.prompt[n]))
    return True


def _free_outputs(st: _Planning) -> None:
    """An image or mask crossing out is served through a gateway output: the one that already carries it,
    else a free one of a gateway of the group."""
    used = {g: {name for name, _, _ in node_links(st.prompt[g]) if name in GATEWAY_OUTPUTS} for g in st.gateways}
    slot_of: dict = {}   # (src, slot, gateway) -> output index
    for g in st.cloud:
        for name, src, slot in node_links(st.prompt[g]):
            if name in GATEWAY_OUTPUTS and src in st.region[g]:
                slot_of.setdefault((src, slot, g), GATEWAY_OUTPUTS.index(name))
    for n, name, L, src, slot, t in sorted(st.rewires):
        done = next(((g, idx) for g in st.members[L] for (s2, sl2, g2), idx in slot_of.items()
                     if g2 == g and s2 == src and sl2 == slot and (GATEWAY_OUTPUTS[idx] in MASK_INPUTS) == (t == "MASK")),
                    None)
        if done is None:
            names = MASK_INPUTS if t == "MASK" else IMAGE_INPUTS
            for g in st.members[L]:
                free = [x for x in names if x not in used[g]]
                if src in st.region[g] and free:
                    used[g].add(free[0])
                    done = (g, GATEWAY_OUTPUTS.index(free[0]))
                    slot_of[(src, slot, g)] = done[1]
                    st.cross_out.setdefault(g, {})[done[1]] = (src, slot, t)
                    break
        if done is None:
            st.refuse(L, "refuse_no_free_output", node=st.label(n), type=t, kind=t.lower(), source=st.label(src), gateway=st.label(L))
        else:
            st.rerouted.append((n, name) + done)


def _refuse_whole_groups(st: _Planning) -> None:
    """A merged group is sent as one task: if one of its gateways cannot be sent, none of them can."""
    for ms in st.members.values():
        bad = [g for g in ms if st.refusals[g]]
        for g in ms:
            if bad and not st.refusals[g]:
                st.refuse(g, "refuse_shared_with_refused", gateway=st.label(g), other=st.label(bad[0]))


def _refused_groups(st: _Planning) -> set:
    return {L for L in st.members if any(st.refusals[g] for g in st.members[L])}


def _local_prompt(st: _Planning) -> None:
    """The prompt ComfyUI runs here: without the cloud parts, crossings out read from gateway outputs. A refused
    group keeps its nodes, so ComfyUI reports only real problems besides the refusal (never a dangling link)."""
    st.local = copy.deepcopy(st.prompt)
    refused = _refused_groups(st)
    kept = set().union(*(st.group_region[L] for L in refused)) if refused else set()
    for n in st.owner:
        if n not in st.needed and n not in kept:
            st.local.pop(n, None)
    for n, name, g, idx in st.rerouted:
        if st.groups[g] not in refused:
            st.local[n]["inputs"][name] = [g, idx]
    # Nodes that no output needs never run; those that read a removed node go too (no dangling links).
    changed = True
    while changed:
        changed = False
        for n in [n for n in st.local if n not in st.needed and n not in st.owner]:
            if any(src in st.prompt and src not in st.local for _, src, _ in node_links(st.local[n])):
                del st.local[n]
                changed = True


def _gateway_plans(st: _Planning) -> None:
    """Each gateway's outputs: passed through, or an image/mask of its cloud part."""
    for g in st.gateways:
        if g not in st.cloud:
            st.plans[g] = GatewayPlan(gateway=g, mode=LOCAL)
            continue
        outs = []
        for name, src, slot in node_links(st.prompt[g]):
            if name not in GATEWAY_OUTPUTS:
                continue
            idx = GATEWAY_OUTPUTS.index(name)
            if src in st.boundaries:
                outs.append(CloudOutput(slot=idx, kind=PASS, input=name))
            else:
                outs.append(CloudOutput(slot=idx, kind=MASK if name in MASK_INPUTS else IMAGE, source=(src, slot)))
                st.local[g]["inputs"].pop(name, None)
        for idx, (src, slot, t) in sorted(st.cross_out.get(g, {}).items()):
            outs.append(CloudOutput(slot=idx, kind=MASK if t == "MASK" else IMAGE, source=(src, slot)))
        L = st.groups[g]
        st.plans[g] = GatewayPlan(gateway=g, mode=CLOUD, lead=L, outputs=sorted(outs, key=lambda o: o.slot))
        if L != g:
            st.local[g]["inputs"][LEAD_INPUT] = [L, TASK_ID_SLOT]


def _cloud_parts(st: _Planning) -> None:
    """Each task's cloud prompt: its nodes, loaders for crossings in, a SaveImage per image taken back."""
    for L, ms in st.members.items():
        part, crossings, files = cloud_prompt(st.prompt, st.classes, st.group_region[L], st.boundaries, st.file_exists)
        save_of: dict = {}
        for o in (o for g in ms for o in st.plans[g].outputs if o.kind != PASS):
            key = (o.source, o.kind)
            if key not in save_of:
                save_of[key] = add_save(part, o.source, o.kind, len(save_of))
            o.save = save_of[key]
        target = str(st.prompt[L].get("inputs", {}).get("target") or "").strip()
        for i, c in enumerate(crossings):
            c.input = f"{CROSS_PREFIX}{i}"
            st.local[L]["inputs"][c.input] = list(c.source)
            if c.kind == URL and target:  # the Upload Image uploads where this gateway runs
                st.local[c.source[0]]["inputs"][TARGET_INPUT] = target
        lead = st.plans[L]
        lead.prompt, lead.crossings, lead.local_files, lead.members = part, crossings, files, list(ms)
        lead.user_outputs = sorted(n for n in st.group_region[L] if _is_output(st.prompt[n], st.classes, n, st.consumers))
        lead.hash, lead.shape, lead.nodes = plan_hash(part), shape_hash(part), sorted(st.group_region[L])
        lead.form, lead.work = form_hash(part), work_units(part)
        for g in ms:
            plan = st.plans[g]
            plan.hash, plan.shape, plan.form, plan.work, plan.nodes = lead.hash, lead.shape, lead.form, lead.work, lead.nodes


def _finish(st: _Planning, lang: str) -> PlanResult:
    """Refusals as sentences in ``lang``; each plan into its gateway's hidden input; unneeded uploads off."""
    sentences = {g: [r.text(lang) for r in rs] for g, rs in st.refusals.items() if rs}
    for g in st.gateways:
        if g in sentences:
            st.plans[g] = refused_plan(g, sentences[g], lang, st.plans[g].nodes)
        st.plans[g].lang = lang
        st.local[g]["inputs"][PLAN_INPUT] = st.plans[g].to_json()
    # An Upload Image whose URL nobody needs any more (its consumers run here) does not upload.
    url_users = {(str(v[0]), v[1]) for node in st.local.values() for v in (node.get("inputs") or {}).values()
                 if is_link(v)}
    for n, node in st.local.items():
        if node.get("class_type") == UPLOAD and (n, UPLOAD_URL_SLOT) not in url_users:
            node["inputs"][SKIP_UPLOAD_INPUT] = True
    roles = {n: ("both" if n in st.needed else CLOUD) if n in st.owner else LOCAL for n in st.prompt}
    return PlanResult(st.local, st.plans, sentences, roles, st.groups, owner=dict(st.owner), flagged=sorted(st.flagged))


# The file name prefix a whole workflow's savers get in the cloud: the user's own prefix is applied here, when
# their files are saved (nodes/output.py), so that changing it alone neither runs nor pays for the cloud part again.
CLOUD_PREFIX = "ComfyUI"


def _whole_workflow(prompt, classes, file_exists, lang: str, unavailable: list, cloud_choices=None,
                    targets=None) -> PlanResult:
    """No gateway and the switch on: the planner's passes over the graph with one gateway (``WHOLE``) sitting
    after every output node. The local prompt is that gateway (plus what still runs here: Upload Image nodes
    and what feeds them) and, under each output node's own id, a Cloud Output that saves or shows its files
    as the node would have; a refused graph leaves only Cloud Outputs that say why, on the nodes concerned."""
    whole = {"class_type": GATEWAY, "inputs": {"workflow_id": "", "run_on": CLOUD}, "_meta": {"title": "GPUGeek"}}
    full = {**prompt, WHOLE: whole}
    st = _start(full, classes, file_exists, [WHOLE])
    every = sorted(n for n, v in prompt.items() if isinstance(v, dict) and n not in st.boundaries
                   and _is_output(v, classes, n, st.consumers))
    chosen = {str(t) for t in targets or () if isinstance(t, (str, int))} & set(every)
    sinks = sorted(chosen) or every   # queue selected outputs: only those, and what they need
    sinks, dropped, not_alone = _good_outputs(prompt, classes, sinks, cloud_choices)
    if sinks != every:
        keep = _upstream(prompt, set(sinks))
        full = {n: v for n, v in full.items() if n in keep or n == WHOLE}
        st = _start(full, classes, file_exists, [WHOLE])
    st.cloud_choices, st.sinks = cloud_choices, sinks
    for n in st.sinks:
        if isinstance((prompt[n].get("inputs") or {}).get("filename_prefix"), str):
            full[n] = {**prompt[n], "inputs": {**prompt[n]["inputs"], "filename_prefix": CLOUD_PREFIX}}
    if not st.sinks:
        st.refuse(WHOLE, "refuse_whole_no_output")
    st.refusals[WHOLE].extend(unavailable)
    for n, found in sorted(not_alone.items()):   # said on that output: the whole workflow went nowhere
        st.refusals[WHOLE].append(found)
        st.said_on.setdefault(n, []).append(found)
    _passes(st)
    _here_only(st)
    st.plans[WHOLE].whole = True
    res = _finish(st, lang)
    res.roles.pop(WHOLE, None)
    res.local_prompt = _whole_local(st, prompt, lang, dropped)
    return res


def _good_outputs(prompt: dict, classes, sinks: list, cloud_choices) -> tuple[list, dict, dict]:
    """Which of the queued outputs go. A whole workflow goes whole or not at all (the cloud is paid per task: a part
    cannot make what the workflow makes). The one exception is ComfyUI's own: an output refused on its own values
    (a template's stray Save Video with nothing connected) is left out, said on that node, where leaving it out
    leaves out no other node; the other outputs run. An output whose graph has a wrong value elsewhere stops the
    whole workflow: nothing is left out (the passes refuse the graph, said on the nodes concerned) and each other
    output says why it did not go alone. Returns (the outputs that run, {left-out output: [Refusal]},
    {output that did not go alone: Refusal})."""
    def choices(cls, name):
        return cloud_choices(WHOLE, cls, name) if cloud_choices is not None else None
    upstream = {s: _upstream(prompt, {s}) for s in sinks}
    wrong: dict = {}
    for n in sorted(set().union(*upstream.values())) if upstream else ():
        found = check_node(n, prompt[n], classes, node_label(prompt, n), choices)
        if found:
            wrong[n] = found
    good = [s for s in sinks if not upstream[s] & set(wrong)]
    if not wrong or not good:
        return sinks, {}, {}
    bad = [s for s in sinks if s not in good]
    kept = set().union(*(upstream[s] for s in good))
    if all(upstream[s] - {s} <= kept for s in bad):   # each refused on its own node, and nothing else goes with it
        return good, {s: wrong[s] for s in bad}, {}
    other = ", ".join(node_label(prompt, s) for s in bad)
    return sinks, {}, {s: Refusal("refuse_whole_not_alone", {"node": node_label(prompt, s), "other": other})
                       for s in good}


def _upstream(prompt: dict, start: set) -> set:
    """``start`` and every node they read from."""
    seen, stack = set(), list(start)
    while stack:
        n = stack.pop()
        if n in seen or n not in prompt:
            continue
        seen.add(n)
        stack.extend(src for _, src, _ in node_links(prompt[n]))
    return seen


def _here_only(st: _Planning) -> None:
    """What only makes sense on this machine cannot go with the whole workflow: said on that node."""
    for n in sorted(st.owner):
        if st.prompt[n].get("class_type") not in HERE_ONLY:
            continue
        found = Refusal("refuse_whole_here_only", {"node": st.label(n)})
        st.refusals[WHOLE].append(found)
        st.said_on.setdefault(n, []).append(found)
        st.flagged.add(n)


def _whole_local(st: _Planning, prompt: dict, lang: str, dropped: dict) -> dict:
    """The local prompt of a whole workflow: the gateway and a Cloud Output per output node; refused, only
    Cloud Outputs saying why on the nodes concerned (ComfyUI reports them as those nodes' errors, and nothing
    is submitted)."""
    if st.refusals[WHOLE]:
        told = {id(r) for rs in st.said_on.values() for r in rs}
        general = [r.text(lang) for r in st.refusals[WHOLE] if id(r) not in told]
        local = {}
        for n in sorted(set(st.said_on) | (set(st.sinks) if general else set())):
            sentences = [r.text(lang) for r in st.said_on.get(n, [])] + general
            local[n] = _stand_in(st.prompt[n], n, {REFUSAL_INPUT: " ".join(sentences)}, lang)
        if not local:  # nothing to say it on (no output node): the gateway says it
            local[WHOLE] = st.local[WHOLE]
        return local
    local = dict(st.local)
    for n in st.sinks:
        prefix = (prompt[n].get("inputs") or {}).get("filename_prefix")
        local[n] = _stand_in(st.prompt[n], n, {"task_id": [WHOLE, TASK_ID_SLOT],
                                               OUTPUT_PREFIX_INPUT: prefix if isinstance(prefix, str) else ""}, lang)
    for n, found in dropped.items():   # left out, as ComfyUI leaves out an output that fails validation
        local[n] = _stand_in(prompt[n], n, {REFUSAL_INPUT: " ".join(r.text(lang) for r in found)}, lang)
    return local


def _stand_in(node: dict, n: str, inputs: dict, lang: str) -> dict:
    out = {"class_type": CLOUD_OUTPUT, "inputs": {OUTPUT_NODE_INPUT: n, OUTPUT_CLASS_INPUT: node.get("class_type"),
                                                  OUTPUT_LANG_INPUT: lang, **inputs}}
    if node.get("_meta"):
        out["_meta"] = dict(node["_meta"])
    return out


def _is_output(node: dict, classes: ClassTable, nid: str, consumers: dict) -> bool:
    info = classes.get(node.get("class_type"))
    if info is not None:
        return bool(info.output_node)
    return nid not in consumers and node.get("class_type") not in (GATEWAY, UPLOAD)


def _find_cycle(prompt: dict, nodes: set):
    """A cycle among ``nodes`` as a path of ids (first == last), or None."""
    color: dict = {}

    def sources(n):
        return iter(sorted(src for _, src, _ in node_links(prompt[n]) if src in nodes))
    for start in sorted(nodes):
        if start in color:
            continue
        stack, path = [(start, sources(start))], [start]
        color[start] = 1
        while stack:
            n, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                color[n] = 2
                stack.pop()
                path.pop()
            elif color.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in color:
                color[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sources(nxt)))
    return None
