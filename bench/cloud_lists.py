"""The cloud's lists (offload/catalog.py) of a big ComfyUI server: reading its /object_info into lists, and what
the editor asks after every plan (the lists of 30 node classes), against a plain json.loads of the same answer
(what reading /object_info costs anyway). Distributions over 15 runs (median, slowest).
Run: python bench/cloud_lists.py
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import core, header, row  # noqa: E402

cat = core("catalog")


def object_info(classes: int = 2000, models: int = 2000, loaders: int = 20) -> dict:
    """A big install: ``classes`` node classes with a few small combos each, ``loaders`` of them listing the
    same ``models`` checkpoints (as every checkpoint loader lists the whole folder)."""
    ckpts = [f"folder/sub/model_{i:05d}_v1.safetensors" for i in range(models)]
    info = {}
    for i in range(classes):
        required = {"seed": ["INT", {"default": 0}], "mode": [["a", "b", "c"], {}],
                    "method": ["COMBO", {"options": ["x", "y"]}]}
        if i < loaders:
            required["ckpt_name"] = [ckpts, {}]
        info[f"Class{i}"] = {"input": {"required": required, "optional": {}}, "output": ["IMAGE"], "name": f"Class{i}"}
    return info


def runs(fn, n: int = 15):
    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts), max(ts)


def main() -> None:
    raw = json.dumps(object_info()).encode()
    header(f"cloud lists: a server's /object_info of {len(raw) >> 20} MB (2,000 classes, 20 loaders x 2,000 models)")
    base_med, base_max = runs(lambda: json.loads(raw))
    med, slow = runs(lambda: cat.lists_of_object_info(json.loads(raw)))
    row("read /object_info into lists", f"{med:.1f}/{slow:.1f} ms", f"{base_med:.1f}/{base_max:.1f} ms",
        med / base_med, "json.loads alone (median/slowest)")
    with tempfile.TemporaryDirectory() as d:
        c = cat.Catalog(d)
        key = "http://127.0.0.1:8188"
        found = cat.lists_of_object_info(json.loads(raw))
        w_med, w_slow = runs(lambda: c.learn(key, "server", found, replace=True), n=10)
        row("keep them (write the place's file)", f"{w_med:.1f}/{w_slow:.1f} ms", f"{base_med:.1f} ms", w_med / base_med,
            "json.loads of the answer")
        wanted = {f"Class{i}": ["ckpt_name", "mode", "method"] for i in range(30)}
        v_med, v_slow = runs(lambda: c.view([key], wanted))
        size = len(json.dumps(c.view([key], wanted)))
        row("the editor's request (30 classes)", f"{v_med:.2f}/{v_slow:.2f} ms", f"{base_med:.1f} ms", v_med / base_med,
            f"answer {size >> 10} KB")
        fresh_med, fresh_slow = runs(lambda: cat.Catalog(d).view([key], wanted), n=10)
        row("same, first request of a new process", f"{fresh_med:.1f}/{fresh_slow:.1f} ms", f"{base_med:.1f} ms",
            fresh_med / base_med, "reads the file")


if __name__ == "__main__":
    main()
