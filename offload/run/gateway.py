"""A gateway's cloud run, on the task owner's loop: lead a task (run it, deliver its images) or follow one
that a merged gateway leads (take this gateway's images from it). The node (nodes/gateway.py) only starts
one of these as a job and awaits it; results are tensors, previews and the task id.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .. import batch, codec, config, errors
from ..plan import GATEWAY_OUTPUTS, LEAD_INPUT, MASK, PASS, GatewayPlan
from ..plan.cloud_prompt import compact_saves
from ..targets import open_target, target_of
from ..targets.pool import open_pool, split_targets
from ..transfer import IMAGE_EXTS, gather_bounded, safe_file_name, save_into
from ..transport import PARALLEL_DOWNLOADS, ByteBudget
from ..wire import RUNNING, SUCCEEDED, TaskDetail
from . import ahead
from ..owner import Interrupted
from ..redact import get_logger
from .fanout import MAX_RUNS, combined, run_runs, times_runs
from .models import template_models
from .task import DEFAULT_TIMEOUT_S, RunOutcome, estimate_for, fetch_results

log = get_logger("gpugeek.gateway")

# Where the cloud's files are kept, under ComfyUI's output folder (previews point there).
RESULTS_SUBFOLDER = "gpugeek"
# Outputs decoded at once (each output's files download in parallel on their own).
PARALLEL_OUTPUTS = 4
# Threads that decode result files at once: every core (the decoders let go of the GIL), at least two.
DECODE_THREADS = max(2, min(4, os.cpu_count() or 2))


@dataclass
class Delivered:
    outputs: list                       # one tensor (or None) per gateway output slot (GATEWAY_OUTPUTS)
    previews: list = field(default_factory=list)
    saved: list = field(default_factory=list)
    task_id: str = ""
    detail: TaskDetail | None = None
    uploaded_bytes: int = 0
    task_ids: list = field(default_factory=list)   # every task of a fan-out, in run order
    fetched: dict = field(default_factory=dict)     # task id -> bytes of its files brought back
    shapes: dict = field(default_factory=dict)      # output node -> [images, height, width] decoded from it
    transfer: str = "lossless"                      # how the images came back (config.TRANSFERS)

    @property
    def bytes_down(self) -> int:
        """The bytes of every file brought back."""
        return sum(self.fetched.values())


async def lead(job, *, cfg, where: str, plan: GatewayPlan, values: dict, passthrough: dict, workflow_id, timeout_s: float,
               journal, uploads, read_file, output_dir, label: str, meta: dict, runs: int = 1,
               transfer: str = "lossless", sent_ahead=None, models=None) -> Delivered:
    """Run the cloud part as one task (or ``runs`` tasks at once, on a pool of servers where ``where`` names
    several) and deliver this gateway's images, the runs' in order as one batch; merged gateways' files are
    held by the owner until each of them took its own (and, for a whole workflow, its output nodes' files
    until each output node took its own). ``sent_ahead``: this part's entry sent ahead at queue time (ahead.Entry),
    whose task is taken instead of submitting one."""
    members = plan.followers + (list(plan.user_outputs) if plan.whole else [])
    estimate = estimate_for(journal, plan, workflow_id)
    reserves = Reserves(journal.result_shape(plan.hash, plan.shape), estimate, plan, runs)
    budget = ByteBudget()   # one for the task's every file: its runs', its pool's servers', its outputs'
    try:
        async with open_pool(cfg, where, open_target) as pool:
            # the part sent ahead when its prompt was queued (offload/run/ahead.py): its task's files, not a new task
            outcomes = await taken_ahead(job, sent_ahead) if sent_ahead is not None else None
            if outcomes is None:
                outcomes = await run_runs(plan, job=job, pool=pool, journal=journal, uploads=uploads, values=values,
                                          workflow_id=workflow_id, timeout_s=timeout_s, read_file=read_file,
                                          models=models,
                                          daily_limit=cfg.daily_limit, label=label, meta=meta, runs=runs,
                                          # merged gateways read this task's files too, and a fan-out's runs end
                                          # one by one: each run fetches its files as soon as it ends; otherwise
                                          # each file is fetched by deliver() and decoded as soon as it arrives
                                          fetch_nodes=None if members or runs > 1 else set(), budget=budget,
                                          estimate=estimate, on_status=reserves.start)
            detail, files = combined(outcomes)
            out = await job.guard(deliver(plan, passthrough, detail, files, pool, output_dir, reserves=reserves,
                                          budget=budget))
    finally:
        reserves.close()
    ran = len(outcomes)   # fewer than ``runs`` where the daily limit left some out
    shapes = {node: [n // ran, h, w] for node, (n, h, w) in out.shapes.items() if n % ran == 0}
    for i, o in enumerate(outcomes):   # the bytes moved: each run's files down, the inputs up once
        journal.update(o.journal_key, files=[p for p in out.saved if Path(p).name.startswith(o.prompt_id)],
                       bytes_down=out.fetched.get(o.prompt_id, 0), bytes_up=o.uploaded_bytes if i == 0 else 0,
                       result_shape=shapes)
    if members:
        job.owner.share(detail.prompt_id, files, members)
    out.uploaded_bytes = outcomes[0].uploaded_bytes
    out.task_ids = [o.prompt_id for o in outcomes]
    out.transfer = transfer
    return out


async def follow(job, *, cfg, plan: GatewayPlan, task_id: str, passthrough: dict, journal, output_dir, member: str,
                 target_override: str = "") -> Delivered:
    """A gateway merged into another's task: its images from that task."""
    detail, files = await files_of(job, cfg=cfg, task_id=task_id, nodes=set(plan.saves), member=member,
                                   journal=journal, target_override=target_override)
    return await job.guard(deliver(plan, passthrough, detail, files, None, output_dir, save_user_outputs=False))


