"""One cloud run, from a plan to downloaded results: upload, submit once, wait, fetch.

Used by the gateway node and the command line alike, always on the task owner's loop (offload/owner.py):
the ``job`` tells of a stop (``job.interrupted``), bounds what may be abandoned (``job.guard``: uploads,
status calls, downloads; never the submit) and carries status to whoever watches (``job.emit``).
ComfyUI is not imported.
"""
from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass, field
from typing import Callable

from . import codec
from . import errors as E
from .journal import CANCELLED, CANCELLING, FAILED, QUEUED, RUNNING, SUCCEEDED, UNKNOWN, Journal, UploadCache
from .owner import Interrupted
from .poll import INTERRUPT_CHECK_S, PollSchedule
from .redact import get_logger
from .transfer import PARALLEL_TRANSFERS, ByteBudget, digest_bytes, gather_bounded, safe_file_name, upload_once
from .wire import CANCELLED as S_CANCELLED
from .wire import FAILED as S_FAILED
from .wire import QUEUED as S_QUEUED
from .wire import SUCCEEDED as S_SUCCEEDED
from .wire import TaskDetail

log = get_logger("gpugeek.run")

# Default wait for a cloud task before it is cancelled (the gateway's timeout_s input overrides it):
# long enough for a queue at peak hours plus a video model's run, short enough that a stuck task does
# not run up a bill overnight.
DEFAULT_TIMEOUT_S = 1800
# While status calls fail (network down), wait this long between tries; the task keeps running remotely.
STATUS_RETRY_S = 2.0
# With a live target (a ComfyUI server's websocket) the status is local state: look at it this often.
LIVE_STATUS_S = 0.02
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


async def sleep_interruptible(seconds: float, interrupted: Callable[[], bool]) -> bool:
    """Sleep, checking ``interrupted`` every 50 ms; True if it fired."""
    end = time.monotonic() + seconds
    while True:
        if interrupted():
            return True
        left = end - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(INTERRUPT_CHECK_S, left))


def fill_crossings(plan: dict, values: dict) -> dict:
    """The cloud prompt with literal crossings written in; loaders are filled by :func:`prepare`."""
    prompt = copy.deepcopy(plan["prompt"])
    for c in plan.get("crossings", []):
        if c["kind"] == "literal":
            for node, name in c["targets"]:
                prompt[node]["inputs"][name] = values.get(c["input"])
    return prompt


async def prepare(plan: dict, values: dict, target, uploads: UploadCache, read_file=None, stats=None,
                  limit: int = PARALLEL_TRANSFERS) -> dict:
    """Upload what crosses in (images, masks, local files) once per content; return the cloud prompt."""
    prompt = fill_crossings(plan, values)
    jobs, where = [], []
    for c in plan.get("crossings", []):
        v = values.get(c["input"])
        if c["kind"] == "url":
            lines = [u.strip() for u in str(v or "").splitlines() if u.strip()]
            if not lines:  # an address on GPUGeek, a file name on a ComfyUI server
                raise E.PlanError(f"The Upload Image node #{c['from'][0]} gave no URL", hint="Run it again.")
            prompt[c["loader"]]["inputs"]["image"] = lines[0]
            if len(lines) > 1:
                _batch_loaders(prompt, c["loader"], lines[1:])
        elif c["kind"] in ("image", "mask"):
            if v is None:
                raise E.PlanError(f"Node #{c['from'][0]} gave no {c['kind']} for the cloud part", hint="Check its inputs.")
            frames = v if getattr(v, "ndim", 0) == (4 if c["kind"] == "image" else 3) else v[None]
            digests = await asyncio.to_thread(lambda fr=frames: [codec.tensor_digest(f) for f in fr])
            for i in range(int(frames.shape[0])):
                digest = digests[i]
                encode = (lambda f=frames[i], k=c["kind"]: codec.encode_mask_png(f) if k == "mask" else codec.encode_png(f))
                jobs.append((digest, encode, f"gpugeek_{digest[:16]}.png"))
                where.append((c, i))
    for f in plan.get("local_files", []):
        if read_file is None:
            continue
        data = await asyncio.to_thread(read_file, f["file"])
        digest = digest_bytes(data)
        jobs.append((digest, data, f"gpugeek_{digest[:16]}_{safe_file_name(f['file'], 'input')}"))
        where.append((f, None))

    urls = await gather_bounded([upload_once(target, uploads, data, name, digest=digest, stats=stats)
                                 for digest, data, name in jobs], limit)
    extra_loaders: dict = {}
    for (spec, i), url in zip(where, urls):
        if i is None:
            prompt[spec["node"]]["inputs"]["image"] = url
            continue
        if i == 0:
            prompt[spec["loader"]]["inputs"]["image"] = url
        else:  # a batch crosses as one loader per frame, joined again in the cloud
            extra_loaders.setdefault(spec["loader"], []).append(url)
    for loader, more in extra_loaders.items():
        _batch_loaders(prompt, loader, more)
    await register_external(prompt, target, set(urls), uploads)
    return prompt


