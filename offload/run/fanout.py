"""A cloud part run as one task, or as ``runs`` tasks at once (fan-out): in task i every seed of the cloud
part is the user's value plus i. Inputs are uploaded once per target; the daily limit counts every task
before any is submitted; each task goes to the least busy target of the pool; the first task that fails
cancels the others (their remote tasks too) and names its run; the tasks that finished stay journaled."""
from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import os
import time
import uuid

from .. import catalog
from .. import errors
from ..errors import SpendLimitError
from ..journal import PROCESS_TOKEN, Journal, UploadCache
from ..targets.pool import Pool
from ..wire import SUCCEEDED, TaskDetail
from .inputs import prepare
from . import spend
from .spend import check_spend
from .task import (DEFAULT_TIMEOUT_S, RunOutcome, estimate_for, fetch_results, log, provider_of, submit_once,
                   wait_task)

# Inputs that seed a sampler: in the runs of a fan-out, run i adds i to each of them.
SEED_INPUTS = ("seed", "noise_seed")
# Most tasks one gateway (or a whole workflow) may start at once: a careless click or a cross-site post can cost at most
# eight tasks, and eight is what the runs picker beside Run offers at most (issue 38).
MAX_RUNS = 8


def with_seed_offset(prompt: dict, offset: int) -> dict:
    """The cloud prompt of run ``offset``: every literal seed plus the offset (links untouched)."""
    if not offset:
        return prompt
    out = copy.deepcopy(prompt)
    for node in out.values():
        inputs = node.get("inputs") or {}
        for name in SEED_INPUTS:
            v = inputs.get(name)
            if isinstance(v, int) and not isinstance(v, bool):
                inputs[name] = v + offset
    return out


