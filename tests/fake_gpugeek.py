"""A fake GPUGeek server, faithful to ../shared/GPUGEEK_API.md, reached through a real socket on 127.0.0.1.

It runs in its own thread and event loop, so tests (sync or async) talk to it as a client talks to the
platform. Tasks go 1 -> 2 -> 3 on a clock the test sets (queue and run seconds), or fail with ``error_msg``,
or are cancelled. Pre-signed PUT uploads are kept in memory and served back (with ``keep_upload_bytes`` off, only
their size and digest: a test that measures the client's memory); a PUT that states no length is refused (411) as
storage does; result files are served, big ones (:class:`Generated`) made as they are sent.

Variants (each side of the doc's contradictions): ``camel_upload`` (signedUrl/expiredAt), ``post_only_presign``
(the doc's sample: GET answers 405, POST reads ``fileName`` from the query string only and answers camelCase),
``expiry_z`` (ISO 8601 with ``Z``), ``expiry_offset`` (ISO with ``+08:00``), ``expiry_past`` (upload URLs that
have already expired, in the platform's zone-less clock), ``prompt_id_int`` (integer prompt ids instead of
strings), ``result_url_str`` (a string instead of a list), ``errors_as_200`` (HTTP 200 + non-zero code),
``gzip`` (every answer gzip-compressed).
Faults, queued per call name with :meth:`FakeGPUGeek.fault`: ``http500``, ``http502html``, ``http429`` (with
Retry-After), ``http401``, ``code_error``, ``reset`` (connection closed, nothing done), ``lost`` (the call is
carried out, then the connection is closed: the answer is lost), ``late:<seconds>`` (carried out, answered
that much later), ``hang`` (carried out, never answered while the test runs), ``held`` (carried out, answered
when the test calls :meth:`FakeGPUGeek.release`: what a client must not wait for), ``slow:<seconds>`` (answered
late, before anything is done), ``expired`` (403 on a signed PUT/GET), ``truncate`` (a download cut short),
``gzip_bomb`` (a small gzip body that inflates to 200 MB), ``redirect:<url>`` (302 to another address).
A network (off unless asked, so tests stay fast): ``latency_ms`` before every answer, and the storage's bytes
(result downloads, uploads) through shared links of ``down_mbit`` and ``up_mbit`` (the benches' home link:
30 ms, 100 Mbit/s down, 20 up; ``--latency-ms``/``--down-mbit``/``--up-mbit`` or GPUGEEK_FAKE_LATENCY_MS,
GPUGEEK_FAKE_DOWN_MBIT, GPUGEEK_FAKE_UP_MBIT). ``/_fake/stats`` counts the bytes moved each way.
Jitter, as on the platform, where a task's length moves from run to run (off unless asked; the benches turn it
on, ``PLATFORM_JITTER``): ``queue_jitter_s`` (the cloud picks each task up after an extra 0 to that many
seconds, queued meanwhile) and ``run_jitter`` (each run lasts its length times 1 +- up to that share), drawn
per task from a generator seeded with ``seed``; ``--queue-jitter-s``/``--run-jitter``/``--seed``, or the task
options of the same names.
"""
from __future__ import annotations

import asyncio
import datetime
import functools
import gzip
import hashlib
import io
import itertools
import json
import mimetypes
import os
import random
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field

from urllib.parse import quote, unquote

import numpy as np
from aiohttp import web
from PIL import Image

CALL_PRESIGN, CALL_COMMIT, CALL_SUBMIT, CALL_CANCEL, CALL_TASK = "presign", "commit", "submit", "cancel", "task"
CALL_PUT, CALL_FILE = "put", "file"


# What the benches give the fake (issue 33): the platform picks a task up 0.1-0.5 s after its submit and a
# run's length moves by +-10% (a 3 s graph: 2.7-3.3 s).
PLATFORM_JITTER = {"queue_s": 0.1, "queue_jitter_s": 0.4, "run_jitter": 0.10}

# Distinct generated result images per size (a task's seed picks one).
PHOTO_VARIANTS = 64
# Longest a ``held`` answer waits for release(): a client that wrongly waited for it still ends (and the test
# sees ``unreleased``), rather than hanging until pytest's timeout.
HOLD_MAX_S = 30.0


@functools.lru_cache(maxsize=256)
def _photo_once(size: int, seed: int) -> bytes:
    return photo_png(size, size, seed=seed)


# A generated clip (``clip`` task option): this many frames more than a task's batch, so that a task's seed picks
# where in the take its frames start.
CLIP_STARTS = 4


