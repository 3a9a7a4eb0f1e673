"""The cloud's lists (offload/catalog.py) of a big ComfyUI server: reading its /object_info into lists, and what
the editor asks after every plan (the lists of 30 node classes), against a plain json.loads of the same answer
(what reading /object_info costs anyway). Distributions over 15 runs (median, slowest).

``big()`` (issue 32): the event loop's longest stall while a 64 MiB /object_info is downloaded, parsed and learned,
parsed on the loop (as before), on a worker thread, and in a child process (as now), 10 runs each; the peak memory
of parsing it in pieces against json.loads of the whole; and the answer of 200 classes that borrow one list, each
list sent once against a copy per class (as before).

``pool()`` (issue 38): a pool of two servers whose 5,000-name LoRA lists differ by one name, and ten LoRA loaders:
the queue-time check's ``whole_list`` for the ten (10 runs, median/slowest), merged as now (one set per server's list)
against a set built per name (as before); and the lists answer of 100 loaders, each with a name the user added, on
two 4 MiB lists that differ by one name: bounded (MAX_ANSWER_BYTES) against a copy per distinct list (as before).
Run: python bench/cloud_lists.py [--big-only | --pool-only] [--runs N]
"""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import core, header, row  # noqa: E402

cat = core("catalog")
C = core("config")
from big_answers import big_object_info, serve_in_another_process, worst_stall  # noqa: E402


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
    """(median, slowest) ms of ``n`` runs of ``fn`` after one to warm up."""
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
        v_med, v_slow = runs(lambda: cat.answer(c.view([key], wanted), ok=True))
        size = len(cat.answer(c.view([key], wanted), ok=True))
        row("the editor's request (30 classes)", f"{v_med:.2f}/{v_slow:.2f} ms", f"{base_med:.1f} ms", v_med / base_med,
            f"answer {size >> 10} KB")
        fresh_med, fresh_slow = runs(lambda: cat.answer(cat.Catalog(d).view([key], wanted), ok=True), n=10)
        row("same, first request of a new process", f"{fresh_med:.1f}/{fresh_slow:.1f} ms", f"{base_med:.1f} ms",
            fresh_med / base_med, "reads the file")


async def _on_the_loop(key: str, body: bytes) -> None:
    """How the lists were learned before issue 32: parsed at once and learned, on the event loop."""
    cat.catalog().learn(key, cat.SERVER, cat.lists_of_object_info(json.loads(body)), replace=True)


def _stalls(url: str, folder: Path, runs: int, way: str) -> list:
    """The loop's longest stall (ms) in each of ``runs`` reads of the server's definitions, parsed ``way``."""
    import gc
    out, learn, in_process = [], cat._learn_definitions, cat.IN_PROCESS_BYTES
    c = cat.Catalog(folder / way)
    cat.catalog = lambda: c
    if way == "on the loop (before)":
        cat._learn_definitions = _on_the_loop
    elif way == "worker thread":
        cat.IN_PROCESS_BYTES = 1 << 40
    try:
        cfg = C.load_config({"GPUGEEK_TARGET": url})
        for _ in range(runs):
            gc.collect()
            problems, worst = asyncio.run(worst_stall(cat.read_servers(cfg, [url], force=True)))
            assert not problems, problems
            out.append(worst * 1000)
    finally:
        cat._learn_definitions, cat.IN_PROCESS_BYTES = learn, in_process
    return out


_PEAK = """import importlib, json, sys, tracemalloc, types
pack = types.ModuleType('p'); pack.__path__ = [sys.argv[1]]; sys.modules['p'] = pack
cat = importlib.import_module('p.offload.catalog')
body = open(sys.argv[2], 'rb').read()
tracemalloc.start()
found = cat.lists_of_object_info(body if sys.argv[3] == 'pieces' else json.loads(body))
print(tracemalloc.get_traced_memory()[1] >> 20)
"""


def _peak_mb(path: Path, way: str) -> int:
    """The peak of Python's allocations (MB) while a fresh process parses the file ``way`` into lists."""
    return int(subprocess.run([sys.executable, "-c", _PEAK, str(Path(cat.__file__).resolve().parents[1]), str(path),
                               way], capture_output=True, text=True, check=True).stdout.split()[-1])


