"""The one table of kinds (DESIGN.md, "What goes to the cloud", point 5): every core loader of a local file and
every core output node, read by every mode (a gateway's cloud part, a whole workflow) and every target, so that
no room keeps a branch per kind of its own. Pure: no I/O.

* **A loader** names its file in one input (a name in ComfyUI's input folder, or annotated ``" [output]"`` /
  ``" [temp]"``); Load 3D also names the viewer's captures (its scene, mask and normal renders, a recording) in
  the dict of its ``image`` input. A file that exists here goes up once by its content (offload/run/inputs.py)
  and the input is pointed at it: a URL on GPUGeek (the cloud reads it by URL), ``<folder>/<name>`` on a
  ComfyUI server (``/upload/image`` takes any file; a loader that checks the name against its own list finds it
  where that list looks: Load 3D's every file under ``input/3d``, Load Latent's the top of ``input/``), an
  asset on v2.
* **An output node** shows its files on itself under ComfyUI's own ui key (``images``, ``audio``, ``3d``, the
  3D previews' ``result``, Image Compare's ``a_images``/``b_images``, Preview Any's ``text``), keeps them in
  ``output/`` or, for a preview, in ``temp/``, and may be shown as an animation (nodes/output.py writes them).
  A class not listed is shown by the kinds of its files.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

IMAGE, VIDEO, AUDIO, MODEL3D, LATENT = "image", "video", "audio", "3d", "latent"


@dataclass(frozen=True)
class Loader:
    input: str                  # the input that names the file
    kind: str
    listed: str | None = None   # where its list of choices looks, if the name must be in it: "" the top files of
    #                             input/, "3d" every file under input/3d; None: any name that exists will do
    captures: tuple = ()        # keys of the dict in its ``image`` input that name more files (Load 3D's viewer)


_VIEWER = ("image", "mask", "normal", "lineart", "recording")
LOADERS = {
    "LoadImage": Loader("image", IMAGE),
    "LoadImageMask": Loader("image", IMAGE),
    "LoadImageOutput": Loader("image", IMAGE),
    "WebcamCapture": Loader("image", IMAGE),
    "Painter": Loader("mask", IMAGE),
    "LoadLatent": Loader("latent", LATENT, ""),
    "LoadVideo": Loader("file", VIDEO),
    "LoadAudio": Loader("audio", AUDIO),
    "Load3D": Loader("model_file", MODEL3D, "3d", _VIEWER),            # its list: 0.3.64's; 0.33 checks it exists
    "Load3DAnimation": Loader("model_file", MODEL3D, "3d", _VIEWER),
    "Load3DAdvanced": Loader("model_file", MODEL3D, "3d"),
    "VHS_LoadVideo": Loader("video", VIDEO),
    "VHS_LoadAudioUpload": Loader("audio", AUDIO),
}
CAPTURES_INPUT = "image"   # where Load 3D keeps its viewer's captures
_ANNOTATION = re.compile(r" \[(input|output|temp)\]$")


def file_places(node: dict) -> list:
    """Where a node names files it reads: [(input, key, value)] (``key`` "" for the input itself, else the key
    of the dict in that input); empty for a class that is no loader of the table."""
    loader = LOADERS.get((node or {}).get("class_type"))
    if loader is None:
        return []
    inputs = node.get("inputs") or {}
    places = [(loader.input, "", inputs.get(loader.input))]
    captures = inputs.get(CAPTURES_INPUT) if loader.captures else None
    if isinstance(captures, dict):
        places += [(CAPTURES_INPUT, k, captures.get(k)) for k in loader.captures]
    return places


def local_name(value) -> bool:
    """Whether ``value`` can name a file of this machine (a non-empty name that is no address)."""
    return isinstance(value, str) and bool(value.strip()) and "://" not in value and value != "none"


def plain_name(value: str) -> str:
    """A file name without ComfyUI's folder annotation (``clip.mp4 [output]`` -> ``clip.mp4``)."""
    return _ANNOTATION.sub("", value)


def upload_folder(class_type: str, key: str = "") -> str | None:
    """Where the loader's list looks, for a file of this loader on a ComfyUI server (:attr:`Loader.listed`; None:
    anywhere will do, as for the viewer's captures, which the loader reads by name)."""
    loader = LOADERS.get(class_type)
    return loader.listed if loader is not None and not key else None


@dataclass(frozen=True)
class Shown:
    key: str                # the ui key: images | audio | 3d | result | compare | text
    temp: bool = False      # a preview: files in temp/ (gone at restart), not output/
    animated: bool = False  # the editor shows the files as an animation (a video, an animated image)


IMAGES, AUDIO_UI, MODEL_UI, RESULT, COMPARE, TEXT = "images", "audio", "3d", "result", "compare", "text"
OUTPUTS = {
    "SaveImage": Shown(IMAGES),
    "PreviewImage": Shown(IMAGES, temp=True),
    "MaskPreview": Shown(IMAGES, temp=True),
    "SaveAnimatedWEBP": Shown(IMAGES, animated=True),
    "SaveAnimatedPNG": Shown(IMAGES, animated=True),
    "SaveVideo": Shown(IMAGES, animated=True),
    "SaveWEBM": Shown(IMAGES, animated=True),
    "SaveAudio": Shown(AUDIO_UI),
    "SaveAudioMP3": Shown(AUDIO_UI),
    "SaveAudioOpus": Shown(AUDIO_UI),
    "SaveAudioAdvanced": Shown(AUDIO_UI),
    "PreviewAudio": Shown(AUDIO_UI, temp=True),
    "SaveGLB": Shown(MODEL_UI),
    "Preview3D": Shown(RESULT),
    "Preview3DAnimation": Shown(RESULT),
    "Save3DAdvanced": Shown(RESULT),
    "Preview3DAdvanced": Shown(RESULT, temp=True),
    "PreviewGaussianSplat": Shown(RESULT, temp=True),
    "PreviewPointCloud": Shown(RESULT, temp=True),
    "ImageCompare": Shown(COMPARE, temp=True),
    "PreviewAny": Shown(TEXT, temp=True),
}
# Image Compare's two sides, as ComfyUI's node names its preview files and its ui keys
COMPARE_SIDES = (("a_images", ".compare.a"), ("b_images", ".compare.b"))


def ui_files(class_type: str, ui: dict) -> list:
    """What a node's ui (a ComfyUI server's history) holds that comes back, in its order: ``("file",
    filename, subfolder, type)`` for each file it names (any key; the 3D previews' ``result`` names one path, in
    the folder the table says) and ``("text", value)`` for each text it shows (Preview Any)."""
    out = []
    shown = OUTPUTS.get(class_type)
    for key, items in (ui or {}).items():
        if not isinstance(items, (list, tuple)):
            continue
        if key == "result" and shown is not None and shown.key == RESULT:
            path = items[0] if items and isinstance(items[0], str) else ""
            if path.strip():
                sub, _, name = path.replace("\\", "/").rpartition("/")
                out.append(("file", name, sub, "temp" if shown.temp else "output"))
            continue
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("filename"), str) and item["filename"]:
                out.append(("file", item["filename"], str(item.get("subfolder") or ""), str(item.get("type") or "output")))
            elif key == "text" and isinstance(item, str):
                out.append(("text", item))
    return out
