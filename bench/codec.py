"""Decode and encode speed for 1024x1024 photo-like images, as ratios against plain Pillow in this process.

Decode: bytes -> float32 IMAGE, ours (pyspng where installed, Pillow otherwise) against ComfyUI-style
Pillow decoding and against the fastest raw decoder measured here. Memory: a batch written into one
preallocated tensor, peak extra memory against the final tensor (tracemalloc sees numpy; torch's own
allocations are counted through the tensor sizes). Encode: our upload PNG against Pillow's default level.
Run: python bench/codec.py
"""
from __future__ import annotations

import io
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from _common import core, header, row, timeit  # noqa: E402
from fake_gpugeek import photo_png  # noqa: E402

codec = core("codec")
batch = core("batch")


def pillow_comfy(data):
    im = Image.open(io.BytesIO(data)).convert("RGB")
    return torch.from_numpy(np.array(im).astype(np.float32) / 255.0)[None]


def main(n_batch: int = 4) -> dict:
    data = photo_png(1024, 1024, seed=7)
    out = {}
    header(f"codec: 1024x1024 photo-like PNG ({len(data) / 1e6:.1f} MB), median of 15")
    t_ours = timeit(lambda: batch.decode_batch([data]))
    t_pil = timeit(lambda: pillow_comfy(data))
    raw = {"pillow raw": timeit(lambda: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))}
    if codec.pyspng is not None:
        raw["pyspng raw"] = timeit(lambda: codec.pyspng.load(data))
    fastest_name, fastest = min(raw.items(), key=lambda kv: kv[1])
    row("decode to IMAGE (ours)", f"{t_ours * 1e3:.1f} ms", f"{t_pil * 1e3:.1f} ms", t_pil / t_ours,
        "vs ComfyUI-style Pillow")
    ratio = t_ours / fastest
    row(f"decode vs fastest raw decoder ({fastest_name})", f"{t_ours * 1e3:.1f} ms", f"{fastest * 1e3:.1f} ms",
        ratio, "<= 1.30x", ratio <= 1.3)
    out.update(decode_ms=t_ours * 1e3, pillow_ms=t_pil * 1e3, fastest_ms=fastest * 1e3, decode_ratio=ratio)

    # peak memory of a batch, measured as the growth of the process's peak RSS in a fresh child process
    ratio_mem, final = peak_rss_ratio(n_batch)
    row(f"batch of {n_batch}: peak extra RSS / final tensor", f"{ratio_mem * final / 2**20:.0f} MB",
        f"{final / 2**20:.0f} MB", ratio_mem, "< 1.30x", ratio_mem < 1.3)
    out.update(batch_peak_ratio=ratio_mem)
    img, _ = batch.decode_batch([data])

    img1 = img[0]
    enc = {lvl: timeit(lambda lvl=lvl: codec.encode_png(img1, level=lvl), repeat=5, warmup=1) for lvl in (codec.PNG_LEVEL, 6)}
    size = {lvl: len(codec.encode_png(img1, level=lvl)) for lvl in (codec.PNG_LEVEL, 6)}
    row(f"encode PNG level {codec.PNG_LEVEL} (ours)", f"{enc[codec.PNG_LEVEL] * 1e3:.0f} ms", f"{enc[6] * 1e3:.0f} ms",
        enc[6] / enc[codec.PNG_LEVEL], "faster than Pillow default (6)", enc[6] > enc[codec.PNG_LEVEL])
    row("encoded size vs level 6", f"{size[codec.PNG_LEVEL] / 1e6:.2f} MB", f"{size[6] / 1e6:.2f} MB",
        size[codec.PNG_LEVEL] / size[6])
    out.update(encode_ms=enc[codec.PNG_LEVEL] * 1e3, encode6_ms=enc[6] * 1e3)
    return out


def comfy_png(w: int, h: int, seed: int) -> bytes:
    """A photo-like frame saved as ComfyUI's SaveImage saves it (PNG, compress_level 4)."""
    from fake_gpugeek import photo_png as _p
    im = Image.open(io.BytesIO(_p(w, h, seed=seed)))
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=4)
    return buf.getvalue()


