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
