"""Uploads: encode speed and size against Pillow's default level, bytes sent when the same input image is
used again (must be zero), and parallel transfers with a bound against one-by-one, over a link with 50 ms
of latency per request (the fake server delays each PUT). Run: python bench/upload.py
"""
from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import core, header, row  # noqa: E402

KEY = "sk-bench-upload-000000000000"


def main() -> dict:
    os.environ["GPUGEEK_HOME"] = tempfile.mkdtemp(prefix="gpugeek-bench-")
    import torch
    from fake_gpugeek import FakeGPUGeek
    client = core("targets.gpugeek_api")
    config = core("config")
    journal = core("journal")
    run = core("run")
    target_mod = core("targets")
    transfer = core("transfer")
    fake = FakeGPUGeek(api_key=KEY).start()
    out = {}
    try:
        torch.manual_seed(0)
        imgs = [torch.rand((1, 512, 512, 3)) for _ in range(8)]
        model = core("plan.model")
        plan = model.GatewayPlan(
            gateway="10", mode="cloud",
            prompt={f"gpugeek_in_{i}": {"class_type": "LoadImage", "inputs": {"image": None}} for i in range(8)},
            crossings=[model.Crossing(kind="image", source=("1", 0), input=f"x{i}", loader=f"gpugeek_in_{i}")
                       for i in range(8)])
        values = {f"x{i}": imgs[i] for i in range(8)}

        async def once(limit):
            async with client.GPUGeekClient.open(fake.base_url, config.ApiKey(KEY)) as c:
                t = target_mod.GPUGeekTarget(c)
                cache = journal.UploadCache(os.path.join(os.environ["GPUGEEK_HOME"], f"u{limit}.jsonl"))
                stats = {}
                t0 = time.perf_counter()
                await run.prepare(plan, values, t, cache, stats=stats, limit=limit)
                first = time.perf_counter() - t0
                sent_before = fake.bytes_uploaded
                await run.prepare(plan, values, t, cache, stats={}, limit=limit)
                return first, fake.bytes_uploaded - sent_before, stats
        header("uploads: 8 inputs of 512x512, 50 ms latency per PUT")
        fake.fault("put", *["slow:0.05"] * 8)
        t_seq, _, _ = asyncio.run(once(1))
        fake.fault("put", *["slow:0.05"] * 8)
        t_par, again, stats = asyncio.run(once(transfer.PARALLEL_TRANSFERS))
        row(f"8 uploads, at most {transfer.PARALLEL_TRANSFERS} at once", f"{t_par * 1e3:.0f} ms", f"{t_seq * 1e3:.0f} ms",
            t_seq / t_par, "one by one = baseline", t_par < t_seq)
        row("bytes sent when the same inputs run again", f"{again} B", f"{stats.get('uploaded_bytes', 0) >> 10} KB",
            None, "0", again == 0)
        out.update(parallel_ms=t_par * 1e3, sequential_ms=t_seq * 1e3, again_bytes=again)
    finally:
        fake.stop()
    return out


if __name__ == "__main__":
    main()
