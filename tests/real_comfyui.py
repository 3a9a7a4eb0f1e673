"""Starting a real ComfyUI for the end-to-end tests. Each instance gets a folder of its own as ComfyUI's
``--base-directory`` (custom_nodes, models, input, output, temp and user under it), with the pack linked into
its ``custom_nodes`` as ``comfyui-gpugeek`` when it is to load the pack: nothing is written into the ComfyUI
checkout itself, so two runs of the suite (two clones, two versions) never see each other's packs or files.

COMFYUI_DIR names the checkout, COMFYUI_PYTHON its interpreter (default: this one).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMFY = os.environ.get("COMFYUI_DIR")
PY = os.environ.get("COMFYUI_PYTHON", sys.executable)


def base_directory(tmp: Path, name: str, pack: bool = True) -> Path:
    """A fresh base directory for one ComfyUI instance; with ``pack``, the pack is among its custom nodes."""
    base = tmp / f"comfyui-{name}"
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / "comfyui-gpugeek"
    if pack and not link.exists():
        link.symlink_to(ROOT, target_is_directory=True)
    # the image a fresh ComfyUI ships in its input folder, which workflows and tests name
    (base / "input").mkdir(exist_ok=True)
    shipped = Path(COMFY or ".", "input", "example.png")
    if shipped.exists() and not (base / "input" / "example.png").exists():
        shutil.copyfile(shipped, base / "input" / "example.png")
    return base


def comfyui_command(tmp: Path, name: str, port: int, *extra: str, pack: bool = True) -> list[str]:
    """The command line of one ComfyUI instance on 127.0.0.1:port, CPU only, in its own base directory.
    A cloud stand-in (``pack=False``) loads no custom node at all."""
    base = base_directory(tmp, name, pack)
    args = [PY, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base)]
    if not pack:
        args.append("--disable-all-custom-nodes")
    return args + list(extra)


def start_comfyui(tmp: Path, name: str, port: int, *extra: str, pack: bool = True, env: dict | None = None,
                  log: Path | None = None) -> subprocess.Popen:
    """Starts one instance (see comfyui_command); its output goes to ``log`` (default tmp/<name>.log)."""
    log = log or tmp / f"{name}.log"
    return subprocess.Popen(comfyui_command(tmp, name, port, *extra, pack=pack), cwd=COMFY,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def stop(procs) -> None:
    """Ends the processes a test started: asked first, then killed after 10 s."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def cloud_saved(tmp: Path, suffix: str) -> Path:
    """The newest file a whole workflow's saver wrote in the cloud ComfyUI's output folder (``tmp/cloud-out``):
    there the savers get the pack's own prefix (offload/plan/passes.py CLOUD_PREFIX), the user's is applied here."""
    files = sorted((tmp / "cloud-out").glob(f"ComfyUI_*{suffix}"), key=lambda f: f.stat().st_mtime)
    assert files, f"no {suffix} file in the cloud's output folder"
    return files[-1]


# The live stacks whose money-and-files invariants are checked after every end-to-end test (tests/conftest.py): the
# GPUGeek fake (its own record of what it took and charged), each local ComfyUI's user folder (the pack's journal) and
# output folders (no file there written twice).
STACKS: list = []
# How long the journal may lag behind the platform after a test (a task's end is journaled when a status call sees it).
JOURNAL_LAG_S = 15.0


def watch(fake_url: str, user_dirs, output_dirs, limit: float | None = None) -> dict:
    """Check the invariants of this stack after each test until ``unwatch``."""
    entry = {"fake": fake_url, "users": [Path(u) for u in user_dirs], "outputs": [Path(o) for o in output_dirs],
             "limit": limit, "seen": {}}
    STACKS.append(entry)
    return entry


def unwatch(entry: dict) -> None:
    if entry in STACKS:
        STACKS.remove(entry)


def _journal_records(user: Path) -> list:
    import json
    path = user / "gpugeek" / "journal.jsonl"
    records: dict = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict) and r.get("key"):
                records.setdefault(r["key"], {}).update(r)
    return list(records.values())


def _violations(entry: dict) -> list:
    import requests
    import invariants
    tasks = requests.get(entry["fake"] + "/_fake/stats", timeout=10).json()["tasks"]
    records = [r for u in entry["users"] for r in _journal_records(u)]
    bad = invariants.money([{**t, "status": t["status"]} for t in tasks], records, entry["limit"])
    for folder in entry["outputs"]:   # a file seen before that changed since: written over
        for f in folder.rglob("*") if folder.exists() else []:
            if f.is_file():
                st = f.stat()
                mark = (st.st_size, st.st_mtime_ns)
                if entry["seen"].setdefault(str(f), mark) != mark:
                    bad.append(f"{f.relative_to(folder)} was written over")
                    entry["seen"][str(f)] = mark
    return bad


def check_stacks() -> list:
    """Every watched stack's violations once the journal caught up (at most JOURNAL_LAG_S)."""
    import time
    out = []
    for entry in list(STACKS):
        end = time.monotonic() + JOURNAL_LAG_S
        while True:
            bad = _violations(entry)
            if not bad or time.monotonic() > end or any("written over" in b for b in bad):
                break
            time.sleep(0.5)
        out += bad
    return out