async def register_external(prompt: dict, target, ours: set, uploads: UploadCache | None = None) -> None:
    """Call 2 for addresses that are not the platform's own storage (a user's URL in a cloud LoadImage), never
    for what the pack uploaded (``ours``, this run's uploads, and the upload cache's addresses, read only when
    some address is not this run's); best effort: a failure is logged, the run goes on (GPUGEEK_API.md)."""
    register = getattr(target, "register", None)
    if register is None:
        return
    candidates = [u for u in ((node.get("inputs") or {}).get("image") for node in prompt.values()
                              if node.get("class_type") in ("LoadImage", "LoadImageMask"))
                  if isinstance(u, str) and u.startswith(("http://", "https://")) and u not in ours]
    if candidates and uploads is not None:
        cached = uploads.urls()
        candidates = [u for u in candidates if u not in cached]
    for url in candidates:
        try:
            await register(url)
        except E.GPUGeekError as e:
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


def estimate_for(journal: Journal, plan: dict, workflow_id=None) -> dict | None:
    """The one estimate of a cloud part's price and run time (the editor, the daily limit, the poll
    schedule and the node's progress all use it): same part, else same shape, else same workflow."""
    return journal.estimate(plan.get("hash"), plan.get("shape"), str(workflow_id) if workflow_id else None)


def check_spend(journal: Journal, limit: float | None, estimate: dict | None) -> None:
    if not limit:
        return
    spent = journal.spent_today()
    price = (estimate or {}).get("price")
    if spent + (price or 0) > limit or spent >= limit:
        raise E.SpendLimitError(
            f"Today's GPUGeek spending is {spent:g} and this run is expected to cost {price or 0:g}, which would "
            f"pass the daily limit of {limit:g}")


async def run_plan(plan: dict, *, job, target, journal: Journal, uploads: UploadCache, values: dict,
                   workflow_id: int | None, timeout_s: float = DEFAULT_TIMEOUT_S, read_file=None,
                   daily_limit: float | None = None, label: str = "GPUGeek Cloud Execute",
                   meta: dict | None = None, fetch_nodes=None) -> RunOutcome:
    t0 = time.monotonic()
    stats: dict = {}
    estimate = estimate_for(journal, plan, workflow_id)
    check_spend(journal, daily_limit, estimate)
    job.emit("uploading")
    prompt = await job.guard(prepare(plan, values, target, uploads, read_file, stats))
    t_up = time.monotonic()
    key = journal.begin(plan_hash=plan.get("hash"), shape_hash=plan.get("shape"), workflow_id=str(workflow_id or ""),
                        gateway=label,
                        target=getattr(target, "name", "?"), **(meta or {}))
    prompt_id = await submit_once(target, prompt, workflow_id, journal, key, label)
    job.task_id = prompt_id
    job.emit("submitted", prompt_id=prompt_id)
    detail = await wait_task(prompt_id, target=target, journal=journal, key=key, timeout_s=timeout_s,
                             interrupted=job.interrupted, on_event=job.emit, estimate=estimate, label=label,
                             stop_reason=lambda: job.stop_reason)
    t_done = time.monotonic()
    files = await job.guard(fetch_results(detail, target, fetch_nodes))
    t_dl = time.monotonic()
    return RunOutcome(prompt_id, detail, files, key, stats.get("uploaded_bytes", 0),
                      {"upload_s": t_up - t0, "wait_s": t_done - t_up, "download_s": t_dl - t_done})


