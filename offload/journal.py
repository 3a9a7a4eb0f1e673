"""Durable records: every task the pack submits, and every upload it can reuse.

A store is an append-only JSON-lines file: each line is ``{"key": ..., <changed fields>}`` and a record is
the merge of its lines, in order. A line is flushed and fsync'd before the call returns, so a record
written before a submit survives ComfyUI being killed; a line cut mid-write (the crash case) is skipped
on reading, losing at most that one change. The file is compacted (rewritten atomically) when it grows.
The stores live in the pack's data folder (ComfyUI's user directory), never in the pack's own folder.
"""
from __future__ import annotations

import functools
import json
import os
import statistics
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .config import data_dir, json_bytes, write_private

# Compact when the file holds this many more lines than records (a long-running install stays small).
COMPACT_SLACK = 2000
# Keep at most this many task records (the newest); older ones are dropped at compaction.
MAX_TASKS = 5000

SUBMITTING, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLING, CANCELLED, UNKNOWN = (
    "submitting", "queued", "running", "succeeded", "failed", "cancelling", "cancelled", "unknown")
ACTIVE = (SUBMITTING, QUEUED, RUNNING, CANCELLING, UNKNOWN)
# This process, as written into the entries it begins (a pid alone is reused, in containers above all).
PROCESS_TOKEN = uuid.uuid4().hex[:12]


def _stamp(path) -> tuple:
    """What says another process wrote the file: its modification time and its size (two writes within one tick of
    the file system's clock, a few ms, leave the time alone; an append always changes the size)."""
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


class JsonlStore:
    def __init__(self, path: Path, max_records: int | None = None):
        self.path = Path(path)
        self.max_records = max_records
        self._lock = threading.Lock()
        self._records: dict[str, dict] = {}
        self._lines = 0
        self._seen = None
        self._load()

    def _load(self) -> None:
        records: dict[str, dict] = {}
        lines = 0
        try:
            with open(self.path, "rb") as f:
                for raw in f:
                    lines += 1
                    try:
                        rec = json.loads(raw)
                    except ValueError:
                        continue  # a line cut by a crash
                    if isinstance(rec, dict) and isinstance(rec.get("key"), str):
                        records.setdefault(rec["key"], {}).update(rec)
            self._seen = _stamp(self.path)
        except FileNotFoundError:
            self._seen = None
        self._records, self._lines = records, lines

    def refresh(self) -> None:
        """Re-read if another process (the command line, a restarted ComfyUI) wrote to the file."""
        with self._lock:
            self._reload_if_changed()

    def _reload_if_changed(self) -> None:
        try:
            m = _stamp(self.path)
        except FileNotFoundError:
            m = None
        if m != self._seen:
            self._load()

    def put(self, key: str, **fields) -> dict:
        fields["key"] = key
        line = json_bytes(fields, default=str) + b"\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._reload_if_changed()  # another process (the command line, a second ComfyUI) may have written
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                # a crash may have left a partial last line: start ours on a fresh line
                if os.fstat(fd).st_size and not self._ends_with_newline():
                    line = b"\n" + line
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            rec = self._records.setdefault(key, {})
            rec.update(fields)
            self._lines += 1
            self._seen = _stamp(self.path)
            if self._lines > len(self._records) + COMPACT_SLACK:
                self._compact()
            return dict(rec)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def _compact(self) -> None:
        recs = list(self._records.values())
        if self.max_records and len(recs) > self.max_records:
            recs.sort(key=lambda r: r.get("created", 0))
            recs = recs[-self.max_records:]
            self._records = {r["key"]: r for r in recs}
        write_private(self.path, [json_bytes(r, default=str) + b"\n" for r in recs])
        self._lines = len(recs)

    def get(self, key: str) -> dict | None:
        with self._lock:
            r = self._records.get(key)
            return dict(r) if r else None

    def all(self) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._records.values()]


