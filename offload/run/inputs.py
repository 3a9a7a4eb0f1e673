"""What crosses into a cloud part at run time: plain values written in, images, masks and local files of every
kind (offload/plan/kinds.py) uploaded once per content, batches split into one loader per frame and joined
again in the cloud."""
from __future__ import annotations

import asyncio
import copy

from .. import codec
from .. import errors
from ..journal import UploadCache
from ..plan import IMAGE, LITERAL, MASK, URL, kinds
from ..redact import get_logger
from ..transfer import (PARALLEL_TRANSFERS, LocalFile, TooBig, check_upload_size, digest_bytes, digest_file,
                        gather_bounded, safe_file_name, upload_once)
from .models import make_available
from .progress import size_text

log = get_logger("gpugeek.run")


def fill_crossings(plan, values: dict) -> dict:
    """The cloud prompt with literal crossings written in; loaders are filled by :func:`prepare`."""
    prompt = copy.deepcopy(plan.prompt)
    for c in plan.crossings:
        if c.kind == LITERAL:
            for node, name in c.targets:
                prompt[node]["inputs"][name] = values.get(c.input)
    return prompt


async def prepare(plan, values: dict, target, uploads: UploadCache, read_file=None, stats=None,
                  limit: int = PARALLEL_TRANSFERS, models=None, emit=None, workflow_id=None) -> dict:
    """Upload what crosses in (images, masks, local files of every kind) once per content; return the cloud
    prompt, its loaders pointed at what went up. A local file above the pack's limit refuses the run before
    anything goes up. ``read_file`` names a local file: a :class:`~offload.transfer.LocalFile` (hashed once, however
    many loaders name it, and streamed from the file as it goes up) or its bytes. ``models``: what this machine knows
    of models (offload/run/models.py), made available where the part runs first: a model the cloud lacks refuses the
    run before any input goes up."""
    prompt = fill_crossings(plan, values)
    await make_available(prompt, target, models, emit, workflow_id, stats)
    jobs, where = [], []
    for c in plan.crossings:
        v = values.get(c.input)
        if c.kind == URL:
            lines = [u.strip() for u in str(v or "").splitlines() if u.strip()]
            if not lines:  # an address on GPUGeek, a file name on a ComfyUI server
                raise errors.PlanError(f"The Upload Image node #{c.source[0]} gave no URL", hint="Run it again.")
            prompt[c.loader]["inputs"]["image"] = lines[0]
            if len(lines) > 1:
                _batch_loaders(prompt, c.loader, lines[1:])
        elif c.kind in (IMAGE, MASK):
            if v is None:
                raise errors.PlanError(f"Node #{c.source[0]} gave no {c.kind} for the cloud part", hint="Check its inputs.")
            frames = v if getattr(v, "ndim", 0) == (4 if c.kind == IMAGE else 3) else v[None]
            digests = await asyncio.to_thread(lambda fr=frames: [codec.tensor_digest(f) for f in fr])
            for i in range(int(frames.shape[0])):
                digest = digests[i]
                encode = (lambda f=frames[i], k=c.kind: codec.encode_mask_png(f) if k == MASK else codec.encode_png(f))
                jobs.append((digest, encode, f"gpugeek_{digest[:16]}.png", None))
                where.append((c, i))
    named: dict = {}   # a file's name -> (what goes up, its digest): read once however many loaders name it
    for f in plan.local_files if read_file is not None else ():
        if f.file not in named:
            named[f.file] = await _read_local(plan, f, read_file)
        data, digest = named[f.file]
        name = f"gpugeek_{digest[:16]}_{safe_file_name(kinds.plain_name(f.file), 'input')}"
        jobs.append((digest, data, name, kinds.upload_folder(plan.prompt[f.node].get("class_type"), f.key)))
        where.append((f, None))

    # one upload per content and place, however many loaders or frames share it (uploads at once would each miss
    # the cache and each send it)
    unique: dict = {}
    for digest, data, name, folder in jobs:
        unique.setdefault((digest, folder), (data, name))
    sent = await gather_bounded([upload_once(target, uploads, data, name, digest=digest, stats=stats, folder=folder)
                                 for (digest, folder), (data, name) in unique.items()], limit)
    url_of = dict(zip(unique, sent))
    urls = [url_of[(digest, folder)] for digest, _, _, folder in jobs]
    extra_loaders: dict = {}
    for (spec, i), url in zip(where, urls):
        if i is None:
            _point(prompt[spec.node], spec, url)
            continue
        if i == 0:
            prompt[spec.loader]["inputs"]["image"] = url
        else:  # a batch crosses as one loader per frame, joined again in the cloud
            extra_loaders.setdefault(spec.loader, []).append(url)
    for loader, more in extra_loaders.items():
        _batch_loaders(prompt, loader, more)
    await register_external(prompt, target, set(urls), uploads)
    return prompt


