"""A tiny stand-in for ComfyUI's prompt execution, enough to run the pack's nodes as ComfyUI does:
the on_prompt handlers, VALIDATE_INPUTS (refusals become node errors), then every node in dependency
order with link inputs resolved (undeclared link inputs passed as keyword arguments, as ComfyUI does),
async functions awaited, and two ready async nodes run at the same time."""
from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path

import numpy as np
import torch

FIX = Path(__file__).parent / "fixtures"


def stub_classes():
    """Core ComfyUI node classes with the right RETURN_TYPES; a few do something simple locally."""
    raw = json.loads((FIX / "classes.json").read_text())
    out = {}
    for name, spec in raw.items():
        if name.startswith("GPUGeek"):
            continue
        ins = {k: (t,) for k, t in spec.get("inputs", {}).items()}
        out[name] = type(name, (), {"RETURN_TYPES": tuple(spec.get("outputs", ())),
                                    "OUTPUT_NODE": bool(spec.get("output_node")), "FUNCTION": "run",
                                    "INPUT_TYPES": classmethod(lambda cls, ins=ins: {"required": ins}),
                                    "run": _runner(name)})
    return out


def _runner(name):
    def run(self, **kw):
        if name == "LoadImage":
            import folder_paths
            from PIL import Image
            im = Image.open(Path(folder_paths.get_input_directory()) / kw["image"]).convert("RGB")
            t = torch.from_numpy(np.asarray(im).astype(np.float32) / 255.0)[None]
            return (t, torch.zeros((1, 64, 64)))
        if name == "ImageInvert":
            return (1.0 - kw["image"],)
        if name in ("SaveImage", "PreviewImage"):
            SAVED.append(kw["images"])
            return {"ui": {"images": []}}
        if name == "PrimitiveString":
            return (kw.get("value", ""),)
        raise RuntimeError(f"stub {name} cannot run locally")
    return run


SAVED: list = []


class ValidationError(Exception):
    def __init__(self, node_errors):
        super().__init__(json.dumps(node_errors))
        self.node_errors = node_errors


def is_link(v):
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


async def execute(prompt: dict, classes: dict, server=None, outputs_cache=None):
    """Run the prompt the way ComfyUI would; returns {node id: result tuple} and ui per node."""
    if server is not None:
        prompt = server.trigger_on_prompt({"prompt": prompt, "client_id": "test"})["prompt"]
    errors = {}
    for nid, node in prompt.items():
        cls = classes[node["class_type"]]
        v = getattr(cls, "VALIDATE_INPUTS", None)
        if v is None:
            continue
        names = inspect.signature(v).parameters
        args = {k: node["inputs"][k] for k in names if k in node["inputs"] and not is_link(node["inputs"][k])}
        if not args:
            continue
        r = v(**args)
        if r is not True:
            errors[nid] = {"errors": [{"type": "custom_validation_failed", "details": f"{list(args)[0]} - {r}"}],
                           "class_type": node["class_type"]}
    if errors:
        raise ValidationError(errors)
    results, ui = {}, {}
    pending = dict(prompt)
    while pending:
        ready = [n for n, node in pending.items()
                 if all(not is_link(v) or v[0] in results for v in node["inputs"].values())]
        if not ready:
            raise RuntimeError("stuck: " + ", ".join(pending))

        async def run_one(nid):
            node = pending[nid]
            cls = classes[node["class_type"]]
            kw = {k: (results[v[0]][v[1]] if is_link(v) else v) for k, v in node["inputs"].items()}
            spec = cls.INPUT_TYPES()
            hidden = spec.get("hidden", {})
            for k, t in hidden.items():
                if t == "UNIQUE_ID":
                    kw[k] = nid
            fn = getattr(cls(), cls.FUNCTION)
            out = fn(**kw)
            if inspect.isawaitable(out):
                out = await out
            if isinstance(out, dict):
                ui[nid] = out.get("ui")
                out = out.get("result", ())
            return nid, out
        done = await asyncio.gather(*(run_one(n) for n in ready))
        for nid, out in done:
            results[nid] = out
            pending.pop(nid)
    return results, ui, prompt
