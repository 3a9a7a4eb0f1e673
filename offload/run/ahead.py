"""Queued prompts' cloud parts sent ahead (DESIGN.md, "A queue of prompts").

ComfyUI runs its queue one prompt at a time; the cloud does not have to. When a prompt is queued and a cloud part of it
depends on nothing local still to run (a whole workflow; a gateway whose plan has no crossings in: it reads files and
widgets only), its task is started on the task owner at once (:func:`send`: the owner holds it like any task: journaled,
Stop and cancel, the daily limit's leases, uploads then submit). Its files are written to a folder of the pack's data
(never held in memory while the queue waits); the task is in the journal with its result addresses, so a restart loses
nothing (Load Result, and a run of the same cloud prompt takes that task's results: fanout ``_paid_before``).

When ComfyUI reaches the prompt, the gateway's lead takes the task by its key (:func:`key_of`: the plan, where it runs,
the workflow id, the runs, the transfer and the local files' digests: what makes its result) instead of submitting: it
waits for it, or reads its finished files. A prompt that leaves the queue without running it (deleted, cleared, Stop,
shutdown: the node layer watches ComfyUI's queue, nodes/ahead.py) cancels its task.

Nothing is paid for nothing: a key sent ahead once in this process is not sent again (the second prompt is served by
ComfyUI's cache or by the first task's results in the journal), nor a part whose gateway signature (ComfyUI's cache key)
is the one that ran last on that node (see :meth:`Ahead.remember_ran`). At most ``slots`` tasks run ahead at once
(offload/config.py ``send_ahead_slots``); the rest wait their turn, sent when a slot frees, or at run time as usual.
ComfyUI is not imported here."""
from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..redact import get_logger
from .spend import spent_and_held

log = get_logger("gpugeek.ahead")

# A prompt sent ahead that ComfyUI never showed in its queue (its validation failed after the on_prompt handler ran,
# a script that planned without queueing) is cancelled after this long: ComfyUI validates a prompt in well under it.
NOT_QUEUED_GRACE_S = 10.0
# Keys sent ahead and gateway signatures that ran, remembered in this process (a queue longer than this is rare; a key
# forgotten only means a later identical prompt may be sent ahead, whose run then takes the journal's results).
REMEMBERED = 256

# Prices are added at this precision: the platform's have at most a few decimals; a sum's float noise is not money.
PRICE_DIGITS = 6

# States told to the editor (web/gpugeek_ahead.js)
WAITING, RUNNING, READY, TAKEN, CANCELLED, FAILED = "waiting", "running", "ready", "taken", "cancelled", "failed"


