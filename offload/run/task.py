"""One remote task's lifetime, from a plan to downloaded results: upload, submit once, wait, cancel, fetch.

Used by the gateway and the command line alike, always on the task owner's loop (offload/owner.py): the
``job`` tells of a stop (``job.interrupted``), bounds what may be abandoned (``job.guard``: uploads, status
calls, downloads; never the submit) and carries status to whoever watches (``job.emit``).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable

from .. import catalog, cloud_errors, errors, texts
from ..journal import CANCELLED, CANCELLING, FAILED, QUEUED, RUNNING, SUCCEEDED, UNKNOWN, Journal
from ..owner import Interrupted
from ..poll import INTERRUPT_CHECK_S, PollSchedule
from ..redact import get_logger
from ..transfer import gather_bounded
from ..transport import PARALLEL_DOWNLOADS, ByteBudget, check_result_count
from ..wire import CANCELLED as S_CANCELLED
from ..wire import FAILED as S_FAILED
from ..wire import SUCCEEDED as S_SUCCEEDED
from ..wire import TaskDetail

log = get_logger("gpugeek.run")

# Default wait for a cloud task before it is cancelled (the gateway's timeout_s input overrides it):
# long enough for a queue at peak hours plus a video model's run, short enough that a stuck task does
# not run up a bill overnight.
DEFAULT_TIMEOUT_S = 1800
# While status calls fail (network down), wait this long between tries; the task keeps running remotely.
STATUS_RETRY_S = 2.0
# With a live target (a ComfyUI server's websocket) the status is local state: look at it this often, or, where
# the target wakes the wait on each of the task's messages (``changed``), at least this often (the elapsed time
# shown on the node).
LIVE_STATUS_S = 0.02
PUSHED_STATUS_S = 0.5
# A task nobody waits for any more is cancelled in this many rounds (each round is the transport's own
# retries, a few seconds), this far apart: about half a minute in all, then the journal says unknown.
CANCEL_ROUNDS = 3
CANCEL_PAUSE_S = 5.0


@dataclass
class RunOutcome:
    prompt_id: str
    detail: TaskDetail
    files: dict = field(default_factory=dict)   # node id -> [(url, bytes)]
    journal_key: str = ""
    uploaded_bytes: int = 0
    timings: dict = field(default_factory=dict)


async def sleep_interruptible(seconds: float, interrupted: Callable[[], bool],
                              wake: asyncio.Event | None = None) -> bool:
    """Sleep, checking ``interrupted`` every 50 ms; True if it fired. ``wake`` ends the sleep when it is set."""
    end = time.monotonic() + seconds
    while True:
        if interrupted():
            return True
        left = end - time.monotonic()
        if left <= 0 or (wake is not None and wake.is_set()):
            return False
        if wake is None:
            await asyncio.sleep(min(INTERRUPT_CHECK_S, left))
            continue
        try:
            await asyncio.wait_for(wake.wait(), min(INTERRUPT_CHECK_S, left))
        except asyncio.TimeoutError:
            pass


def estimate_for(journal: Journal, plan, workflow_id=None) -> dict | None:
    """The one estimate of a cloud part's price and run time (the editor, the daily limit, the poll
    schedule and the node's progress all use it): same part, else same shape, else the same form scaled by
    size and steps, else same workflow."""
    return journal.estimate(plan.hash, plan.shape, str(workflow_id) if workflow_id else None,
                            form_hash=plan.form or None, work=plan.work)


def provider_of(target, workflow_id) -> texts.Said:
    """What provides the cloud's models, for the sentence that asks the user to pick one it has."""
    url = getattr(target, "url", None)
    if url:
        return texts.Said("where_server", {"url": url})
    return texts.Said("where_workflow", {"workflow": workflow_id}) if workflow_id else texts.Said("where_cloud")


async def submit_once(target, prompt: dict, workflow_id, journal: Journal, key: str, label: str) -> str:
    """Send the submit and read its answer to the end, whatever happens to the prompt that asked for it (the
    owner's loop is never cancelled by ComfyUI). The id is journaled before anything else happens."""
    try:
        prompt_id = await target.submit(prompt, workflow_id)
    except errors.SubmitUnknownError as e:
        journal.update(key, status=UNKNOWN, error=e.to_dict()["text"])
        log.warning("%s: %s", label, e)
        raise
    except errors.GPUGeekError as e:  # refused: nothing runs, nothing is paid (the cloud's reasons by node kept)
        journal.update(key, status=FAILED, error=e.to_dict()["text"], price=0,
                       error_lines=[line.to_dict() for line in e.lines] or None)
        if getattr(e, "body", None):   # a server's refusal names what it accepts: the editor's lists learn it
            await catalog.learn_refusal(catalog.key_of_target(target, workflow_id), e.body, prompt)
        raise
    except BaseException as e:  # the process is going down mid-submit: the answer is lost to us
        journal.update(key, status=UNKNOWN, error=str(errors.SubmitUnknownError(
            f"The submit was sent but its answer was not read ({type(e).__name__})", call="submit")))
        raise
    journal.update(key, prompt_id=prompt_id, status=QUEUED)
    return prompt_id


