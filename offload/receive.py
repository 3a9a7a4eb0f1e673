"""The server side of "your models go where your workflow runs" (issue 40): a ComfyUI that runs this pack can take
the models a client's cloud part names and lacks here, when its owner switched receiving on. A small room of its
own: no ComfyUI import (the node layer hands it the model folders, nodes/routes.py registers its routes).

Who may write what where (README, "Receiving models"):

* Off by default. On only with ``GPUGEEK_RECEIVE_MODELS=1`` in the server's environment or the setting
  ``receive_models`` saved on the server; off, every route answers 404, as a ComfyUI without the pack does.
* With ``GPUGEEK_RECEIVE_TOKEN`` set on the server, a request must carry it (``Authorization: Bearer <token>``, or
  basic auth of ``user:password``): the token a client sets for this target (GPUGEEK_TARGET_TOKEN) is sent so.
  Without it, whoever can queue prompts on this ComfyUI can send models to it, as they can upload inputs.
* Only formats that cannot run code: ``.safetensors``, ``.sft``, ``.gguf``. Pickle formats (``.ckpt``, ``.pt``,
  ``.pth``, ``.bin``, ``.pkl``) are refused with a sentence unless the server allows them (``GPUGEEK_RECEIVE_PICKLE=1``
  or the setting ``receive_pickle``).
* Written only into ``<model folder of that kind>/gpugeek/`` (the first folder ComfyUI lists for the kind): a name
  with ``..``, an absolute path, a drive, NUL, or one that leads out through a link is refused.
* At most MAX_MODEL_BYTES a file (``GPUGEEK_MAX_MODEL_BYTES``), and never when the disk would keep less than
  DISK_RESERVE_BYTES free: both said in a sentence.
* A file is written to ``gpugeek/.partial/<sha256>.part`` as it arrives (a broken upload resumes at its offset),
  its SHA-256 checked against the one announced, then renamed into place: a file in the folder is always whole.
* Where the server holds nothing of a model's size (no file it could reuse, no partial upload it could go on with),
  the client need not hash its file before sending it: asked by kind, name, size and a key of its file (no hash),
  the server gives an upload id; the bytes go to ``gpugeek/.partial/up-<id>.part``, hashed here as they arrive, and
  the client tells the SHA-256 it made as it read them once they are all sent: the file is kept only where the
  server's own hash of what it wrote is that one. A server before this answers such an ask with receive_bad_hash,
  and the client asks by hash as before.
* A template's model (a URL) is fetched by the server itself: https only, the same limits, its hash checked where
  the template gives one.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import hmac
import base64
import ipaddress
import json
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from . import texts
from .redact import get_logger

log = get_logger("gpugeek.receive")
SAFE_EXTS = (".safetensors", ".sft", ".gguf")
PICKLE_EXTS = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
# Where received models go, inside the model folder of their kind (one place the owner can see and clean).
RECEIVE_SUBFOLDER = "gpugeek"
PARTIAL_DIR = ".partial"
# The largest model taken (a 4-bit video model is ~15 GB, a full-precision Flux ~24 GB, the largest checkpoints people
# share ~35 GB): above it the owner raises GPUGEEK_MAX_MODEL_BYTES on purpose.
MAX_MODEL_BYTES = 64 << 30
# What a received model must leave free on the server's disk (ComfyUI's outputs, temp files, the OS).
DISK_RESERVE_BYTES = 2 << 30
# Read and written a piece at a time: a model is never held whole.
CHUNK = 1 << 20
# A partial upload nobody resumed for this long is deleted (the next upload to that folder looks): a week covers a
# client that broke off on Friday and comes back on Monday.
PARTIAL_KEEP_S = 7 * 86400
# Pieces of an upload read from the socket ahead of the thread that writes and hashes them (memory: this many CHUNKs).
WRITE_AHEAD = 8
# How long the fetch route waits for a new download before answering how far it is (a small model is answered whole).
FETCH_FIRST_WAIT_S = 2.0
# Test hook (tests only, never set by the pack): a template's model may come over plain http from a loopback host.
ALLOW_HTTP_LOOPBACK_FOR_TESTS = False
# A template's model address may redirect (Hugging Face sends to its CDN) at most this many times, https each time.
MAX_FETCH_REDIRECTS = 5
# A template's host must take the connection within this (a live CDN does in well under a second; 30 s covers a slow
# link), and send something at least this often while the model comes (a CDN pausing a minute is broken).
FETCH_CONNECT_S = 30
FETCH_READ_S = 120
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# An upload sent before its hash is known: the id the server gives it (see Receiver.ask).
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


def max_model_bytes(env=None) -> int:
    env = os.environ if env is None else env
    try:
        return int(env.get("GPUGEEK_MAX_MODEL_BYTES", "") or MAX_MODEL_BYTES)
    except ValueError:
        return MAX_MODEL_BYTES


class Refused(Exception):
    """A request refused, with its sentence (``key`` in locales/<lang>/server.json) and HTTP status."""

    def __init__(self, key: str, http_status: int = 400, /, **values):
        # the HTTP status is positional only: a sentence's own {status} (receive_fetch_failed) is one of ``values``
        super().__init__(texts.text(key, "en", **values))
        self.key, self.status, self.values = key, http_status, values

    def answer(self) -> dict:
        return {"ok": False, "error": str(self), "message": str(self), "key": self.key, "values": self.values,
                "zh": texts.text(self.key, "zh", **self.values)}


def size_words(n: int) -> str:
    return f"{n / (1 << 30):.1f} GB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MB"


def clean_name(name) -> str:
    """A model's name as the client gave it, confined: relative, ``/`` separated, no ``..``, no NUL, no drive."""
    if not isinstance(name, str) or not name.strip() or "\x00" in name or len(name) > 400:
        raise Refused("receive_bad_name", name=str(name)[:80])
    norm = name.replace("\\", "/").strip()
    # no way up, no absolute path or drive, no hidden part (the partial uploads' folder is one)
    parts = norm.split("/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or any(p == "" or p.startswith(".") for p in parts):
        raise Refused("receive_bad_name", name=name[:80])
    return norm


# A model's ends, compared before any whole pass (``file_marks``): its first and last MiB. Two files of one size from
# one trainer share a header, never their last weights; reading 2 MiB costs ~1 ms against ~0.5 s a GiB for a hash.
ENDS_BYTES = 1 << 20


def file_marks(path, size: int | None = None) -> dict:
    """``{"head": SHA-256 of the first ENDS_BYTES, "ends": SHA-256 of the size, the first and the last ENDS_BYTES}``
    of a file: what a server holding files of its size compares before the client hashes it whole."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size if size is None else size
        first = f.read(ENDS_BYTES)
        last = b""
        if size > ENDS_BYTES:
            f.seek(max(ENDS_BYTES, size - ENDS_BYTES))
            last = f.read(ENDS_BYTES)
    ends = hashlib.sha256(str(size).encode() + b"\0" + first)
    ends.update(last)
    return {"head": hashlib.sha256(first).hexdigest(), "ends": ends.hexdigest()}


def _mark(value) -> str | None:
    v = str(value or "").strip().lower()
    return v if _SHA256.match(v) else None


def sha256_file(path, chunk: int = CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(chunk), b""):
            h.update(piece)
    return h.hexdigest()


class ShaCache:
    """SHA-256 of files by path, size and modification time (a 6 GB checkpoint is hashed once, not every run), kept
    in a JSON file where ``path`` is given: one entry a file (a changed file's old entry is dropped). One file is
    hashed at a time: a pool's servers asking for the same model at once wait for the one hash."""

    def __init__(self, path=None):
        self.path = Path(path) if path else None
        self._map: dict = {}
        self._lock = threading.Lock()
        if self.path and self.path.exists():
            try:
                self._map = json.loads(self.path.read_text("utf-8"))
            except (OSError, ValueError):
                self._map = {}

    @staticmethod
    def key(file, st=None) -> str:
        st = st if st is not None else os.stat(file)
        return f"{os.path.realpath(file)}|{st.st_size}|{st.st_mtime_ns}"

    def get(self, file) -> str:
        key = self.key(file)
        with self._lock:
            if key not in self._map:
                self._keep(key, sha256_file(file))
            return self._map[key]

    def known(self, file) -> str | None:
        """The file's hash where it was made before (nothing read), else None."""
        with self._lock:
            return self._map.get(self.key(file))

    def put(self, file, digest: str, st) -> None:
        """``digest``, made of the file as it was when ``st`` (its os.stat) was taken: kept where it has not changed
        since (a file rewritten while it was read is hashed again when asked)."""
        key = self.key(file, st)
        if self.key(file) != key:
            return
        with self._lock:
            self._keep(key, digest)

    def _keep(self, key: str, digest: str) -> None:
        real = key.rsplit("|", 2)[0]
        self._map = {k: v for k, v in self._map.items() if not k.startswith(real + "|")}
        self._map[key] = digest
        self._save()

    def _save(self) -> None:
        if not self.path:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._map), "utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass


class Receiver:
    """Models received into ``roots(kind)[0]/gpugeek``. ``roots``: the folders ComfyUI keeps models of a kind in
    (``folder_paths.get_folder_paths``; empty for a kind it does not know)."""

    def __init__(self, roots: Callable[[str], list], *, allow_pickle: bool = False, token: str | None = None,
                 max_bytes: int | None = None, index_path=None, reserve: int = DISK_RESERVE_BYTES):
        self.roots, self.allow_pickle, self.token = roots, allow_pickle, token or None
        self.max_bytes = max_model_bytes() if max_bytes is None else max_bytes
        self.reserve = reserve
        self.index_path = Path(index_path) if index_path else None
        self.hashes = ShaCache(self.index_path.with_name("received_sha.json") if self.index_path else None)
        self._locks: dict = {}
        self._index_lock = threading.Lock()
        self._fetches: dict = {}   # (kind, url) -> a download under way: its task, bytes done and total
        self._digests: dict = {}   # upload id -> (its partial file's size and mtime, the SHA-256 of its bytes)

    # ---- who may ask --------------------------------------------------------------------------------------
    def allowed(self, authorization: str | None) -> bool:
        if not self.token:
            return True
        got = (authorization or "").strip()
        if got.lower().startswith("bearer "):
            return hmac.compare_digest(got[7:].strip().encode(), self.token.encode())
        if got.lower().startswith("basic "):
            try:
                said = base64.b64decode(got[6:].strip(), validate=True)
            except ValueError:
                return False
            return hmac.compare_digest(said, self.token.encode())
        return False

    # ---- where ----------------------------------------------------------------------------------------
    def folder(self, kind) -> Path:
        """``<the kind's first model folder>/gpugeek``, made where missing, refused where it leads elsewhere."""
        roots = self.roots(kind) if isinstance(kind, str) and kind else []
        if not roots:
            raise Refused("receive_bad_kind", kind=str(kind)[:60])
        root = Path(roots[0]).resolve()
        base = root / RECEIVE_SUBFOLDER
        base.mkdir(parents=True, exist_ok=True)
        real = base.resolve()
        if os.path.commonpath([root, real]) != str(root):   # gpugeek/ itself a link out of the folder
            raise Refused("receive_bad_name", name=RECEIVE_SUBFOLDER)
        return real

    def check(self, kind, name, size) -> tuple[Path, str]:
        """(the folder, the clean name) for a model about to arrive, or Refused: its format, name, size, the disk."""
        name = clean_name(name)
        ext = os.path.splitext(name)[1].lower()
        if ext in PICKLE_EXTS and not self.allow_pickle:
            raise Refused("receive_pickle", name=name)
        if ext not in SAFE_EXTS and ext not in PICKLE_EXTS:
            raise Refused("receive_format", name=name, formats=", ".join(SAFE_EXTS))
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise Refused("receive_bad_size", name=name)
        if size > self.max_bytes:
            raise Refused("receive_too_big", 413, name=name, size=size_words(size), limit=size_words(self.max_bytes))
        folder = self.folder(kind)
        self.target_path(folder, name)
        return folder, name

    def target_path(self, folder: Path, name: str) -> Path:
        path = (folder / name).resolve()
        if os.path.commonpath([folder, path]) != str(folder):   # a link inside gpugeek/ leading out
            raise Refused("receive_bad_name", name=name)
        return path

    def check_disk(self, folder: Path, name: str, need: int) -> None:
        free = shutil.disk_usage(folder).free
        if free - need < self.reserve:
            raise Refused("receive_disk", 413, name=name, size=size_words(need), free=size_words(free),
                          reserve=size_words(self.reserve))

    def _partial(self, folder: Path, sha: str) -> Path:
        d = folder / PARTIAL_DIR
        d.mkdir(exist_ok=True)
        return d / f"{sha}.part"

    def _forget_stale(self, folder: Path) -> None:
        """Partial uploads nobody resumed for PARTIAL_KEEP_S: deleted (they hold disk space)."""
        import time
        for old in (folder / PARTIAL_DIR).glob("*.part"):
            try:
                if time.time() - old.stat().st_mtime > PARTIAL_KEEP_S:
                    old.unlink()
            except OSError:
                pass

    # ---- the index: what was received, by content ----------------------------------------------------------
    def _index(self) -> dict:
        if self.index_path and self.index_path.exists():
            try:
                return json.loads(self.index_path.read_text("utf-8"))
            except (OSError, ValueError):
                return {}
        return {}

    def _remember(self, sha: str, kind: str, name: str) -> None:
        if not self.index_path:
            return
        with self._index_lock:
            index = self._index()
            index[sha] = {"kind": kind, "name": name}
            self.index_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.index_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(index), "utf-8")
            os.replace(tmp, self.index_path)

    def have(self, kind, name, size, sha: str) -> dict:
        """What the server holds of this content: ``{"name": <as a loader names it>}`` (received before under any
        name, or the same name in the kind's folders with this content), else ``{"offset": <bytes of a partial
        upload>}``."""
        sha = _sha(sha)
        folder, name = self.check(kind, name, size)
        held = self._held(folder, kind, name, size, sha)
        if held is not None:
            return held
        part = self._partial(folder, sha)
        have = part.stat().st_size if part.exists() else 0
        if have and have >= size:   # every byte came, the answer did not: finished now
            h = hashlib.sha256()
            _hash_into(h, part)
            return self._finish_now(part, folder, kind, name, sha, h.hexdigest())
        return {"offset": have}

    def _held(self, folder: Path, kind: str, name: str, size: int, sha: str) -> dict | None:
        """The name of a file held here with this content: received before (under any name), or this name in the
        kind's folders (put there by hand, or received before and its index lost). :meth:`_of_its_size` looks at
        the same files."""
        got = self._index().get(sha)
        if got and got.get("kind") == kind:
            path = folder / got["name"]
            if path.is_file() and os.path.getsize(path) == size:
                return {"name": f"{RECEIVE_SUBFOLDER}/{got['name']}"}
        for root in self.roots(kind):   # the same name, where the owner put it by hand
            path = Path(root) / name
            if path.is_file() and os.path.getsize(path) == size and self.hashes.get(path) == sha:
                return {"name": name}
        path = folder / name   # received before, its index lost
        if path.is_file() and os.path.getsize(path) == size and self.hashes.get(path) == sha:
            self._remember(sha, kind, name)
            return {"name": f"{RECEIVE_SUBFOLDER}/{name}"}
        return None

    def _of_its_size(self, folder: Path, kind: str, name: str, size: int, head: str | None = None,
                     ends: str | None = None) -> bool:
        """Whether :meth:`_held` could name a file of this size for some content, or a partial upload by hash could
        be this model's (its total size is not known: any not larger): only then is the model worth hashing
        before it is sent. With the client's ``file_marks`` (``head``, ``ends``), a file whose ends differ, or a
        partial whose head differs, is not this one."""
        def sized(path: Path) -> bool:
            try:
                return (path.is_file() and path.stat().st_size == size
                        and (ends is None or file_marks(path, size)["ends"] == ends))
            except OSError:
                return False

        def headed(part: Path) -> bool:
            if head is None or part.stat().st_size < min(ENDS_BYTES, size):
                return True   # too short to tell: it could be
            with open(part, "rb") as f:
                return hashlib.sha256(f.read(min(ENDS_BYTES, size))).hexdigest() == head
        for key, got in self._index().items():
            if _SHA256.match(key) and isinstance(got, dict) and got.get("kind") == kind \
                    and sized(folder / str(got.get("name"))):
                return True
        if any(sized(Path(root) / name) for root in self.roots(kind)) or sized(folder / name):
            return True
        for part in (folder / PARTIAL_DIR).glob("*.part"):
            try:
                if _SHA256.match(part.stem) and part.stat().st_size <= size and headed(part):
                    return True
            except OSError:
                pass
        return False

    def ask(self, kind, name, size, file, head=None, ends=None) -> dict:
        """A model's first ask without its hash (``file``: the client's key of its file, 64 hex digits: its path,
        size and modification time hashed): ``{"hash_first": true}`` where the server holds a file of that size or
        a partial upload by hash that could be it (the client then hashes it and asks by hash: :meth:`have`), else
        ``{"upload": <id>, "offset": <bytes of it here>}``: send it by that id (:meth:`receive`), then tell its
        hash (:meth:`finish`). The same file asked again gets the same id: a broken upload goes on, from another
        process too. ``head``/``ends``: the client's :func:`file_marks`, which rule files of its size out."""
        folder, name = self.check(kind, name, size)
        file = str(file or "").strip().lower()
        if not _SHA256.match(file):
            raise Refused("receive_bad_upload")
        upload = hashlib.sha256(f"{kind}\0{name}\0{size}\0{file}".encode()).hexdigest()[:32]
        part = self._partial(folder, "up-" + upload)
        if part.exists():
            return {"upload": upload, "offset": part.stat().st_size}
        if self._of_its_size(folder, kind, name, size, _mark(head), _mark(ends)):
            return {"hash_first": True}
        return {"upload": upload, "offset": 0}

    async def finish(self, kind, name, size, sha, upload) -> dict:
        """An upload sent by id (:meth:`ask`) told its hash: ``{"name": ...}`` where every byte is here and the
        server's own hash of them is ``sha`` (the content held already under another name: that one, the copy
        dropped), ``{"offset": n}`` where bytes are missing; Refused (receive_hash, nothing kept) where its hash is
        another."""
        sha, upload = _sha(sha), _upload_id(upload)
        folder, name = self.check(kind, name, size)
        async with self._lock("up-" + upload):
            return await asyncio.to_thread(self._finish_upload, folder, kind, name, size, sha, upload)

    def _finish_upload(self, folder: Path, kind: str, name: str, size: int, sha: str, upload: str) -> dict:
        part = self._partial(folder, "up-" + upload)
        if not part.exists():   # finished before, its answer lost; or never sent
            return self._held(folder, kind, name, size, sha) or {"offset": 0}
        st = part.stat()
        if st.st_size < size:
            return {"offset": st.st_size}
        made = self._digests.pop(upload, None)
        if made is not None and made[0] == (st.st_size, st.st_mtime_ns):
            got = made[1]
        else:   # received by a server since restarted: hashed again
            h = hashlib.sha256()
            _hash_into(h, part)
            got = h.hexdigest()
        if got != sha:
            part.unlink(missing_ok=True)
            raise Refused("receive_hash", 422, name=name)
        held = self._held(folder, kind, name, size, sha)
        if held is not None:
            part.unlink(missing_ok=True)
            return held
        return self._finish_now(part, folder, kind, name, sha, got)

    def _final_name(self, folder: Path, name: str, sha: str) -> str:
        path = self.target_path(folder, name)
        if not path.exists() or self.hashes.get(path) == sha:
            return name
        stem, ext = os.path.splitext(name)
        return f"{stem}-{sha[:12]}{ext}"

    def _lock(self, sha: str) -> asyncio.Lock:
        return self._locks.setdefault(sha, asyncio.Lock())

    async def receive(self, kind, name, size, sha: str | None, offset: int, chunks, upload: str | None = None) -> dict:
        """Bytes ``offset``.. of a model, from ``chunks`` (an async iterator of bytes). ``{"name": ...}`` once whole
        and its hash checked, ``{"offset": n}`` when the body ended early; Refused (409 with the offset) when
        ``offset`` is not where the partial file ends. Sent by ``upload`` id (:meth:`ask`: its hash not told yet),
        whole is ``{"offset": size}``, kept apart until :meth:`finish`."""
        upload = _upload_id(upload) if upload is not None else None
        key = "up-" + upload if upload is not None else _sha(sha)
        folder, name = self.check(kind, name, size)
        async with self._lock(key):
            part = self._partial(folder, key)
            if offset == 0:
                await asyncio.to_thread(self._forget_stale, folder)
            have = part.stat().st_size if part.exists() else 0
            if offset != have:
                raise Refused("receive_offset", 409, offset=have)
            self.check_disk(folder, name, size - have)
            h = hashlib.sha256()   # made as the bytes arrive (what an earlier connection left, read once first)
            if have:
                await asyncio.to_thread(_hash_into, h, part)
            f = await asyncio.to_thread(open, part, "ab")
            # written on a thread of its own and hashed on another (each lets the other run) while the next
            # pieces are read from the socket (a few pieces ahead at most: WRITE_AHEAD)
            writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpugeek-receive")
            hasher = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpugeek-hash")
            loop, pending, batch, batched = asyncio.get_running_loop(), collections.deque(), [], 0

            def both(pieces: list):
                return asyncio.gather(loop.run_in_executor(writer, _write, f, pieces),
                                      loop.run_in_executor(hasher, _hash, h, pieces))
            try:
                # the socket gives pieces of tens of KB: handed to the writer about a CHUNK at a time, as they
                # came (never copied into one buffer: a copy of every byte costs as much as writing it)
                async for piece in chunks:
                    if have + batched + len(piece) > size:
                        raise Refused("receive_bad_size", name=name)
                    batch.append(piece)
                    batched += len(piece)
                    if batched >= CHUNK:
                        pending.append(both(batch))
                        have += batched
                        batch, batched = [], 0
                        if len(pending) >= WRITE_AHEAD:
                            await pending.popleft()
                if batch:
                    pending.append(both(batch))
                    have += batched
                while pending:
                    await pending.popleft()
            except Refused:
                await asyncio.gather(*pending, return_exceptions=True)
                f.close()
                part.unlink(missing_ok=True)
                raise
            finally:
                await asyncio.gather(*pending, return_exceptions=True)   # every write ended before the file closes
                writer.shutdown(wait=False)
                hasher.shutdown(wait=False)
                if not f.closed:
                    await asyncio.to_thread(f.close)
            st = part.stat()
            if st.st_size < size:
                return {"offset": st.st_size}
            if upload is not None:   # its hash is told next (finish): the one made here kept till then
                self._digests[upload] = ((st.st_size, st.st_mtime_ns), h.hexdigest())
                return {"offset": st.st_size}
            return await self._finish(part, folder, kind, name, key, h.hexdigest())

    async def _finish(self, part: Path, folder: Path, kind: str, name: str, sha: str, got: str) -> dict:
        return await asyncio.to_thread(self._finish_now, part, folder, kind, name, sha, got)

    def _finish_now(self, part: Path, folder: Path, kind: str, name: str, sha: str, got: str) -> dict:
        """The whole file, whose hash is ``got``: kept under its name where it is what was announced."""
        if got != sha:
            part.unlink(missing_ok=True)
            raise Refused("receive_hash", 422, name=name)
        final = self._final_name(folder, name, sha)
        path = self.target_path(folder, final)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, path)
        self._remember(sha, kind, final)
        return {"name": f"{RECEIVE_SUBFOLDER}/{final}"}

    async def fetch_status(self, kind, name, url, sha: str | None, open_session) -> dict:
        """The fetch route's answer: ``{"name": ...}`` once the template's model is here, else how far its download
        is (``{"done": bytes, "total": bytes or None}``), started in the background where it was not (the client
        asks again every second or so, and shows it on the node). A failed download is answered once, then
        forgotten (the next ask starts again)."""
        key = (str(kind), str(url))
        job = self._fetches.get(key)
        if job is None:
            folder, clean = self.check(kind, name, 0)
            held = await self._fetched_before(folder, kind, clean, url, _sha(sha) if sha else None)
            if held is not None:
                return held
            check_fetch_url(url)
            job = {"done": 0, "total": None}

            job["task"] = asyncio.ensure_future(self.fetch(kind, name, url, sha, open_session, job))
            self._fetches[key] = job
            await asyncio.wait({job["task"]}, timeout=FETCH_FIRST_WAIT_S)   # a small one is answered at once
        task = job["task"]
        if task.done():
            self._fetches.pop(key, None)
            return task.result()
        return {"done": job["done"], "total": job["total"]}

    async def _fetched_before(self, folder: Path, kind: str, name: str, url, sha: str | None) -> dict | None:
        index = self._index()
        for got in (index.get(sha) if sha else None, index.get("url:" + str(url))):   # received before
            if got and got.get("kind") == kind and (folder / got["name"]).is_file():
                return {"name": f"{RECEIVE_SUBFOLDER}/{got['name']}"}
        for root in self.roots(kind):   # the template's name, where the owner put it by hand (its hash, if given)
            path = Path(root) / name
            if path.is_file() and (sha is None or await asyncio.to_thread(self.hashes.get, path) == sha):
                return {"name": name}
        return None

    async def fetch(self, kind, name, url, sha: str | None, open_session=None, job: dict | None = None) -> dict:
        """A template's model, from its address (https only, a public host; the size limit; its hash checked where
        given); ``job`` is told the bytes done and the total where the answer says it. ``open_session``: makes the
        aiohttp session (aiohttp.ClientSession unless a test counts), given the connector that connects only to the
        addresses checked (see :class:`PinnedResolver`)."""
        import aiohttp
        try:
            return await self._fetch(kind, name, url, sha, open_session or aiohttp.ClientSession, job)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise Refused("receive_fetch_failed", 424, url=str(url)[:200], status=type(e).__name__) from None

    async def _fetch(self, kind, name, url, sha: str | None, open_session, job: dict | None) -> dict:
        folder, name = self.check(kind, name, 0)
        sha = _sha(sha) if sha else None
        held = await self._fetched_before(folder, kind, name, url, sha)
        if held is not None:
            return held
        job = job if job is not None else {}
        check_fetch_url(url)
        import aiohttp
        key = sha or hashlib.sha256(url.encode()).hexdigest()
        async with self._lock(key):
            part = self._partial(folder, "fetch-" + key)
            part.unlink(missing_ok=True)
            h = hashlib.sha256()
            # every hop's address checked (https, a public host) and its host's checked addresses the only ones the
            # connector may use: a name that answers otherwise when asked again (DNS rebinding) is never asked again
            pinned = PinnedResolver()
            async with open_session(connector=aiohttp.TCPConnector(resolver=pinned, use_dns_cache=False),
                                    trust_env=False) as session:
                async with _checked_get(session, pinned, url) as r:
                    length = job["total"] = r.content_length
                    if length is not None and length > self.max_bytes:
                        raise Refused("receive_too_big", 413, name=name, size=size_words(length),
                                      limit=size_words(self.max_bytes))
                    self.check_disk(folder, name, length or 0)
                    n = 0
                    with open(part, "wb") as f:
                        async for piece in r.content.iter_chunked(CHUNK):
                            n += len(piece)
                            if n > self.max_bytes:
                                f.close()
                                part.unlink(missing_ok=True)
                                raise Refused("receive_too_big", 413, name=name, size=size_words(n),
                                              limit=size_words(self.max_bytes))
                            h.update(piece)
                            await asyncio.to_thread(f.write, piece)
                            job["done"] = n
            got = h.hexdigest()
            if sha and got != sha:
                part.unlink(missing_ok=True)
                raise Refused("receive_hash", 422, name=name)
            done = await self._finish(part, folder, kind, name, got, got)
            self._remember("url:" + str(url), kind, done["name"][len(RECEIVE_SUBFOLDER) + 1:])
            return done