async def submit_once(target, prompt: dict, workflow_id, journal: Journal, key: str, label: str) -> str:
    """Send the submit and read its answer to the end, whatever happens to the prompt that asked for it (the
    owner's loop is never cancelled by ComfyUI). The id is journaled before anything else happens."""
    try:
        prompt_id = await target.submit(prompt, workflow_id)
    except E.SubmitUnknownError as e:
        journal.update(key, status=UNKNOWN, error=e.to_dict()["text"])
        log.warning("%s: %s", label, e)
        raise
    except E.GPUGeekError as e:
        journal.update(key, status=FAILED, error=e.to_dict()["text"], price=0)
        raise
    except BaseException as e:  # the process is going down mid-submit: the answer is lost to us
        journal.update(key, status=UNKNOWN, error=str(E.SubmitUnknownError(
            f"The submit was sent but its answer was not read ({type(e).__name__})", call="submit")))
        raise
    journal.update(key, prompt_id=prompt_id, status=QUEUED)
    return prompt_id


async def wait_task(prompt_id: str, *, target, journal: Journal, key: str | None, timeout_s: float,
                    interrupted: Callable[[], bool], on_event: Callable, estimate: dict | None = None,
                    label: str = "GPUGeek Cloud Execute", cancel_on_exit: bool = True,
                    stop_reason: Callable[[], str | None] = lambda: None) -> TaskDetail:
    """Poll until the task ends. The run's own task (``cancel_on_exit``) is cancelled remotely on a stop,
    a timeout, or anything else that ends the wait early (the prompt that waited for it ended, a status call
    that cannot succeed): a paid task is never left running behind the user's back. A reader of somebody's
    task (Load Result, the command line) only stops reading."""
    hist = estimate
    exp_ms, spread = (hist or {}).get("run_ms"), (hist or {}).get("run_ms_spread")
    sched = PollSchedule(exp_ms / 1000.0 if exp_ms else None, spread / 1000.0 if spread else None)
    deadline = time.monotonic() + (timeout_s if timeout_s and timeout_s > 0 else DEFAULT_TIMEOUT_S)
    last_status = None
    try:
        while True:
            if interrupted():
                raise Interrupted(prompt_id)
            try:
                d = await _unless_interrupted(target.status(prompt_id), interrupted)
            except (E.BusyError, E.TransportError) as e:
                log.warning("%s: status of task %s failed (%s); still waiting", label, prompt_id, e.message)
                on_event("status_error", prompt_id=prompt_id, error=e.message)
                d, delay = None, STATUS_RETRY_S
            else:
                delay = sched.next_delay(d)
                if getattr(target, "live", False):
                    # the target follows the task over a websocket: a status is read locally, not requested
                    delay = min(delay, LIVE_STATUS_S)
                if d.status != last_status:
                    last_status = d.status
                    if key:
                        journal.update(key, status=_jstatus(d.status), queue_ms=d.queue_duration_ms,
                                       run_ms=d.run_duration_ms)
                if d.final:
                    on_event("status", detail=d, expected=hist)
                    return _finish(d, journal, key, label)
                if interrupted():
                    raise Interrupted(prompt_id)
                on_event("status", detail=d, expected=hist)
            if time.monotonic() >= deadline:
                raise E.TaskTimeoutError(f"{label}: the cloud task did not finish within {timeout_s:g} s",
                                         task_id=prompt_id)
            delay = min(delay, max(0.0, deadline - time.monotonic()))
            if await sleep_interruptible(delay, interrupted):
                raise Interrupted(prompt_id)
    except (E.TaskFailedError, E.TaskCancelledError):
        raise  # the task has ended by itself
    except BaseException as e:
        if isinstance(e, Interrupted) and e.task_id is None:
            e.task_id = prompt_id
        if not cancel_on_exit:
            raise
        why = stop_reason() or ("interrupted" if isinstance(e, (Interrupted, asyncio.CancelledError)) or
                                type(e).__name__ == "InterruptProcessingException" else
                                "timeout" if isinstance(e, E.TaskTimeoutError) else
                                f"the wait ended: {type(e).__name__}")
        cancelled = await cancel_task(target, prompt_id, journal, key, why, on_event)
        if isinstance(e, E.TaskTimeoutError):
            e.message += " and was cancelled" if cancelled else "; cancelling it failed, so it may still run"
        raise


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


