"""A local model up to a ComfyUI server that receives models (issue 40), on loopback, against its bytes' time.

The server is the fake ComfyUI running the pack's own receiver (offload/receive.py) in its own thread; the client is
the pack's (offload/run/models.py ``make_available`` through offload/targets/comfyui.py). Each run sends a new model
(other bytes: nothing to reuse), three ways:
* first use (its hash not known here), the server holding nothing of its size: asked by size, sent at once, hashed
  here as it is read and on the server as it arrives, its hash told at the end and checked there, renamed into place;
* first use, the server holding another file of its size: its first and last MiB (receive.file_marks, sent with
  the ask) tell the two apart, so it goes as the first case (before them: hashed here first, asked by hash, sent);
* its hash known (an earlier run, a pool's other server): asked by hash, sent, checked.
The baseline: a plain client PUTting the same file, streamed with its length, to a plain route that writes it to
disk (no hashes, no checks): the bytes' time on this machine. Goal: <= 1.1x. Median and slowest of ``runs``; the
load average is printed (the machine is shared).
Run: python bench/models.py [--runs N] [--mb MB] [--link]   (default 1024 MB: a 1 GiB model)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import core, header, row  # noqa: E402


def sink_server(folder: str):
    """A plain route writing what it is sent to a file: the least a server does with a model's bytes."""
    from aiohttp import web
    out = {}
    ready = threading.Event()

    async def put(request):
        with open(os.path.join(folder, "sink.bin"), "wb") as f:
            async for piece in request.content.iter_chunked(1 << 20):
                await asyncio.to_thread(f.write, piece)
        return web.json_response({"ok": True})

    def run():
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_put("/sink", put)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        out["url"] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        ready.set()
        loop.run_forever()
    threading.Thread(target=run, daemon=True).start()
    ready.wait(10)
    return out["url"]


async def plain_put(url: str, path: str) -> None:
    import aiohttp

    async def pieces():
        with open(path, "rb") as f:
            while True:
                piece = await asyncio.to_thread(f.read, 1 << 20)
                if not piece:
                    return
                yield piece
    async with aiohttp.ClientSession() as s:   # its length said, as a plain PUT of a file does (curl -T)
        async with s.put(url + "/sink", data=pieces(), headers={"Content-Length": str(os.path.getsize(path))}) as r:
            assert r.status == 200


async def ours(url: str, path: str, name: str, hashes_file: str) -> None:
    import aiohttp
    targets = core("targets.comfyui")
    models = core("run.models")
    receive = core("receive")
    source = models.ModelSource(find=lambda v, *_: ("loras", path) if v == name else None,
                                hashes=receive.ShaCache(hashes_file))
    prompt = {"1": {"class_type": "LoraLoader", "inputs": {"lora_name": name}}}
    async with aiohttp.ClientSession() as s:
        target = targets.ComfyUITarget(s, url, allow_lan_http=True)
        await models.make_available(prompt, target, source)
        await target.close()
    assert prompt["1"]["inputs"]["lora_name"] == f"gpugeek/{name}", prompt


def new_model(work: str, i: int, size: int) -> str:
    path = os.path.join(work, f"model{i}.safetensors")
    with open(path, "wb") as f:   # other bytes each run: nothing to reuse
        f.write(os.urandom(1 << 20) * (size >> 20))
        f.write(i.to_bytes(8, "little"))
    return path


def same_size_held(work: str, size: int) -> None:
    """The server holding another model of this size, received before (it could be this one: the client hashes
    first, then asks by hash)."""
    folder = os.path.join(work, "server", "loras", "gpugeek")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "other.safetensors"), "wb") as f:
        f.truncate(size)
    index = os.path.join(work, "server", "index.json")
    held = json.load(open(index)) if os.path.exists(index) else {}
    held["f" * 64] = {"kind": "loras", "name": "other.safetensors"}
    with open(index, "w") as f:
        json.dump(held, f)


def drop_received(work: str) -> None:
    """The server's copies of the runs before, gone (as the sink overwrites its one file): gigabytes of dirty pages
    left behind would slow the next run's writes, which the baseline's would not be."""
    folder = os.path.join(work, "server", "loras", "gpugeek")
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        if name.endswith(".safetensors"):
            os.unlink(os.path.join(folder, name))
    os.sync()


def timed(coro) -> float:
    """Seconds to run ``coro`` to its end, the page cache written out first (each run starts from the disk alike)."""
    os.sync()
    t = time.perf_counter()
    asyncio.run(coro)
    return time.perf_counter() - t


def report(title: str, mine: list, base: list, bar: float = 1.1) -> None:
    ratios = sorted(m / b for m, b in zip(mine, base))
    row(f"{title}: median", f"{statistics.median(mine):.2f} s", f"{statistics.median(base):.2f} s",
        statistics.median(ratios), f"<= {bar}x", statistics.median(ratios) <= bar)
    row(f"{title}: slowest", f"{max(mine):.2f} s", f"{max(base):.2f} s", ratios[-1], "")
    print(f"    each run (ours / baseline, s): {' '.join(f'{m:.2f}/{b:.2f}' for m, b in zip(mine, base))}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--link", action="store_true", help="also behind a 30 ms link of 20 Mbit/s up (use a small --mb)")
    a = ap.parse_args()
    from fake_comfyui import FakeComfyUI
    work = tempfile.mkdtemp(prefix="gpugeek-bench-models-")
    srv = FakeComfyUI().start()
    srv.receive_models(os.path.join(work, "server"))
    sink = sink_server(work)
    size = a.mb << 20
    sha = os.path.join(work, "sha.json")
    first, sized, known, base, linked, link_base = [], [], [], [], [], []
    receive = core("receive")
    try:
        for i in range(a.runs):
            path = new_model(work, i, size)
            base.append(timed(plain_put(sink, path)))
            first.append(timed(ours(srv.url, path, f"model{i}.safetensors", sha)))
            os.unlink(path)
            drop_received(work)
            path = new_model(work, 3000 + i, size)
            same_size_held(work, os.path.getsize(path))
            sized.append(timed(ours(srv.url, path, f"model{3000 + i}.safetensors", sha)))
            os.unlink(path)
            drop_received(work)
            path = new_model(work, 1000 + i, size)
            receive.ShaCache(sha).get(path)   # hashed before (an earlier run, another server of a pool)
            known.append(timed(ours(srv.url, path, f"model{1000 + i}.safetensors", sha)))
            os.unlink(path)
            drop_received(work)
        if a.link:
            srv.up_mbit, srv.latency_ms = 20.0, 30.0
            for i in range(a.runs):
                path = new_model(work, 2000 + i, size)
                linked.append(timed(ours(srv.url, path, f"model{2000 + i}.safetensors", sha)))
                link_base.append(os.path.getsize(path) * 8 / 20e6)
                os.unlink(path)
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)   # the sink's file and the server's folders: gigabytes
    header(f"a {a.mb} MB model up (new bytes each run: sent, checked), {a.runs} runs, "
           f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    report("first use, nothing of its size there", first, base)
    report("first use, a file of its size there", sized, base)
    report("its hash known", known, base)
    if a.link:
        report("30 ms, 20 Mbit/s up, first use", linked, link_base)


if __name__ == "__main__":
    main()