def _candidates() -> dict:
    """Every PNG decoder installed here: bytes -> HxWx3 uint8 RGB (ComfyUI's LoadImage reads with Pillow)."""
    out = {"Pillow": lambda d: np.asarray(Image.open(io.BytesIO(d)).convert("RGB"))}
    try:
        import pyspng
        out["pyspng (libspng)"] = pyspng.load
    except ImportError:
        pass
    try:
        import cv2
        cv2.setNumThreads(1)
        out["OpenCV imdecode"] = lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR_RGB
                                                        if hasattr(cv2, "IMREAD_COLOR_RGB") else cv2.IMREAD_COLOR)
    except ImportError:
        pass
    try:
        import imagecodecs
        out["imagecodecs spng"] = imagecodecs.spng_decode
        out["imagecodecs png (libpng)"] = imagecodecs.png_decode
    except ImportError:
        pass
    return out


def decoders(w: int = 1024, h: int = 1024, count: int = 8, repeat: int = 5) -> dict:
    """Each decoder, bytes to a float32 slot of one preallocated tensor (the division as LoadImage's), in one
    thread and in two (the machine's cores): ms per image, and whether its pixels equal LoadImage's."""
    import statistics
    import time
    from concurrent.futures import ThreadPoolExecutor
    files = [comfy_png(w, h, s) for s in range(count)]
    ref = [np.asarray(Image.open(io.BytesIO(d)).convert("RGB")).astype(np.float32) / 255.0 for d in files]
    out = torch.empty((count, h, w, 3), dtype=torch.float32)
    header(f"PNG decoders on {count} photo-like {w}x{h} frames as ComfyUI saves them "
           f"({sum(map(len, files)) / count / 1e6:.2f} MB each), into one float32 tensor")
    res = {}
    for name, dec in _candidates().items():
        def one(i, dec=dec):
            a = dec(files[i])
            if name.startswith("OpenCV") and not hasattr(__import__("cv2"), "IMREAD_COLOR_RGB"):
                a = a[..., ::-1]
            np.divide(a, np.float32(255.0), out=out.numpy()[i], dtype=np.float32, casting="unsafe")
        exact = True
        for i in range(count):
            one(i)
            exact = exact and np.array_equal(out.numpy()[i], ref[i])
        t1, t2 = [], []
        with ThreadPoolExecutor(2) as ex:
            for _ in range(repeat):
                t = time.perf_counter()
                for i in range(count):
                    one(i)
                t1.append((time.perf_counter() - t) / count)
                t = time.perf_counter()
                list(ex.map(one, range(count)))
                t2.append((time.perf_counter() - t) / count)
        a, b = statistics.median(t1), statistics.median(t2)
        res[name] = (a, b, exact)
    base = res["Pillow"][0]
    for name, (a, b, exact) in res.items():
        row(f"{name}: 1 thread / 2 threads", f"{a * 1e3:.1f} / {b * 1e3:.1f}", f"{base * 1e3:.1f} ms", base / b,
            "pixel-exact vs LoadImage" if exact else "NOT pixel-exact", exact)
    return {k: {"one_ms": v[0] * 1e3, "two_ms": v[1] * 1e3, "exact": v[2]} for k, v in res.items()}


