"""ComfyUI's own templates (the ``comfyui-workflow-templates-json`` package, pinned in requirements-test.txt) as
the corpus of downloaded workflows (issue 31): which are eligible on a ComfyUI, the input files each needs in
``input/`` (made here: a small photo, clip, sound or model of the named kind), the model files its cloud needs
(empty stand-ins: validation is what is measured, not sampling), and the tally of what happened to each.

Eligible on a ComfyUI: not a partner-API template (its name starts ``api_``) and every node type it holds (in
its subgraphs too) is one that ComfyUI has; the editor's own nodes (notes, reroutes, primitives) are not node
types of the server."""
from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

EDITOR_ONLY = frozenset({"MarkdownNote", "Note", "Reroute", "PrimitiveNode"})
# Loaders of a file of the input folder: class -> the kind of file (the first widget value names it).
FILE_LOADERS = {"LoadImage": "image", "LoadImageMask": "image", "LoadImageOutput": "image",
                "LoadVideo": "video", "LoadAudio": "audio", "Load3D": "model3d", "Load3DAnimation": "model3d",
                "Load3DAdvanced": "model3d"}
MODEL_EXTS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx", ".pt2")
# The model folders of a ComfyUI (a name the template does not place goes into each of them).
MODEL_FOLDERS = ("checkpoints", "vae", "loras", "clip", "text_encoders", "unet", "diffusion_models", "clip_vision",
                 "upscale_models", "controlnet", "style_models", "model_patches", "audio_encoders",
                 "latent_upscale_models", "vae_approx", "gligen", "hypernetworks", "photomaker", "embeddings",
                 "diffusers", "configs", "frame_interpolation", "optical_flow", "background_removal",
                 "detection", "geometry_estimation", "depth_estimation", "sam")


def templates_dir() -> Path | None:
    try:
        import comfyui_workflow_templates_json as pkg
    except ImportError:
        return None
    return Path(pkg.__file__).parent / "templates"


def all_templates(folder: Path) -> dict:
    """name -> (workflow, index entry), for every template the package's index lists."""
    index = json.loads((folder / "index.json").read_text())
    out = {}
    for category in index:
        for entry in category.get("templates", []):
            path = folder / f"{entry['name']}.json"
            if path.exists():
                wf = json.loads(path.read_text())
                if isinstance(wf, dict) and "nodes" in wf:
                    out[entry["name"]] = (wf, entry)
    return out


def _nodes(wf: dict):
    yield from wf.get("nodes") or []
    for sub in (wf.get("definitions") or {}).get("subgraphs") or []:
        yield from sub.get("nodes") or []


def node_types(wf: dict) -> set:
    subgraphs = {s.get("id") for s in (wf.get("definitions") or {}).get("subgraphs") or []}
    return {n.get("type") for n in _nodes(wf)} - subgraphs - EDITOR_ONLY


def eligible(templates: dict, object_info: dict) -> list:
    return sorted(name for name, (wf, _) in templates.items()
                  if not name.startswith("api_") and node_types(wf) <= set(object_info))


def input_files(wf: dict, entry: dict) -> dict:
    """file name -> kind, for every file a loader of the template reads from the input folder."""
    out = {}
    for item in (entry.get("io") or {}).get("inputs") or []:
        if item.get("file"):
            out[item["file"]] = {"video": "video", "audio": "audio"}.get(item.get("mediaType"), "image")
    for n in _nodes(wf):
        kind = FILE_LOADERS.get(n.get("type"))
        values = n.get("widgets_values")
        if kind and isinstance(values, list) and values and isinstance(values[0], str) and values[0]:
            out.setdefault(values[0], kind)
    return out


def model_files(wf: dict) -> set:
    """(folder or None, name) of every model the template names: its nodes' ``properties.models`` (with their
    folder) and every widget value that is a model file's name."""
    out = set()
    for n in _nodes(wf):
        for m in (n.get("properties") or {}).get("models") or []:
            if isinstance(m, dict) and m.get("name"):
                out.add((m.get("directory"), m["name"]))
        values = n.get("widgets_values")
        for v in values if isinstance(values, list) else (values or {}).values() if isinstance(values, dict) else ():
            if isinstance(v, str) and v.lower().endswith(MODEL_EXTS):
                out.add((None, v))
    return out


def stub_models(models_dir: Path, names: set) -> None:
    """Empty model files in the cloud's folders, so its lists hold what the templates name."""
    for folder, name in names:
        for f in ([folder] if folder else MODEL_FOLDERS):
            path = models_dir / f / name
            if ".." in Path(name).parts:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_bytes(b"")


MEDIA_SCRIPT = r"""
import sys, wave, io
import numpy as np
kind, path = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(len(path))
if kind == "video":
    import av
    with av.open(path, "w", format="mp4" if path.endswith((".mp4", ".mov", ".m4v")) else None) as out:
        s = out.add_stream("mpeg4" if path.endswith((".mp4", ".mov", ".m4v", ".avi")) else "libvpx", rate=8)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(8):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), format="rgb24")
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
elif kind == "audio":
    import av
    fmt = {"mp3": "mp3", "flac": "flac", "ogg": "ogg", "opus": "ogg", "m4a": "mp4"}.get(path.rsplit(".", 1)[-1], "wav")
    codec = {"mp3": "libmp3lame", "flac": "flac", "ogg": "libvorbis", "mp4": "aac"}.get(fmt, "pcm_s16le")
    with av.open(path, "w", format=fmt) as out:
        s = out.add_stream(codec, rate=44100)
        s.layout = "mono" if codec != "libvorbis" else "stereo"
        samples = (np.sin(np.arange(44100) / 20.0) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples[None] if s.layout.name == "mono" else np.stack([samples, samples]).reshape(1, -1), format="s16", layout=s.layout.name)
        frame.sample_rate = 44100
        for p in s.encode(frame):
            out.mux(p)
        for p in s.encode():
            out.mux(p)
"""