async def wait_task(prompt_id: str, *, target, journal: Journal, key: str | None, timeout_s: float,
                    interrupted: Callable[[], bool], on_event: Callable, estimate: dict | None = None,
                    label: str = "GPUGeek Cloud Execute", cancel_on_exit: bool = True,
                    stop_reason: Callable[[], str | None] = lambda: None, prompt: dict | None = None,
                    provider: texts.Said | None = None, lists_key: str | None = None) -> TaskDetail:
    """Poll until the task ends. The run's own task (``cancel_on_exit``) is cancelled remotely on a stop,
    a timeout, or anything else that ends the wait early (the prompt that waited for it ended, a status call
    that cannot succeed): a paid task is never left running behind the user's back. A reader of somebody's
    task (Load Result, the command line) only stops reading. Once the task has ended, nothing is cancelled."""
    wait = _Wait(prompt_id, target, journal, key, timeout_s, interrupted, on_event, estimate, label)
    try:
        while True:
            d, delay = await wait.look()
            if d is not None and d.final:
                break
            await wait.pause(delay, d)
    except (errors.TaskFailedError, errors.TaskCancelledError):
        raise  # the task has ended by itself
    except BaseException as e:
        if isinstance(e, Interrupted) and e.task_id is None:
            e.task_id = prompt_id
        if cancel_on_exit:
            await _cancel_after(e, target, prompt_id, journal, key, stop_reason() or _why(e), on_event)
        raise
    return await _ended(d, wait, prompt, provider, lists_key)


class _Wait:
    """The steps of one task's wait: look at its status, tell and journal it, pause until the next look."""

    def __init__(self, prompt_id: str, target, journal: Journal, key: str | None, timeout_s: float,
                 interrupted: Callable[[], bool], on_event: Callable, estimate: dict | None, label: str):
        self.prompt_id, self.target, self.journal, self.key = prompt_id, target, journal, key
        self.interrupted, self.on_event, self.estimate, self.label = interrupted, on_event, estimate, label
        exp_ms, spread = (estimate or {}).get("run_ms"), (estimate or {}).get("run_ms_spread")
        self.schedule = PollSchedule(exp_ms / 1000.0 if exp_ms else None, spread / 1000.0 if spread else None)
        self.timeout_s = timeout_s if timeout_s and timeout_s > 0 else DEFAULT_TIMEOUT_S
        self.deadline = time.monotonic() + self.timeout_s
        self.wake: asyncio.Event | None = None
        self.last_status = None

    async def look(self) -> tuple:
        """The task's status (None while status calls fail), told and journaled while it runs; and how long until
        the next look."""
        self._stop_if_asked()
        # a target that pushes the task's messages wakes this wait on each (cleared before the status is read,
        # so a message that comes while it is read wakes the next wait)
        live = getattr(self.target, "live", False) and hasattr(self.target, "changed")
        self.wake = self.target.changed(self.prompt_id) if live else None
        if self.wake is not None:
            self.wake.clear()
        try:
            d = await _unless_interrupted(self.target.status(self.prompt_id), self.interrupted)
        except (errors.BusyError, errors.TransportError) as e:
            log.warning("%s: status of task %s failed (%s); still waiting", self.label, self.prompt_id, e.message)
            self.on_event("status_error", prompt_id=self.prompt_id, error=e.message)
            return None, STATUS_RETRY_S
        if d.final:   # journaled whole, at once, before anything else (_ended)
            return d, 0.0
        if d.status != self.last_status and self.key:
            self.journal.update(self.key, status=job_status(d.status), queue_ms=d.queue_duration_ms,
                                run_ms=d.run_duration_ms)
        self.last_status = d.status
        self._stop_if_asked()
        self.on_event("status", detail=d, expected=self.estimate)
        delay = self.schedule.next_delay(d)
        if getattr(self.target, "live", False):   # followed over a websocket: a status is local state, not a call
            delay = min(delay, PUSHED_STATUS_S if self.wake is not None else LIVE_STATUS_S)
        return d, delay

    async def pause(self, delay: float, d: TaskDetail | None) -> None:
        """Until the next look: the delay, cut short by the deadline (a timeout), a stop, or the task's next
        message (a live target, while its status can be read)."""
        if time.monotonic() >= self.deadline:
            raise errors.TaskTimeoutError(key="err_timeout", task_id=self.prompt_id,
                                          values={"label": self.label, "seconds": f"{self.timeout_s:g}"})
        delay = min(delay, max(0.0, self.deadline - time.monotonic()))
        if await sleep_interruptible(delay, self.interrupted, self.wake if d is not None else None):
            raise Interrupted(self.prompt_id)

    def _stop_if_asked(self) -> None:
        if self.interrupted():
            raise Interrupted(self.prompt_id)


