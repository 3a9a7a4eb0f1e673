"""The owner of every remote task: one event loop in a background thread per process (DESIGN.md, "Lifetime
of a paid task").

ComfyUI runs each prompt inside ``asyncio.run`` and, when a node fails or the user stops, ends the prompt and
cancels every coroutine still alive in it, shielded ones included. A paid task must not share that fate, so
its whole life (uploads, submit, status, cancel, downloads, journal writes) runs here, on the owner's loop. A
node's coroutine only awaits the job (:meth:`Job.wait`) and forwards Stop, its own cancellation and its
timeout to it (:meth:`Job.stop`); the owner then finishes the job on its own: the submit's answer is read to
its end, the task is cancelled with bounded retries, and the journal says how it ended.
"""
from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Awaitable, Callable

from .redact import get_logger

log = get_logger("gpugeek.owner")

# How often a waiting node looks at ComfyUI's interrupt flag (the bar: Stop ends the prompt within 1 s).
INTERRUPT_CHECK_S = 0.05
# Files of a task kept for the merged gateways of the same prompt that have not taken theirs yet: they run
# right after the gateway that ran the task, so a few minutes is plenty; later readers go to the journal.
SHARED_FILES_TTL_S = 300.0


class Interrupted(Exception):
    """The user stopped the run; the remote task (if any) is being cancelled by the owner."""

    def __init__(self, task_id: str | None = None):
        super().__init__("interrupted")
        self.task_id = task_id


