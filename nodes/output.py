"""GPUGeek Cloud Output: a whole workflow's output node, here. The queue-time hook puts it in the local prompt
under the id of each output node of a graph that runs in the cloud (nodes/hook.py, offload/plan): it takes
that node's files from the task the whole workflow's gateway ran and saves or shows them as the node would
have (a Save Image into output/ with its filename_prefix, a Preview Image into temp/), so the editor shows
them on that very node and the prompt's history records them. Refused, it says why at validation time.
Never offered in the node menu: nobody adds it by hand."""
from __future__ import annotations

import asyncio
import io
import json
import os
import random

from ..offload import codec, errors, run, texts
from ..offload.plan import (OUTPUT_CLASS_INPUT, OUTPUT_LANG_INPUT, OUTPUT_NODE_INPUT, OUTPUT_PREFIX_INPUT,
                            REFUSAL_INPUT)
from ..offload.transfer import safe_file_name
from . import cloud, comfy

NAME = "GPUGeek Cloud Output"
STILL = (".png", ".jpg", ".jpeg")
VIDEO = (".mp4", ".webm", ".mov", ".mkv", ".avi")
AUDIO = (".flac", ".mp3", ".wav", ".ogg", ".opus", ".m4a")
ANIMATED = (".webp", ".gif")


class GPUGeekCloudOutput:
    CATEGORY = "GPUGeek"
    DESCRIPTION = ("Shows here what an output node made in the cloud when the whole workflow runs there "
                   "(added by Run in the cloud, never by hand).")
    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True
    DEPRECATED = True  # hidden from the node menu and search

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {},
                "optional": {"task_id": ("STRING", {"forceInput": True})},
                "hidden": {OUTPUT_NODE_INPUT: "GPUGEEK_NODE", OUTPUT_CLASS_INPUT: "GPUGEEK_CLASS",
                           OUTPUT_PREFIX_INPUT: "GPUGEEK_PREFIX", REFUSAL_INPUT: "GPUGEEK_REFUSAL",
                           OUTPUT_LANG_INPUT: "GPUGEEK_LANG",
                           "prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"}}

    @classmethod
    def VALIDATE_INPUTS(cls, gpugeek_refusal=None):
        """Why this node cannot go to the cloud (the queue-time plan's sentence) becomes its error."""
        return gpugeek_refusal if gpugeek_refusal else True

    async def show(self, task_id=None, gpugeek_node="", gpugeek_class="", gpugeek_prefix="", gpugeek_refusal=None,
                   gpugeek_out_lang=None, prompt=None, extra_pnginfo=None, unique_id=None):
        node = str(gpugeek_node or unique_id)
        lang = texts.lang_of(gpugeek_out_lang) if gpugeek_out_lang else texts.default_lang()
        if gpugeek_refusal:
            raise errors.PlanError(gpugeek_refusal, hint="")
        if not task_id:
            raise errors.PlanError(key="whole_unplanned", values={}, hint="")
        label = cloud.node_label(_title(prompt, unique_id) or gpugeek_class or NAME, unique_id)
        failed = cloud.failure(task_id)
        if failed is not None:   # the whole workflow's run failed: told here, on a node the editor has
            cloud.reraise(failed, label, lang)
        try:
            job = run.start_output(cloud.owner(), task_id=str(task_id), node=node, journal=cloud.journal(),
                                   label=label)
            _detail, files = await job.wait(comfy.interrupted)
        except BaseException as e:  # noqa: BLE001 - reraise maps it
            if isinstance(e, asyncio.CancelledError):
                raise
            cloud.reraise(e, label, lang)
        got = files.get(node) or []
        if not got:  # what this pack cannot show stays in the cloud: say where and how to load it
            comfy.progress_text(texts.text("whole_left_in_cloud", lang, task=task_id), unique_id)
            return {"ui": {"gpugeek": [{"state": "left", "task_id": str(task_id)}]}}
        ui = await asyncio.to_thread(save_as, got, gpugeek_class, gpugeek_prefix, prompt, extra_pnginfo)
        return {"ui": ui}


def _title(prompt, unique_id) -> str:
    """The node's title as the user gave it (the prompt ComfyUI runs keeps the editor's ``_meta``)."""
    node = (prompt or {}).get(str(unique_id)) if isinstance(prompt, dict) else None
    return str(((node or {}).get("_meta") or {}).get("title") or "")


def is_preview(class_type: str) -> bool:
    """Preview nodes keep their files in temp/ (gone at restart), as ComfyUI's own do; savers in output/."""
    return str(class_type or "").startswith("Preview") or class_type == "MaskPreview"


def save_as(files: list, class_type: str, prefix: str, prompt=None, extra_pnginfo=None) -> dict:
    """Write ``files`` ([(url, bytes)]) as the node ``class_type`` would: still images as PNG with this
    machine's prompt and workflow in their metadata (a PNG's pixels untouched: its text chunks are replaced,
    nothing is encoded again), animations, video and audio as they came; named like ComfyUI's savers
    (``prefix_00001_.png``). Returns the node's ui (``images``, ``animated``, ``audio``)."""
    fp = comfy.folder_paths()
    text = _metadata(prompt, extra_pnginfo)
    temp = is_preview(class_type)
    if temp:
        base, kind, level = fp.get_temp_directory(), "temp", 1
        prefix = "ComfyUI_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
    else:
        base, kind, level = fp.get_output_directory(), "output", 4
        prefix = prefix or "ComfyUI"
    folder, name, counter, subfolder, _ = fp.get_save_image_path(prefix, base, 0, 0)
    ui: dict = {}
    for url, data in files:
        ext = os.path.splitext(safe_file_name(url, "file"))[1]
        if ext in STILL:
            file = f"{name}_{counter:05}_.png"
            with open(os.path.join(folder, file), "wb") as f:
                f.write(_as_png(data, text, level))
            key = "images"
        else:
            file = f"{name}_{counter:05}_{ext}"
            with open(os.path.join(folder, file), "wb") as f:
                f.write(data)
            key = "audio" if ext in AUDIO else "images" if ext in VIDEO + ANIMATED else "files"
            if ext in VIDEO or (ext in ANIMATED and _frames(data) > 1):
                ui["animated"] = [True]
        ui.setdefault(key, []).append({"filename": file, "subfolder": subfolder, "type": kind})
        counter += 1
    ui.pop("files", None)  # kept in the folder; the editor has no view for other files
    return ui


def _metadata(prompt, extra_pnginfo) -> dict:
    """The prompt and workflow for the PNG, as ComfyUI's Save Image writes them (none where ComfyUI runs
    with --disable-metadata)."""
    try:
        from comfy.cli_args import args
        if getattr(args, "disable_metadata", False):
            return {}
    except Exception:
        pass
    text = {"prompt": json.dumps(prompt)} if prompt is not None else {}
    text.update({k: json.dumps(v) for k, v in (extra_pnginfo or {}).items()})
    return text


def _as_png(data: bytes, text: dict, level: int) -> bytes:
    """A cloud still image as the PNG a local save writes: a PNG keeps its bytes (only its text is this
    machine's); another format (a JPEG) is written as PNG."""
    if codec.sniff(data) == "png":
        return codec.png_with_text(data, text)
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    info = PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    out = io.BytesIO()
    with Image.open(io.BytesIO(data)) as im:
        im.save(out, "PNG", pnginfo=info, compress_level=level)
    return out.getvalue()


def _frames(data: bytes) -> int:
    from PIL import Image
    try:
        return int(getattr(Image.open(io.BytesIO(data)), "n_frames", 1))
    except Exception:
        return 1