class Journal:
    """Task records. ``begin`` before a submit, ``update`` at every change."""

    def __init__(self, path: Path | None = None):
        self.store = JsonlStore(path or (data_dir() / "journal.jsonl"), max_records=MAX_TASKS)

    def begin(self, **fields) -> str:
        key = uuid.uuid4().hex[:16]
        now = time.time()
        self.store.put(key, created=now, updated=now, status=SUBMITTING, pid=os.getpid(),
                       proc=PROCESS_TOKEN, **fields)
        return key

    def settle_orphans(self) -> int:
        """Entries a process left mid-submit or mid-cancel and can no longer finish (ComfyUI was killed):
        ``unknown``, with what the user must do. Another live process's entries are left alone."""
        self.store.refresh()
        n = 0
        for r in self.store.all():
            if r.get("status") not in (SUBMITTING, CANCELLING) or r.get("proc") == PROCESS_TOKEN:
                continue
            if r.get("pid") != os.getpid() and _alive(r.get("pid"), r.get("updated", 0)):
                continue
            what = ("was being submitted" if r["status"] == SUBMITTING else "was being cancelled")
            self.update(r["key"], status=UNKNOWN, error=f"ComfyUI stopped while this task {what}: a paid task may "
                        "exist. Check your tasks on the GPUGeek console (or Refresh here) before running again.")
            n += 1
        return n

    def update(self, key: str, **fields) -> dict:
        fields["updated"] = time.time()
        return self.store.put(key, **fields)

    def get(self, key: str) -> dict | None:
        return self.store.get(key)

    def by_prompt_id(self, prompt_id: str) -> dict | None:
        self.store.refresh()
        pid = str(prompt_id).strip()
        hits = [r for r in self.store.all() if str(r.get("prompt_id", "")) == pid]
        return max(hits, key=lambda r: r.get("created", 0)) if hits else None

    def result_of(self, result_key: str) -> dict | None:
        """The newest task that succeeded with every result address for exactly this cloud prompt on this target
        (``result_key``, offload/run/fanout.py): what a queue after a restart may take instead of paying again."""
        self.store.refresh()
        hits = [r for r in self.store.all() if r.get("result_key") == result_key and r.get("status") == SUCCEEDED
                and r.get("prompt_id") and isinstance(r.get("result_url"), dict) and r["result_url"]]
        return max(hits, key=lambda r: r.get("created", 0)) if hits else None

    def left_running(self, result_key: str) -> dict | None:
        """The newest task for exactly this cloud prompt on this target (``result_key``) that a process now gone left
        queued or running: ComfyUI killed while it ran, or before its queue reached a part sent ahead. The platform
        may have run it since, paid: a queue after the restart waits for it and takes its results instead of paying
        again (offload/run/fanout.py). This process's own tasks are left to their waits."""
        self.store.refresh()
        hits = [r for r in self.store.all() if r.get("result_key") == result_key and r.get("prompt_id")
                and r.get("status") in (QUEUED, RUNNING) and r.get("proc") != PROCESS_TOKEN
                and (r.get("pid") == os.getpid() or not _alive(r.get("pid"), r.get("updated", 0)))]
        return max(hits, key=lambda r: r.get("created", 0)) if hits else None

    def tasks(self, limit: int = 200) -> list[dict]:
        self.store.refresh()
        recs = sorted(self.store.all(), key=lambda r: r.get("created", 0), reverse=True)
        return recs[:limit]

    def latest(self) -> dict | None:
        t = [r for r in self.tasks(50) if r.get("prompt_id")]
        return t[0] if t else None

    def spent_today(self, now: float | None = None) -> float:
        day = datetime.fromtimestamp(now or time.time()).date()
        total = 0.0
        for r in self.store.all():
            if datetime.fromtimestamp(r.get("created", 0)).date() == day and r.get("price"):
                try:
                    total += float(r["price"])
                except (TypeError, ValueError):
                    pass
        return round(total, 6)

    def history(self, plan_hash: str) -> dict | None:
        """Median price and run time of earlier successful runs of exactly the same cloud part."""
        return self.estimate(plan_hash=plan_hash)

    def estimate(self, plan_hash: str | None = None, shape_hash: str | None = None,
                 workflow_id: str | None = None, form_hash: str | None = None, work: float | None = None) -> dict | None:
        """Expected price and run time of a cloud part from earlier successful runs: of exactly the same part
        first, then of the same shape (other seeds, texts or input images: the same cost), then of the same form
        at another size or step count (cost per pixel-step, scaled to this part's ``work``), then of the same
        workflow id. ``basis`` says which was used, ``runs`` how many."""
        done = [r for r in self.store.all() if r.get("status") == SUCCEEDED]
        basis, runs = _same_part(done, plan_hash, shape_hash)
        if runs:
            return {**_medians(runs), "basis": basis}
        scaled = _scaled([r for r in done if form_hash and r.get("form_hash") == form_hash], work)
        if scaled:
            return scaled
        runs = [r for r in done if workflow_id and str(r.get("workflow_id") or "") == str(workflow_id)]
        return {**_medians(runs), "basis": "workflow"} if runs else None

    def result_shape(self, plan_hash: str | None = None, shape_hash: str | None = None) -> dict | None:
        """What the newest successful run of exactly this cloud part, else of its shape, decoded its outputs to:
        output node -> [images, height, width] (the batches a run again can make ahead)."""
        done = [r for r in self.store.all()
                if r.get("status") == SUCCEEDED and isinstance(r.get("result_shape"), dict)]
        _, runs = _same_part(done, plan_hash, shape_hash)
        return max(runs, key=lambda r: r.get("created", 0))["result_shape"] if runs else None


