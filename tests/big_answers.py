"""Big answers and how long the event loop is held while they are read (tests/test_catalog.py, bench/cloud_lists.py):
a ComfyUI server's node definitions the size of a big install, served by another process, and a ticker that
measures the loop's longest stall."""
from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path


def big_object_info(size: int) -> bytes:
    """Node definitions (``/object_info``) of about ``size`` bytes, shaped like a big install: thousands of classes,
    a few model lists shared by many of them, tooltips and descriptions."""
    loras = [f"loras/style_{i:05d}_detailed_version_v{i % 7}.safetensors" for i in range(4000)]
    ckpts = [f"checkpoints/model_{i:04d}_fp16.safetensors" for i in range(800)]
    samplers = [f"sampler_{i}" for i in range(40)]
    parts, total, i = [], 0, 0
    while True:
        req = {"seed": ["INT", {"default": 0, "min": 0, "max": 2 ** 64 - 1, "tooltip": "The random seed. " * 8}],
               "sampler_name": [samplers, {"tooltip": "The algorithm used when sampling."}],
               "text": ["STRING", {"multiline": True}]}
        if i % 40 == 0:
            req["lora_name"] = [loras, {}]
        if i % 25 == 0:
            req["ckpt_name"] = ["COMBO", {"options": ckpts}]
        d = {"input": {"required": req}, "output": ["MODEL"], "name": f"Node{i}", "display_name": f"Node {i}",
             "description": "A node of a big install. " * 10, "category": "loaders", "output_node": False}
        part = json.dumps(f"Node{i}") + ":" + json.dumps(d)
        if total + len(part) + 3 > size:
            return ("{" + ",".join(parts) + "}").encode()
        parts.append(part)
        total += len(part) + 1
        i += 1


@contextlib.contextmanager
def serve_in_another_process(body: bytes, name: str, folder: Path):
    """``body`` at ``<url>/<name>``, served by Python's own HTTP server in another process (so that serving it
    holds no lock of this one); yields the URL."""
    served = Path(folder) / "served"
    served.mkdir(exist_ok=True)
    (served / name).write_bytes(body)
    srv = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory",
                            str(served)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        yield "http://127.0.0.1:" + srv.stdout.readline().split(" port ")[1].split()[0]
    finally:
        srv.kill()
        srv.wait()


def waited_for_a_cpu() -> float:
    """Seconds this thread has waited for a CPU while ready to run (Linux's schedstat; 0 where there is none)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


async def worst_stall(work) -> tuple:
    """(what ``work`` returned, the longest the event loop was held while it ran): a ticker coroutine wakes every
    2 ms; a stall is the time between two of its wakes beyond the time the loop's thread waited for a free CPU (the
    machine's load, not this process: on the 2-core CI at load 20, an idle loop misses 100 ms now and then for that
    alone). Where the kernel does not tell that wait (not Linux), the whole time between two wakes counts."""
    done, worst = asyncio.Event(), [0.0]

    async def ticker():
        last, waited = time.monotonic(), waited_for_a_cpu()
        while not done.is_set():
            await asyncio.sleep(0.002)
            now, now_waited = time.monotonic(), waited_for_a_cpu()
            worst[0] = max(worst[0], now - last - (now_waited - waited))
            last, waited = now, now_waited
    tick = asyncio.ensure_future(ticker())
    try:
        result = await work
    finally:
        done.set()
        await tick   # its last wake measures the stall that ended ``work``, if one did
    return result, worst[0]