async def files_of(job, *, cfg, task_id: str, nodes: set, member: str, journal, target_override: str = ""):
    """The files of ``nodes`` of a task another node led (a merged gateway's, a whole workflow's output
    node's): held by the owner when the leading gateway fetched them, else fetched again from the journal's
    result addresses. Returns (detail, {node: [(url, bytes)]})."""
    files = job.owner.take(task_id, member, nodes)
    if files is not None:  # the leading gateway fetched every file: nothing to fetch, no session needed
        return TaskDetail(prompt_id=task_id, status=SUCCEEDED), files
    outcomes = []   # a fan-out's task id is its runs' ids: each is fetched from where its record says it ran
    budget = ByteBudget()   # one for every run's files
    for pid in task_id.split(","):
        rec = journal.by_prompt_id(pid) or {}
        detail = TaskDetail(prompt_id=pid, status=SUCCEEDED, result_url=rec.get("result_url") or {})
        async with open_target(cfg, rec.get("target_url") or target_override or None) as target:
            outcomes.append(RunOutcome(pid, detail, await job.guard(fetch_results(detail, target, nodes, budget))))
    return combined(outcomes)


# How long before a cloud part's expected end its batches are made ahead (``Reserves``): enough to fault in
# MAX_RESERVE_BYTES (~0.25 s a GB here) between two of the dense polls around the end.
RESERVE_LEAD_S = 1.5
# Makes the batches ahead, one at a time (each is mostly the kernel's work, off the GIL).
_RESERVER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpugeek-reserve")


class Reserves(dict):
    """Output node -> a future of that output's batch tensor, made ahead (batch.reserve) for the outputs whose
    shape the same cloud part gave before (``shape``: the journal's ``result_shape``, same part or same shape).
    Made once a task runs and is within RESERVE_LEAD_S of its expected end (``start``, called on each status;
    once made, nothing more): not while it queues or runs long, which would hold the memory, nor after it
    ended, when the decoders fault the memory in as fast. A shape that turns out different only costs the
    memory for those moments: the batch is then made when its files come. ``close`` drops what was not used."""

    def __init__(self, shape: dict | None, estimate: dict | None, plan: GatewayPlan, runs: int):
        super().__init__()
        shape = shape if isinstance(shape, dict) else {}
        self._wanted = {o.save: shape[o.save] for o in plan.outputs if o.kind != PASS and _is_shape(shape.get(o.save))}
        self._runs = runs
        self._expected_ms = (estimate or {}).get("run_ms")

    def start(self, detail: TaskDetail) -> None:
        if not self._wanted or detail.status != RUNNING:
            return
        if self._expected_ms and self._expected_ms - (detail.run_duration_ms or 0) > RESERVE_LEAD_S * 1000:
            return
        try:
            for node, (n, h, w) in self._wanted.items():
                self[node] = _RESERVER.submit(batch.reserve, n * self._runs, h, w)
                self[node].shape = (n * self._runs, h, w, 3)   # the decoder waits for it only if its files fit
        except RuntimeError:  # the interpreter is shutting down: nothing is made ahead
            pass
        self._wanted = {}

    def close(self) -> None:
        for fut in self.values():
            fut.cancel()
        self.clear()
        self._wanted = {}


