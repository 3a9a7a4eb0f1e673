"""The cloud part's own prompt: the region's nodes, crossings in replaced by loaders (IMAGE/MASK read by
URL) or literal slots (plain values written in at run time), and a SaveImage for every image the gateways
take back."""
from __future__ import annotations

import copy

from .graph import SCALARS, UPLOAD, UPLOAD_URL_SLOT, node_links, out_type
from .kinds import file_places, local_name
from .model import IMAGE, LITERAL, MASK, URL, Crossing, LocalFile

SAVE_PREFIX = "gpugeek_out_"   # the saver of an image or mask a gateway takes back


def cloud_prompt(prompt: dict, classes, nodes: set, boundaries: set, file_exists) -> tuple[dict, list, list]:
    """The region's nodes with crossings in replaced by loaders (IMAGE/MASK) or literal slots (scalars);
    returns (prompt, [Crossing], [LocalFile])."""
    # only what the cloud runs: titles and other editor metadata (``_meta``) stay out, so that renaming a
    # node never changes the gateway's inputs, and ComfyUI's cache serves an unchanged cloud part
    out = {n: {"class_type": prompt[n].get("class_type"), "inputs": copy.deepcopy(prompt[n].get("inputs") or {})}
           for n in sorted(nodes)}
    crossings: list = []
    by_source: dict = {}

    def crossing(key, kind, source):
        if key not in by_source:
            loader = "" if kind == LITERAL else f"gpugeek_in_{len(crossings)}"
            by_source[key] = Crossing(kind=kind, source=source, loader=loader)
            crossings.append(by_source[key])
        return by_source[key]

    for n in sorted(out):
        node = out[n]
        for name, src, slot in list(node_links(node)):
            if src not in boundaries:
                continue
            t = out_type(prompt, classes, src, slot, (n, name))
            if t in SCALARS:
                crossing((src, slot, LITERAL), LITERAL, (src, slot)).targets.append([n, name])
                node["inputs"][name] = None
            elif prompt[src].get("class_type") == UPLOAD:  # the URL it uploaded; its mask rides as alpha
                c = crossing((src, UPLOAD_URL_SLOT, URL), URL, (src, UPLOAD_URL_SLOT))
                node["inputs"][name] = [c.loader, 1 if t == "MASK" else 0]
            else:
                kind = MASK if t == "MASK" else IMAGE
                node["inputs"][name] = [crossing((src, slot, kind), kind, (src, slot)).loader, 0]
    for c in crossings:
        if c.kind in (URL, IMAGE):
            out[c.loader] = {"class_type": "LoadImage", "inputs": {"image": None}}
        elif c.kind == MASK:
            out[c.loader] = {"class_type": "LoadImageMask", "inputs": {"image": None, "channel": "red"}}
    return out, crossings, local_files(prompt, nodes, file_exists)


def local_files(prompt: dict, nodes, file_exists) -> list:
    """The files of this machine that the cloud part's loaders read (every kind of the table: images, video,
    audio, 3D...): uploaded at run time. A name that is not here passes by name (the cloud may have it)."""
    return [LocalFile(node=n, file=name, input=input_name, key=key)
            for n in sorted(nodes) for input_name, key, name in file_places(prompt[n])
            if local_name(name) and file_exists(name)]


def add_save(cloud: dict, source: tuple, kind: str, i: int) -> str:
    """A SaveImage in the cloud prompt for ``source`` (a mask through MaskToImage); returns its node id."""
    save = f"{SAVE_PREFIX}{i}"
    link = [source[0], source[1]]
    if kind == MASK:
        conv = f"gpugeek_m2i_{i}"
        cloud[conv] = {"class_type": "MaskToImage", "inputs": {"mask": link}}
        link = [conv, 0]
    cloud[save] = {"class_type": "SaveImage", "inputs": {"images": link, "filename_prefix": f"gpugeek/{save}"}}
    return save


# The compact transfer: ComfyUI's own SaveAnimatedWEBP writes each image taken back as a lossy WebP, one file
# per image (a RebatchImages of size 1 before it: a batch in one animated file would lose frames, since libwebp
# merges a frame that does not differ from the one before). Quality 90 keeps ~38 dB PSNR on photo-like frames
# at ~14x fewer bytes than SaveImage's PNG (bench/bytes.py); "default" is libwebp's method 4 (method 0 saves
# cloud time but costs bytes).
COMPACT_SAVER = "SaveAnimatedWEBP"
COMPACT_SPLIT = "RebatchImages"
COMPACT_QUALITY = 90
COMPACT_METHOD = "default"


def compact_saves(cloud: dict) -> dict:
    """The cloud prompt with the SaveImage of each image taken back replaced by a lossy WebP saver, one file
    per image. Masks (saved through MaskToImage) stay lossless PNG: a mask is exact in either transfer."""
    out = dict(cloud)
    for save, node in cloud.items():
        if not save.startswith(SAVE_PREFIX) or node.get("class_type") != "SaveImage":
            continue
        link = node["inputs"]["images"]
        if (cloud.get(str(link[0])) or {}).get("class_type") == "MaskToImage":
            continue
        split = save.replace(SAVE_PREFIX, "gpugeek_split_", 1)
        out[split] = {"class_type": COMPACT_SPLIT, "inputs": {"images": link, "batch_size": 1}}
        out[save] = {"class_type": COMPACT_SAVER,
                     "inputs": {"images": [split, 0], "filename_prefix": node["inputs"]["filename_prefix"],
                                "fps": 6.0, "lossless": False, "quality": COMPACT_QUALITY, "method": COMPACT_METHOD}}
    return out