def _same_part(records: list, plan_hash: str | None, shape_hash: str | None) -> tuple[str | None, list]:
    """The records of exactly this cloud part ("exact"), else of its shape ("shape"), else none."""
    for basis, field, value in (("exact", "plan_hash", plan_hash), ("shape", "shape_hash", shape_hash)):
        runs = [r for r in records if value and str(r.get(field) or "") == str(value)]
        if runs:
            return basis, runs
    return None, []


def _scaled(runs: list, work: float | None) -> dict | None:
    """Runs of the same form at other sizes or steps, scaled by work (pixels x steps): run time and price per
    unit of work are taken as constant, which holds for samplers (their cost grows with both); only runs that
    recorded their work count."""
    runs = [r for r in runs if isinstance(r.get("work"), (int, float)) and r["work"] > 0]
    if not work or not runs:
        return None
    per_ms = [float(r["run_ms"]) / r["work"] for r in runs if r.get("run_ms") is not None]
    per_price = [float(r["price"]) / r["work"] for r in runs if r.get("price") is not None]
    if not per_ms:
        return None
    return {"runs": len(runs), "run_ms": statistics.median(per_ms) * work,
            "price": statistics.median(per_price) * work if per_price else None,
            "price_max": max(per_price) * work if per_price else None,
            "run_ms_spread": None, "queue_ms": None, "basis": "scaled"}


def _medians(runs: list) -> dict:
    prices = [float(r["price"]) for r in runs if r.get("price") is not None]
    times = [float(r["run_ms"]) for r in runs if r.get("run_ms") is not None]
    queue = [float(r["queue_ms"]) for r in runs if r.get("queue_ms") is not None]
    return {"runs": len(runs), "price": statistics.median(prices) if prices else None,
            "price_max": max(prices) if prices else None,   # what the daily limit holds for a run (run/spend.py)
            "run_ms": statistics.median(times) if times else None,
            "run_ms_spread": _spread(times),
            "queue_ms": statistics.median(queue) if queue else None}


def _spread(times: list) -> float | None:
    """How much run times vary, robustly: the median absolute deviation scaled to a standard deviation, so
    one slow run (a first run that loaded its models) does not make every later run's polling sparse."""
    if len(times) < 2:
        return None
    mid = statistics.median(times)
    return 1.4826 * statistics.median(abs(t - mid) for t in times) or None


# Where a process cannot be probed (Windows: os.kill would end it), an entry touched this recently is taken
# to belong to a live process (a submit's answer takes at most the transport's 30 s read timeout).
RECENT_S = 120.0


def _alive(pid, updated: float = 0.0) -> bool:
    """Is the process that wrote an entry still running (this one included)?"""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if os.name == "nt":
        return time.time() - float(updated or 0) < RECENT_S
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class UploadCache:
    """Content hash -> uploaded URL, valid until its expiry, across runs and restarts."""

    # A URL is reused only while it has at least this long to live (the cloud must still read it).
    MARGIN_S = 15 * 60
    # When the platform gives no expiry we assume the object lives this long.
    DEFAULT_LIFETIME_S = 24 * 3600

    def __init__(self, path: Path | None = None):
        self.store = JsonlStore(path or (data_dir() / "uploads.jsonl"), max_records=20000)

    def get(self, digest: str, now: float | None = None) -> str | None:
        r = self.store.get(digest)
        now = now or time.time()
        if r and r.get("url") and float(r.get("expires", 0)) - self.MARGIN_S > now:
            return r["url"]
        return None

    def urls(self) -> set:
        """Every address the pack uploaded to (the platform's own storage: no call 2 for these)."""
        return {r["url"] for r in self.store.all() if r.get("url")}

    def put(self, digest: str, url: str, expires_at=None) -> None:
        exp = parse_expiry(expires_at) or (time.time() + self.DEFAULT_LIFETIME_S)
        self.store.put(digest, url=url, expires=exp, created=time.time())


# The platform's clock: times written without a zone are China Standard Time (GPUGEEK_API.md).
PLATFORM_TZ = timezone(timedelta(hours=8))


def parse_expiry(value) -> float | None:
    """``expired_at`` as epoch seconds: epoch seconds or ms, ISO 8601 with ``Z`` or an offset (honoured), or
    ``YYYY-MM-DD HH:MM:SS`` without a zone (the platform's clock, UTC+8), never the machine's local time."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().isdigit()):
        v = float(value)
        return v / 1000.0 if v > 1e11 else v
    text = str(value).strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=PLATFORM_TZ)
    return when.timestamp()


@functools.lru_cache(maxsize=None)
def stores_at(data_dir: str) -> tuple:
    """The journal and upload cache of one data folder, opened once per process; entries a killed process
    left mid-submit or mid-cancel are settled (shown as unknown, with what to check) on first use."""
    journal = Journal(Path(data_dir) / "journal.jsonl")
    journal.settle_orphans()
    return journal, UploadCache(Path(data_dir) / "uploads.jsonl")