class Job:
    """One remote task's life on the owner. Thread-safe: ``stop`` and ``wait`` are called from a prompt's
    event loop, everything else runs on the owner's."""

    def __init__(self, owner: "Owner", label: str):
        self.owner = owner
        self.label = label
        self.task_id: str | None = None
        self.stop_reason: str | None = None
        self._stop = asyncio.Event()
        self._done = threading.Event()
        self._result = None
        self._error: BaseException | None = None
        self._listeners: list = []
        self._done_callbacks: list = []
        self._lock = threading.Lock()

    # ---- the prompt's side -------------------------------------------------------------------------
    def stop(self, reason: str) -> None:
        """Ask the owner to end this job (cancel the remote task if there is one). Returns at once."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.owner.call(self._stop.set)

    def listen(self, on_event: Callable) -> None:
        """Deliver this job's events to ``on_event`` on the calling event loop, in the caller's context
        (ComfyUI's progress hooks read the executing node from it); dropped once that loop is gone."""
        loop = asyncio.get_running_loop()
        self._listeners.append((loop, on_event, contextvars.copy_context()))

    async def wait(self, interrupted: Callable[[], bool] = lambda: False):
        """The job's result, awaited from a prompt's loop. A Stop (``interrupted``) or this coroutine's
        cancellation (another node failed) stops the job and returns at once; the owner goes on."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def wake():
            if not fut.done():
                fut.set_result(None)
        self._on_done(lambda: loop.call_soon_threadsafe(wake) if not loop.is_closed() else None)
        try:
            while not fut.done():
                await asyncio.wait({fut}, timeout=INTERRUPT_CHECK_S)
                if not fut.done() and interrupted():
                    self.stop("interrupted")
                    raise Interrupted(self.task_id)
        except asyncio.CancelledError:
            self.stop("the prompt ended before the task finished (another node failed or the run was stopped)")
            raise
        if self._error is not None:
            raise self._error
        return self._result

    # ---- the owner's side --------------------------------------------------------------------------
    def interrupted(self) -> bool:
        return self.stop_reason is not None

    def emit(self, kind: str, **info) -> None:
        for loop, cb, ctx in list(self._listeners):
            try:
                loop.call_soon_threadsafe(lambda cb=cb: cb(kind, **info), context=ctx)
            except RuntimeError:  # that prompt's loop has closed: nobody watches any more
                self._listeners.remove((loop, cb, ctx))

    async def guard(self, aw: Awaitable):
        """Await ``aw`` unless the job is stopped first: then ``aw`` is cancelled (uploads and downloads end
        at once) and :class:`Interrupted` is raised. Never use it around a submit: that answer is read whole."""
        task = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:   # the guard itself was cancelled (another run of a fan-out failed): so is ``aw``,
            task.cancel()        # and its end is read, never left to fail unseen once its session closes under it
            await asyncio.gather(task, return_exceptions=True)
            raise
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise Interrupted(self.task_id)
        return task.result()

    def _on_done(self, cb: Callable[[], None]) -> None:
        with self._lock:
            if not self._done.is_set():
                self._done_callbacks.append(cb)
                return
        cb()

    def _finish(self, result=None, error: BaseException | None = None) -> None:
        with self._lock:
            self._result, self._error = result, error
            self._done.set()
            callbacks, self._done_callbacks = self._done_callbacks, []
        for cb in callbacks:
            try:
                cb()
            except RuntimeError:
                pass

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None):
        """Block until the job ends (the command line and tests); its result or its error."""
        self._done.wait(timeout)
        if self._error is not None:
            raise self._error
        return self._result


class Owner:
    """One background event loop holding every job; created lazily, lives as long as the process."""

    def __init__(self):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.jobs: set[Job] = set()
        self._shared: dict[str, dict] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or not self._thread.is_alive():
                ready = threading.Event()

                def serve():
                    self._loop = asyncio.new_event_loop()
                    asyncio.set_event_loop(self._loop)
                    ready.set()
                    self._loop.run_forever()
                self._thread = threading.Thread(target=serve, name="gpugeek-owner", daemon=True)
                self._thread.start()
                ready.wait()
            return self._loop

    def call(self, fn: Callable, *args) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def start(self, work: Callable[[Job], Awaitable], label: str = "GPUGeek", on_event: Callable | None = None) -> Job:
        """Run ``work(job)`` on the owner's loop; returns the job at once. ``on_event`` (called from a running
        event loop) receives the job's events on that loop."""
        job = Job(self, label)
        if on_event is not None:
            job.listen(on_event)
        self.jobs.add(job)

        async def body():
            try:
                job._finish(result=await work(job))
            except BaseException as e:  # noqa: BLE001 - handed to whoever waits
                if not isinstance(e, (Interrupted, Exception)):
                    log.warning("%s: the job ended with %s", label, type(e).__name__)
                job._finish(error=e)
            finally:
                self.jobs.discard(job)
        self.call(lambda: self.loop.create_task(body()))
        return job

    def active(self) -> list[Job]:
        return [j for j in list(self.jobs) if not j.done]

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every job has ended (tests, the command line before it exits)."""
        end = time.monotonic() + timeout
        while self.active() and time.monotonic() < end:
            time.sleep(0.02)
        return not self.active()

    # ---- files of one task shared by merged gateways ----------------------------------------------
    def share(self, task_id: str, files: dict, members) -> None:
        """Keep ``files`` (node id -> [(url, bytes)]) until each of ``members`` took its part, or the TTL."""
        members = set(members)
        if not members:
            return
        with self._lock:
            self._shared[task_id] = {"files": files, "waiting": members}
        self.loop.call_soon_threadsafe(self.loop.call_later, SHARED_FILES_TTL_S, self._forget, task_id)

    def take(self, task_id: str, member: str, nodes) -> dict | None:
        """A merged gateway's files of a shared task (released once every member took its part)."""
        with self._lock:
            entry = self._shared.get(task_id)
            if entry is None:
                return None
            entry["waiting"].discard(member)
            files = {n: entry["files"][n] for n in nodes if n in entry["files"]}
            if not entry["waiting"]:
                del self._shared[task_id]
            return files

    def _forget(self, task_id: str) -> None:
        with self._lock:
            self._shared.pop(task_id, None)

    def held(self) -> int:
        """Tasks whose files are still held for merged gateways (tests check that delivery releases them)."""
        with self._lock:
            return len(self._shared)


_owner: Owner | None = None


def owner() -> Owner:
    """The process's owner."""
    global _owner
    if _owner is None:
        _owner = Owner()
    return _owner