def clip_frames(w: int, h: int, count: int, seed: int = 0) -> list:
    """A take of ``count`` photo-like frames that differ as a video's do (issue 33): a textured scene (smooth
    shapes at several scales, hard edges, fine grain) that the camera pans across and whose light drifts, with the
    sensor's noise drawn anew in every frame. Each frame is a PNG as ComfyUI's SaveImage writes it (level 4)."""
    rng = np.random.default_rng(1000 + seed)
    sw, sh = w + 3 * count, h + 2 * count
    scene = np.zeros((sh, sw, 3), np.float32)
    for cells, weight in ((4, 0.45), (16, 0.25), (64, 0.15), (256, 0.08)):   # value noise, coarse to fine
        small = rng.random((max(2, sh * cells // sw), cells, 3)).astype(np.float32)
        layer = np.stack([np.asarray(Image.fromarray(small[..., c]).resize((sw, sh), Image.BICUBIC))
                          for c in range(3)], -1)
        scene += (layer - 0.5) * weight
    y, x = np.mgrid[0:sh, 0:sw]
    for _ in range(12):   # objects with hard edges
        cx, cy, r = rng.integers(0, sw), rng.integers(0, sh), rng.integers(12, max(13, h // 4))
        scene[(x - cx) ** 2 + (y - cy) ** 2 < r * r] += (rng.random(3).astype(np.float32) - 0.5) * 0.5
    scene = scene + 0.5
    out = []
    for i in range(count):
        frame = scene[2 * i:2 * i + h, 3 * i:3 * i + w] * (1.0 + 0.1 * np.sin(i / 9.0))
        frame = frame + rng.normal(0, 0.012, frame.shape).astype(np.float32)
        buf = io.BytesIO()
        Image.fromarray((np.clip(frame, 0, 1) * 255).astype(np.uint8), "RGB").save(buf, "PNG", compress_level=4)
        out.append(buf.getvalue())
    return out


@functools.lru_cache(maxsize=8)
def _clip_once(size: int, count: int) -> tuple:
    return tuple(clip_frames(size, size, count + CLIP_STARTS))


# The settings the pack's compact transfer gives SaveAnimatedWEBP (offload/plan/cloud_prompt.py compact_saves), as
# the fake's runner keys them: the frames are encoded before serving with them. Other settings are encoded at run.
COMPACT_SETTINGS = (("fps", 6.0), ("lossless", False), ("method", "default"),
                    ("quality", 90))


@functools.lru_cache(maxsize=1024)
def _webp_once(frame: bytes, settings: tuple) -> bytes:
    return animated_webp([frame], dict(settings))


def animated_webp(frames: list, inputs: dict) -> bytes:
    """What ComfyUI's SaveAnimatedWEBP writes for a batch: one WebP of every frame, with its settings
    (image files in, as the cloud's savers read their tensors)."""
    ims = [Image.open(io.BytesIO(f)).convert("RGB") for f in frames]
    buf = io.BytesIO()
    ims[0].save(buf, "WEBP", save_all=True, append_images=ims[1:], duration=int(1000 / float(inputs.get("fps", 6))),
                lossless=bool(inputs.get("lossless", True)), quality=int(inputs.get("quality", 80)),
                method={"default": 4, "fastest": 0, "slowest": 6}[inputs.get("method", "default")])
    return buf.getvalue()


def photo_png(w=64, h=64, seed=0, mode="RGB", bits=8) -> bytes:
    """A deterministic, photo-like image (smooth gradients plus noise), encoded as PNG."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin(x / (7 + seed % 5)) , np.cos(y / 11.0), np.sin((x + y) / 17.0)], -1) * 0.35 + 0.5
    img = np.clip(base + rng.normal(0, 0.012, base.shape), 0, 1)
    if bits == 16:
        arr = (img[..., 0] * 65535).astype(np.uint16)
        im = Image.fromarray(arr)
    else:
        arr = (img * 255).astype(np.uint8)
        im = Image.fromarray(arr, "RGB")
        if mode == "RGBA":
            a = (np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)).astype(np.uint8)
            im = Image.fromarray(np.dstack([arr, a]), "RGBA")
        elif mode != "RGB":
            im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\0" if len(body) & 1 else b"")


def webp_bomb(w: int, h: int, frames: int) -> bytes:
    """An animated WebP of ``frames`` frames on a w x h canvas, each frame one pixel (under 100 bytes): a few
    hundred bytes that decode, frame by frame, to the whole canvas (libwebp composes every frame on it)."""
    one = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(one, "WEBP", lossless=True)
    pixel = one.getvalue()[12:]   # its VP8L chunk

    def u24(v):
        return v.to_bytes(3, "little")
    frame = _riff_chunk(b"ANMF", u24(0) * 4 + u24(100) + b"\0" + pixel)   # at 0,0, 1x1 (minus one), 100 ms
    body = (_riff_chunk(b"VP8X", b"\x02\0\0\0" + u24(w - 1) + u24(h - 1)) + _riff_chunk(b"ANIM", bytes(6))
            + frame * frames)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def gif_bomb(screen: tuple, corners: list) -> bytes:
    """A GIF with a logical screen of ``screen`` (w, h) and one frame of 1x1 pixel at each (x, y) of
    ``corners``: Pillow shows every frame at the screen's size, grown to the farthest frame."""
    pixel = bytes([2, 2]) + (4 | 0 << 3 | 5 << 6).to_bytes(2, "little") + b"\0"   # LZW: clear, colour 0, end
    out = [b"GIF89a", struct.pack("<HHBBB", *screen, 0x80, 0, 0), b"\0\0\0\xff\xff\xff"]   # 2 colours
    for x, y in corners:
        out.append(b"!\xf9\x04\x00\x0a\x00\x00\x00" + b"," + struct.pack("<HHHHB", x, y, 1, 1, 0) + pixel)
    return b"".join(out) + b";"


@functools.lru_cache(maxsize=1)
def gzip_bomb(inflated: int = 200 * 1024 * 1024) -> bytes:
    """A gzip body of about 200 KB that inflates to ``inflated`` bytes of zeros."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as f:
        block = bytes(1 << 20)
        for _ in range(inflated >> 20):
            f.write(block)
    return out.getvalue()


class Link:
    """One direction of a network link shared by every transfer: bytes pass at ``mbit`` megabits a second in
    all (concurrent transfers share it, chunk by chunk, in the order they asked)."""
    CHUNK = 64 * 1024

    def __init__(self, mbit: float):
        self.rate = mbit * 1e6 / 8
        self.free_at = 0.0
        self.bytes = 0

    async def take(self, n: int) -> None:
        now = time.monotonic()
        start = max(now, self.free_at)
        self.free_at = start + n / self.rate
        self.bytes += n
        await asyncio.sleep(self.free_at - now)


class Generated:
    """A big result file made as it is sent, never held whole (by the fake or by the test): ``size`` bytes of one
    block of 64 KiB drawn from ``seed``, repeated; ``chunked``: sent without a Content-Length, as a server that
    streams what it makes. Put it where a task's files hold bytes."""
    CHUNK = 64 * 1024

    def __init__(self, size: int, seed: int = 0, chunked: bool = False):
        self.size, self.chunked = size, chunked
        self.block = random.Random(seed).randbytes(self.CHUNK)

    def __len__(self) -> int:
        return self.size

    def chunks(self):
        for start in range(0, self.size, self.CHUNK):
            yield self.block[: min(self.CHUNK, self.size - start)]


def close_server_loop(loop: asyncio.AbstractEventLoop, runner: web.AppRunner) -> None:
    """A stand-in server's end, once its loop stopped: the server, then every task still there (a hanging answer,
    an open websocket) ended on the open loop, then the loop closed. Left to the garbage collector, each closed
    itself later on a closed loop: an error whose traceback was formatted during some later collection, in
    whatever test ran then (on Python 3.11.7 that can break a parse going on at that moment)."""
    async def end_all():
        await runner.cleanup()
        left = asyncio.all_tasks() - {asyncio.current_task()}
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
    loop.run_until_complete(end_all())
    loop.close()


def network_from_env() -> dict:
    """The link the benches put the fake behind: GPUGEEK_FAKE_LATENCY_MS (every request), GPUGEEK_FAKE_DOWN_MBIT
    and GPUGEEK_FAKE_UP_MBIT (storage bytes, shared); unset: loopback as it is (the tests stay fast)."""
    import os
    out = {}
    for key, env in (("latency_ms", "GPUGEEK_FAKE_LATENCY_MS"), ("down_mbit", "GPUGEEK_FAKE_DOWN_MBIT"),
                     ("up_mbit", "GPUGEEK_FAKE_UP_MBIT")):
        if os.environ.get(env):
            out[key] = float(os.environ[env])
    return out


@dataclass
class Task:
    prompt_id: str
    workflow_id: int
    prompt: dict
    created: float
    queue_s: float
    run_s: float
    fail: str | None = None
    cancelled_at: float | None = None
    files: dict = field(default_factory=dict)      # node id -> [(name, bytes)]
    result_override: object = None
    price: float = 0.25
    polls: int = 0
    finished_at: float | None = None
    backend_done: bool | None = None   # None: the clock decides; False/True: a real backend runs it
    backend_started: float | None = None
    noticed_at: float | None = None    # when a status call first answered that the task had ended


class FakeGPUGeek:
    def __init__(self, api_key="sk-test-0123456789abcdef", *, queue_s=0.0, run_s=0.05, latency_ms: float = 0.0,
                 down_mbit: float | None = None, up_mbit: float | None = None, queue_jitter_s: float = 0.0,
                 run_jitter: float = 0.0, seed: int = 0):
        self.api_key = api_key
        # a network between the client and the platform (off by default): each request answered this much
        # later, the storage's bytes through shared links (results down, uploads up)
        self.latency_s = latency_ms / 1000.0
        self.down = Link(down_mbit) if down_mbit else None
        self.up = Link(up_mbit) if up_mbit else None
        self.bytes_down = 0
        self.queue_s, self.run_s = queue_s, run_s
        # each task's pickup and length drawn from one seeded generator (the same tasks every run of a bench)
        self.queue_jitter_s, self.run_jitter = queue_jitter_s, run_jitter
        self.rng = random.Random(seed)
        self.variants: set[str] = set()
        self.faults: dict[str, list[str]] = {}
        self.tasks: dict[str, Task] = {}
        self.uploads: dict[str, bytes] = {}
        # every upload's (size, sha256), whatever its size; its bytes kept in ``uploads`` unless this is False (a
        # test that measures the client's memory in this process: the fake then holds no upload whole)
        self.upload_digests: dict[str, tuple] = {}
        self.keep_upload_bytes = True
        self.calls: list[tuple[str, str]] = []   # (call, path)
        self.call_at: list[float] = []            # when each of them came (monotonic clock)
        self.bodies: list[tuple[str, object]] = []
        self.bytes_uploaded = 0
        self.storage_auth: list = []   # Authorization headers seen on storage requests (must be None)
        self.runner = self.default_runner
        self.backend = None   # an object with run(prompt, fake) -> files, run in a thread (a real ComfyUI)
        self.task_opts: dict = {}
        self._ids = itertools.count(int(time.time()) * 1000 % 10**12 + 10**14)
        self._lock = threading.Lock()
        self.released = threading.Event()   # set by release(): the answers ``held`` faults keep are sent
        self.unreleased = 0   # held answers sent without release(), after HOLD_MAX_S: somebody waited for them
        self.loop: asyncio.AbstractEventLoop | None = None
        self.base_url = ""

    # ---- control -------------------------------------------------------------------------------------
    def fault(self, call: str, *kinds: str) -> None:
        with self._lock:
            self.faults.setdefault(call, []).extend(kinds)

    def release(self) -> None:
        """Send the answers ``held`` faults keep, and any later one at once."""
        self.released.set()

    async def hold(self) -> None:
        """Wait, on any event loop, until :meth:`release` (at most HOLD_MAX_S, counted in ``unreleased``)."""
        end = time.monotonic() + HOLD_MAX_S
        while not self.released.is_set():
            if time.monotonic() >= end:
                self.unreleased += 1
                return
            await asyncio.sleep(0.01)

    def finish(self, t: "Task") -> None:
        """End a task now, as if it had queued and run until this moment (a test's cue, instead of a clock
        race: a task that must outlast something runs until the test sees that something happen)."""
        now = time.monotonic()
        t.queue_s = min(t.queue_s, now - t.created)
        t.run_s = now - t.created - t.queue_s

    def file_fetched_at(self, prompt_id: str) -> list:
        """When each result file of a task was asked for (monotonic clock)."""
        return [at for (call, path), at in zip(self.calls, self.call_at) if call == CALL_FILE
                and path.startswith(f"/files/{prompt_id}/")]

    def _take_fault(self, call: str):
        with self._lock:
            q = self.faults.get(call)
            return q.pop(0) if q else None

    def count(self, call: str) -> int:
        return sum(1 for c, _ in self.calls if c == call)

    def running_tasks(self) -> list[Task]:
        return [t for t in self.tasks.values() if self.status_of(t)[0] in (1, 2)]

    # ---- the task clock ------------------------------------------------------------------------------
    def status_of(self, t: Task):
        now = time.monotonic()
        if t.cancelled_at is not None:
            return 5, now
        if t.backend_done is not None:
            if not t.backend_done:
                return (2 if t.backend_started else 1), now
            if t.finished_at is None:
                t.finished_at = now
            return (4 if t.fail else 3), now
        start_run = t.created + t.queue_s
        end = start_run + t.run_s
        if now < start_run:
            return 1, now
        if now < end:
            return 2, now
        if t.finished_at is None:
            t.finished_at = end
        return (4 if t.fail else 3), now

    def detail(self, t: Task) -> dict:
        st, now = self.status_of(t)
        ahead = [o for o in self.tasks.values() if self.status_of(o)[0] == 1 and o.created < t.created]
        queued = [o for o in self.tasks.values() if self.status_of(o)[0] == 1]
        pid = int(t.prompt_id) if "prompt_id_int" in self.variants else t.prompt_id
        if t.backend_done is not None:   # a real backend: its run is from its start to its end
            started = t.backend_started or now
            qd = int(1000 * max(0.0, started - t.created))
            rd = int(1000 * max(0.0, (t.finished_at or now) - started)) if st != 1 else 0
        else:
            qd = int(1000 * min(max(now - t.created, 0), t.queue_s))
            rd = int(1000 * max(0.0, min(now - t.created - t.queue_s, t.run_s))) if st != 1 else 0
        d = {"prompt_id": pid, "workflow_id": t.workflow_id, "env_id": "env-1", "status": st,
             "queue_duration": qd, "run_duration": rd, "result_url": {}, "error_msg": "",
             "queue_size": len(queued), "current_position": (len(ahead) + 1) if st == 1 else 0,
             "origin_price": t.price if st in (3, 4) else 0,
             "created_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        if st == 4:
            d["error_msg"] = t.fail
        if st == 3:
            if t.result_override is not None:
                d["result_url"] = t.result_override
            else:
                res = {}
                for node, files in t.files.items():
                    urls = [f"{self.base_url}/files/{t.prompt_id}/{quote(name, safe='')}" for name, _ in files]
                    res[node] = urls[0] if ("result_url_str" in self.variants and len(urls) == 1) else urls
                d["result_url"] = res
        return d

    def hostile(self, t: Task, d: dict) -> dict:
        """A detail as a careless platform answers it, where the task options ask: ``status_script``, statuses it
        says first whatever the clock (queued after running, codes it does not document; never an end the task did
        not reach); ``drop_fields``, fields left out; ``extra_fields``, fields the doc does not name."""
        script = self.task_opts.get("status_script") or []
        if t.polls <= len(script) and d["status"] not in (3, 4, 5):
            d = {**d, "status": script[t.polls - 1]}
        for name in self.task_opts.get("drop_fields") or ():
            d.pop(name, None)
        return {**d, **(self.task_opts.get("extra_fields") or {})}

    def jittered(self, queue_s: float, run_s: float) -> tuple[float, float]:
        """A task's queue and run seconds, moved by the jitter asked for (the task options win)."""
        qj = float(self.task_opts.get("queue_jitter_s", self.queue_jitter_s))
        rj = float(self.task_opts.get("run_jitter", self.run_jitter))
        with self._lock:
            extra = self.rng.uniform(0.0, qj) if qj > 0 else 0.0
            share = self.rng.uniform(-rj, rj) if rj > 0 else 0.0
        return queue_s + extra, run_s * (1.0 + share)

    def _run_backend(self, t: Task) -> None:
        # queued until the cloud picks it up (its own queue time), then a stand-in for a long cloud run
        hold = t.queue_s + float(self.task_opts.get("hold_s", 0))
        end = time.monotonic() + hold
        while time.monotonic() < end and t.cancelled_at is None:
            time.sleep(0.02)
        if t.cancelled_at is not None:
            t.backend_done = True
            return
        try:
            t.backend_started = time.monotonic()
            t.files = self.backend.run(t.prompt, self) or {}
        except Exception as e:
            t.fail = f"{type(e).__name__}: {e}"
        t.finished_at = time.monotonic()   # when it ended, not when a status call first saw it
        t.backend_done = True

    def default_runner(self, prompt: dict, task: Task) -> dict:
        """Produce files for every SaveImage/PreviewImage: the uploaded image it reads by URL (through a
        LoadImage chain), or a generated photo-like image (with the ``clip`` option and a batch, a take of frames
        that differ). A SaveVideo/SaveAudio that reads a LoadVideo/LoadAudio gives the uploaded file back, as
        the cloud saves what it read."""
        files = {}
        size, count = int(self.task_opts.get("size", 64)), int(self.task_opts.get("batch", 1))
        for nid, node in prompt.items():
            kind = node.get("class_type")
            if kind in self.ECHOES:
                link, named_in = self.ECHOES[kind]
                url = prompt.get(str((node["inputs"].get(link) or [""])[0]), {}).get("inputs", {}).get(named_in)
                data = self.uploaded(url)
                if data is not None:
                    ext = os.path.splitext(url.split("?")[0])[1] or ".bin"
                    files[nid] = [(f"ComfyUI_{nid.replace(':', '_')}_00001_{ext}", data)]
                continue
            if kind not in ("SaveImage", "PreviewImage", "SaveAnimatedWEBP"):
                continue
            src = node["inputs"].get("images")
            data = None
            if isinstance(src, list):
                up = prompt.get(str(src[0]), {})
                if up.get("class_type") == "RebatchImages":   # a list of single images: a saver call each
                    up = prompt.get(str(up["inputs"]["images"][0]), {})
                if up.get("class_type") == "MaskToImage":
                    up = prompt.get(str(up["inputs"]["mask"][0]), {})
                if up.get("class_type") in ("LoadImage", "LoadImageMask"):
                    data = self.uploaded(up["inputs"].get("image", ""))
            frames = [data] * count
            if data is None:
                # the cloud's work decides the image, not how it is saved (lossless or compact)
                work = {n: v for n, v in prompt.items() if not n.startswith(("gpugeek_out_", "gpugeek_split_"))}
                seed = int(hashlib.sha256(json.dumps(work, sort_keys=True).encode()).hexdigest()[:6], 16)
                seed += int(hashlib.md5(nid.encode()).hexdigest()[:4], 16)
                if self.task_opts.get("clip") and count > 1:   # a take: where it starts is the seed's
                    start = seed % (CLIP_STARTS + 1)
                    frames = list(_clip_once(size, count)[start:start + count])
                else:   # one of the images made once: the stand-in's own CPU stays out of what is measured
                    frames = [_photo_once(size, seed % PHOTO_VARIANTS)] * count
            if kind == "SaveAnimatedWEBP":   # one file per call: per image after a RebatchImages
                split = prompt.get(str(src[0]), {}).get("class_type") == "RebatchImages"
                settings = tuple(sorted((k, v) for k, v in node["inputs"].items() if k not in ("images", "filename_prefix")))
                webps = [_webp_once(f, settings) for f in frames] if split else [animated_webp(frames, node["inputs"])]
                files[nid] = [(f"ComfyUI_{nid.replace(':', '_')}_{i:05d}_.webp", w) for i, w in enumerate(webps)]
                continue
            name = self.task_opts.get("name") or "ComfyUI_{node}_{i:05d}_.png"   # a test's odd names
            files[nid] = [(name.format(node=nid.replace(':', '_'), i=i), f) for i, f in enumerate(frames)]
        return files

    # saver -> (its input, the loader's input that names the file): the cloud gives back what it was given
    ECHOES = {"SaveVideo": ("video", "file"), "SaveAudio": ("audio", "audio"), "SaveAudioMP3": ("audio", "audio")}

    def uploaded(self, url) -> bytes | None:
        """The bytes of a file uploaded here that ``url`` names (a cloud loader reads it by URL)."""
        if not isinstance(url, str):
            return None
        return self.uploads.get(url.split("/oss/", 1)[-1].split("?")[0])

    # ---- HTTP ----------------------------------------------------------------------------------------
    def _env(self, data=None, code=0, message="success", status=200):
        body = {"code": code, "message": message, "traceid": uuid.uuid4().hex[:16], "data": data}
        return web.json_response(body, status=status)

    def _error(self, status, code, message):
        if "errors_as_200" in self.variants:
            status = 200
        return self._env(None, code=code, message=message, status=status)

    async def _apply_fault(self, request, call, kind):
        """Return a response for a fault, or None to carry on (``lost`` is handled by the caller)."""
        if kind.startswith("slow:"):
            await asyncio.sleep(float(kind.split(":", 1)[1]))
            return None
        if kind == "http500":
            return self._env(None, code=50000, message="internal error", status=500)
        if kind == "http502html":
            return web.Response(status=502, text="<html><body><h1>502 Bad Gateway</h1>nginx</body></html>",
                                content_type="text/html")
        if kind.startswith("http429"):  # http429 or http429:<seconds to wait>
            wait = kind.split(":", 1)[1] if ":" in kind else "0"
            return web.json_response({"code": 42900, "message": "too many requests", "traceid": "t429",
                                      "data": None}, status=429, headers={"Retry-After": wait})
        if kind == "http401":
            return self._error(401, 40100, "token invalid")
        if kind == "code_error":
            return self._env(None, code=10086, message="workflow not belong to user", status=200)
        if kind == "reset":
            request.transport.close()
            raise ConnectionResetError("fault: reset")
        if kind.startswith("redirect:"):
            return web.Response(status=302, headers={"Location": kind.split(":", 1)[1]})
        if kind == "gzip_bomb":
            return web.Response(body=gzip_bomb(), headers={"Content-Encoding": "gzip",
                                                           "Content-Type": "image/png"})
        if kind == "expired":
            return web.Response(status=403, text="<Error><Code>AccessDenied</Code><Message>Request has expired"
                                                 "</Message></Error>", content_type="application/xml")
        return None

    async def _guard(self, request, call):
        self.calls.append((call, request.path))
        self.call_at.append(time.monotonic())
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        kind = self._take_fault(call)
        if kind and kind not in ("lost", "truncate", "hang", "held") and not kind.startswith("late:"):
            resp = await self._apply_fault(request, call, kind)
            if resp is not None:
                return resp, kind
        if call in (CALL_PUT, CALL_FILE):
            self.storage_auth.append(request.headers.get("Authorization"))
            return None, kind
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {self.api_key}":
            return self._error(401, 40100, "Unauthorized: invalid token"), kind
        return None, kind

    def _lose(self, request):
        request.transport.close()
        raise ConnectionResetError("fault: answer lost")

    async def _after(self, request, kind, resp):
        """The call was carried out: its answer is lost, late, never sent, or sent (gzip-compressed where the
        ``gzip`` variant says)."""
        if kind == "lost":
            self._lose(request)
        if kind == "hang":
            await asyncio.sleep(3600)
        if kind == "held":
            await self.hold()
        if kind and kind.startswith("late:"):
            await asyncio.sleep(float(kind.split(":", 1)[1]))
        if "gzip" in self.variants and isinstance(resp, web.Response) and resp.body:
            resp.enable_compression(web.ContentCoding.gzip)
        return resp

    async def h_presign(self, request):
        call = CALL_PRESIGN
        resp, kind = await self._guard(request, call)
        if resp is not None:
            return resp
        sample = "post_only_presign" in self.variants
        if request.method == "GET":
            if sample:
                return web.json_response({"code": 405, "message": "method not allowed", "data": None}, status=405)
            name = request.query.get("file_name")
        else:  # the doc's sample: fileName in the query string, the body is not read
            name = request.query.get("fileName")
            if not name:
                return self._error(400, 40000, "fileName is required")
        if not name:
            return self._error(400, 40000, "file_name is required")
        key = f"comfy/input/{uuid.uuid4().hex[:12]}_{name}"
        signed = f"{self.base_url}/oss/{key}?Expires=9999999999&Signature=abc"
        expires = self.expiry_text()
        data = ({"signedUrl": signed, "expiredAt": expires} if ("camel_upload" in self.variants or sample)
                else {"signed_url": signed, "expired_at": expires})
        return await self._after(request, kind, self._env(data))

    def expiry_text(self) -> str:
        """When an upload URL expires, in the form the variant says (the platform's clock is UTC+8)."""
        cst = datetime.timezone(datetime.timedelta(hours=8))
        if "expiry_past" in self.variants:  # one hour ago, zone-less, in the platform's clock
            return (datetime.datetime.now(cst) - datetime.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2)
        if "expiry_z" in self.variants:
            return later.strftime("%Y-%m-%dT%H:%M:%SZ")
        if "expiry_offset" in self.variants:
            return later.astimezone(cst).isoformat(timespec="seconds")
        return later.astimezone(cst).strftime("%Y-%m-%d %H:%M:%S")

    async def h_put(self, request):
        resp, kind = await self._guard(request, CALL_PUT)
        if resp is not None:
            return resp
        if "Signature" not in request.query:
            return web.Response(status=403, text="missing signature")
        if request.content_length is None:   # as OSS and S3: a signed PUT states its length (no chunked body)
            return web.Response(status=411, text="MissingContentLength")
        parts, digest, size = [], hashlib.sha256(), 0
        async for chunk in request.content.iter_chunked(Link.CHUNK):
            if self.up is not None:
                await self.up.take(len(chunk))
            digest.update(chunk)
            size += len(chunk)
            if self.keep_upload_bytes:
                parts.append(chunk)
        key = request.match_info["key"]
        self.upload_digests[key] = (size, digest.hexdigest())
        if self.keep_upload_bytes:
            self.uploads[key] = b"".join(parts)
        self.bytes_uploaded += size
        return await self._after(request, kind, web.Response(status=200))

    async def h_get_object(self, request):
        resp, kind = await self._guard(request, CALL_FILE)
        if resp is not None:
            return resp
        data = self.uploads.get(request.match_info["key"])
        if data is None:
            return web.Response(status=404)
        return await self.send_bytes(request, data, "application/octet-stream")

    async def send_bytes(self, request, data: bytes, content_type: str):
        """A storage download, through the down link where there is one."""
        self.bytes_down += len(data)
        if self.down is None:
            return web.Response(body=data, content_type=content_type)
        resp = web.StreamResponse(headers={"Content-Length": str(len(data)), "Content-Type": content_type})
        await resp.prepare(request)
        for i in range(0, len(data), Link.CHUNK):
            chunk = data[i:i + Link.CHUNK]
            await self.down.take(len(chunk))
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def send_generated(self, request, data: Generated):
        """A big result file, made chunk by chunk as it is sent (the socket's pace: nothing is held)."""
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if data.chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = data.size
        await resp.prepare(request)
        for chunk in data.chunks():
            if self.down is not None:
                await self.down.take(len(chunk))
            await resp.write(chunk)
            self.bytes_down += len(chunk)
        await resp.write_eof()
        return resp

    async def h_commit(self, request):
        resp, kind = await self._guard(request, CALL_COMMIT)
        if resp is not None:
            return resp
        body = await request.json()
        url = body.get("oss_url")
        if not isinstance(url, str) or not url.startswith("http"):
            return self._error(400, 40001, "oss_url invalid")
        return await self._after(request, kind, self._env({"oss_url": url}))

    async def h_submit(self, request):
        resp, kind = await self._guard(request, CALL_SUBMIT)
        if resp is not None:
            return resp
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, 40000, "invalid json")
        self.bodies.append((CALL_SUBMIT, body))
        wf = body.get("workflow_id")
        if not isinstance(wf, int) or isinstance(wf, bool):
            return self._error(400, 40002, "workflow_id must be an integer")
        if body.get("task_type") != 1:
            return self._error(400, 40003, "task_type invalid")
        prompt = body.get("prompt")
        if not isinstance(prompt, dict) or not prompt:
            return self._error(400, 40004, "prompt is empty")
        if wf == 404:
            return self._error(200, 10004, "workflow not exist")
        with self._lock:
            pid = str(next(self._ids))
        opts = self.task_opts
        seeds = [n.get("inputs", {}).get(k) for n in prompt.values() if isinstance(n, dict) for k in ("seed", "noise_seed")]
        fail, run_s = opts.get("fail"), float(opts.get("run_s", self.run_s))
        if "fail_seed" in opts and opts["fail_seed"] in seeds:   # one task of several fails (a bad seed), after
            fail = f"CUDA error with seed {opts['fail_seed']}"    # fail_seed_s of running
            run_s = float(opts.get("fail_seed_s", 0.1))
        for seed, secs in (opts.get("run_s_by_seed") or {}).items():   # tasks of a fan-out that run longer
            if int(seed) in seeds:
                run_s = float(secs)
        queue_s, run_s = self.jittered(float(opts.get("queue_s", self.queue_s)), run_s)
        t = Task(pid, wf, prompt, time.monotonic(), queue_s, run_s, fail=fail, price=float(opts.get("price", 0.25)))
        if self.backend is not None:
            t.backend_done = False
            threading.Thread(target=self._run_backend, args=(t,), daemon=True).start()
        else:
            try:
                t.files = self.runner(prompt, t) or {}
            except Exception as e:  # the cloud's own failure text
                t.fail = f"{type(e).__name__}: {e}"
        if "result_override" in opts:
            t.result_override = opts["result_override"]
        self.tasks[pid] = t
        return await self._after(request, kind, self._env({"prompt_id": int(pid) if "prompt_id_int" in self.variants
                                                            else pid}))

    async def h_cancel(self, request):
        resp, kind = await self._guard(request, CALL_CANCEL)
        if resp is not None:
            return resp
        body = await request.json()
        self.bodies.append((CALL_CANCEL, body))
        tid = body.get("task_id")
        if not isinstance(tid, int):
            return self._error(400, 40005, "task_id must be an integer")
        t = self.tasks.get(str(tid))
        if t is None:
            return self._error(404, 40400, "task not exist")
        if self.status_of(t)[0] in (1, 2):
            t.cancelled_at = time.monotonic()
            if self.backend is not None:
                self.backend.cancel(t)
        return await self._after(request, kind, self._env(None))

    async def h_task(self, request):
        resp, kind = await self._guard(request, CALL_TASK)
        if resp is not None:
            return resp
        t = self.tasks.get(request.match_info["pid"])
        if t is None:
            return self._error(404, 40400, "task not exist")
        t.polls += 1
        d = self.detail(t)
        d = self.hostile(t, d)
        if d["status"] in (3, 4, 5) and t.noticed_at is None:
            t.noticed_at = time.monotonic()
        return await self._after(request, kind, self._env(d))

    async def h_file(self, request):
        resp, kind = await self._guard(request, CALL_FILE)
        if resp is not None:
            return resp
        t = self.tasks.get(request.match_info["pid"])
        name = unquote(request.raw_path.split("?")[0].rsplit("/", 1)[-1])
        for files in (t.files.values() if t else []):
            for n, data in files:
                if n == name and isinstance(data, Generated):
                    return await self.send_generated(request, data)
                if n == name:
                    if kind == "truncate":
                        resp = web.StreamResponse(headers={"Content-Length": str(len(data))})
                        await resp.prepare(request)
                        await resp.write(data[: len(data) // 2])
                        request.transport.close()
                        return resp
                    ctype = mimetypes.guess_type(n)[0] or "application/octet-stream"
                    if self.down is not None and not kind:
                        return await self.send_bytes(request, data, ctype)
                    self.bytes_down += len(data)
                    return await self._after(request, kind, web.Response(body=data, content_type=ctype))
        return web.Response(status=404, text="no such file")

    async def h_opts(self, request):
        """Test control (not part of GPUGeek's API): set task options such as hold_s."""
        self.task_opts.update(await request.json())
        return web.json_response(self.task_opts)

    async def h_fault(self, request):
        """Test control (not part of GPUGeek's API): queue faults for a call, e.g. {"call": "cancel",
        "kinds": ["http500"]}."""
        body = await request.json()
        self.fault(body["call"], *body.get("kinds", []))
        return web.json_response({k: list(v) for k, v in self.faults.items()})

    async def h_stats(self, request):
        """For end-to-end tests that run the fake as a separate process (not part of GPUGeek's API)."""
        now = time.monotonic()
        tasks = [{"prompt_id": t.prompt_id, "status": self.status_of(t)[0], "created_ago": now - t.created,
                  "lifetime": ((t.finished_at - t.created) if t.finished_at else None),
                  "finished_ago": (now - t.finished_at) if t.finished_at else None,
                  "cancelled": t.cancelled_at is not None, "polls": t.polls, "prompt": t.prompt,
                  "error_msg": t.fail or "",
                  # what the platform charged and the addresses it gave (tests/invariants.py)
                  "price": self.detail(t).get("origin_price") if self.status_of(t)[0] in (3, 4) else 0,
                  "result_url": self.detail(t).get("result_url"),
                  # how long after its end the client's status call saw the task ended (the poll's lag)
                  "noticed_lag": (t.noticed_at - t.finished_at) if t.noticed_at and t.finished_at else None}
                 for t in self.tasks.values()]
        return web.json_response({"calls": {c: self.count(c) for c in (CALL_PRESIGN, CALL_PUT, CALL_SUBMIT,
                                                                         CALL_CANCEL, CALL_TASK, CALL_FILE)},
                                  "tasks": tasks, "bytes_up": self.bytes_uploaded, "bytes_down": self.bytes_down})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        p = "/api/v1"
        app.router.add_get(p + "/file/upload/pre-signed-url", self.h_presign)
        app.router.add_post(p + "/file/upload/pre-signed-url", self.h_presign)
        app.router.add_post(p + "/file/upload/commit", self.h_commit)
        app.router.add_post(p + "/prompt", self.h_submit)
        app.router.add_post(p + "/task/cancel", self.h_cancel)
        app.router.add_get(p + "/task/{pid}", self.h_task)
        app.router.add_put("/oss/{key:.+}", self.h_put)
        app.router.add_get("/oss/{key:.+}", self.h_get_object)
        app.router.add_get("/files/{pid}/{name:.+}", self.h_file)
        app.router.add_get("/_fake/stats", self.h_stats)
        app.router.add_post("/_fake/opts", self.h_opts)
        app.router.add_post("/_fake/fault", self.h_fault)
        return app

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> "FakeGPUGeek":
        ready = threading.Event()

        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            # answers held by hang/slow faults are dropped at once when the fake stops
            runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.1)
            self.loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            port = site._server.sockets[0].getsockname()[1]
            self.base_url = f"http://127.0.0.1:{port}"
            self._runner = runner
            ready.set()
            self.loop.run_forever()
            close_server_loop(self.loop, runner)

        self._thread = threading.Thread(target=run, daemon=True, name="fake-gpugeek")
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self.loop and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


def main(argv=None):
    """Run the fake as a server: ``python tests/fake_gpugeek.py --port 8190 [--comfy URL]``.

    With ``--comfy`` every task runs on that (real) ComfyUI server, so a real ComfyUI can offload to a
    GPUGeek-compatible endpoint whose tasks really run (tests/comfy_backend.py)."""
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8190)
    ap.add_argument("--key", default="sk-local-test-key")
    ap.add_argument("--comfy", default="")
    ap.add_argument("--queue-s", type=float, default=0.0)
    ap.add_argument("--run-s", type=float, default=1.0)
    ap.add_argument("--size", type=int, default=64, help="side of the generated result images")
    ap.add_argument("--batch", type=int, default=1, help="files per save node")
    ap.add_argument("--variants", type=int, default=8, help="distinct generated images, made before serving")
    ap.add_argument("--clip", action="store_true", help="a batch is a take of frames that differ (made before serving)")
    ap.add_argument("--queue-jitter-s", type=float, default=0.0, help="each task picked up 0 to this much later")
    ap.add_argument("--run-jitter", type=float, default=0.0, help="each run's length times 1 +- up to this share")
    ap.add_argument("--seed", type=int, default=0, help="of the jitter's generator")
    net = network_from_env()
    ap.add_argument("--latency-ms", type=float, default=net.get("latency_ms", 0.0), help="added to every request")
    ap.add_argument("--down-mbit", type=float, default=net.get("down_mbit"), help="storage downloads, shared")
    ap.add_argument("--up-mbit", type=float, default=net.get("up_mbit"), help="storage uploads, shared")
    args = ap.parse_args(argv)
    srv = FakeGPUGeek(api_key=args.key, queue_s=args.queue_s, run_s=args.run_s, latency_ms=args.latency_ms,
                      down_mbit=args.down_mbit, up_mbit=args.up_mbit, queue_jitter_s=args.queue_jitter_s,
                      run_jitter=args.run_jitter, seed=args.seed)
    srv.task_opts.update(size=args.size, batch=args.batch, clip=args.clip)
    if args.comfy:
        from comfy_backend import ComfyBackend
        srv.backend = ComfyBackend(args.comfy)
    else:   # every result image made before serving: a submit then costs this machine nothing (the platform's
        global PHOTO_VARIANTS   # work happens elsewhere; made at submit, it took the client's two cores)
        PHOTO_VARIANTS = args.variants
        for k in range(PHOTO_VARIANTS):
            _photo_once(args.size, k)
        if args.clip and args.batch > 1:   # the take, and each frame as the compact transfer's saver writes it
            for frame in _clip_once(args.size, args.batch):
                _webp_once(frame, COMPACT_SETTINGS)
    loop = asyncio.new_event_loop()
    srv.loop = loop
    runner = web.AppRunner(srv.app(), access_log=None)
    loop.run_until_complete(runner.setup())
    srv.base_url = f"http://127.0.0.1:{args.port}"
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", args.port).start())
    print(f"fake GPUGeek on {srv.base_url}", flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