async def _read_local(plan, f, read_file) -> tuple:
    """A local file (a LocalFile, or its bytes) and its digest, made on the reading thread (a long video takes a
    second to hash: never on the event loop), within the pack's limit on one file (else the run is refused: node,
    file, size)."""
    def read() -> tuple:
        data = read_file(f.file)
        check_upload_size(len(data))
        if isinstance(data, LocalFile):
            return data, digest_file(data.path, bounded=True)
        return data, digest_bytes(data)
    try:
        return await asyncio.to_thread(read)
    except TooBig as e:
        label = f"#{f.node} {plan.prompt[f.node].get('class_type')}"
        raise errors.PlanError(key="err_upload_too_big", values={"node": label, "file": f.file,
                               "size": size_text(e.size), "limit": size_text(e.limit)}, hint="") from None


def _point(node: dict, f, url: str) -> None:
    """The loader's input (or the key of its dict that names the file) pointed at what went up."""
    if f.key:
        node["inputs"][f.input] = {**node["inputs"][f.input], f.key: url}
    else:
        node["inputs"][f.input] = url


async def register_external(prompt: dict, target, ours: set, uploads: UploadCache | None = None) -> None:
    """Call 2 for addresses that are not the platform's own storage (a user's URL in a cloud LoadImage), never
    for what the pack uploaded (``ours``, this run's uploads, and the upload cache's addresses, read only when
    some address is not this run's); best effort: a failure is logged, the run goes on (GPUGEEK_API.md)."""
    register = getattr(target, "register", None)
    if register is None:
        return
    candidates = [u for node in prompt.values() for _, _, u in kinds.file_places(node)
                  if isinstance(u, str) and u.startswith(("http://", "https://")) and u not in ours]
    if candidates and uploads is not None:
        cached = uploads.urls()
        candidates = [u for u in candidates if u not in cached]
    for url in candidates:
        try:
            await register(url)
        except errors.GPUGeekError as e:
            log.warning("Registering %s with GPUGeek failed (%s); the cloud may still read it", url[:80], e.message)


def _batch_loaders(prompt: dict, loader: str, urls: list) -> None:
    """Frames 2..n of a batch: more loaders, their images joined with ImageBatch and, where the mask is read,
    their masks joined too (through MaskToImage / ImageBatch / ImageToMask, all core nodes), so every frame
    keeps its own mask; consumers are pointed at the joins."""
    base = prompt[loader]
    ids = [loader] + [f"{loader}_f{j}" for j in range(1, len(urls) + 1)]
    for lid, url in zip(ids[1:], urls):
        prompt[lid] = {"class_type": base["class_type"], "inputs": dict(base["inputs"], image=url)}
    joined = {0: _join(prompt, f"{loader}_b", [[lid, 0] for lid in ids])}
    reads_mask = base["class_type"] == "LoadImage" and any(
        v == [loader, 1] for nid, node in prompt.items() if not nid.startswith(loader + "_")
        for v in node["inputs"].values())
    if reads_mask:
        for lid in ids:
            prompt[f"{lid}_mi"] = {"class_type": "MaskToImage", "inputs": {"mask": [lid, 1]}}
        frames = _join(prompt, f"{loader}_mb", [[f"{lid}_mi", 0] for lid in ids])
        prompt[f"{loader}_m"] = {"class_type": "ImageToMask", "inputs": {"image": frames, "channel": "red"}}
        joined[1] = [f"{loader}_m", 0]
    for nid, node in prompt.items():
        if nid.startswith(loader + "_"):
            continue
        for k, v in node["inputs"].items():
            if isinstance(v, list) and len(v) == 2 and v[0] == loader and v[1] in joined:
                node["inputs"][k] = joined[v[1]]


def _join(prompt: dict, prefix: str, links: list) -> list:
    """ImageBatch nodes joining ``links`` in order; the link to the last join."""
    last = links[0]
    for j, link in enumerate(links[1:], start=1):
        prompt[f"{prefix}{j}"] = {"class_type": "ImageBatch", "inputs": {"image1": last, "image2": link}}
        last = [f"{prefix}{j}", 0]
    return last