class PinnedResolver:
    """The template fetch's resolver (aiohttp's AbstractResolver interface): it answers a host with the addresses
    :func:`check_fetch_host` checked for it (pinned before each hop) and nothing else, so the connection goes where
    the check looked. The URL's host name stays the TLS server name (SNI and certificate checks as usual)."""

    def __init__(self):
        self._pinned: dict = {}

    def pin(self, host: str, addresses: list) -> None:
        self._pinned[_host_key(host)] = list(addresses)

    async def resolve(self, host: str, port: int = 0, family=0) -> list:
        import socket
        got = self._pinned.get(_host_key(host))
        if not got:
            raise OSError(f"{host} was not checked")   # a bug, never a lookup of its own
        out = []
        for ip in got:
            fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
            if family in (0, socket.AF_UNSPEC, fam):
                out.append({"hostname": host, "host": ip, "port": port, "family": fam, "proto": 0,
                            "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV})
        if not out:
            raise OSError(f"{host} has no checked address of this family")
        return out

    async def close(self) -> None:
        pass


def _host_key(host) -> str:
    """A host name as the connector names it (an international name in its ASCII form), to look its pins up."""
    host = str(host or "").rstrip(".").lower()
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


class _checked_get:
    """``async with _checked_get(session, pinned, url) as r``: the answer of the template's address after at most
    MAX_FETCH_REDIRECTS redirects, each hop's address checked like the first (https, a public host whose checked
    addresses are pinned before the hop connects); a status other than 200 refused."""

    def __init__(self, session, pinned: PinnedResolver, url: str):
        self.session, self.pinned, self.url, self.r = session, pinned, url, None

    async def __aenter__(self):
        import aiohttp
        from urllib.parse import urljoin
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=FETCH_CONNECT_S, sock_read=FETCH_READ_S)
        where = self.url
        for _ in range(MAX_FETCH_REDIRECTS + 1):
            check_fetch_url(where)
            self.pinned.pin(urlsplit(where).hostname or "", await check_fetch_host(where))
            r = await self.session.get(where, allow_redirects=False, timeout=timeout)
            if r.status in (301, 302, 303, 307, 308) and r.headers.get("Location"):
                where = urljoin(where, r.headers["Location"])
                r.release()
                continue
            if r.status != 200:
                r.release()
                raise Refused("receive_fetch_failed", 424, url=self.url[:200], status=r.status)
            self.r = r
            return r
        raise Refused("receive_fetch_failed", 424, url=self.url[:200], status="redirects")

    async def __aexit__(self, *exc):
        if self.r is not None:
            self.r.release()
        return False


def _hash_into(h, path) -> None:
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(CHUNK), b""):
            h.update(piece)


