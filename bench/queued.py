"""(Named queued.py: a bench/queue.py would hide the standard library's queue module from every bench script.)
A queue of prompts (issue 39): N prompts queued at once, each a cloud task of S seconds, against one prompt, with their
cloud parts sent ahead (the default) and sent at run time (GPUGEEK_SEND_AHEAD=0), in the same process.

ComfyUI here is the stand-in tests/mini_comfy.py ``Queue``: POST /prompt (the on_prompt handler, validation, the queue),
a worker that runs the prompts one after the other (as main.py's prompt_worker), ComfyUI's cache across them. The
platform is the GPUGeek fake in its own process, which runs tasks side by side (as GPUGeek does).

1. 1, 4 and 8 prompts queued at once: the wall until the last one ended, against one prompt (ratios, median and
   slowest of the repeats). Goals (issue 39): 4 prompts <= 1.3x one, 8 <= 1.6x one. With the default of 4 tasks ahead
   at once, 8 prompts take two rounds; the row with 8 ahead (GPUGEEK_SEND_AHEAD=8) shows the platform side by side.
2. A queue of 8 deleted halfway (ComfyUI's queue cleared while the first prompt runs and four parts run ahead): tasks left running in the
   cloud a second later (goal: 0), and the seconds from the clearing until the last task sent ahead was cancelled.
3. ``--real``: the same in a real ComfyUI (COMFYUI_DIR, COMFYUI_PYTHON; CPU only), prompts posted to its /prompt, the
   mode switched through the pack's settings route (send_ahead 4, 8, 0); plus a queue of 4 with two deleted
   (POST /queue delete) and a queue of 4 cleared: tasks left running.
Run: python bench/queued.py [--task-s 4] [--repeats 3] [--real]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import header, row  # noqa: E402

import overhead  # noqa: E402  (its GPUGeek fake in a process and the ComfyUI stand-in set-up)
import requests  # noqa: E402


def prompt(seed: int) -> dict:
    return {"1": {"class_type": "LoadImage", "inputs": {"image": "cloud_only.png"}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0], "seed": seed}},
            "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": overhead.WF, "run_on": "cloud",
                                                                   "timeout_s": 600, "image_1": ["2", 0]}}}


def wait(cond, limit: float = 600.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise RuntimeError("the queue did not end")
        time.sleep(0.01)


def queued(q, n: int, seed: int) -> float:
    """``n`` prompts queued back to back (new seeds): the wall until the last one ended."""
    t0 = time.perf_counter()
    pids = [q.post(prompt(seed + i)) for i in range(n)]
    wait(lambda: all(q.done(p) for p in pids))
    wall = time.perf_counter() - t0
    bad = [q.results[p] for p in pids if isinstance(q.results[p], BaseException)]
    if bad:
        raise bad[0]
    return wall


def running(fake) -> int:
    tasks = requests.get(fake.base_url + "/_fake/stats", timeout=10).json()["tasks"]
    return sum(1 for t in tasks if t["status"] in (1, 2))


def real(task_s: float, repeats: int) -> None:
    """In a real ComfyUI (COMFYUI_DIR, COMFYUI_PYTHON) with the pack, against the GPUGeek fake in its own process."""
    import tempfile
    from pathlib import Path
    import real_comfyui
    tmp = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    fake = overhead.RemoteFake(task_s, size=64, batch=1)
    port = overhead_port()
    proc = real_comfyui.start_comfyui(tmp, "queue", port, env={"GPUGEEK_API_KEY": overhead.KEY,
                                                                "GPUGEEK_BASE_URL": fake.base_url})
    url = f"http://127.0.0.1:{port}"
    try:
        wait(lambda: _up(url), 300)

        def rprompt(seed: int) -> dict:   # a cloud part ComfyUI 0.3.64 and 0.33.0 both validate here
            return {"1": {"class_type": "LoadImage", "inputs": {"image": "cloud_only.png"}},
                    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                    "3": {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method": "nearest-exact",
                                                                 "width": 64 + seed % 4000, "height": 64,
                                                                 "crop": "disabled"}},
                    "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": overhead.WF,
                                                                           "run_on": "cloud", "timeout_s": 600,
                                                                           "image_1": ["3", 0]}},
                    "12": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}}}

        def post(p) -> str:
            r = requests.post(url + "/prompt", json={"prompt": p, "client_id": "bench"}, timeout=30)
            r.raise_for_status()
            return r.json()["prompt_id"]

        def ended(pid) -> bool:
            return bool(requests.get(f"{url}/history/{pid}", timeout=30).json().get(pid))

        def run(n: int, seed: int) -> float:
            t0 = time.perf_counter()
            pids = [post(rprompt(seed + i)) for i in range(n)]
            wait(lambda: all(ended(p) for p in pids))
            return time.perf_counter() - t0

        def setting(v: str) -> None:
            requests.post(url + "/gpugeek/config", json={"send_ahead": v}, timeout=30).raise_for_status()
        seed = 1
        run(1, 0)
        modes = {"sent ahead (4 at once)": "4", "sent ahead (8 at once)": "8", "sent at run time": "0"}
        walls: dict = {(m, n): [] for m in modes for n in (1, 4, 8)}
        for _ in range(repeats):
            for mode, v in modes.items():
                setting(v)
                for n in (1, 4, 8):
                    if v == "8" and n != 8:
                        continue
                    walls[(mode, n)].append(run(n, seed))
                    seed += 10
        _report(f"a queue of prompts in a real ComfyUI ({real_comfyui.COMFY}): each a {task_s:.1f} s cloud task",
                 walls, modes, repeats)
        setting("4")
        before = len(_tasks(fake))
        pids = [post(rprompt(seed + i)) for i in range(4)]
        seed += 10
        wait(lambda: len(_tasks(fake)) >= before + 4, 60)
        requests.post(url + "/queue", json={"delete": pids[2:]}, timeout=30)
        wait(lambda: all(ended(p) for p in pids[:2]))
        pids = [post(rprompt(seed + i)) for i in range(4)]
        wait(lambda: len(_tasks(fake)) >= before + 8, 60)
        requests.post(url + "/queue", json={"clear": True}, timeout=30)
        wait(lambda: ended(pids[0]))
        time.sleep(1.0)
        left = running(fake)
        header("a queue of 4 with two deleted, then a queue of 4 cleared, in a real ComfyUI")
        row("tasks left running in the cloud 1 s later", str(left), "", None, "0", left == 0)
    finally:
        real_comfyui.stop([proc])
        fake.stop()


def overhead_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _up(url: str) -> bool:
    try:
        return requests.get(url + "/queue", timeout=1).ok
    except requests.RequestException:
        return False


def _tasks(fake) -> list:
    return requests.get(fake.base_url + "/_fake/stats", timeout=10).json()["tasks"]


def _report(title: str, walls: dict, modes: dict, repeats: int) -> float:
    base = statistics.median([w for m in modes for w in walls[(m, 1)]])
    header(f"{title}, {repeats} times")
    row("1 prompt: wall (median)", f"{base:.2f} s")
    for mode in modes:
        for n, goal in ((4, 1.3), (8, 1.6)):
            ws = walls[(mode, n)]
            if not ws:
                continue
            ratios = [w / base for w in ws]
            med, worst = statistics.median(ratios), max(ratios)
            bar = f"<= {goal}x" if "ahead" in mode else ""
            row(f"{n} prompts, {mode}: median", f"{med:.2f}x", f"{statistics.median(ws):.2f} s", None, bar,
                med <= goal if bar else None)
            row("  slowest", f"{worst:.2f}x", f"{max(ws):.2f} s", None, bar, worst <= goal if bar else None)
    return base


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task-s", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--real", action="store_true", help="in a real ComfyUI (COMFYUI_DIR, COMFYUI_PYTHON)")
    args = ap.parse_args()
    if args.real:
        return real(args.task_s, args.repeats)
    pack, fake, classes = overhead.setup(args.task_s, size=512, batch=1, jitter=None)
    import mini_comfy
    from server import PromptServer
    q = mini_comfy.Queue(classes, PromptServer.instance)
    ahead = pack.nodes.ahead
    try:
        seed = int(time.time()) % 10**6 * 100
        queued(q, 1, seed)   # warm-up: imports, sessions, the part's history
        seed += 100
        modes = {"sent ahead (4 at once)": "4", "sent ahead (8 at once)": "8", "sent at run time": "0"}
        walls: dict = {(m, n): [] for m in modes for n in (1, 4, 8)}
        for _ in range(args.repeats):   # interleaved, so that the machine's load falls on every mode alike
            for mode, setting in modes.items():
                os.environ["GPUGEEK_SEND_AHEAD"] = setting
                for n in (1, 4, 8):
                    if setting == "8" and n != 8:
                        continue
                    walls[(mode, n)].append(queued(q, n, seed))
                    seed += 100
        base = _report(f"a queue of prompts on the GPUGeek fake: each a {args.task_s:.1f} s cloud task", walls, modes,
                       args.repeats)

        # a queue of 8 cleared halfway: the first prompt runs, four parts run ahead, three wait for a slot
        os.environ["GPUGEEK_SEND_AHEAD"] = "4"
        before = len(_tasks(fake))
        pids = [q.post(prompt(seed + i)) for i in range(8)]
        seed += 100
        wait(lambda: len(_tasks(fake)) >= before + 5, 30)
        t0 = time.perf_counter()
        q.prompt_queue.wipe_queue()
        # the prompt ComfyUI runs now keeps its own task (it runs); every task sent ahead is cancelled
        wait(lambda: running(fake) <= 1, 30)
        cancelled_in = time.perf_counter() - t0
        wait(lambda: q.done(pids[0]), 60)   # the prompt that was running ends
        time.sleep(1.0)
        left = running(fake)
        sent = len(_tasks(fake)) - before
        header("a queue of 8 cleared while its first prompt ran and four parts ran ahead")
        row("tasks left running in the cloud 1 s later", str(left), "", None, "0", left == 0)
        row("tasks the platform took (1 + 4 ahead)", str(sent), "", None, "5", sent == 5)
        row("clearing -> every task ahead cancelled", f"{cancelled_in:.2f} s", "", None, "<= 1 s", cancelled_in <= 1.0)
        print(json.dumps({"one_s": base, **{f"{m} {n}": statistics.median(v) / base for (m, n), v in walls.items()
                                            if v and n > 1}}))
    finally:
        ahead.stop_watcher()
        q.close()
        fake.stop()


if __name__ == "__main__":
    main()
