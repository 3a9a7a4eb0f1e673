"""Soak: many queued prompts with two gateways each against the fake GPUGeek server (loopback only,
bounded in count and time). Every result is checked; open sockets, file handles, threads, asyncio tasks
and memory are sampled before and after. The suite runs a reduced size (tests/test_soak.py); this runs
the full one: python bench/soak.py --prompts 200
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

KEY = "sk-soak-0000000000000000"
MAX_SECONDS = 900  # the soak stops by itself


def _fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def _sockets() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


def _rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return -1


def soak(prompts: int = 200, fake=None, classes=None, pack=None) -> dict:
    import torch
    own = fake is None
    if own:
        os.environ["GPUGEEK_HOME"] = tempfile.mkdtemp(prefix="gpugeek-soak-")
        from conftest import load_pack
        from fake_gpugeek import FakeGPUGeek
        pack = load_pack()
        import folder_paths
        import nodes
        folder_paths.base = tempfile.mkdtemp(prefix="comfy-soak-")
        for d in ("input", "output", "temp", "user"):
            os.makedirs(os.path.join(folder_paths.base, d), exist_ok=True)
        fake = FakeGPUGeek(api_key=KEY, run_s=0.05).start()
        os.environ["GPUGEEK_API_KEY"] = KEY
        os.environ["GPUGEEK_BASE_URL"] = fake.base_url
        import mini_comfy
        classes = mini_comfy.stub_classes()
        classes.update(pack.NODE_CLASS_MAPPINGS)
        nodes.NODE_CLASS_MAPPINGS.update(classes)
    fake.task_opts.update(size=64)
    import mini_comfy
    from conftest import core
    from server import PromptServer
    decode = core("batch").decode_batch

    def prompt(i):
        return {"1": {"class_type": "LoadImage", "inputs": {"image": f"a{i}.png"}},
                "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                "3": {"class_type": "LoadImage", "inputs": {"image": f"b{i}.png"}},
                "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "123456789012345",
                       "run_on": "cloud", "timeout_s": 60, "image_1": ["2", 0]}},
                "11": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "123456789012345",
                       "run_on": "cloud", "timeout_s": 60, "image_1": ["3", 0]}}}

    def run(i):
        results, _, _ = asyncio.run(mini_comfy.execute(prompt(i), classes, PromptServer.instance))
        for g in ("10", "11"):
            task = fake.tasks[results[g][6]]
            (_, data), = next(iter(task.files.values()))
            img, _ = decode([data])
            assert torch.equal(results[g][0], img), f"prompt {i} gateway {g}: wrong pixels"

    t0 = time.monotonic()
    warm = max(5, prompts // 10)
    for i in range(warm):
        run(i)
    gc.collect()
    before = {"fds": _fds(), "sockets": _sockets(), "threads": threading.active_count(), "rss_mb": _rss_mb()}
    done = warm
    for i in range(warm, prompts):
        if time.monotonic() - t0 > MAX_SECONDS:
            break
        run(i)
        done += 1
    gc.collect()
    after = {"fds": _fds(), "sockets": _sockets(), "threads": threading.active_count(), "rss_mb": _rss_mb()}
    submits = fake.count("submit")
    out = {"prompts": done, "tasks": len(fake.tasks), "submits": submits, "before": before, "after": after,
           "seconds": round(time.monotonic() - t0, 1),
           "journal_tasks": len(pack.nodes.cloud.journal().tasks(100000)),
           "lost": len(fake.tasks) - len([t for t in fake.tasks.values() if t.polls > 0])}
    if own:
        fake.stop()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=200)
    r = soak(ap.parse_args().prompts)
    print(json.dumps(r, indent=1))
    print(f"prompts {r['prompts']}, tasks {r['tasks']}, submits {r['submits']} (duplicates: {r['submits'] - r['tasks']}), "
          f"tasks lost {r['lost']}, fds {r['before']['fds']}->{r['after']['fds']}, sockets "
          f"{r['before']['sockets']}->{r['after']['sockets']}, threads {r['before']['threads']}->{r['after']['threads']}, "
          f"RSS {r['before']['rss_mb']:.0f}->{r['after']['rss_mb']:.0f} MB")