def _why(e: BaseException) -> str:
    if isinstance(e, (Interrupted, asyncio.CancelledError)) or type(e).__name__ == "InterruptProcessingException":
        return "interrupted"
    return "timeout" if isinstance(e, errors.TaskTimeoutError) else f"the wait ended: {type(e).__name__}"


async def _cancel_after(e: BaseException, target, prompt_id: str, journal: Journal, key, why: str, on_event) -> None:
    """The wait ended early: cancel the task, and say in a timeout's message whether the cancel worked. The
    cancel itself is not cut short when this coroutine is cancelled meanwhile (a fan-out cancels its other runs
    while they are cancelling their own tasks after the same Stop): it ends (bounded rounds), then the
    cancellation goes on."""
    work = asyncio.ensure_future(cancel_task(target, prompt_id, journal, key, why, on_event))
    interrupted = False
    while True:
        try:
            cancelled = await asyncio.shield(work)
            break
        except asyncio.CancelledError:
            if work.done():
                raise
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError()
    if isinstance(e, errors.TaskTimeoutError) and e.key == "err_timeout":
        e.key = "err_timeout_cancelled" if cancelled else "err_timeout_cancel_failed"
        e.message = e.message_in("en")


async def _unless_interrupted(coro, interrupted: Callable[[], bool]):
    """Await ``coro`` (a status call that may be retried for a while) but give up as soon as the user stops."""
    task = asyncio.ensure_future(coro)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=INTERRUPT_CHECK_S)
            if done:
                return task.result()
            if interrupted():
                raise Interrupted(None)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def job_status(s: int) -> str:
    """The journal's word for a platform status code."""
    return {1: QUEUED, 2: RUNNING, 3: SUCCEEDED, 4: FAILED, 5: CANCELLED}.get(s, UNKNOWN)


async def _ended(d: TaskDetail, wait: _Wait, prompt: dict | None, provider: texts.Said | None,
                 lists_key: str | None) -> TaskDetail:
    """A task that ended: journaled first, whole (a paid result's price and addresses are recorded before
    anything else may fail), then what it teaches the cloud's lists (never the run's concern), then told; a
    failure raised with the cloud's errors told node by node where it named nodes."""
    if wait.key:
        wait.journal.update(wait.key, status=job_status(d.status), queue_ms=d.queue_duration_ms,
                            run_ms=d.run_duration_ms, price=d.origin_price, result_url=d.result_url,
                            error=d.error_msg or None)
    if lists_key and d.status == S_FAILED:
        await catalog.learn_refusal(lists_key, d.error_msg, prompt)
    elif lists_key and d.status == S_SUCCEEDED:
        await catalog.learn_ran(lists_key, prompt)
    try:
        _raise_if_failed(d, wait.journal, wait.key, wait.label, prompt, provider)
    except errors.GPUGeekError as failure:
        # the status line says what the error says (the cloud's sentences), never its raw answer
        wait.on_event("status", detail=d, expected=wait.estimate, failure=failure)
        raise
    wait.on_event("status", detail=d, expected=wait.estimate)
    return d


def _raise_if_failed(d: TaskDetail, journal: Journal, key: str | None, label: str, prompt: dict | None,
                     provider: texts.Said | None) -> None:
    """A task that failed or was cancelled, raised; a refusal told node by node where the cloud named nodes (the
    sentences journaled, the raw answer stays in the journal and the log)."""
    lines = cloud_errors.explain(d.error_msg, prompt or {}, provider or texts.Said("where_cloud")) \
        if d.status == S_FAILED else []
    if lines:
        if key:
            journal.update(key, error_lines=[line.to_dict() for line in lines])
        log.info("%s: the cloud refused the prompt: %s", label, d.error_msg)
        raise errors.TaskFailedError(key="err_cloud_rejected", values={"label": label}, lines=lines,
                                     task_id=d.prompt_id)
    if d.status == S_FAILED:
        raise errors.TaskFailedError(key="err_task_failed", task_id=d.prompt_id,
                                     values={"label": label, "reason": d.error_msg or texts.text("err_no_reason")})
    if d.status == S_CANCELLED:
        raise errors.TaskCancelledError(key="err_task_cancelled", values={"label": label}, task_id=d.prompt_id)