def _write(f, pieces: list) -> None:
    for piece in pieces:
        f.write(piece)


def _hash(h, pieces: list) -> None:
    for piece in pieces:
        h.update(piece)


def _upload_id(value) -> str:
    v = str(value or "").strip().lower()
    if not _UPLOAD_ID.match(v):
        raise Refused("receive_bad_upload")
    return v


def _sha(value) -> str:
    v = str(value or "").strip().lower()
    if not _SHA256.match(v):
        raise Refused("receive_bad_hash")
    return v


def public_address(ip) -> bool:
    """An address on the public internet: not private, loopback, link-local, shared (100.64/10, where clouds keep
    their metadata services: Alibaba's 100.100.100.200), reserved, multicast or unspecified; an IPv4 address written
    as IPv6 (``::ffff:10.0.0.5``) judged as itself."""
    ip = ipaddress.ip_address(ip)
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_fetch_host(url) -> list:
    """A template's address must name a public host: the server is not made to fetch from its own network (loopback
    under the tests' hook only). Returns the addresses checked: the only ones the download may connect to
    (:class:`PinnedResolver`)."""
    import socket
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except OSError:
        raise Refused("receive_fetch_failed", 424, url=str(url)[:200], status="DNS") from None
    addresses = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if not (ip.is_loopback and ALLOW_HTTP_LOOPBACK_FOR_TESTS) and not public_address(ip):
            raise Refused("receive_private_host", url=str(url)[:200])
        if str(ip) not in addresses:
            addresses.append(str(ip))
    if not addresses:
        raise Refused("receive_fetch_failed", 424, url=str(url)[:200], status="DNS")
    return addresses


