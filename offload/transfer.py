"""Moving bytes: uploads with content-hash dedup, bounded parallel downloads, safe output file names."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from .errors import ResultError
from .transport import MAX_DOWNLOAD_BYTES

# Parallel uploads per run: enough to fill a home uplink, few enough not to trip rate limits (each asks the API for
# an address first).
PARALLEL_TRANSFERS = 4
# The largest local file sent to the cloud (a video, a 3D model): the pack's limit on one file either way, the
# size a result file may have coming back. Read at call time (tests lower it).
MAX_UPLOAD_BYTES = MAX_DOWNLOAD_BYTES
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
# The longest stem of a file name made here from a result's name (a server may answer with names of any length;
# file systems take 255 bytes, and a counter or a task id is added to some).
MAX_STEM = 120
SAVE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v", ".flac",
             ".mp3", ".wav", ".ogg", ".opus", ".m4a", ".aac", ".json", ".txt", ".glb", ".gltf", ".obj", ".fbx", ".stl",
             ".ply", ".spz", ".splat", ".ksplat", ".usdz", ".safetensors", ".latent"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".gif"}


class TooBig(Exception):
    """A local file above the limit: not read, not sent (the caller names the node and the file)."""

    def __init__(self, size: int, limit: int):
        super().__init__(f"{size} bytes, above the limit of {limit}")
        self.size, self.limit = size, limit


def check_upload_size(size: int) -> None:
    if size > MAX_UPLOAD_BYTES:
        raise TooBig(size, MAX_UPLOAD_BYTES)


@dataclass(frozen=True)
class LocalFile:
    """A local file that is to go up, named by its path and never held whole: its size checked when it is named
    (:func:`local_file`), its digest made reading it in pieces (:func:`digest_file`), its bytes streamed from the
    file into the upload (:func:`upload_body`). ``len`` is its size, as for the bytes it stands for."""
    path: str
    size: int

    def __len__(self) -> int:
        return self.size


def local_file(path) -> LocalFile:
    """A local file that is to go up (a loader's video, audio, 3D model); one above MAX_UPLOAD_BYTES is refused
    unread (TooBig)."""
    size = os.path.getsize(path)
    check_upload_size(size)
    return LocalFile(str(path), size)


@contextlib.contextmanager
def upload_body(data):
    """What a target sends for ``data``: bytes as they are; a :class:`LocalFile` as a function that opens the file
    afresh for each attempt (aiohttp streams a file object a piece at a time, its length sent as Content-Length, as
    a signed PUT to storage wants), every file it opened closed when the upload ends."""
    if not isinstance(data, LocalFile):
        yield data
        return
    opened = []

    def body():
        f = open(data.path, "rb")
        opened.append(f)
        return f
    try:
        yield body
    finally:
        for f in opened:
            f.close()


def digest_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=20).hexdigest()


def digest_file(path, chunk: int = 1 << 20, bounded: bool = False) -> str:
    """:func:`digest_bytes` of a file, read in pieces (a long video is never held whole). ``bounded``: a file that
    is to go up, refused (TooBig) as soon as it passes MAX_UPLOAD_BYTES (it grew since it was named), not read to
    its end."""
    h = hashlib.blake2b(digest_size=20)
    read = 0
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(chunk), b""):
            read += len(piece)
            if bounded:
                check_upload_size(read)
            h.update(piece)
    return h.hexdigest()


async def upload_once(target, cache, data, file_name: str, digest: str | None = None, stats=None,
                      folder: str | None = None) -> str:
    """Upload unless the same content already has a live URL (across runs and restarts). ``data`` may be
    bytes, a function that makes them (an encoder: it runs, in a thread, only when an upload is due) or a
    :class:`LocalFile` (streamed from the file). ``folder``: where in a ComfyUI server's input folder the loader
    looks (offload/plan/kinds.py)."""
    if digest is None and isinstance(data, LocalFile):
        digest = await asyncio.to_thread(digest_file, data.path, bounded=True)
    elif digest is None:
        data = data() if callable(data) else data
        digest = digest_bytes(data)
    key = f"{getattr(target, 'name', 'target')}:{digest}" + (f":{folder}" if folder is not None else "")
    url = cache.get(key)
    if url:
        if stats is not None:
            stats["reused"] = stats.get("reused", 0) + 1
        return url
    if callable(data):
        data = await asyncio.to_thread(data)
    url, expires = await target.upload(data, file_name, folder=folder)
    cache.put(key, url, expires)
    if stats is not None:
        stats["uploaded_bytes"] = stats.get("uploaded_bytes", 0) + len(data)
    return url


async def gather_bounded(coros, limit: int = PARALLEL_TRANSFERS):
    """Run coroutines with at most ``limit`` at once; the first error cancels the rest (and closes those that
    never started, which would otherwise be reported as never awaited)."""
    sem = asyncio.Semaphore(limit)
    coros = list(coros)

    async def one(c):
        async with sem:
            return await c
    tasks = [asyncio.ensure_future(one(c)) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in coros:
            if asyncio.iscoroutine(c):
                c.close()
        raise


def exact_bytes(text: str) -> bytes:
    """The bytes a str from a server stands for, whatever it holds (never raises): a file name Linux lists that
    is not UTF-8 comes as surrogates (``caf\\udce9``, Python's surrogateescape) and goes back to its own bytes;
    any other lone surrogate (JSON carries them) as its code point's UTF-8 form. An address built from them
    (percent-encoded) keeps the exact original."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def cut_utf8(raw: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes of UTF-8 text, cut at the start of a character (not inside one)."""
    if len(raw) <= limit:
        return raw
    cut = limit
    for _ in range(3):   # back over at most 3 continuation bytes
        if raw[cut] & 0xC0 != 0x80:
            break
        cut -= 1
    return raw[:cut]


def safe_file_name(url: str, fallback: str) -> str:
    """A file name from a URL that can never leave the folder it is joined to (a ComfyUI server's
    ``/view?filename=...`` names the file in its query)."""
    parts = urlsplit(url)
    if parts.scheme == "data":   # a value a target brought back as text (Preview Any's)
        return f"{_SAFE.sub('_', fallback)}.txt"
    named = parse_qs(parts.query).get("filename", [""])[0]
    raw = os.path.basename((named or unquote(parts.path)).replace("\\", "/"))
    stem, ext = os.path.splitext(_SAFE.sub("_", raw).strip("._"))
    if ext.lower() not in SAVE_EXTS:
        ext = ".bin"
    stem = stem[:MAX_STEM] or fallback   # a very long name is cut, its extension kept
    return f"{_SAFE.sub('_', stem)}{ext.lower()}"


def input_path(folder, name: str) -> Path | None:
    """``folder/name`` when ``name`` stays inside ``folder`` (relative, no ``..``, no way out through a
    link), else None: a workflow may only name files of its input folder, as in ComfyUI."""
    if not isinstance(name, str) or not name or "\x00" in name:
        return None
    norm = name.replace("\\", "/")
    if norm.startswith("/") or os.path.isabs(name) or re.match(r"^[A-Za-z]:", norm) or ".." in norm.split("/"):
        return None
    base = Path(folder).resolve()
    path = (base / norm).resolve()
    if os.path.commonpath([base, path]) != str(base):
        return None
    return path


def save_into(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` as ``folder/name`` (never outside ``folder``, never over an existing file)."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    stem, ext = os.path.splitext(name)
    for i in range(10000):
        candidate = (folder / (f"{stem}{ext}" if i == 0 else f"{stem}_{i}{ext}")).resolve()
        if os.path.commonpath([folder, candidate]) != str(folder):
            raise ResultError(f"Refused to save a result outside the output folder: {name!r}", call="save")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return candidate
    raise ResultError(f"Too many files named {name!r} in {folder}", call="save")
