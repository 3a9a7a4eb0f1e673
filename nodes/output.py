"""GPUGeek Cloud Output: a whole workflow's output node, here. The queue-time hook puts it in the local prompt
under the id of each output node of a graph that runs in the cloud (nodes/hook.py, offload/plan): it takes
that node's files from the task the whole workflow's gateway ran and saves or shows them as the node would
have (a Save Image into output/ with its filename_prefix, a Preview Image into temp/, a video, an audio, a 3D
model, Image Compare's two sides, Preview Any's text: the one table, offload/plan/kinds.py), so the editor
shows them on that very node and the prompt's history records them. Refused, it says why at validation time.
Never offered in the node menu: nobody adds it by hand."""
from __future__ import annotations

import asyncio
import io
import json
import os
import random
import threading

from ..offload import codec, errors, run, texts
from ..offload.plan import (OUTPUT_CLASS_INPUT, OUTPUT_LANG_INPUT, OUTPUT_NODE_INPUT, OUTPUT_PREFIX_INPUT,
                            REFUSAL_INPUT, kinds)
from ..offload.redact import get_logger
from ..offload.transfer import cut_utf8, safe_file_name
from . import cloud, comfy

NAME = "GPUGeek Cloud Output"
log = get_logger("gpugeek.output")
STILL = (".png", ".jpg", ".jpeg")
# What a still may be to be written as PNG (codec.sniff): what the cloud's savers make. Anything else named .png or
# .jpg is kept as it came, never opened (offload/codec.py PILLOW_FORMATS is the one allow-list Pillow opens).
STILL_KINDS = ("png", "jpeg", "webp")
# Preview Any's text shown on the node (and kept with the prompt in ComfyUI's history): at most this many bytes. A
# longer text is cut there and kept whole in a file the shown text names; 64 KiB is pages of text, and what a
# ComfyUI server's text comes back as at most (offload/targets/comfyui.py MAX_TEXT_BYTES).
MAX_SHOWN_TEXT = 64 * 1024
VIDEO = (".mp4", ".webm", ".mov", ".mkv", ".avi")
AUDIO = (".flac", ".mp3", ".wav", ".ogg", ".opus", ".m4a")
ANIMATED = (".webp", ".gif")
# One output node's files at a time, in this ComfyUI process, from asking ComfyUI's counter to creating every
# name: output nodes run at once (async nodes), and two of one prefix would both get the same next counter.
_SAVING = threading.Lock()
# Names tried past the counter when other writers made those files meanwhile, before the save is refused.
MAX_NAME_TRIES = 10000


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
        if not got:  # what this pack cannot show stays in the cloud: say where (and how to load it)
            shown = kinds.OUTPUTS.get(gpugeek_class)
            said = "whole_text_in_cloud" if shown is not None and shown.key == kinds.TEXT else "whole_left_in_cloud"
            comfy.progress_text(texts.text(said, lang, task=task_id), unique_id)
            return {"ui": {"gpugeek": [{"state": "left", "task_id": str(task_id)}]}}
        notes: list = []
        ui = await asyncio.to_thread(save_as, got, gpugeek_class, gpugeek_prefix, prompt, extra_pnginfo, notes, lang)
        if notes:   # what was kept aside (not shown, or cut): said on the node, and in the log with its name
            said = " ".join(n.text(lang) for n in notes)
            comfy.progress_text(said, unique_id)
            log.warning("%s: %s", label, " ".join(n.text("en") for n in notes))
        return {"ui": ui}


def _title(prompt, unique_id) -> str:
    """The node's title as the user gave it (the prompt ComfyUI runs keeps the editor's ``_meta``)."""
    node = (prompt or {}).get(str(unique_id)) if isinstance(prompt, dict) else None
    return str(((node or {}).get("_meta") or {}).get("title") or "")


def is_preview(class_type: str) -> bool:
    """Preview nodes keep their files in temp/ (gone at restart), as ComfyUI's own do; savers in output/."""
    shown = kinds.OUTPUTS.get(class_type)
    if shown is not None:
        return shown.temp
    return str(class_type or "").startswith("Preview") or class_type == "MaskPreview"


