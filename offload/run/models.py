"""Your models go where your workflow runs (issue 40), the client's side: before a cloud part is submitted, every
value of a cloud node that names a model file (a name ending as a model does, in one of this machine's model
folders, or a model the workflow's template names with its address) is made available where it runs.

* A ComfyUI server that receives models (offload/receive.py; ``model_has`` answers): asked by content (SHA-256,
  computed streaming once per path, size and modification time), it answers the name it holds it under; else a
  template's model is downloaded by the server itself from its address, and this machine's file is sent, once,
  streamed, resumed from the server's offset after a broken connection. A file whose hash is not known here yet is
  first asked for by its size (``model_ask``): where the server holds nothing of that size, nothing there can be
  reused, and the file is sent at once, hashed as it is read (one pass, not two), its hash told at the end for the
  server to check against its own. The cloud prompt then names the server's
  copy (``gpugeek/<name>``). A server that does not receive (404) runs the prompt as before.
* GPUGeek and v2 (no model uploads): a model the cloud's known list lacks (offload/catalog.py) is named on its
  node with where it comes from and what to do, and nothing is sent; where the list is not known, the cloud judges.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from .. import catalog, errors, texts
from ..receive import CHUNK, PICKLE_EXTS, SAFE_EXTS, ShaCache, file_marks
from ..redact import get_logger

log = get_logger("gpugeek.models")
MODEL_EXTS = SAFE_EXTS + PICKLE_EXTS
# The node is told how a model's upload goes at most this often (a 20 GB model is 20,000 pieces).
PROGRESS_EVERY_S = 0.5
# A model's upload broken this many times in a row (each resumed at the server's offset) ends the run with a sentence.
UPLOAD_TRIES = 5


@dataclass
class ModelSource:
    """What this machine knows of models: ``find(value, class_type, input)`` -> (kind, path) of a file of ComfyUI's
    model folders (extra_model_paths.yaml included; the node layer asks folder_paths) that this node's input names
    (a list of this machine's models, never a text), None otherwise; ``templates``:
    name -> {"url", "directory", "hash"} from the workflow's ``properties.models``; ``hashes``: SHA-256 by path,
    size and mtime."""
    find: Callable[..., tuple | None] = lambda value, class_type=None, input=None: None
    templates: dict = field(default_factory=dict)
    hashes: ShaCache = field(default_factory=ShaCache)


def folder_source(roots, hashes: ShaCache | None = None) -> ModelSource:
    """The command line's models: ComfyUI-style model folders (``<root>/<kind>/<name>``, as a ComfyUI's ``models``
    folder), given by the user. A value names a file of a kind's folder (subfolders kept, never outside it), in the
    kind its input names first (``lora_name`` -> ``loras``)."""
    roots = [os.path.abspath(r) for r in roots]

    def find(value, class_type=None, input=None):
        found = []
        for root in roots:
            try:
                kinds = sorted(e.name for e in os.scandir(root) if e.is_dir())
            except OSError:   # a folder that is not there: nothing in it
                continue
            for kind in kinds:
                folder = os.path.join(root, kind)
                path = os.path.abspath(os.path.join(folder, value.replace("\\", "/")))
                if path.startswith(folder + os.sep) and path.lower().endswith(MODEL_EXTS) and os.path.isfile(path):
                    found.append((kind, path))
        said = str(input or "").lower()
        found.sort(key=lambda kp: kp[0].rstrip("s").lower() not in said)
        return found[0] if found else None
    return ModelSource(find=find, hashes=hashes if hashes is not None else ShaCache())


def template_models(workflow) -> dict:
    """name -> {"url", "directory", "hash"} for every model a workflow (the editor's JSON: ``extra_pnginfo.workflow``)
    names with an address: ComfyUI's templates keep them in each node's ``properties.models`` (and subgraphs' nodes),
    some in the workflow's own ``models``."""
    found: dict = {}
    if not isinstance(workflow, dict):
        return found

    def take(entries) -> None:
        for m in entries if isinstance(entries, list) else []:
            if isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("url"), str):
                h = m.get("hash") if str(m.get("hash_type") or "sha256").lower() == "sha256" else None
                found.setdefault(m["name"], {"url": m["url"], "directory": str(m.get("directory") or ""),
                                             "hash": h if isinstance(h, str) else None})

    def nodes(graph) -> None:
        for n in (graph or {}).get("nodes") or []:
            if isinstance(n, dict):
                take((n.get("properties") or {}).get("models"))
    take(workflow.get("models"))
    nodes(workflow)
    for sub in ((workflow.get("definitions") or {}).get("subgraphs") or []):
        if isinstance(sub, dict):
            nodes(sub)
    return found


def named_models(prompt: dict) -> list:
    """[(node id, input, value)] of every literal value of the prompt that names a model file."""
    out = []
    for nid, node in prompt.items():
        for name, v in ((node or {}).get("inputs") or {}).items():
            if isinstance(v, str) and v.lower().endswith(MODEL_EXTS) and "://" not in v:
                out.append((nid, name, v))
    return out


def _template_of(source: ModelSource, value: str):
    return source.templates.get(value) or source.templates.get(value.replace("\\", "/").rsplit("/", 1)[-1])


def _label(prompt: dict, nid: str) -> str:
    node = prompt.get(nid) or {}
    title = ((node.get("_meta") or {}).get("title")) or node.get("class_type") or "?"
    return f"#{nid} {title}"


async def make_available(prompt: dict, target, source: ModelSource | None, emit=None, workflow_id=None,
                         stats: dict | None = None) -> dict:
    """The cloud prompt with its models where it runs (see the module's words); ``prompt`` is changed in place."""
    if source is None:
        return prompt
    used = named_models(prompt)
    if not used:
        return prompt
    if not hasattr(target, "model_has"):
        check_cloud_lists(prompt, used, target, source, workflow_id)
        return prompt
    names: dict = {}   # value -> the server's name for it (each model once, however many nodes name it)
    for nid, inp, value in used:
        if value not in names:
            got = await _one(prompt, nid, inp, value, target, source, emit, stats)
            if got is _NO_RECEIVING:
                return prompt   # a server without receiving: as before
            names[value] = got
        if names[value]:
            prompt[nid]["inputs"][inp] = names[value]
    return prompt


_NO_RECEIVING = object()


async def _one(prompt, nid, inp, value, target, source: ModelSource, emit, stats=None):
    """The server's name for ``value`` (received, fetched or held), None where neither side has it (the server's own
    check then says), _NO_RECEIVING where the server does not receive models."""
    local = source.find(value, prompt[nid].get("class_type"), inp)
    tmpl = _template_of(source, value)
    if local is None and tmpl is None:
        return None
    kind, path = local if local is not None else (tmpl.get("directory"), None)
    if not kind:
        return None
    name = value.replace("\\", "/")
    url = getattr(target, "url", "?")
    try:
        if path is not None:
            st = os.stat(path)
            size = st.st_size
            sha = source.hashes.known(path)
            if sha is None and tmpl is None and hasattr(target, "model_ask"):
                # nothing of its size on the server: sent at once, hashed as it goes
                got = await _upload_unhashed(prompt, nid, target, kind, name, st, path, source, emit, stats)
                if got is not _HASH_FIRST:
                    return got
            if sha is None:
                sha = await asyncio.to_thread(source.hashes.get, path)
            held = await target.model_has(kind, name, size, sha)
            if held is None:
                return _NO_RECEIVING
            if held.get("name"):
                return held["name"]
            if tmpl is None:
                got = await _upload(prompt, nid, target, kind, name, size, sha, path, _offset(held, size), emit)
                if stats is not None:   # the gateway's closing record counts what went up
                    stats["uploaded_bytes"] = stats.get("uploaded_bytes", 0) + size - _offset(held, size)
                return got
        told = [0.0]

        def fetching(done: int = 0, total=None) -> None:
            now = time.monotonic()
            if emit is not None and now - told[0] >= PROGRESS_EVERY_S:
                told[0] = now
                emit("model_fetching", name=name, url=url, done=done, total=total)
        fetching()
        got = await target.model_fetch(kind, name, tmpl["url"], tmpl.get("hash"), fetching)
        if got is None:
            return _NO_RECEIVING
        return got["name"]
    except errors.GPUGeekError as e:
        refused = getattr(e, "refused", None)
        if refused is None:
            raise
        raise errors.PlanError(key="model_refused", values={"node": _label(prompt, nid), "url": url, "name": name,
                                                            "reason": refused}, hint="") from None


def _uploading(emit, name: str, url: str, size: int):
    """``progress(bytes sent)`` of a model's upload: told to the node at most every PROGRESS_EVERY_S, and at its end."""
    told = [0.0]

    def progress(done: int) -> None:
        now = time.monotonic()
        if emit is not None and (now - told[0] >= PROGRESS_EVERY_S or done >= size):
            told[0] = now
            emit("model_uploading", name=name, url=url, done=done, total=size)
    return progress


async def _upload(prompt, nid, target, kind, name, size, sha, path, offset, emit) -> str:
    url = getattr(target, "url", "?")
    progress = _uploading(emit, name, url, size)
    for _ in range(UPLOAD_TRIES):
        progress(offset)
        try:
            got = await target.model_upload(kind, name, size, sha, path, offset, progress)
        except errors.TransportError as e:   # broken: the server's offset says where to go on
            log.info("Sending %s to %s broke off (%s): resuming", name, url, e.message)
            held = await target.model_has(kind, name, size, sha) or {}
            if held.get("name"):
                return held["name"]
            offset = _offset(held, size)
            continue
        if got.get("name"):
            return got["name"]
        offset = _offset(got, size)   # the server's answer where it is ahead of or behind us
    raise errors.PlanError(key="model_upload_broken", values={"node": _label(prompt, nid), "url": url, "name": name,
                                                              "tries": UPLOAD_TRIES}, hint="")


_HASH_FIRST = object()


def file_key(path, st) -> str:
    """What the server knows this file by before its hash is made: its path, size and modification time, hashed
    (the same file asked again, from another process too, goes on with the same upload)."""
    return hashlib.sha256(ShaCache.key(path, st).encode("utf-8", "surrogatepass")).hexdigest()


def _hash_prefix(h, path, n: int) -> None:
    """The first ``n`` bytes of the file into ``h`` (an upload resumed: what the server holds already)."""
    with open(path, "rb") as f:
        while n > 0:
            piece = f.read(min(n, CHUNK))
            if not piece:
                break
            h.update(piece)
            n -= len(piece)


async def _upload_unhashed(prompt, nid, target, kind, name, st, path, source: ModelSource, emit, stats):
    """A file whose hash is not known here, sent where the server holds nothing of its size (``model_ask``):
    by the server's upload id, hashed as it is read; its hash then told (the server keeps it only where its own is
    the same) and kept here. The server's name; _NO_RECEIVING; _HASH_FIRST where the server holds something of its
    size (or cannot be asked so): then asked by hash."""
    url, size = getattr(target, "url", "?"), st.st_size
    key = file_key(path, st)
    marks = await asyncio.to_thread(file_marks, path, size)   # 2 MiB read: rules out the server's files of its size
    asked = await target.model_ask(kind, name, size, key, marks)
    if asked is None:
        return _NO_RECEIVING
    progress = _uploading(emit, name, url, size)
    start, tries = None, 0
    while True:
        if asked.get("name"):
            if stats is not None and start is not None:   # the gateway's closing record counts what went up
                stats["uploaded_bytes"] = stats.get("uploaded_bytes", 0) + size - start
            return asked["name"]
        if not asked.get("upload"):
            return _HASH_FIRST
        if tries == UPLOAD_TRIES:
            raise errors.PlanError(key="model_upload_broken", values={"node": _label(prompt, nid), "url": url,
                                                                      "name": name, "tries": UPLOAD_TRIES}, hint="")
        tries += 1
        upload, offset = asked["upload"], _offset(asked, size)
        start = offset if start is None else start
        progress(offset)
        h = hashlib.sha256()
        try:
            if offset:   # what the server holds already: hashed here too (read, not sent)
                await asyncio.to_thread(_hash_prefix, h, path, offset)
            got = ({"offset": size} if offset >= size else   # all there already, its hash not told
                   await target.model_upload(kind, name, size, None, path, offset, progress, upload=upload, hasher=h))
            if not got.get("name") and _offset(got, size) >= size:   # every byte there: its hash told
                sha = h.hexdigest()
                source.hashes.put(path, sha, st)
                got = await target.model_has(kind, name, size, sha, upload=upload) or {}
            asked = got if got.get("name") else dict(got, upload=upload)
        except errors.TransportError as e:   # broken: the server's offset says where to go on
            log.info("Sending %s to %s broke off (%s): resuming", name, url, e.message)
            asked = await target.model_ask(kind, name, size, key, marks) or {}


def _offset(answer: dict, size: int) -> int:
    """Where the server says the upload goes on, within the file whatever it said."""
    try:
        return max(0, min(size, int(answer.get("offset") or 0)))
    except (TypeError, ValueError):
        return 0


def check_cloud_lists(prompt: dict, used: list, target, source: ModelSource, workflow_id) -> None:
    """GPUGeek and v2, at run time: a model the cloud's known list lacks refuses the run before anything is sent (the
    sentences of :func:`missing_models`, on their nodes)."""
    url = getattr(target, "url", None)
    where = texts.Said("where_server", {"url": url}) if url else texts.Said("where_workflow", {"workflow": workflow_id})
    lines = missing_models(prompt, source, [catalog.key_of_target(target, workflow_id)], where, used)
    if lines:
        raise errors.PlanError(key="err_models_missing", lines=lines, hint="")


def missing_models(prompt: dict, source: ModelSource, keys: list, where: texts.Said, used: list | None = None) -> list:
    """One sentence per cloud node naming a model the cloud's known list lacks (``keys``: its places, each server of
    a pool), with where it comes from (this machine's file, a template's address) and what to do. Where the list is
    not known, or the model is neither this machine's nor a template's (a name from another machine: the cloud's list
    may have grown since it was read), the cloud judges, as before."""
    lines = []
    for nid, inp, value in named_models(prompt) if used is None else used:
        known = catalog.catalog().whole_list(keys, prompt[nid].get("class_type"), inp)
        if not known or value in known:
            continue
        local, tmpl = source.find(value, prompt[nid].get("class_type"), inp), _template_of(source, value)
        if local is None and tmpl is None:
            continue
        src = (texts.Said("model_source_local", {"path": local[1]}) if local else
               texts.Said("model_source_url", {"url": tmpl["url"]}))
        lines.append(texts.Said("model_missing", {"id": nid, "node": _label(prompt, nid), "name": value,
                                                  "input": inp, "where": where, "source": src}))
    return lines