async def cancel_task(target, prompt_id: str, journal: Journal, key: str | None, why: str,
                      on_event: Callable = lambda *a, **k: None) -> bool:
    """Cancel a task nobody waits for any more, in bounded rounds; journaled ``cancelling``, then
    ``cancelled`` or (every round failed) ``unknown``. Never raises over the reason the wait ended."""
    if key:
        journal.update(key, status=CANCELLING, error=why)
    on_event("cancelling", prompt_id=prompt_id)
    last = None
    for attempt in range(CANCEL_ROUNDS):
        if attempt:
            await asyncio.sleep(CANCEL_PAUSE_S)
        try:
            await target.cancel(prompt_id)
        except Exception as e:  # noqa: BLE001 - the interruption/timeout is what the user must see
            last = e
            log.warning("Cancelling task %s after %s failed (round %d of %d): %s", prompt_id, why, attempt + 1,
                        CANCEL_ROUNDS, e)
            continue
        try:
            status = await settle_after_cancel(target, prompt_id, journal, key, why)
        except Exception:  # noqa: BLE001 - never hides the reason the wait ended
            log.exception("task %s: journaling after the cancel failed", prompt_id)
            status = CANCELLED
        on_event("cancelled" if status == CANCELLED else "ended_before_cancel", prompt_id=prompt_id)
        return True
    if key:
        journal.update(key, status=UNKNOWN, error=f"{why}; the cancel failed ({type(last).__name__}), so the task "
                       "may still run and be paid: check it on the GPUGeek console or with Refresh in the tasks tab")
    on_event("cancel_failed", prompt_id=prompt_id)
    return False


async def cancel_by_hand(target, prompt_id: str, journal: Journal, why: str) -> str:
    """A cancel the user asked for (the tasks tab, the command line): sent, then journaled as the cloud says the task
    is (``settle_after_cancel``). Returns the journal's word."""
    await target.cancel(prompt_id)
    rec = journal.by_prompt_id(prompt_id)
    return await settle_after_cancel(target, prompt_id, journal, rec["key"] if rec else None, why)


async def settle_after_cancel(target, prompt_id: str, journal: Journal, key: str | None, why: str) -> str:
    """After a cancel was accepted: the task's status read once and journaled as the cloud says it. A task that had
    finished before the cancel reached it (a status call that failed until the timeout, a cancel from the tasks tab
    of a task that just ended) is journaled succeeded with its price and every result address, never cancelled: its
    results were paid for. ``cancelling`` while the cloud cannot be asked (the cancel went; how the task ended is not
    known yet: Refresh in the tasks tab reads it). Returns the journal's word."""
    try:
        d = await target.status(prompt_id)
    except (errors.BusyError, errors.TransportError, errors.GPUGeekError) as e:
        log.warning("task %s: its status after the cancel could not be read (%s)", prompt_id, e)
        d = None
    final = d is not None and d.final
    status = job_status(d.status) if final else CANCELLED if d is not None else CANCELLING
    rec = journal.get(key) if key else None
    if rec is not None and (rec.get("status") not in (SUCCEEDED, FAILED, CANCELLED) or status == SUCCEEDED):
        fields = {"status": status, "error": why if status in (CANCELLED, CANCELLING) else (d.error_msg or None)}
        if final:
            fields.update(price=d.origin_price, result_url=d.result_url, queue_ms=d.queue_duration_ms,
                          run_ms=d.run_duration_ms)
        journal.update(key, **fields)
    return status


async def fetch_results(detail: TaskDetail, target, nodes=None, budget: ByteBudget | None = None) -> dict:
    """Download the result files of the given output nodes (all when ``nodes`` is None) in parallel, within one
    memory budget for the whole task (charged as the bytes arrive). A task that names more files than one task may
    bring back is refused first, whichever of them are asked for (the journal holds their addresses)."""
    every = detail.all_urls()
    check_result_count(len(every), detail.prompt_id)
    wanted = [(n, u) for n, u in every if nodes is None or n in nodes]
    budget = budget or ByteBudget()
    datas = await gather_bounded([target.fetch(u, budget=budget) for _, u in wanted], limit=PARALLEL_DOWNLOADS)
    files: dict = {}
    for (n, u), data in zip(wanted, datas):
        files.setdefault(n, []).append((u, data))
    return files