def save_as(files: list, class_type: str, prefix: str, prompt=None, extra_pnginfo=None, notes: list | None = None,
            lang: str = "en") -> dict:
    """Write ``files`` ([(url, bytes)]) as the node ``class_type`` would and return the ui it shows them with,
    by the one table of kinds (offload/plan/kinds.py): still images as PNG with this machine's prompt and
    workflow in their metadata (a PNG's pixels untouched: its text chunks are replaced, nothing is encoded
    again), animations, video, audio and 3D models as they came, named like ComfyUI's savers
    (``prefix_00001_.png``), in temp/ for a preview; a text (Preview Any's) shown, not written. A class the
    table does not list is shown by the kinds of its files (``images``, ``animated``, ``audio``).

    Nothing is lost and nothing unsafe is opened: a still that is no PNG, JPEG or WebP, or whose header says it
    passes the codec's pixel limit, is kept as it came, not decoded, not shown; a text node's file that is no
    text is kept, not shown; a text past ``MAX_SHOWN_TEXT`` is shown cut and kept whole. Each is said in
    ``notes`` (texts.Said, appended; ``lang`` for the sentence a cut text ends with)."""
    notes = [] if notes is None else notes
    shown = kinds.OUTPUTS.get(class_type)
    text_node = shown is not None and shown.key == kinds.TEXT
    texts_shown: list = []   # (text, index into to_write of its whole, or None)
    to_write, wholes, binaries = [], {}, []
    for url, data in files:
        if not (text_node or _is_text(url)):
            to_write.append((url, data))
            continue
        text = data.decode("utf-8", "replace") if _is_text(url) else _as_text(data)
        if text is None:   # a binary file for a text: kept as it came, never shown as text
            binaries.append(len(to_write))
            to_write.append((url, data))
        elif len(data) > MAX_SHOWN_TEXT:   # shown cut, kept whole
            wholes[len(texts_shown)] = (len(to_write), len(data))
            to_write.append((url if not _is_text(url) else "text.txt", data))
            texts_shown.append(cut_utf8(data, MAX_SHOWN_TEXT).decode("utf-8", "replace"))
        else:
            texts_shown.append(text)
    written = _write_all(to_write, is_preview(class_type), prefix, _metadata(prompt, extra_pnginfo)) if to_write else []
    ui: dict = {}
    if texts_shown:
        for i, (at, size) in wholes.items():
            said = _said_kept("whole_text_cut", written[at][0], shown=MAX_SHOWN_TEXT // 1024, size=-(-size // 1024))
            notes.append(said)
            texts_shown[i] += "\n\n" + said.text(lang)
        ui["text"] = texts_shown
    for at in binaries:
        notes.append(_said_kept("whole_binary_kept", written[at][0]))
    aside = set(binaries) | {at for at, _ in wholes.values()}
    for i, (entry, _, _, _, kept) in enumerate(written):
        if kept:
            notes.append(_said_kept("whole_still_kept", entry, megapixels=codec.MAX_PIXELS // 1_000_000))
            aside.add(i)
    written = [w[:4] for i, w in enumerate(written) if i not in aside]
    if not written:
        return ui
    if shown is None:
        return {**ui, **_by_extension(written)}
    return {**ui, **_as_node(shown, written)}


def _said_kept(key: str, entry: dict, **values) -> texts.Said:
    """The sentence that says where a file was kept (its name in its folder, output or temp)."""
    name = f"{entry['subfolder']}/{entry['filename']}" if entry["subfolder"] else entry["filename"]
    return texts.Said(key, {"file": name, "folder": entry["type"], **values})


def _as_text(data: bytes) -> str | None:
    """A file's text when it is one (UTF-8 without NUL), else None: a binary file is never shown as text."""
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _write_all(files: list, temp: bool, prefix: str, text: dict) -> list:
    """Each file into output/ (or temp/), named as ComfyUI's savers name theirs; [(ui entry, ext, data, url,
    kept)], ``kept`` for a still this pack does not open (``_as_png`` refused it), written as it came.
    The bytes are made first (a still as PNG); then, one node at a time in this process, ComfyUI's counter is
    asked and every name created at once, exclusively (a name another writer made meanwhile is passed over for
    the next free counter); the bytes are written after, into files nobody else can take."""
    fp = comfy.folder_paths()
    if temp:
        base, kind, level = fp.get_temp_directory(), "temp", 1
        prefix = "ComfyUI_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
    else:
        base, kind, level = fp.get_output_directory(), "output", 4
        prefix = prefix or "ComfyUI"
    made = []
    for url, data in files:
        ext = os.path.splitext(safe_file_name(url, "file"))[1]
        out, ext_out, kept = data, ext, False
        if ext in STILL:
            try:
                out, ext_out = _as_png(data, text, level), ".png"
            except errors.ResultError:
                kept = True   # nothing lost: the file as it came, under the extension it came with
        made.append((url, data, ext, ext_out, out, kept))
    created = []
    try:
        with _SAVING:
            folder, name, counter, subfolder, _ = fp.get_save_image_path(prefix, base, 0, 0)
            for m in made:
                counter, file, handle = _create(folder, name, counter, m[3])
                created.append((file, handle))
                counter += 1
        for (file, handle), m in zip(created, made):
            with handle:
                handle.write(m[4])
    except BaseException:
        for file, handle in created:
            handle.close()
            _remove(os.path.join(folder, file))
        raise
    return [({"filename": file, "subfolder": subfolder, "type": kind}, ext, data, url, kept)
            for (file, _), (url, data, ext, _, _, kept) in zip(created, made)]


def _create(folder: str, name: str, counter: int, ext: str):
    """(counter, file name, open file) of the first free ``name_NNNNN_ext`` from ``counter`` on, created
    exclusively: an existing file is never opened, whoever made it."""
    for _ in range(MAX_NAME_TRIES):
        file = f"{name}_{counter:05}_{ext}"
        try:
            return counter, file, open(os.path.join(folder, file), "xb")
        except FileExistsError:
            counter += 1
    raise errors.ResultError(f"No free file name after {name}_{counter:05}_{ext}", call="save")


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _as_node(shown, written: list) -> dict:
    """The ui of the node the table names, as ComfyUI's own node shows its files."""
    entries = [e for e, _, _, _ in written]
    if shown.key == kinds.RESULT:   # the 3D previews: the path of their model, relative to its folder
        e = entries[0]
        return {"result": [f"{e['subfolder']}/{e['filename']}" if e["subfolder"] else e["filename"], None, None]}
    if shown.key == kinds.COMPARE:
        return _compare_sides(written)
    ui = {shown.key: entries}
    if shown.animated:
        ui["animated"] = [True]
    return ui


def _compare_sides(written: list) -> dict:
    """Image Compare's two sides: by the names ComfyUI gives their previews, else the first half is a."""
    sides = {key: [] for key, _ in kinds.COMPARE_SIDES}
    unnamed = []
    for e, _, _, url in written:
        name = safe_file_name(url, "")
        side = next((key for key, mark in kinds.COMPARE_SIDES if mark in name), None)
        (sides[side] if side else unnamed).append(e)
    half = (len(unnamed) + 1) // 2
    a_key, b_key = (key for key, _ in kinds.COMPARE_SIDES)
    sides[a_key] += unnamed[:half]
    sides[b_key] += unnamed[half:]
    return sides


def _by_extension(written: list) -> dict:
    """A class the table does not list: still images, animations and video as images, audio as audio."""
    ui: dict = {}
    for e, ext, data, _ in written:
        key = "audio" if ext in AUDIO else "images" if ext in STILL + VIDEO + ANIMATED else "files"
        if ext in VIDEO or (ext in ANIMATED and _frames(data) > 1):
            ui["animated"] = [True]
        ui.setdefault(key, []).append(e)
    ui.pop("files", None)  # kept in the folder; the editor has no view for other files
    return ui


def _is_text(url: str) -> bool:
    return url.startswith("data:text/plain")


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
    machine's; nothing decoded); a JPEG or WebP is written as PNG once its header says it is within the codec's
    pixel limit (offload/codec.py: the one allow-list and limit). Anything else is refused (ResultError), never
    opened: Pillow is not left to guess among TIFF, BMP, EPS and the rest."""
    kind = codec.sniff(data)
    if kind == "png":
        return codec.png_with_text(data, text)
    if kind not in STILL_KINDS:
        raise errors.ResultError("A still result is no PNG, JPEG or WebP", call="save")
    codec.header(data)   # its size, from its header, before a pixel is decoded
    from PIL.PngImagePlugin import PngInfo
    info = PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    out = io.BytesIO()
    try:
        with codec.open_image(data) as im:
            im.save(out, "PNG", pnginfo=info, compress_level=level)
    except errors.ResultError:
        raise
    except Exception as e:
        raise errors.ResultError(f"A still result could not be decoded ({type(e).__name__})", call="save") from None
    return out.getvalue()


def _frames(data: bytes) -> int:
    """An animation's frames, counted from its header (codec.header: nothing decoded, allowed formats only)."""
    try:
        return codec.header(data).frames
    except errors.ResultError:
        return 1