def key_of(plan_json: str, where: str, workflow_id, runs: int, transfer: str, files_digest: str) -> str:
    """A part sent ahead, by what makes its result: the gateway's plan (its cloud prompt, seeds and texts, its hash),
    the target, the workflow id, the runs, how its images come back and the digests of the local files it uploads."""
    text = json.dumps([plan_json, str(where), str(workflow_id or ""), int(runs), str(transfer), str(files_digest)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def signature(gateway_inputs: dict, changed) -> str:
    """The gateway's cache key as ComfyUI makes it (its literal inputs and what IS_CHANGED says): ComfyUI serves a node
    from its cache when this is the one that ran last on that node."""
    literal = {k: v for k, v in (gateway_inputs or {}).items() if not _is_link(v)}
    return hashlib.sha256(json.dumps([literal, str(changed)], sort_keys=True, default=str).encode()).hexdigest()[:32]


def _sum(prices) -> float:
    """Prices added as people read them (float noise off: 0.25 + 0.05 is 0.3)."""
    return round(sum(prices), PRICE_DIGITS)


def _is_link(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


@dataclass
class Entry:
    """One part sent ahead (or waiting for a slot)."""
    key: str
    token: str                      # the prompt's mark in its extra_data (nodes/ahead.py finds it in ComfyUI's queue)
    begin: Callable                 # () -> the owner's job that runs it
    folder: Path                    # its files, once it finished
    label: str = ""
    job: object = None              # None while it waits for a slot
    created: float = field(default_factory=time.monotonic)
    seen: bool = False              # ComfyUI's queue held its prompt
    prompt_id: str | None = None    # ComfyUI's prompt id and number, once seen in its queue
    number: float | None = None
    state: str = WAITING
    started_at: float | None = None   # wall clock, for the editor's elapsed time
    position: int | None = None       # the platform's queue position while it queues there
    price: float | None = None        # what it is expected to cost (all its runs; the editor's estimate), None unknown

    def record(self) -> dict:
        """What the editor is told of it (no key, no address)."""
        return {"token": self.token, "prompt_id": self.prompt_id, "number": self.number, "state": self.state,
                "started": self.started_at, "position": self.position, "label": self.label, "price": self.price}


class Ahead:
    """The parts sent ahead in this process, by key. Thread-safe: the on_prompt handler (the server's loop), the
    gateways (the prompt's thread), the owner's loop and the queue watcher all call it."""

    def __init__(self):
        self._lock = threading.RLock()
        self.entries: "OrderedDict[str, Entry]" = OrderedDict()
        self._sent: OrderedDict = OrderedDict()    # keys ever sent ahead here
        self._ran: dict = {}                        # gateway node -> the signature that ran last there
        self.tell: Callable[[dict], None] = lambda record: None   # the editor's message (nodes/ahead.py)

    # ---- what is not sent ahead ----------------------------------------------------------------------------------
    def remember_ran(self, node: str, sig: str) -> None:
        """A gateway ran with this signature: ComfyUI's cache now holds it for that node."""
        with self._lock:
            self._ran[str(node)] = sig
            while len(self._ran) > REMEMBERED:
                self._ran.pop(next(iter(self._ran)))

    def cached(self, node: str, sig: str) -> bool:
        """Whether ComfyUI will serve this gateway from its cache when it reaches the prompt queued now, noting that the
        prompt queued now puts ``sig`` on ``node``. The hook cannot see ComfyUI's cache, so it approximates it as
        ComfyUI's classic cache behaves: one entry a node, the last prompt's. When the prompt comes, that is the
        prompt queued before it (or, the queue empty, the one that ran last): the same signature there is served from
        the cache. It errs on the cheap side: a part thought cached that is not (the prompt before it was deleted) runs
        when ComfyUI reaches it, as before (and a cloud prompt that succeeded before takes that task's results); a part
        cached in a way it does not know (an LRU cache keeping older results) is sent ahead, and its task is cancelled
        when its prompt ends without the gateway taking it (nodes/ahead.py)."""
        with self._lock:
            same = self._ran.get(str(node)) == sig
            self._ran[str(node)] = sig
            return same

    # ---- sending ---------------------------------------------------------------------------------------------------
    def offer(self, entry: Entry, slots: int) -> bool:
        """Send ``entry`` ahead (or keep it waiting for a slot); False where its key went ahead before."""
        with self._lock:
            if entry.key in self._sent or slots <= 0:
                return False
            self._sent[entry.key] = True
            while len(self._sent) > REMEMBERED:
                self._sent.popitem(last=False)
            self.entries[entry.key] = entry
        self._tell(entry)
        self.pump(slots)
        return True

    def active(self) -> int:
        with self._lock:
            return sum(1 for e in self.entries.values() if e.job is not None and not e.job.done)

    def pump(self, slots: int) -> None:
        """Start waiting entries, in the queue's order, while fewer than ``slots`` tasks run ahead."""
        while True:
            with self._lock:
                if self.active() >= slots:
                    return
                entry = next((e for e in self.entries.values() if e.job is None), None)
                if entry is None:
                    return
                entry.state, entry.started_at = RUNNING, time.time()
                try:
                    entry.job = entry.begin()
                except Exception:   # noqa: BLE001 - nothing sent: the gateway runs it at run time as before
                    log.exception("GPUGeek: a part could not be sent ahead")
                    self.entries.pop(entry.key, None)
                    continue
            entry.job._on_done(lambda e=entry, s=slots: self._ended(e, s))
            self._tell(entry)

    def _ended(self, entry: Entry, slots: int) -> None:
        with self._lock:
            mine = self.entries.get(entry.key) is entry
            if mine:
                entry.state = READY if entry.job._error is None else (
                    CANCELLED if entry.job.stop_reason else FAILED)
        if mine:
            self._tell(entry)
        threading.Thread(target=self.pump, args=(slots,), daemon=True).start()   # never on the owner's loop

    def status(self, entry: Entry, detail) -> None:
        """A status of its task: the platform's queue position, for the editor."""
        position = getattr(detail, "current_position", None) or None
        if position != entry.position:
            entry.position = position
            self._tell(entry)

    def _tell(self, entry: Entry) -> None:
        try:
            self.tell(entry.record())
        except Exception:   # noqa: BLE001 - the editor's message never touches a task
            log.debug("GPUGeek: could not tell the editor of a part sent ahead", exc_info=True)

    # ---- taking and cancelling -----------------------------------------------------------------------------------
    def take(self, key: str) -> Entry | None:
        """The entry the gateway now reached takes (no longer the queue watcher's to cancel); one still waiting for a
        slot is dropped (the gateway runs it as usual: None)."""
        with self._lock:
            entry = self.entries.pop(key, None)
        if entry is None:
            return None
        entry.state = TAKEN
        self._tell(entry)
        return entry if entry.job is not None else None

    def cancel(self, entry: Entry, reason: str) -> None:
        """Its prompt will not run: its task cancelled (the owner journals how it ended), its files removed."""
        with self._lock:
            if self.entries.get(entry.key) is not entry:   # its gateway took it meanwhile (or it was cancelled)
                return
            del self.entries[entry.key]
            self._sent.pop(entry.key, None)   # queued again, it may go ahead again (a task it finished is journaled)
        entry.state = CANCELLED
        if entry.job is not None:
            entry.job.stop(reason)
            entry.job._on_done(lambda: shutil.rmtree(entry.folder, ignore_errors=True))
        self._tell(entry)

    def queued(self, token: str, prompt_id: str, number) -> None:
        """ComfyUI queued the prompt marked ``token`` (its id and number)."""
        with self._lock:
            entries = [e for e in self.entries.values() if e.token == token and not e.seen]
            for e in entries:
                e.seen, e.prompt_id, e.number = True, prompt_id, number
        for e in entries:
            self._tell(e)

    def seen(self, queued: dict) -> list:
        """ComfyUI's queue now: token -> (prompt id, number) of each prompt queued or running. Marks the entries seen and
        returns those whose prompt will not run: seen before and gone, or never seen within NOT_QUEUED_GRACE_S."""
        now = time.monotonic()
        gone = []
        with self._lock:
            for entry in list(self.entries.values()):
                if entry.token in queued:
                    if not entry.seen:
                        entry.seen = True
                        entry.prompt_id, entry.number = queued[entry.token]
                        self._tell(entry)
                elif entry.seen or now - entry.created > NOT_QUEUED_GRACE_S:
                    gone.append(entry)
        return gone

    def committed(self) -> dict:
        """What the queue's prompts have sent ahead and not yet handed to their gateways (waiting for a slot, running,
        finished): how many, their expected price where known, how many of unknown price; and the price of those still
        waiting for a slot (no lease on the day's room yet: run/spend.py)."""
        with self._lock:
            live = [e for e in self.entries.values() if e.state in (WAITING, RUNNING, READY)]
        known = [e.price for e in live if e.price is not None]
        return {"tasks": len(live), "price": _sum(known), "unpriced": len(live) - len(known),
                "waiting_price": _sum(e.price for e in live if e.job is None and e.price is not None)}

    def of_token(self, token: str) -> list:
        with self._lock:
            return [e for e in self.entries.values() if e.token == token]

    def cancel_all(self, reason: str) -> list:
        with self._lock:
            entries = list(self.entries.values())
        for e in entries:
            self.cancel(e, reason)
        return entries


def queue_money(registry: Ahead, journal, limit: float | None) -> dict:
    """What the editor's estimate adds for the queue (routes' POST /gpugeek/plan): the parts sent ahead (how many, their
    expected price, how many of unknown price) and what is left of the daily limit (None: no limit) after today's
    spending, the tasks under way (their leases: the first prompt's, and those sent ahead) and the parts still waiting
    for a slot. It is what the limit will count when they are submitted."""
    money = registry.committed()
    left = None
    if limit:
        spent, _lost = spent_and_held(journal)
        left = round(max(0.0, float(limit) - spent - money["waiting_price"]), PRICE_DIGITS)
    return {"tasks": money["tasks"], "price": money["price"], "unpriced": money["unpriced"], "left": left}


_ahead: Ahead | None = None
_lock = threading.Lock()


def ahead() -> Ahead:
    """The process's parts sent ahead."""
    global _ahead
    with _lock:
        if _ahead is None:
            _ahead = Ahead()
        return _ahead


def reset() -> None:
    """Forget everything (tests: a new ComfyUI process)."""
    global _ahead
    with _lock:
        _ahead = None