def _is_shape(v) -> bool:
    return isinstance(v, list) and len(v) == 3 and all(isinstance(x, int) and x > 0 for x in v)


async def deliver(plan: GatewayPlan, passthrough: dict, detail: TaskDetail, files: dict, target, output_dir,
                  save_user_outputs: bool = True, reserves: dict | None = None,
                  budget: ByteBudget | None = None) -> Delivered:
    """Decode each output's files into tensors (fetching what is not here yet, each file decoded as soon as
    it arrives, on every core), save the cloud's files into the output folder and list them as previews. Each
    file is written while the others download and decode, so the writes do not wait for the decoding nor
    the tensors for the writes. The bytes are released when this returns. ``reserves``: output node -> a future
    of a batch tensor made ahead (``Reserves``). ``budget``: the task's, which the files already here were charged
    to (one across its runs and servers); those fetched here are charged to it as they arrive."""
    d = _Delivery(plan, detail, files, target, output_dir, save_user_outputs, reserves, budget)
    d.pass_through(passthrough)
    try:
        d.save_what_is_here()
        await d.decode_and_fetch()
        paths = await d.written()
    finally:
        d.close()
    previews, saved = _listed(d.kept, d.files, paths)
    return Delivered(d.outs, previews, saved, detail.prompt_id, detail, fetched=_bytes_by_task(d.files, detail),
                     shapes=d.shapes)


