"""Queue-time planning of a 2,000-node graph: the pack's on_prompt work, against the JSON round trip that
ComfyUI itself does with every prompt (a baseline measured in the same process). Bar: under 50 ms.
Run: python bench/plan.py
"""
from __future__ import annotations

import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import core, header, row, timeit  # noqa: E402

plan = core("plan")
CLASSES = {k: plan.ClassInfo(tuple(v.get("outputs", ())), bool(v.get("output_node")), dict(v.get("inputs", {})))
           for k, v in json.load(open(os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                                   "classes.json"))).items()}


def big_graph(n: int = 2000, gateways: int = 8, seed: int = 1) -> dict:
    """Chains of image nodes feeding gateways, local post-processing after them, and a local side graph."""
    rng = random.Random(seed)
    p, i = {}, 0

    def add(cls, inputs):
        nonlocal i
        i += 1
        p[str(i)] = {"class_type": cls, "inputs": inputs, "_meta": {"title": cls}}
        return str(i)
    per = n // (gateways * 2)
    for _g in range(gateways):
        ck = add("CheckpointLoaderSimple", {"ckpt_name": "m.safetensors"})
        pos = add("CLIPTextEncode", {"text": "a", "clip": [ck, 1]})
        lat = add("EmptyLatentImage", {"width": 512, "height": 512, "batch_size": 1})
        ks = add("KSampler", {"seed": rng.randint(0, 9), "model": [ck, 0], "positive": [pos, 0], "negative": [pos, 0],
                              "latent_image": [lat, 0]})
        img = add("VAEDecode", {"samples": [ks, 0], "vae": [ck, 2]})
        for _ in range(per):
            img = add(rng.choice(["ImageInvert", "ImageScaleBy"]), {"image": [img, 0]})
        gw = add("GPUGeekCloudExecute", {"workflow_id": "123456789012345", "run_on": "cloud", "timeout_s": 600,
                                         "image_1": [img, 0]})
        out = [gw, 0]
        for _ in range(per):
            out = [add("ImageInvert", {"image": out}), 0]
        add("SaveImage", {"images": out, "filename_prefix": "x"})
    while len(p) < n:
        add("PrimitiveInt", {"value": 1})
    return p


def main() -> dict:
    g = big_graph()
    header(f"queue-time planning: {len(g)} nodes, 8 gateways, median of 15")
    t_plan = timeit(lambda: plan.make_plan(g, CLASSES, lambda name: False))
    t_json = timeit(lambda: json.loads(json.dumps(g)))
    row("make_plan (the whole on_prompt work)", f"{t_plan * 1e3:.1f} ms", f"{t_json * 1e3:.1f} ms", t_plan / t_json,
        "< 50 ms (baseline: JSON round trip)", t_plan < 0.050)
    return {"plan_ms": t_plan * 1e3, "json_ms": t_json * 1e3}


if __name__ == "__main__":
    main()