def make_inputs(folder: Path, files: dict, python: str) -> None:
    """The template's input files in ``folder`` (images here; clips and sounds by ``python``, which has PyAV:
    ComfyUI's own interpreter)."""
    from PIL import Image
    import numpy as np
    for name, kind in files.items():
        path = folder / name
        if ".." in Path(name).parts or path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "image" or name.lower().endswith((".png", ".jpg", ".jpeg", ".webp")):
            rng = np.random.default_rng(len(name))
            Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(
                path, format={"jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}.get(name.rsplit(".", 1)[-1].lower(), "PNG"))
        elif kind in ("video", "audio"):
            done = subprocess.run([python, "-c", MEDIA_SCRIPT, kind, str(path)], capture_output=True, timeout=120)
            if done.returncode != 0 or not path.exists():
                path.write_bytes(b"")
        else:   # a 3D model: a minimal OBJ or an empty glTF binary's stand-in
            path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n") if name.endswith(".obj") else path.write_bytes(b"glTF")


class Tally:
    """What happened to each template: ``run`` (one task, valid in the cloud), ``refused`` (by the pack or by
    ComfyUI here, at queue time), ``cloud_refused`` (the cloud's ComfyUI refused its prompt), ``editor`` (the
    editor itself cannot open it, with or without the pack), ``other``."""

    def __init__(self):
        self.outcome: dict = {}
        self.reasons: dict = {}

    def add(self, name: str, outcome: str, reason: str = "") -> None:
        self.outcome[name] = outcome
        if reason:
            self.reasons[name] = reason

    def line(self, version: str, editor: str) -> str:
        counts = Counter(self.outcome.values())
        why = Counter(_reason_kind(r) for n, r in self.reasons.items() if self.outcome.get(n) != "run")
        reasons = ", ".join(f"{k}: {v}" for k, v in why.most_common())
        return (f"templates on ComfyUI {version} ({editor} editor): {len(self.outcome)} eligible, "
                f"{counts.get('run', 0)} run in the cloud, {len(self.outcome) - counts.get('run', 0)} refused"
                + (f" ({reasons})" if reasons else ""))


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0][:80] if reason else "?"


# ---- What ComfyUI runs for a queued prompt (0.33.0, as 0.3.64): the bar a whole workflow's task is held to --------
# execution.py validate_prompt: the outputs are the nodes whose class has OUTPUT_NODE (Save Image, Save Video,
# Preview Image, Preview Any...), only those the editor named when it queued selected outputs
# (``partial_execution_targets``); comfy_execution/graph.py ExecutionList.add_node: each output runs with every node
# reachable upstream through its link inputs (a lazy input's source too, where the node asks for it: counted).
# A node nothing reads and that is no output never runs. Node ids are opaque ("12:5" from a subgraph is one node);
# bypassed and muted nodes (mode 4 and 2) are not in the prompt (the editor leaves them out when it queues); a link
# to a node that is not in the prompt makes its output fail validation (ComfyUI runs nothing of it).

def is_link(v) -> bool:
    return (isinstance(v, list) and len(v) == 2 and isinstance(v[0], (str, int)) and not isinstance(v[0], bool)
            and isinstance(v[1], int) and not isinstance(v[1], bool))


def comfy_outputs(prompt: dict, is_output_class, targets=None) -> set:
    """The output nodes ComfyUI would execute for ``prompt``: ``is_output_class(class_type)`` says OUTPUT_NODE."""
    chosen = None if targets is None else {str(t) for t in targets}
    return {n for n, v in prompt.items() if isinstance(v, dict) and is_output_class(v.get("class_type"))
            and (chosen is None or n in chosen)}


def upstream(prompt: dict, start) -> set:
    """``start`` and every node of ``prompt`` they read from, through links (a link to a missing node ends there)."""
    seen, stack = set(), [str(s) for s in start]
    while stack:
        n = stack.pop()
        if n in seen or n not in prompt:
            continue
        seen.add(n)
        stack.extend(str(v[0]) for v in (prompt[n].get("inputs") or {}).values() if is_link(v))
    return seen


def fragment(prompt: dict, sent, outputs, left_out=()) -> dict:
    """What a whole workflow's task lacks of what ComfyUI would run: {output: [missing nodes]}, empty when whole.
    ``sent``: the ids of the cloud prompt; ``left_out``: outputs refused on their own node (a stray Save Video with
    nothing connected, refused here as ComfyUI refuses it), which may be missing themselves but nothing they read."""
    sent = {str(n) for n in sent}
    out = {}
    for o in sorted(outputs):
        need = upstream(prompt, [o]) - ({o} if o in left_out else set())
        missing = sorted(need - sent)
        if missing:
            out[o] = missing
    return out