class _Delivery:
    """One ``deliver``: the files (those not here yet fetched into it as they arrive), the threads that decode
    and write them, the writes under way, and each output's tensor and shape."""

    def __init__(self, plan: GatewayPlan, detail: TaskDetail, files: dict, target, output_dir,
                 save_user_outputs: bool, reserves: dict | None, budget: ByteBudget | None = None):
        self.plan, self.detail, self.target = plan, detail, target
        self.files = dict(files)
        self.reserves = reserves or {}
        self.outs = [None] * len(GATEWAY_OUTPUTS)
        self.shapes: dict = {}
        self.user_outputs = list(plan.user_outputs) if save_user_outputs else []
        self.kept = plan.saves + self.user_outputs   # the outputs' files, in the order they are listed
        self.folder = Path(output_dir) / RESULTS_SUBFOLDER
        self.budget = budget or ByteBudget()
        self.writes: dict = {}   # (node, index) -> the write of that file (its path)
        self.loop = asyncio.get_running_loop()
        # each file decoded as soon as it arrives while the next ones download, on every core where the decoder
        # lets go of the GIL (codec.parallel_decoding), else on one thread with pyspng
        threads = DECODE_THREADS if codec.parallel_decoding() else 1
        self.decoder = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gpugeek-decode")
        self.writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpugeek-save")

    def pass_through(self, passthrough: dict) -> None:
        """Outputs that pass one of the gateway's own inputs through take it as it is."""
        for o in self.plan.outputs:
            if o.kind == PASS:
                self.outs[o.slot] = passthrough.get(o.input)

    def save(self, node, i: int, url: str, data: bytes) -> None:
        """Write one file into the output folder (once), in the writer's thread."""
        if node in self.kept and (node, i) not in self.writes:
            self.writes[(node, i)] = self.loop.run_in_executor(self.writer, _save_one, self.folder, node, i, url,
                                                               data, self.detail)

    def save_what_is_here(self) -> None:
        """Files already here (a merged gateway's): written while they decode."""
        for node, got in self.files.items():
            for i, (url, data) in enumerate(got or []):
                self.save(node, i, url, data)

    async def decode_and_fetch(self) -> None:
        """Every output decoded (and its files fetched as it decodes), and the whole workflow's output nodes'
        files fetched, a few outputs at once."""
        await gather_bounded([self.decode(o) for o in self.plan.outputs if o.kind != PASS]
                             + [self.fetch(n) for n in self.user_outputs if n not in self.files],
                             limit=PARALLEL_OUTPUTS)

    async def fetch(self, node, dec=None) -> None:
        """A node's files, fetched in parallel; each counted, written and (with ``dec``) decoded as it arrives."""
        urls = list(self.detail.result_url.get(node, []))
        got = [None] * len(urls)

        async def one(i, url):
            data = await self.target.fetch(url, budget=self.budget)
            got[i] = (url, data)
            self.save(node, i, url, data)
            if dec is not None:
                await self.loop.run_in_executor(self.decoder, dec.add, i, data)
        await gather_bounded([one(i, u) for i, u in enumerate(urls)], limit=PARALLEL_DOWNLOADS)
        self.files[node] = got

    async def decode(self, o) -> None:
        """One output's files into its tensor (a batch made ahead where there is one for it)."""
        node = o.save
        have = self.files.get(node)
        count = len(have) if have is not None else len(self.detail.result_url.get(node, []))
        if not count:
            raise errors.ResultError(f"The cloud task returned no file for {GATEWAY_OUTPUTS[o.slot]}",
                                     task_id=self.detail.prompt_id, call="results")
        # one image a file, as the gateway's savers write them (SaveImage; compact: RebatchImages then
        # SaveAnimatedWEBP), counted from each file's header as it arrives; the batch made ahead (``reserves``)
        # is taken when the first file is decoded
        dec = batch.BatchDecoder(count, reserve=self.reserves.pop(node, None))
        if have is None:
            await self.fetch(node, dec)
        else:
            await asyncio.gather(*(self.loop.run_in_executor(self.decoder, dec.add, i, data)
                                   for i, (_, data) in enumerate(have)))
        image, _mask = dec.result()
        self.shapes[node] = list(image.shape[:3])
        self.outs[o.slot] = image[..., 0].contiguous() if o.kind == MASK else image

    async def written(self) -> dict:
        """Every kept file on disk (those of outputs not decoded here too): (node, index) -> its path."""
        for node in self.kept:
            for i, (url, data) in enumerate(self.files.get(node) or []):
                self.save(node, i, url, data)
        return {k: await w for k, w in self.writes.items()}

    def close(self) -> None:
        for w in self.writes.values():   # a write that failed after another step did is read, never left unread
            w.add_done_callback(_read_error)
        self.decoder.shutdown(wait=False)
        self.writer.shutdown(wait=False)


def _read_error(fut) -> None:
    if not fut.cancelled():
        fut.exception()


def _bytes_by_task(files: dict, detail: TaskDetail) -> dict:
    """Task id -> the bytes of its files brought back (a fan-out's files name the run that made them)."""
    fetched: dict = {}
    for got in files.values():
        for url, data in got or []:
            task_id = detail.sources.get(url, detail.prompt_id)
            fetched[task_id] = fetched.get(task_id, 0) + len(data)
    return fetched


def _listed(nodes: list, files: dict, paths: dict) -> tuple[list, list]:
    """(previews, saved paths) of the outputs' files, in the order of the outputs and their files."""
    previews, saved = [], []
    for node in nodes:
        for i in range(len(files.get(node) or [])):
            path = paths[(node, i)]
            saved.append(str(path))
            if path.suffix.lower() in IMAGE_EXTS:
                previews.append({"filename": path.name, "subfolder": RESULTS_SUBFOLDER, "type": "output"})
    return previews, saved


def _save_one(folder, node, i: int, url: str, data: bytes, detail: TaskDetail):
    """Keep a paid file in output/gpugeek, named after the task that made it (the images are the node's
    previews)."""
    task_id = detail.sources.get(url, detail.prompt_id)
    name = safe_file_name(url, f"{task_id}_{node}_{i}")
    return save_into(folder, f"{task_id}_{name}", data)


@dataclass
class Place:
    """Where a gateway's run keeps things on this machine: the journal, the upload cache, the input files
    it may upload (``read_file``) and the output folder its results are saved into; ``models``: templates (name ->
    url, directory, hash) -> what this machine knows of models (offload/run/models.py ModelSource), None for none."""
    journal: object
    uploads: object
    read_file: object
    output_dir: str
    models: object = None