def check_fetch_url(url) -> None:
    """https only (plain http from a loopback host only under the tests' hook)."""
    parts = urlsplit(str(url or ""))
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and ALLOW_HTTP_LOOPBACK_FOR_TESTS and parts.hostname:
        try:
            if ipaddress.ip_address(parts.hostname).is_loopback:
                return
        except ValueError:
            if parts.hostname == "localhost":
                return
    raise Refused("receive_https_only", url=str(url)[:200])


# ---- the routes (aiohttp handlers; nodes/routes.py registers them on ComfyUI's server, tests on their fakes) ------
HAS, UPLOAD, FETCH = "/gpugeek/models/has", "/gpugeek/models/upload", "/gpugeek/models/fetch"


async def body_pieces(request):
    """An upload's body a piece at a time as the socket gave it: never joined into bigger ones (aiohttp's
    ``iter_chunked`` copies the pieces it joins; the receiver hands them to its writer as they are)."""
    async for data, _end in request.content.iter_chunks():
        if data:
            yield data


def handlers(get_receiver: Callable[[], "Receiver | None"], pieces=None) -> dict:
    """(method, path) -> handler. ``get_receiver``: the receiver, or None while receiving is off (every route then
    answers 404, as a server without it). ``pieces(request)``: an upload's body as an async iterator of bytes
    (:func:`body_pieces` unless a test's fake counts or breaks them)."""
    pieces = pieces or body_pieces
    from aiohttp import web

    def guard(fn, content_type: str):
        async def handler(request):
            # before anything else: a cross-site "simple" request (text/plain, a form, no body) acts on nothing
            said = request.headers.get("Content-Type", "").split(";")[0].strip().lower()   # none: not this type
            if said != content_type or (content_type != "application/json" and not request.body_exists):
                key = "receive_json_only" if content_type == "application/json" else "receive_bytes_only"
                return web.json_response(Refused(key, 415).answer(), status=415)
            rec = get_receiver()
            if rec is None:
                raise web.HTTPNotFound()
            if not rec.allowed(request.headers.get("Authorization")):
                return web.json_response({"error": "unauthorized"}, status=401)
            try:
                return web.json_response(await fn(rec, request))
            except Refused as e:
                return web.json_response(e.answer(), status=e.status)
        return handler

    async def body(request) -> dict:
        try:
            got = await request.json()
        except ValueError:
            got = None
        if not isinstance(got, dict):
            raise Refused("receive_json_only", 415)
        return got

    async def has(rec, request):
        b = await body(request)
        if b.get("upload") is not None:   # an upload sent by id, told its hash
            return await rec.finish(b.get("kind"), b.get("name"), b.get("size"), b.get("sha256"), b.get("upload"))
        if b.get("sha256") is None and b.get("file") is not None:   # asked before the client hashed it
            return await asyncio.to_thread(rec.ask, b.get("kind"), b.get("name"), b.get("size"), b.get("file"),
                                           b.get("head"), b.get("ends"))
        return await asyncio.to_thread(rec.have, b.get("kind"), b.get("name"), b.get("size"), b.get("sha256"))

    async def upload(rec, request):
        q = request.query
        try:
            size, offset = int(q.get("size", "")), int(q.get("offset", "0"))
        except ValueError:
            raise Refused("receive_bad_size", name=q.get("name", "")[:80]) from None
        try:
            return await rec.receive(q.get("kind"), q.get("name"), size, q.get("sha256"), offset, pieces(request),
                                     upload=q.get("upload"))
        except (ConnectionError, asyncio.IncompleteReadError) as e:   # the client is gone: nobody reads an answer
            log.info("Receiving %s broke off (%s): what arrived is kept for the client to resume",
                     str(q.get("name"))[:200], type(e).__name__)
            return {"broken": True}

    async def fetch(rec, request):
        import aiohttp
        b = await body(request)
        return await rec.fetch_status(b.get("kind"), b.get("name"), b.get("url"), b.get("sha256"),
                                      aiohttp.ClientSession)

    json_type, bytes_type = "application/json", "application/octet-stream"
    return {("POST", HAS): guard(has, json_type), ("PUT", UPLOAD): guard(upload, bytes_type),
            ("POST", FETCH): guard(fetch, json_type)}