def _jstatus(s: int) -> str:
    return {1: QUEUED, 2: RUNNING, 3: SUCCEEDED, 4: FAILED, 5: CANCELLED}.get(s, UNKNOWN)


def _finish(d: TaskDetail, journal: Journal, key: str | None, label: str) -> TaskDetail:
    if key:
        journal.update(key, status=_jstatus(d.status), queue_ms=d.queue_duration_ms, run_ms=d.run_duration_ms,
                       price=d.origin_price, result_url=d.result_url, error=d.error_msg or None)
    if d.status == S_FAILED:
        raise E.TaskFailedError(f"{label}: the cloud run failed: {d.error_msg or 'no reason given'}",
                                task_id=d.prompt_id)
    if d.status == S_CANCELLED:
        raise E.TaskCancelledError(f"{label}: the cloud task was cancelled", task_id=d.prompt_id)
    return d


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
        if key:
            journal.update(key, status=CANCELLED, error=why)
        on_event("cancelled", prompt_id=prompt_id)
        return True
    if key:
        journal.update(key, status=UNKNOWN, error=f"{why}; the cancel failed ({type(last).__name__}), so the task "
                       "may still run and be paid: check it on the GPUGeek console or with Refresh in the tasks tab")
    on_event("cancel_failed", prompt_id=prompt_id)
    return False


async def fetch_results(detail: TaskDetail, target, nodes=None, budget: ByteBudget | None = None) -> dict:
    """Download the result files of the given output nodes (all when ``nodes`` is None) in parallel,
    within one memory budget for the whole task."""
    wanted = [(n, u) for n, u in detail.all_urls() if nodes is None or n in nodes]
    budget = budget or ByteBudget()

    async def one(url):
        data = await target.fetch(url)
        budget.take(len(data))
        return data
    datas = await gather_bounded([one(u) for _, u in wanted])
    files: dict = {}
    for (n, u), data in zip(wanted, datas):
        files.setdefault(n, []).append((u, data))
    return files


def status_text(d: TaskDetail, expected: dict | None = None, lang: str = "en") -> str:
    """One line for the node: queued (position N of M), running (elapsed), done (time, price)."""
    zh = lang.startswith("zh")
    if d.status == S_QUEUED:
        if zh:
            return f"排队中：第 {d.current_position} 位，共 {d.queue_size} 个" if d.current_position else "排队中"
        return f"Queued: position {d.current_position} of {d.queue_size}" if d.current_position else "Queued"
    if d.status == S_SUCCEEDED:
        price = f", price {d.origin_price:g}" if d.origin_price is not None else ""
        if zh:
            return f"完成：运行 {d.run_duration_ms / 1000:.1f} 秒" + (f"，费用 {d.origin_price:g}" if d.origin_price is not None else "")
        return f"Done: ran {d.run_duration_ms / 1000:.1f} s{price}"
    if d.status == S_FAILED:
        return ("失败：" if zh else "Failed: ") + (d.error_msg or "")
    if d.status == S_CANCELLED:
        return "已取消" if zh else "Cancelled"
    run = d.run_duration_ms / 1000
    exp = f" of ~{expected['run_ms'] / 1000:.0f} s" if expected and expected.get("run_ms") else ""
    return (f"运行中：{run:.1f} 秒" if zh else f"Running: {run:.1f} s{exp}")