def start_output(owner, *, task_id: str, node: str, journal, label: str):
    """A whole workflow's output node: its files from the task its gateway ran, as a job on the owner whose
    result is (detail, {node: [(url, bytes)]})."""
    cfg = config.load_config()
    return owner.start(lambda job: files_of(job, cfg=cfg, task_id=task_id, nodes={node}, member=node,
                                            journal=journal), label=label)


def _where(cfg, plan: GatewayPlan, *, workflow_id, target: str, transfer: str):
    """What a leading gateway's run is made of: its plan (compact saves where images come back compact), where it runs,
    its workflow id and transfer."""
    transfer = config.transfer_of(transfer)
    if transfer == "compact":
        plan = dataclasses.replace(plan, prompt=compact_saves(plan.prompt))
    where = target_of(cfg, target)
    wf = None if config.is_comfy_target(split_targets(where)[0]) else cfg.resolve_workflow_id(workflow_id)
    return plan, where, wf, transfer


def start(owner, plan: GatewayPlan, *, inputs: dict, place: Place, workflow_id="", timeout_s: float,
          target: str = "", node: str = "", label: str, on_event=None, runs: int = 1, transfer: str = "",
          files_digest: str | None = None, workflow=None):
    """The gateway's one call: start its cloud run on the task owner (lead the task, or follow the merged
    gateway that leads it) and return the job, which the node awaits with ``job.wait``. ``transfer``: the
    gateway's choice of how images come back (lossless, compact, or empty for the settings' default).
    ``files_digest``: the digests of the local files the part uploads (the node's), which with the rest names a part
    sent ahead when its prompt was queued (offload/run/ahead.py): that task is taken instead of a new one.
    ``workflow``: the editor's workflow JSON (ComfyUI's extra_pnginfo), whose templates name their models' addresses."""
    cfg = config.load_config()
    if plan.leads:
        plan_json = plan.to_json()
        plan, where, wf, transfer = _where(cfg, plan, workflow_id=workflow_id, target=target, transfer=transfer)
        sent = None
        if files_digest is not None and not plan.crossings:
            sent = ahead.ahead().take(ahead.key_of(plan_json, where, wf, runs, transfer, files_digest))
        values = {c.input: inputs.get(c.input) for c in plan.crossings}
        return owner.start(lambda job: lead(
            job, cfg=cfg, where=where, plan=plan, values=values, passthrough=inputs, workflow_id=wf,
            timeout_s=timeout_s, journal=place.journal, uploads=place.uploads, read_file=place.read_file,
            output_dir=place.output_dir, label=label, meta={"node": node, "target_url": where}, runs=runs,
            transfer=transfer, sent_ahead=sent,
            models=place.models(template_models(workflow)) if place.models else None),
            label=label, on_event=on_event)
    task_id = inputs.get(LEAD_INPUT)
    if not task_id:
        raise errors.PlanError(key="err_no_lead_task", values={"label": label})
    if on_event is not None:
        on_event("shared", task_id=task_id)
    return owner.start(lambda job: follow(
        job, cfg=cfg, plan=plan, task_id=task_id, passthrough=inputs, journal=place.journal,
        output_dir=place.output_dir, member=node, target_override=target), label=label)


# ---- parts sent ahead (offload/run/ahead.py) -------------------------------------------------------------------------
# Where a part sent ahead keeps its files until its gateway takes them: a folder of the pack's data (never ComfyUI's
# output folder: they are not the user's files yet), one folder a part.
AHEAD_FOLDER = "ahead"


