"""A whole workflow's output node saves each cloud image here as a local Save Image would (the workflow in its
PNG metadata). Measured per 1024x1024 photo-like PNG: ours (the cloud's PNG kept byte for byte, its text
chunks replaced: codec.png_with_text) against decoding it and encoding it again with Pillow at Save Image's
level 4 (what a local save costs), in this process; distributions over 15 runs (median and slowest).
Run: python bench/whole.py
"""
from __future__ import annotations

import io
import json
import os
import statistics
import sys
import time

from PIL import Image
from PIL.PngImagePlugin import PngInfo

sys.path.insert(0, os.path.dirname(__file__))
from _common import core, header, row  # noqa: E402
from fake_gpugeek import photo_png  # noqa: E402

codec = core("codec")
TEXT = {"prompt": json.dumps({str(i): {"class_type": "KSampler", "inputs": {"seed": i}} for i in range(30)}),
        "workflow": json.dumps({"nodes": [{"id": i, "title": "\u732b"} for i in range(30)]})}


def reencode(data: bytes) -> bytes:
    info = PngInfo()
    for k, v in TEXT.items():
        info.add_text(k, v)
    out = io.BytesIO()
    with Image.open(io.BytesIO(data)) as im:
        im.save(out, "PNG", pnginfo=info, compress_level=4)
    return out.getvalue()


def spread(fn, runs: int = 15):
    fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), max(ts)


def main():
    data = photo_png(1024, 1024, seed=11)
    header("whole workflow: one 1024x1024 cloud PNG saved by its output node here (15 runs)")
    ours, ours_max = spread(lambda: codec.png_with_text(data, TEXT))
    base, base_max = spread(lambda: reencode(data))
    row("save with this machine's metadata, median", f"{ours * 1000:.2f} ms", f"{base * 1000:.1f} ms", base / ours)
    row("same, slowest", f"{ours_max * 1000:.2f} ms", f"{base_max * 1000:.1f} ms", base_max / ours_max)
    same = Image.open(io.BytesIO(codec.png_with_text(data, TEXT))).tobytes() == Image.open(io.BytesIO(data)).tobytes()
    row("pixels identical to the cloud's", str(same))


if __name__ == "__main__":
    main()