def batch_parallel(w: int = 1024, h: int = 1024, count: int = 4, trials: int = 10) -> dict:
    """A result batch into one tensor as the gateway decodes it (batch.BatchDecoder): on every core with a
    decoder that lets go of the GIL (ours) against one thread with pyspng (before issue 26), alternated."""
    import statistics
    import time
    from concurrent.futures import ThreadPoolExecutor
    files = [comfy_png(w, h, s) for s in range(count)]

    def run(threads, spng):
        d = batch.BatchDecoder(count)
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(lambda i: d.add(i, files[i], spng), range(count)))
        return d.result()
    res: dict = {"ours": [], "before": []}
    for _ in range(trials):
        for name, threads, spng in (("ours", max(2, min(4, os.cpu_count() or 2)), False), ("before", 1, True)):
            t = time.perf_counter()
            run(threads, spng)
            res[name].append(time.perf_counter() - t)
    a, b = statistics.median(res["ours"]), statistics.median(res["before"])
    header(f"{count} result files of {w}x{h} into one tensor, {trials} trials alternated")
    row("median (slowest)", f"{a * 1e3:.0f} ({max(res['ours']) * 1e3:.0f}) ms",
        f"{b * 1e3:.0f} ({max(res['before']) * 1e3:.0f}) ms", b / a, "every core vs one pyspng thread")
    return {"ours_ms": a * 1e3, "before_ms": b * 1e3}


def fresh_batch(count: int = 81, w: int = 832, h: int = 480, trials: int = 10) -> dict:
    """A clip's frames decoded into a new batch tensor on every core (batch.BatchDecoder), as the gateway does.
    Much of the cost is the kernel's page faults on the new memory, one every 4 KB as the frames are written
    (a part's first run). On a later run the tensor was made while the cloud task ran (``batch.reserve``, from
    the shape the journal keeps), so none of that is left for after the task. Faulting the tensor in beside the
    decoders (``batch.populate`` in a thread) measured no faster on two cores: the decoders need both. Alternated; huge pages were tried too (faster in the median, several times slower in their slowest trials:
    the kernel finding 2 MB pages on a busy machine) and are not used."""
    import statistics
    import time
    from concurrent.futures import ThreadPoolExecutor
    files = [comfy_png(w, h, s) for s in range(count)]
    threads = max(2, min(4, os.cpu_count() or 2))

    def run(reserve=None):
        d = batch.BatchDecoder(count, reserve=reserve)
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(lambda i: d.add(i, files[i], False), range(count)))
        return d.result()
    res: dict = {"faults as written": [], "made ahead": []}
    for _ in range(trials):
        for name in res:
            made = batch.reserve(count, h, w) if name == "made ahead" else None
            t = time.perf_counter()
            run(made)
            res[name].append((time.perf_counter() - t) / count)
            del made
    base = statistics.median(res["faults as written"])
    header(f"{count} frames of {w}x{h} decoded into a new batch tensor on {threads} threads ({trials} trials, "
           "alternated), per frame")
    for name, xs in res.items():
        row(f"{name}: median (slowest)", f"{statistics.median(xs) * 1e3:.2f} ({max(xs) * 1e3:.1f}) ms",
            f"{base * 1e3:.2f} ms", statistics.median(xs) / base, "vs faults as written")
    return {k: statistics.median(v) * 1e3 for k, v in res.items()}


CHILD = r"""
import resource, sys, os
sys.path.insert(0, os.path.dirname(sys.argv[1]))
from _common import core
from fake_gpugeek import photo_png
codec = core("codec")
batch = core("batch")
import torch
files = [open(p, "rb").read() for p in sys.argv[2:]]
batch.decode_batch([photo_png(64, 64)])  # warm the code paths
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current RSS
before = rss()
img, mask = batch.decode_batch(files)
print(hwm() - before, img.numel() * 4 + mask.numel() * 4)
"""


def peak_rss_ratio(n: int):
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for s in range(n):
            paths.append(os.path.join(d, f"{s}.png"))
            with open(paths[-1], "wb") as f:
                f.write(photo_png(1024, 1024, seed=s))
        res = subprocess.run([sys.executable, "-c", CHILD, os.path.abspath(__file__), *paths], capture_output=True,
                             text=True, check=True)
    grown, final = map(int, res.stdout.split())
    return grown / final, final


if __name__ == "__main__":
    main()
    decoders(1024, 1024, 8)
    decoders(832, 480, 16)
    batch_parallel()
    batch_parallel(832, 480, 81, 3)
    fresh_batch()
