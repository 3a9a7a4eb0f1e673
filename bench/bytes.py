"""Bytes on the wire (issue 26): what each encoding that ComfyUI's core nodes can write costs in bytes, in the
cloud's encoding time (paid; measured here as a proxy) and in decoding time here, on photo-like frames (noise:
hard to compress) and smooth generated-looking frames. Lossless: PNG at the levels SaveImage (4),
PreviewImage (1) and SaveAnimatedPNG (0-9) write, and lossless WebP (SaveAnimatedWEBP, methods fastest and
default). Lossy (a *compact* choice): WebP at quality 90, and one video file for a clip (ComfyUI's video
savers; H.264 CRF 18 and VP9), with PSNR against the lossless frames. Nothing here is used by the pack yet.
Run: python bench/bytes.py   (video needs `av`, which ComfyUI ships: run it with ComfyUI's python)
"""
from __future__ import annotations

import io
import os
import statistics
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from _common import header, row  # noqa: E402


def frame(w: int, h: int, seed: int, noise: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin((x + 3 * seed) / 37.0), np.cos((y - 2 * seed) / 23.0), np.sin((x + y) / 51.0)], -1)
    img = np.clip(base * 0.35 + 0.5 + rng.normal(0, noise, base.shape), 0, 1)
    return (img * 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def timed(fn, repeat: int = 3):
    ts, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def still(kind: str, noise: float, w: int = 1024, h: int = 1024, count: int = 4) -> dict:
    frames = [frame(w, h, s, noise) for s in range(count)]
    forms = {f"PNG level {lv}": dict(format="PNG", compress_level=lv) for lv in (1, 4, 6, 9)}
    forms.update({"WebP lossless, method 0": dict(format="WEBP", lossless=True, method=0),
                  "WebP lossless, method 4": dict(format="WEBP", lossless=True, method=4),
                  "WebP lossy q90 (compact)": dict(format="WEBP", quality=90, method=4)})
    header(f"{kind} {w}x{h} frames (x{count}): bytes, cloud encode, decode here")
    base = None
    out = {}
    for name, opts in forms.items():
        def enc():
            bufs = []
            for f in frames:
                b = io.BytesIO()
                Image.fromarray(f).save(b, **opts)
                bufs.append(b.getvalue())
            return bufs
        te, bufs = timed(enc, 1)
        td, dec = timed(lambda: [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in bufs])
        size = sum(map(len, bufs)) / count
        base = base or size
        q = min(psnr(a, b) for a, b in zip(frames, dec))
        row(f"{name}", f"{size / 1e3:.0f} KB", f"{base / 1e3:.0f} KB", base / size,
            f"enc {te / count * 1e3:.0f} ms, dec {td / count * 1e3:.1f} ms, PSNR {'exact' if q == float('inf') else f'{q:.1f} dB'}")
        out[name] = {"bytes": size, "psnr": q}
    return out


def clip(noise: float, count: int = 81, w: int = 832, h: int = 480) -> dict:
    try:
        import av
    except ImportError:
        print("\n(no `av` here: the video rows need ComfyUI's python)")
        return {}
    frames = [frame(w, h, s, noise) for s in range(count)]
    png = sum(len(_png(f)) for f in frames)
    header(f"a clip of {count} frames {w}x{h}: one video file against {count} PNGs (level 4)")
    out = {}
    for name, codec, opts in (("H.264 CRF 18 (compact)", "libx264", {"crf": "18", "preset": "fast"}),
                              ("VP9 CRF 24", "libvpx-vp9", {"crf": "24", "b": "0", "deadline": "realtime",
                                                            "cpu-used": "8"})):
        buf = io.BytesIO()
        t = time.perf_counter()
        with av.open(buf, "w", format="mp4" if codec == "libx264" else "webm") as c:
            s = c.add_stream(codec, rate=16, options=opts)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            for f in frames:
                for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        te = time.perf_counter() - t
        data = buf.getvalue()
        t = time.perf_counter()
        with av.open(io.BytesIO(data)) as c:
            dec = [fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)]
        td = time.perf_counter() - t
        q = statistics.median(psnr(a, b) for a, b in zip(frames, dec))
        row(name, f"{len(data) / 1e6:.2f} MB", f"{png / 1e6:.1f} MB", png / len(data),
            f"enc {te / count * 1e3:.1f} ms/frame, dec {td / count * 1e3:.1f} ms/frame, median PSNR {q:.1f} dB")
        out[name] = {"bytes": len(data), "psnr": q}
    return out


def _png(f, level: int = 4) -> bytes:
    b = io.BytesIO()
    Image.fromarray(f).save(b, "PNG", compress_level=level)
    return b.getvalue()


def main() -> dict:
    return {"photo": still("photo-like", 0.012), "smooth": still("smooth (generated-looking)", 0.0),
            "clip": clip(0.012)}


if __name__ == "__main__":
    main()