def send_ahead(owner, plan: GatewayPlan, *, inputs: dict, place: Place, files_digest: str, token: str, slots: int,
               label: str, node: str, data_dir, workflow=None) -> bool:
    """At queue time: send a leading gateway's part ahead (``inputs``: the gateway's literal inputs), unless its key
    went ahead before. Its task runs on ``owner`` once a slot is free. Whether it was sent (or waits for a slot)."""
    cfg = config.load_config()
    runs = max(1, min(MAX_RUNS, int(inputs.get("runs") or 1)))
    timeout_s = float(inputs.get("timeout_s") or DEFAULT_TIMEOUT_S)
    plan_json = plan.to_json()
    plan, where, wf, transfer = _where(cfg, plan, workflow_id=inputs.get("workflow_id") or "",
                                       target=inputs.get("target") or "", transfer=inputs.get("transfer") or "")
    key = ahead.key_of(plan_json, where, wf, runs, transfer, files_digest)
    registry = ahead.ahead()
    folder = Path(data_dir) / AHEAD_FOLDER / f"{key}-{os.getpid()}"   # one process's own (a user folder may be shared)
    expected = times_runs(estimate_for(place.journal, plan, wf), runs)
    entry = ahead.Entry(key=key, token=token, begin=lambda: None, folder=folder, label=label,
                        price=(expected or {}).get("price"))

    def begin():
        return owner.start(lambda job: ahead_run(
            job, cfg=cfg, where=where, plan=plan, workflow_id=wf, timeout_s=timeout_s, journal=place.journal,
            uploads=place.uploads, read_file=place.read_file, label=label, runs=runs, folder=folder,
            models=place.models(template_models(workflow)) if place.models else None,
            meta={"node": node, "target_url": where, "sent_ahead": True},
            on_status=lambda detail: registry.status(entry, detail)), label=label)
    entry.begin = begin
    return registry.offer(entry, slots)


async def ahead_run(job, *, cfg, where: str, plan: GatewayPlan, workflow_id, timeout_s: float, journal, uploads,
                    read_file, label: str, runs: int, folder: Path, meta: dict, on_status=None, models=None) -> list:
    """A part sent ahead, on the owner: its task (or ``runs`` tasks), run as a gateway runs it (the daily limit's
    leases, the journal, Stop), then its files written into ``folder``: the outcomes, with each file's path instead
    of its bytes (nothing held in memory while the queue waits)."""
    budget = ByteBudget()
    async with open_pool(cfg, where, open_target) as pool:
        outcomes = await run_runs(plan, job=job, pool=pool, journal=journal, uploads=uploads, values={},
                                  workflow_id=workflow_id, timeout_s=timeout_s, read_file=read_file, models=models,
                                  daily_limit=cfg.daily_limit, label=label, meta=meta, runs=runs, fetch_nodes=None,
                                  budget=budget, on_status=on_status)
    return await asyncio.get_running_loop().run_in_executor(None, _keep_on_disk, outcomes, folder)


def _keep_on_disk(outcomes: list, folder: Path) -> list:
    kept = []
    for o in outcomes:
        files = {}
        for node, got in o.files.items():
            files[node] = [(url, str(save_into(folder, f"{o.prompt_id}_{node}_{i}", data)))
                           for i, (url, data) in enumerate(got or [])]
        kept.append(dataclasses.replace(o, files=files))
    return kept


def _read_from_disk(kept: list, folder: Path) -> list:
    outcomes = [dataclasses.replace(o, files={node: [(url, Path(path).read_bytes()) for url, path in got]
                                              for node, got in o.files.items()}) for o in kept]
    shutil.rmtree(folder, ignore_errors=True)
    return outcomes


async def taken_ahead(job, entry) -> list | None:
    """The outcomes of the part sent ahead for this run: waited for (a Stop of this run stops it; its progress is this
    run's), its files read from disk. None where it was stopped or refused before it ran (a cancel by mistake, the
    daily limit at queue time): the run then goes as usual (the limit says its own sentence)."""
    other = entry.job
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    other.listen(lambda kind, **info: job.emit(kind, **info))
    other._on_done(lambda: loop.call_soon_threadsafe(lambda: ended.done() or ended.set_result(None)))
    try:
        await job.guard(ended)
    except BaseException:   # this run was stopped, or its prompt ended: so is the part sent ahead
        other.stop(job.stop_reason or "the prompt ended before the task finished")
        raise
    job.task_id = other.task_id
    try:
        kept = other.result(0)
    except (Interrupted, errors.TaskCancelledError, errors.SpendLimitError) as e:
        log.info("%s: the part sent ahead did not run (%s): it runs now", job.label, type(e).__name__)
        shutil.rmtree(entry.folder, ignore_errors=True)
        return None
    try:
        return await loop.run_in_executor(None, _read_from_disk, kept, entry.folder)
    except OSError as e:   # its files are gone (removed by hand): the run takes the task's results from the journal
        log.warning("%s: the files of the part sent ahead are gone (%s): they are fetched again", job.label,
                    type(e).__name__)
        return None
