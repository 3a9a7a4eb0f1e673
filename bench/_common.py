"""Shared helpers for the benchmarks: import the pack the way ComfyUI does and time things robustly."""
from __future__ import annotations

import importlib
import importlib.util
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
PACK = "comfyui-gpugeek"


def core(name: str):
    """A core module without ComfyUI: the pack's core package loaded under the hyphenated pack name."""
    if PACK not in sys.modules:
        spec = importlib.util.spec_from_loader(PACK, loader=None, is_package=True)
        mod = importlib.util.module_from_spec(spec)
        mod.__path__ = [str(ROOT)]
        sys.modules[PACK] = mod
    return importlib.import_module(f"{PACK}.offload.{name}")


def timeit(fn, repeat: int = 15, warmup: int = 2) -> float:
    """Median seconds of ``repeat`` runs after ``warmup`` (machines here are shared and noisy)."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def row(name: str, value: str, baseline: str = "", ratio: float | None = None, bar: str = "", ok=None) -> None:
    r = f"{ratio:6.2f}x" if ratio is not None else "       "
    mark = "" if ok is None else ("  PASS" if ok else "  MISS")
    print(f"{name:44s} {value:>14s}  {baseline:>14s}  {r}  {bar}{mark}")


def header(title: str) -> None:
    print(f"\n== {title}")
    print(f"{'measure':44s} {'ours':>14s}  {'baseline':>14s}  {'ratio':>7s}  bar")
