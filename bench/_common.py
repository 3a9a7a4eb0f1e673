"""Shared helpers for the benchmarks: import the pack the way ComfyUI does and time things robustly."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def core(name: str):
    """A core module, from the pack imported the way ComfyUI imports it (tests/conftest.py)."""
    from conftest import core as _core
    return _core(name)


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
