"""The cloud part's own prompt: the region's nodes, crossings in replaced by loaders (IMAGE/MASK read by
URL) or literal slots (plain values written in at run time), and a SaveImage for every image the gateways
take back."""
from __future__ import annotations

import copy

from .graph import SCALARS, UPLOAD, UPLOAD_URL_SLOT, node_links, out_type


def _cloud_prompt(prompt, classes, nodes, boundaries, file_exists):
    """The region's nodes with crossings in replaced by loaders (IMAGE/MASK) or literal slots (scalars)."""
    # only what the cloud runs: titles and other editor metadata (``_meta``) stay out, so that renaming a
    # node never changes the gateway's inputs, and ComfyUI's cache serves an unchanged cloud part
    out = {n: {"class_type": prompt[n].get("class_type"), "inputs": copy.deepcopy(prompt[n].get("inputs") or {})}
           for n in sorted(nodes)}
    crossings: list = []
    by_src: dict = {}
    for n in sorted(out):
        node = out[n]
        for name, src, slot in list(node_links(node)):
            if src not in boundaries:
                continue
            t = out_type(prompt, classes, src, slot, (n, name))
            is_upload = prompt[src].get("class_type") == UPLOAD
            if t in SCALARS:
                key = (src, slot, "literal")
                if key not in by_src:
                    by_src[key] = {"kind": "literal", "from": [src, slot], "targets": []}
                    crossings.append(by_src[key])
                by_src[key]["targets"].append([n, name])
                node["inputs"][name] = None
                continue
            if is_upload:  # the URL the boundary already uploaded; its mask rides as alpha
                key = (src, UPLOAD_URL_SLOT, "url")
                if key not in by_src:
                    by_src[key] = {"kind": "url", "from": [src, UPLOAD_URL_SLOT], "loader": f"gpugeek_in_{len(crossings)}"}
                    crossings.append(by_src[key])
                c = by_src[key]
                node["inputs"][name] = [c["loader"], 1 if t == "MASK" else 0]
                continue
            kind = "mask" if t == "MASK" else "image"
            key = (src, slot, kind)
            if key not in by_src:
                by_src[key] = {"kind": kind, "from": [src, slot], "loader": f"gpugeek_in_{len(crossings)}"}
                crossings.append(by_src[key])
            node["inputs"][name] = [by_src[key]["loader"], 0]
    for c in crossings:
        if c["kind"] in ("url", "image"):
            out[c["loader"]] = {"class_type": "LoadImage", "inputs": {"image": None}}
        elif c["kind"] == "mask":
            out[c["loader"]] = {"class_type": "LoadImageMask", "inputs": {"image": None, "channel": "red"}}
    files = []
    for n in sorted(nodes):
        node = prompt[n]
        if node.get("class_type") in ("LoadImage", "LoadImageMask"):
            name = node.get("inputs", {}).get("image")
            if isinstance(name, str) and "://" not in name and file_exists(name):
                files.append({"node": n, "file": name})
    return out, crossings, files


def _add_save(cloud_prompt: dict, src, kind: str, i: int) -> str:
    save = f"gpugeek_out_{i}"
    link = [src[0], src[1]]
    if kind == "mask":
        conv = f"gpugeek_m2i_{i}"
        cloud_prompt[conv] = {"class_type": "MaskToImage", "inputs": {"mask": link}}
        link = [conv, 0]
    cloud_prompt[save] = {"class_type": "SaveImage", "inputs": {"images": link, "filename_prefix": f"gpugeek/{save}"}}
    return save
