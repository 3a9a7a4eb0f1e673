"""A local video up and the cloud's video back (issue 33; issue 31's kinds), on loopback and behind the home link.

A whole workflow in the cloud, as a downloaded one runs: Load Video reads a clip of this machine (a new clip every
run, as a user's next one: nothing to reuse), Save Video keeps what the cloud made of it (the fake gives the
uploaded file back, byte for byte, as the cloud would save a clip of that size). Once with one clip, once with
three at a third of the size each (the same bytes in all: their uploads and downloads must overlap). The fake
runs in its own process with the platform's jitter. Per run: the net time (wall minus the task's own lifetime),
against
- the time its bytes need on the link (up at its upload rate, back at its download rate): bar 1.15x;
- a plain client in the same process moving the same bytes the fewest ways the API allows (ask for an address,
  PUT, GET, one file after the other; no hashing, no journal, no saving): what any client pays.
Median and slowest of ``runs``.
Run: python bench/media.py [--runs N] [--mb MB]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import header, row  # noqa: E402

import overhead  # noqa: E402  (the fake in its own process, the ComfyUI stand-in's set-up)


def media_classes() -> dict:
    """Load Video and Save Video as this machine's ComfyUI declares them (the whole workflow never runs them here)."""
    from mini_comfy import stub_class
    return {"LoadVideo": stub_class("LoadVideo", {"file": ("STRING",)}, ("VIDEO",)),
            "SaveVideo": stub_class("SaveVideo", {"video": ("VIDEO",), "filename_prefix": ("STRING",)}, (), True)}


def workflow(names: list) -> dict:
    """A downloaded workflow: each local clip loaded and saved again (as ComfyUI's own Load Video / Save Video)."""
    p = {}
    for i, name in enumerate(names):
        p[str(2 * i + 1)] = {"class_type": "LoadVideo", "inputs": {"file": name}}
        p[str(2 * i + 2)] = {"class_type": "SaveVideo", "inputs": {"video": [str(2 * i + 1), 0],
                                                                   "filename_prefix": f"video/clip{i}",
                                                                   "format": "auto", "codec": "auto"}}
    return p


async def plain_client(base_url: str, key: str, blobs: list) -> None:
    """The least a client must do to send these files and fetch them back: an address, a PUT, a GET each."""
    import aiohttp
    auth = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as s:
        for i, data in enumerate(blobs):
            async with s.get(base_url + "/api/v1/file/upload/pre-signed-url", params={"file_name": f"c{i}.mp4"},
                             headers=auth) as r:
                signed = (await r.json())["data"]["signed_url"]
            async with s.put(signed, data=data, headers={"Content-Type": "application/octet-stream"}) as r:
                assert r.status == 200
            async with s.get(signed.split("?")[0]) as r:
                assert len(await r.read()) == len(data)


def measure(runs: int = 10, mb: float = 12.0, clips: int = 1, net: dict | None = None, task_s: float = 1.0) -> dict:
    import folder_paths
    import mini_comfy
    import nodes
    from server import PromptServer
    _, fake, classes = overhead.setup(task_s, 64, 1, net)
    os.environ["GPUGEEK_WORKFLOW_ID"] = overhead.WF   # a whole workflow runs on the settings' workflow
    media = media_classes()
    classes.update(media)
    nodes.NODE_CLASS_MAPPINGS.update(media)
    size = int(mb * 1e6 / clips)
    try:
        nets, needs, plains, ups, downs, lags = [], [], [], [], [], []
        for k in range(runs + 1):   # the first warms the sessions and the lists
            names = []
            for i in range(clips):
                names.append(f"clip_{time.time_ns()}_{i}.mp4")
                Path(folder_paths.get_input_directory(), names[-1]).write_bytes(os.urandom(size))
            down0, up0 = fake.moved()
            t0 = time.perf_counter()
            results, ui, local = asyncio.run(mini_comfy.execute(json.loads(json.dumps(workflow(names))), classes,
                                                                PromptServer.instance,
                                                                extra_data={"gpugeek_whole_workflow": True}))
            wall = time.perf_counter() - t0
            down1, up1 = fake.moved()
            saved = [Path(folder_paths.get_output_directory(), f["subfolder"], f["filename"])
                     for n in local if n in ui for f in ui[n].get("images", [])]
            assert len(saved) == clips and all(p.stat().st_size == size for p in saved), (ui, saved)
            pid = next(g["task_id"] for n in ui for g in (ui[n] or {}).get("gpugeek", []) if g.get("task_id"))
            blobs = [os.urandom(size) for _ in range(clips)]
            t0 = time.perf_counter()
            asyncio.run(plain_client(fake.base_url, overhead.KEY, blobs))
            plain = time.perf_counter() - t0
            if not k:
                continue
            task = fake.task(pid)
            nets.append(wall - overhead.lifetime(task))
            lags.append(task["noticed_lag"])
            plains.append(plain)
            ups.append(up1 - up0)
            downs.append(down1 - down0)
            if net:
                needs.append(overhead.bytes_time(net, up1 - up0, down1 - down0))
        header(f"a local video up and the cloud's video back: {clips} clip(s) of {size / 1e6:.1f} MB, "
               f"{overhead.link_name(net)}, {runs} runs (a new clip each)")
        print(f"  {statistics.median(ups) / 1e6:.1f} MB up and {statistics.median(downs) / 1e6:.1f} MB down a run")
        print("  net (s): " + " ".join(f"{n:.2f}" for n in nets))
        print(f"  the end noticed after: {statistics.median(lags) * 1e3:.0f} ms median, {max(lags) * 1e3:.0f} ms slowest")
        med, worst = statistics.median(nets), max(nets)
        out = {"net_s": med, "slowest_s": worst, "plain_s": statistics.median(plains)}
        if net:
            need = statistics.median(needs)
            ratios = [n / d for n, d in zip(nets, needs)]
            row("net time vs the time its bytes need: median", f"{med:.2f} s", f"{need:.2f} s",
                statistics.median(ratios), "<= 1.15x", statistics.median(ratios) <= 1.15)
            row("  slowest", f"{worst:.2f} s", "", max(ratios), "<= 1.15x", max(ratios) <= 1.15)
            out["ratio"], out["slowest_ratio"] = statistics.median(ratios), max(ratios)
        else:
            row("net time: median", f"{med * 1e3:.0f} ms", "", None, "")
            row("  slowest", f"{worst * 1e3:.0f} ms", "", None, "")
        row("  a plain client moving the same bytes (median)", f"{med:.2f} s", f"{statistics.median(plains):.2f} s",
            med / statistics.median(plains), "")
        return out
    finally:
        fake.stop()


def main(runs: int = 10, mb: float = 12.0) -> dict:
    out = {}
    for net in (None, overhead.HOME_LINK):
        for clips in (1, 3):
            out[(overhead.link_name(net), clips)] = measure(runs, mb, clips, net)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--mb", type=float, default=12.0, help="bytes of video a run (split among the clips)")
    a = ap.parse_args()
    main(a.runs, a.mb)
