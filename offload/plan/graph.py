"""The API-prompt graph: the pack's node ids and hidden inputs, what the plan knows of node classes, and
the helpers that read links. Shared by the planner's passes, the cloud prompt they build and the nodes."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

GATEWAY = "GPUGeekCloudExecute"
UPLOAD = "GPUGeekUploadImage"
IMAGE_INPUTS = ("image_1", "image_2", "image_3", "image_4")
MASK_INPUTS = ("mask_1", "mask_2")
GATEWAY_OUTPUTS = IMAGE_INPUTS + MASK_INPUTS  # output slot i pairs with input GATEWAY_OUTPUTS[i]
TASK_ID_SLOT = len(GATEWAY_OUTPUTS)
UPLOAD_URL_SLOT = 1
PLAN_INPUT = "gpugeek_plan"          # hidden gateway input carrying the plan (JSON)
CROSS_PREFIX = "gpugeek_x"           # hidden gateway link inputs carrying crossings in
LEAD_INPUT = "gpugeek_lead"          # hidden link from a merged gateway to the one that runs the task
SKIP_UPLOAD_INPUT = "gpugeek_skip"   # hidden flag on an Upload Image whose upload nobody needs
TARGET_INPUT = "gpugeek_target"      # hidden: the target an Upload Image uploads to (its gateway's)
# A whole workflow in the cloud (no gateway, the switch on): one gateway of this id runs the graph, and each
# output node is replaced, under its own id, by a Cloud Output that saves or shows that node's files here.
WHOLE = "gpugeek_whole"
CLOUD_OUTPUT = "GPUGeekCloudOutput"
OUTPUT_NODE_INPUT = "gpugeek_node"     # hidden on a Cloud Output: the id of the node it stands for
OUTPUT_CLASS_INPUT = "gpugeek_class"   # ... and that node's class (SaveImage, PreviewImage, a video saver)
OUTPUT_PREFIX_INPUT = "gpugeek_prefix"  # ... and its filename_prefix, where it was a plain value
REFUSAL_INPUT = "gpugeek_refusal"      # hidden on a Cloud Output standing for a node that cannot go: why
OUTPUT_LANG_INPUT = "gpugeek_out_lang"  # ... and the language it speaks (the prompt's)
SCALARS = frozenset({"STRING", "INT", "FLOAT", "BOOLEAN"})
PIXELS = frozenset({"IMAGE", "MASK"})


@dataclass(frozen=True)
class ClassInfo:
    outputs: tuple = ()
    output_node: bool = False
    inputs: dict = field(default_factory=dict)  # input name -> type, where known
    spec: object = None  # () -> the class's INPUT_TYPES(), where installed here (queue-time value checks)
    finalize: object = None  # (INPUT_TYPES, a node's inputs) -> its inputs as ComfyUI validates them (dynamic ones)
    validated: frozenset = frozenset()  # inputs the class's VALIDATE_INPUTS judges itself ("*": every input)
    machine: object = None  # () -> names of inputs whose lists are filled from this machine (model folders...)


ClassTable = dict  # class_type -> ClassInfo


def is_link(v) -> bool:
    return (isinstance(v, list) and len(v) == 2 and isinstance(v[0], (str, int)) and not isinstance(v[0], bool)
            and isinstance(v[1], int) and not isinstance(v[1], bool))


def node_links(node: dict):
    for name, v in (node.get("inputs") or {}).items():
        if is_link(v):
            yield name, str(v[0]), v[1]


def node_label(prompt: dict, nid: str) -> str:
    node = prompt.get(nid) or {}
    title = ((node.get("_meta") or {}).get("title")) or node.get("class_type") or "?"
    return f"#{nid} {title}"


def out_type(prompt: dict, classes: ClassTable, nid: str, slot: int, consumer: tuple | None = None):
    info = classes.get((prompt.get(nid) or {}).get("class_type"))
    if info is not None and 0 <= slot < len(info.outputs):
        return info.outputs[slot]
    if consumer is not None:  # unknown class: the consumer's declared input type tells
        cinfo = classes.get((prompt.get(consumer[0]) or {}).get("class_type"))
        if cinfo is not None and consumer[1] in cinfo.inputs:
            return cinfo.inputs[consumer[1]]
    return None


def plan_hash(cloud_prompt: dict) -> str:
    """Identity of a cloud part for price/time history: classes and inputs only (titles do not count)."""
    core = {n: {"class_type": v.get("class_type"), "inputs": v.get("inputs")} for n, v in cloud_prompt.items()}
    return hashlib.sha256(json.dumps(core, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


# Inputs that change what a cloud part makes but not what it costs: a new seed, another prompt text, another
# input image or output name. A part's *shape* (its classes, links, model names, sizes, steps, batch and
# every other value) is what its price and run time are looked up by (offload/journal.py, ``estimate``).
COST_FREE_INPUTS = frozenset({"seed", "noise_seed", "text", "text_g", "text_l", "prompt", "positive", "negative",
                              "string", "filename_prefix", "image", "control_after_generate"})


def shape_hash(cloud_prompt: dict) -> str:
    """Identity of a cloud part for price and time: like :func:`plan_hash` without seeds, texts and input
    file names (two runs that differ only there cost the same)."""
    core = {}
    for n, v in cloud_prompt.items():
        inputs = {k: x for k, x in (v.get("inputs") or {}).items()
                  if is_link(x) or k not in COST_FREE_INPUTS}
        core[n] = {"class_type": v.get("class_type"), "inputs": inputs}
    return hashlib.sha256(json.dumps(core, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


# Inputs that scale what a part costs in a simple way: its image size, batch and sampling steps. Two parts
# that differ only there have the same *form*; their cost per unit of work (pixels x steps) is compared.
SCALE_INPUTS = frozenset({"width", "height", "batch_size", "steps"})


def form_hash(cloud_prompt: dict) -> str:
    """Identity of a cloud part up to its size and steps (and, as :func:`shape_hash`, seeds and texts)."""
    core = {}
    for n, v in cloud_prompt.items():
        inputs = {k: x for k, x in (v.get("inputs") or {}).items()
                  if is_link(x) or (k not in COST_FREE_INPUTS and k not in SCALE_INPUTS)}
        core[n] = {"class_type": v.get("class_type"), "inputs": inputs}
    return hashlib.sha256(json.dumps(core, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def work_units(cloud_prompt: dict) -> float | None:
    """The part's work, where the code can name it: the largest image (width x height x batch) of its nodes,
    times the steps of its samplers (summed). None where it has no literal size or no literal steps: then its
    cost is not scaled, only looked up."""
    pixels, steps = 0, 0
    for v in cloud_prompt.values():
        inputs = v.get("inputs") or {}
        w, h, b, s = (inputs.get(k) for k in ("width", "height", "batch_size", "steps"))
        if _number(w) and _number(h):
            pixels = max(pixels, w * h * (b if _number(b) else 1))
        if _number(s):
            steps += s
    return float(pixels * steps) if pixels and steps else None


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