def big(runs: int = 10) -> None:
    runs = max(1, runs)
    body = big_object_info(cat.MAX_OBJECT_INFO_BYTES)
    header(f"cloud lists: a {len(body) >> 20} MiB /object_info ({runs} runs each; the loop's longest stall, beyond "
           "its waits for a CPU)")
    with tempfile.TemporaryDirectory() as d, serve_in_another_process(body, "object_info", Path(d)) as url:
        catalog = cat.catalog
        try:
            stalls = {way: _stalls(url, Path(d), runs, way)
                      for way in ("on the loop (before)", "worker thread", "child process (now)")}
        finally:
            cat.catalog = catalog
        base = statistics.median(stalls["on the loop (before)"])
        for way, ms in stalls.items():
            row(f"loop stall, parsed {way}", f"{statistics.median(ms):.0f}/{max(ms):.0f} ms",
                f"{base:.0f} ms", statistics.median(ms) / base, "< 100 ms (median/slowest)", ok=max(ms) < 100)
        path = Path(d) / "served" / "object_info"
        whole, pieces = _peak_mb(path, "whole"), _peak_mb(path, "pieces")
        row("peak memory of the parse, a class at a time", f"{pieces} MB", f"{whole} MB", pieces / whole,
            "json.loads of the whole (tracemalloc)")
    loras = [f"loras/style_{i:05d}_detailed_version.safetensors" for i in range(4000)]
    with tempfile.TemporaryDirectory() as d:
        c = cat.Catalog(d)
        c.learn("k", "user", {"LoraLoader": {"lora_name": loras}}, replace=False)
        view = c.view(["k"], {f"Custom{i}": ["lora_name"] for i in range(200)})
        t = time.perf_counter()
        now = cat.answer(view, ok=True)
        ms = (time.perf_counter() - t) * 1000
        before = json.dumps({"ok": True, "lists": view}).encode()
        row("answer: 200 classes borrow a 4,000-name list", f"{len(now) >> 10} KB", f"{len(before) >> 20} MB",
            len(now) / len(before), f"a copy per class (before); {ms:.0f} ms to encode")


def _whole_list_before(c, keys: list, cls: str, name: str):
    """Catalog.whole_list before issue 38: a set of a server's list built again for each name of the other's."""
    got = None
    for k in keys:
        entry = (c.lists(k).get(cls) or {}).get(name) or {}
        values = [v for s in (cat.SERVER, cat.REFUSED) for v in ((entry.get(s) or {}).get("values") or [])]
        if not values:
            return None
        got = values if got is None else [v for v in got if v in set(values)]
    return got


def _answer_before(view: dict) -> int:
    """The bytes of the lists answer before issue 38: each distinct list whole, however many and however long."""
    table = cat._Table()
    classes = {cls: {n: {"list": table.index(e["values"]), "sources": e["sources"]} for n, e in ins.items()}
               for cls, ins in view.items()}
    return len(table.json()) + len(json.dumps(classes))


def pool(times: int = 10) -> None:
    times = max(1, times)
    header(f"cloud lists on a pool: two servers, 5,000-name lists that differ by one name ({times} runs each)")
    a, b = "http://127.0.0.1:1", "http://127.0.0.1:2"
    loras = [f"loras/style_{i:05d}_detailed_version.safetensors" for i in range(5000)]
    classes = [f"LoraLoader{i}" for i in range(10)]
    with tempfile.TemporaryDirectory() as d:
        c = cat.Catalog(d)
        for key, names in ((a, loras), (b, ["loras/only_on_b.safetensors"] + loras[1:])):
            c.learn(key, "server", {cls: {"lora_name": names} for cls in classes}, replace=True)

        def check(whole_list):
            return lambda: [whole_list([a, b], cls, "lora_name") for cls in classes]
        assert check(c.whole_list)() == check(lambda *x: _whole_list_before(c, *x))()
        now_med, now_slow = runs(check(c.whole_list), times)
        old_med, old_slow = runs(check(lambda *x: _whole_list_before(c, *x)), times)
        row("whole_list, ten loaders (queue time)", f"{now_med:.1f}/{now_slow:.1f} ms",
            f"{old_med:.0f}/{old_slow:.0f} ms", now_med / old_med,
            f"a set per name (before; median/slowest): {old_med / now_med:.0f}x faster")
    big = [f"loras/{'detailed_style_' * 55}{i:05d}.safetensors" for i in range(5000)]
    classes = [f"LoraLoader{i}" for i in range(100)]
    with tempfile.TemporaryDirectory() as d:
        c = cat.Catalog(d)
        for key, names in ((a, big), (b, ["loras/only_on_b.safetensors"] + big[1:])):
            c.learn(key, "server", cat.lists_of_object_info(
                {cls: {"input": {"required": {"lora_name": [names, {}]}}} for cls in classes}), replace=True)
            c.learn(key, "user", {cls: {"lora_name": [f"mine_{cls}.safetensors"]} for cls in classes}, replace=False)
        view = c.view([a, b], {cls: ["lora_name"] for cls in classes})
        a_med, a_slow = runs(lambda: cat.answer(view, ok=True), times)
        now, before = len(cat.answer(view, ok=True)), _answer_before(view)
        row("lists answer, 100 loaders, 4 MiB lists", f"{now / 2**20:.1f} MiB", f"{before >> 20} MiB", now / before,
            f"<= {cat.MAX_ANSWER_BYTES >> 20} MiB; built in {a_med:.0f}/{a_slow:.0f} ms", ok=now <= cat.MAX_ANSWER_BYTES)



if __name__ == "__main__":
    n = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 10
    if "--pool-only" in sys.argv:
        pool(n)
    else:
        if "--big-only" not in sys.argv:
            main()
            pool(n)
        big(n)