def result_key(prompt: dict, workflow_id, target) -> str:
    """What a task makes, as a key: its exact cloud prompt (seeds, texts, the uploads' addresses), the workflow id and
    the target (its base URL or server). Prefixes, titles and positions are not in a cloud prompt (plan/cloud_prompt)."""
    where = getattr(target, "url", None) or getattr(target, "base_url", None) or getattr(target, "name", "?")
    text = json.dumps([prompt, str(workflow_id or ""), str(where)], sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def times_runs(estimate: dict | None, runs: int) -> dict | None:
    """The estimate of ``runs`` tasks at once: the price adds up, the time does not."""
    if not estimate or runs == 1:
        return estimate
    price = estimate.get("price")
    return {**estimate, "price": price * runs if price is not None else None, "runs_at_once": runs}


async def run_plan(plan, *, job, target, journal: Journal, uploads: UploadCache, values: dict,
                   workflow_id: int | None, timeout_s: float = DEFAULT_TIMEOUT_S, read_file=None,
                   daily_limit: float | None = None, label: str = "GPUGeek Cloud Execute",
                   meta: dict | None = None, fetch_nodes=None, models=None) -> RunOutcome:
    """One task on one target (the command line, a gateway with ``runs`` = 1)."""
    outcomes = await run_runs(plan, job=job, pool=Pool([target]), journal=journal, uploads=uploads, values=values,
                              workflow_id=workflow_id, timeout_s=timeout_s, read_file=read_file,
                              daily_limit=daily_limit, label=label, meta=meta, fetch_nodes=fetch_nodes, models=models)
    return outcomes[0]


async def run_runs(plan, *, job, pool: Pool, journal: Journal, uploads: UploadCache, values: dict, workflow_id,
                   timeout_s: float = DEFAULT_TIMEOUT_S, read_file=None, daily_limit: float | None = None,
                   label: str = "GPUGeek Cloud Execute", meta: dict | None = None, fetch_nodes=None,
                   runs: int = 1, budget=None, estimate=None, on_status=None, models=None) -> list[RunOutcome]:
    """``fetch_nodes``: the output nodes whose files each run downloads as soon as its task ends (None: all),
    within ``budget`` (one memory budget for every run's files). ``estimate``: the part's (``estimate_for``), when
    the caller has it. ``on_status`` is given each status a run's task is seen in; what it raises is not the
    run's concern. ``models``: this machine's models (offload/run/models.py), made available on each target."""
    runs = max(1, min(MAX_RUNS, int(runs or 1)))
    estimate = estimate if estimate is not None else estimate_for(journal, plan, workflow_id)
    check_spend(journal, daily_limit, times_runs(estimate, runs))
    job.emit("uploading")
    stats: dict = {}
    prepared: dict = {}   # target -> its cloud prompt, being made or made (uploads go to each target once)

    async def prompt_for(target) -> dict:
        if id(target) not in prepared:
            prepared[id(target)] = asyncio.ensure_future(prepare(plan, values, target, uploads, read_file, stats,
                                                                 models=models, emit=job.emit,
                                                                 workflow_id=workflow_id))
        return await job.guard(asyncio.shield(prepared[id(target)]))

    group = {"group": uuid.uuid4().hex[:12], "runs": runs} if runs > 1 else {}
    base_meta = {**(meta or {}), **group}

    refused: list = []   # the runs the daily limit left out

    async def _paid_before(i: int) -> RunOutcome | None:
        """Run ``i``'s results where this very cloud prompt already succeeded on this target (a queue after ComfyUI
        restarted or dropped its cache, with only a prefix or a title changed): fetched from the task that made
        them, never paid again. None where there is none, or its files are gone (then it runs)."""
        if len(pool.targets) != 1:
            return None
        target = pool.targets[0]
        prompt = with_seed_offset(await prompt_for(target), i)
        rec = journal.result_of(result_key(prompt, workflow_id, target))
        if rec is None:
            return await _left_running(i, target, prompt)
        detail = TaskDetail(prompt_id=str(rec["prompt_id"]), status=SUCCEEDED, result_url=rec["result_url"],
                            origin_price=rec.get("price"), run_duration_ms=rec.get("run_ms") or 0,
                            queue_duration_ms=rec.get("queue_ms") or 0)
        try:
            files = await job.guard(fetch_results(detail, target, None, budget))
        except errors.GPUGeekError as e:   # gone (expired, deleted), or unreadable: it runs again, as asked
            log.info("%s: the results of task %s are gone (%s): it runs again", label, detail.prompt_id, e)
            return None
        job.task_id = job.task_id or detail.prompt_id
        _run_events(job.emit, i, runs)("paid_before", prompt_id=detail.prompt_id)
        return RunOutcome(detail.prompt_id, detail, files, rec["key"], 0, {"wait_s": 0.0, "download_s": 0.0})

    async def _wait(i: int, target, prompt: dict, prompt_id: str, key: str, emit) -> TaskDetail:
        """Run ``i``'s task until it ends, journaled at ``key``; a stop, a timeout or a failed wait cancels it."""
        return await wait_task(prompt_id, target=target, journal=journal, key=key, timeout_s=timeout_s,
                               interrupted=job.interrupted, on_event=emit, estimate=estimate,
                               label=_run_label(label, i, runs), stop_reason=lambda: job.stop_reason,
                               prompt=prompt, provider=provider_of(target, workflow_id),
                               lists_key=catalog.key_of_target(target, workflow_id))

    async def _taken(prompt_id: str, detail: TaskDetail, target, key: str, uploaded: int, t0: float,
                     t_done: float) -> RunOutcome:
        """A run's outcome: its ended task's files fetched within the task's budget."""
        files = await job.guard(fetch_results(detail, target, fetch_nodes, budget))
        return RunOutcome(prompt_id, detail, files, key, uploaded,
                          {"wait_s": t_done - t0, "download_s": time.monotonic() - t_done})

    async def _left_running(i: int, target, prompt: dict) -> RunOutcome | None:
        """Run ``i``'s task where a process now gone left this very cloud prompt queued or running on this target
        (ComfyUI killed while it ran, or before its queue reached a part sent ahead): waited for and taken, as this
        run's own (a stop cancels it), never submitted again. None where there is none, or it did not succeed."""
        rec = journal.left_running(result_key(prompt, workflow_id, target))
        if rec is None:
            return None
        journal.update(rec["key"], proc=PROCESS_TOKEN, pid=os.getpid())   # this process waits for it now
        pid, t0 = str(rec["prompt_id"]), time.monotonic()
        job.task_id = job.task_id or pid
        emit = _telling_status(_run_events(job.emit, i, runs), on_status)
        emit("left_running", prompt_id=pid)
        try:
            detail = await _wait(i, target, prompt, pid, rec["key"], emit)
        except (errors.TaskFailedError, errors.TaskCancelledError, errors.NotFoundError) as e:
            log.info("%s: task %s left by a stopped ComfyUI did not succeed (%s): it runs again", label, pid, e)
            return None
        return await _taken(pid, detail, target, rec["key"], 0, t0, time.monotonic())

    async def one(i: int) -> RunOutcome | None:
        t0 = time.monotonic()
        kept = await _paid_before(i)
        if kept is not None:
            return kept
        # the day's room, taken before the submit and given back once the task's price is journaled (run/spend.py);
        # a run the limit leaves out is not sent (None), the runs that were sent are delivered
        try:
            lease = await spend.take(journal, daily_limit, lambda: estimate_for(journal, plan, workflow_id),
                                     job.interrupted, lambda: job.emit("price_wait"))
        except SpendLimitError as e:
            if runs == 1:
                raise
            refused.append(e)
            return None
        try:
            # on a pool, choose and submit in turn (each choice sees the previous submit); one target takes all at once
            async with pool.lock if len(pool.targets) > 1 else contextlib.nullcontext():
                target = await pool.choose()
                prompt = with_seed_offset(await prompt_for(target), i)
                # a pool's task is journaled with the server it went to (refresh, cancel and Load Result go there)
                where = {"target_url": target.url} if getattr(target, "url", None) else {}
                key = journal.begin(plan_hash=plan.hash, shape_hash=plan.shape, form_hash=plan.form, work=plan.work,
                                    workflow_id=str(workflow_id or ""), gateway=label,
                                    target=getattr(target, "name", "?"),
                                    result_key=result_key(prompt, workflow_id, target),
                                    **{**base_meta, **where, **({"run": i} if runs > 1 else {})})
                prompt_id = await submit_once(target, prompt, workflow_id, journal, key, _run_label(label, i, runs))
            job.task_id = job.task_id or prompt_id
            emit = _telling_status(_run_events(job.emit, i, runs), on_status)
            emit("submitted", prompt_id=prompt_id)
            detail = await _wait(i, target, prompt, prompt_id, key, emit)
        finally:
            lease.release()
        return await _taken(prompt_id, detail, target, key, stats.get("uploaded_bytes", 0), t0, time.monotonic())

    try:
        outcomes = [o for o in await _all_or_none([asyncio.ensure_future(one(i)) for i in range(runs)]) if o]
        if not outcomes:   # the limit left every run out: nothing was sent
            raise refused[0]
        if refused:   # the runs the limit left out are said; the ones sent are delivered (paid: never dropped)
            job.emit("limit_left_out", left=len(refused), asked=runs)
        return outcomes
    finally:
        await _abandon(prepared.values())


async def _abandon(futures) -> None:
    """Uploads the runs shared (shielded, so one run's Stop leaves them to the others) end with the runs: one still
    going when they ended (a Stop, a failure) is cancelled here and its end read, never left to fail unseen once
    the session closes under it ("Task exception was never retrieved" in the log, at some later collection)."""
    left = [f for f in futures if not f.done()]
    for f in left:
        f.cancel()
    await asyncio.gather(*left, return_exceptions=True)


def _run_label(label: str, i: int, runs: int) -> str:
    return label if runs == 1 else f"{label} (run {i + 1} of {runs})"


def _telling_status(emit, on_status):
    if on_status is None:
        return emit

    def told(kind, **info):
        if kind == "status" and info.get("detail") is not None:
            try:
                on_status(info["detail"])
            except Exception:  # noqa: BLE001 - a helper's failure never touches the paid task
                log.exception("a status hook failed")
        emit(kind, **info)
    return told


def _run_events(emit, i: int, runs: int):
    if runs == 1:
        return emit
    return lambda kind, **info: emit(kind, run=i, runs=runs, **info)


async def _all_or_none(tasks: list) -> list:
    """Every task's result in order; the first failure cancels the rest (each cancels its remote task) and is
    raised once they have ended, so no paid task is left behind."""
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    # every run that ended with an error is read (runs a Stop ended together fail in the same moment), the first raised
    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
    if not failed:
        return [t.result() for t in tasks]
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    raise failed[0].exception()


def combined(outcomes: list) -> tuple[TaskDetail, dict]:
    """The runs' results as one task's: each output node's files in run order (one batch on the outputs)."""
    first = outcomes[0].detail
    if len(outcomes) == 1:
        return first, dict(outcomes[0].files)
    urls: dict = {}
    files: dict = {}
    sources: dict = {}
    for o in outcomes:
        for node, got in o.detail.result_url.items():
            urls.setdefault(node, []).extend(got)
            sources.update({u: o.prompt_id for u in got})
        for node, got in o.files.items():
            files.setdefault(node, []).extend(got)
    price = [o.detail.origin_price for o in outcomes if o.detail.origin_price is not None]
    detail = TaskDetail(prompt_id=",".join(o.prompt_id for o in outcomes), status=first.status, result_url=urls,
                        run_duration_ms=max(o.detail.run_duration_ms for o in outcomes),
                        queue_duration_ms=max(o.detail.queue_duration_ms for o in outcomes),
                        origin_price=sum(price) if price else None, sources=sources)
    return detail, files

