"""GPUGeek Cloud Execute: the gateway. Everything that feeds it runs in the cloud; everything it feeds runs here.

V1 node API (classic class attributes) with an ``async`` function: it works from ComfyUI 0.3.44 (async
nodes) to 0.8, where the V3 API is still moving; hidden inputs carry the queue-time plan. The node declares
its inputs and outputs, reports progress and calls the core (``offload.run.start``).
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import time

from ..offload import config, errors, run, texts
from ..offload.plan import (GATEWAY_OUTPUTS, IMAGE_INPUTS, LOCAL, MASK_INPUTS, PLAN_INPUT, REFUSED,
                            GatewayPlan)
from ..offload.run.progress import (RunsBoard, bar_percent, closing_text, cloud_errors_record, event_text,
                                     preview_record, status_record)
from ..offload.run import ahead
from ..offload.run.models import named_models
from ..offload.transfer import digest_file
from . import cloud, comfy
from .models import find_model

NAME = "GPUGeek Cloud Execute"


def _tooltip(kind: str, n: int) -> str:
    return (f"{'An image' if kind == 'image' else 'A mask'} made by the cloud part; it comes back as output "
            f"{kind}_{n}. Everything that feeds this input runs on GPUGeek.")


class GPUGeekCloudExecute:
    CATEGORY = "GPUGeek"
    DESCRIPTION = ("Runs every node that feeds it on GPUGeek's cloud GPUs and brings the images back here. "
                   "Nodes after it run on this machine.")
    RETURN_TYPES = ("IMAGE",) * len(IMAGE_INPUTS) + ("MASK",) * len(MASK_INPUTS) + ("STRING",)
    RETURN_NAMES = GATEWAY_OUTPUTS + ("task_id",)
    OUTPUT_TOOLTIPS = tuple(f"The cloud result of input {n}." for n in GATEWAY_OUTPUTS) + (
        "The GPUGeek task id (load its results again with GPUGeek Load Result).",)
    FUNCTION = "execute"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        opt = {n: ("IMAGE", {"tooltip": _tooltip("image", i + 1)}) for i, n in enumerate(IMAGE_INPUTS)}
        opt.update({n: ("MASK", {"tooltip": _tooltip("mask", i + 1)}) for i, n in enumerate(MASK_INPUTS)})
        return {
            "required": {
                "workflow_id": ("STRING", {"default": "", "tooltip": "The GPUGeek workflow id (15 digits) whose "
                                           "cloud environment runs this part. Empty: the default from Settings."}),
                "run_on": (["cloud", "local"], {"default": "cloud", "tooltip": "cloud: run the nodes that feed this "
                           "one on GPUGeek. local: run everything on this machine and pass the images through."}),
                "timeout_s": ("INT", {"default": run.DEFAULT_TIMEOUT_S, "min": 10, "max": 86400, "step": 10,
                                      "tooltip": "Cancel the cloud task if it has not finished after this many "
                                                 "seconds (queue time included)."}),
            },
            "optional": {**opt, "target": ("STRING", {"default": "", "tooltip": "Where this cloud part runs: empty "
                         "for the target in Settings (GPUGeek by default), the URL of a ComfyUI server such as "
                         "http://127.0.0.1:8188, or several such URLs separated by commas (a pool: each task goes "
                         "to the least busy one)."}),
                         "runs": ("INT", {"default": 1, "min": 1, "max": run.MAX_RUNS, "tooltip": "Run the cloud "
                                  "part this many times at once; run i adds i to every seed of the cloud part. The "
                                  "images of all runs come back as one batch, in order."}),
                         "transfer": ([config.SETTINGS_TRANSFER, *config.TRANSFERS], {
                             "default": config.SETTINGS_TRANSFER, "tooltip": "How the images come back: "
                             "lossless (PNG, every pixel exact), compact (high-quality WebP, several times fewer "
                             "bytes: faster on a slow connection; masks stay exact), or settings (the default "
                             "in Settings > GPUGeek, else lossless)."})},
            # the editor's workflow (its templates name their models' addresses: offload/run/models.py)
            "hidden": {PLAN_INPUT: "GPUGEEK_PLAN", "unique_id": "UNIQUE_ID", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, gpugeek_plan=None):
        """A refusal from the queue-time plan becomes ComfyUI's validation error on this node."""
        if gpugeek_plan is None:
            return True
        try:
            plan = GatewayPlan.from_json(gpugeek_plan)
        except (TypeError, ValueError):
            return texts.text("err_plan_unreadable", texts.default_lang())
        if plan.mode == REFUSED:
            return " ".join(plan.refusals)
        return True

    @classmethod
    def IS_CHANGED(cls, gpugeek_plan=None, **kw):
        """Local files the cloud part uploads: a change of their content must run the cloud part again."""
        try:
            plan = GatewayPlan.from_json(gpugeek_plan or "")
        except (TypeError, ValueError):
            return float("nan")
        h = hashlib.sha256()
        if plan.whole:   # after a failure, run again (never the failed run's cached token); after a success, not
            h.update(f"failed:{cloud.failed_runs(plan.hash)}".encode())
        h.update(files_digest(plan).encode())
        # a local model the cloud part sends (offload/run/models.py): a retrained LoRA of the same name runs again
        # (its size and time, not its hash: a checkpoint is gigabytes, and this runs on every queue)
        for nid, inp, value in named_models(plan.prompt or {}) if plan.leads else ():
            found = find_model(value, (plan.prompt[nid] or {}).get("class_type"), inp)
            if found:
                st = os.stat(found[1])
                h.update(f"{value}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()

    async def execute(self, workflow_id="", run_on="cloud", timeout_s=run.DEFAULT_TIMEOUT_S, gpugeek_plan=None,
                      unique_id=None, target="", runs=1, transfer="", extra_pnginfo=None, **kw):
        label = cloud.node_label(NAME, unique_id)
        if gpugeek_plan is None:
            if run_on == LOCAL:
                return _passthrough(kw)
            raise errors.PlanError(key="err_not_planned", values={"label": label})
        plan = GatewayPlan.from_json(gpugeek_plan)
        if plan.mode == LOCAL:
            return _passthrough(kw)
        if plan.whole:  # no gateway in the editor: the run is named after the switch
            label = texts.text("whole_label", plan.lang)
        if plan.mode == REFUSED:
            raise errors.PlanError(f"{label}: " + " ".join(plan.refusals), hint="")
        # a whole workflow's progress is shown on its output nodes, the nodes the editor has
        progress = _Progress(unique_id, plan.lang, shown=plan.user_outputs if plan.whole else ())
        started = time.monotonic()
        # what ComfyUI caches this node on: once it ran, a queued prompt with the same is not sent ahead (nodes/ahead.py)
        sig = signature(gpugeek_plan, workflow_id=workflow_id, run_on=run_on, timeout_s=timeout_s, target=target,
                        runs=runs, transfer=transfer) if plan.leads else None
        try:
            job = run.start(cloud.owner(), plan, inputs=kw, place=cloud.place(), workflow_id=workflow_id,
                            timeout_s=timeout_s, target=target, node=str(unique_id), label=label, on_event=progress,
                            runs=runs, transfer=transfer, files_digest=files_digest(plan) if plan.leads else None,
                            workflow=extra_pnginfo.get("workflow") if isinstance(extra_pnginfo, dict) else None)
            out = await job.wait(comfy.interrupted)
            if sig is not None:
                ahead.ahead().remember_ran(str(unique_id), sig)
        except BaseException as e:  # noqa: BLE001 - mapped below
            if isinstance(e, asyncio.CancelledError):
                raise
            told = cloud_errors_record(unique_id, e, plan.lang)
            if told:
                comfy.send("gpugeek.cloud_errors", told)
            if plan.whole and isinstance(e, errors.GPUGeekError):   # told by the output nodes, which the editor has
                return {"ui": {"images": []}, "result": (None,) * len(GATEWAY_OUTPUTS)
                        + (cloud.remember_failure(plan.hash, e),)}
            cloud.reraise(e, label, plan.lang)
        progress.bar.set(100)
        if plan.leads:   # the closing line: time, price, the bytes back and how
            progress.text(closing_text(out.detail, runs=len(out.task_ids), bytes_down=out.bytes_down,
                                       transfer=out.transfer, lang=plan.lang))
        # a whole workflow's images are shown (and recorded) on its output nodes, not twice
        return {"ui": {"images": [] if plan.whole else out.previews,
                       "gpugeek": [_done(out, started)] if plan.leads else []},
                "result": tuple(out.outputs) + (out.task_id,)}


def files_digest(plan: GatewayPlan) -> str:
    """The digests of the local files a cloud part uploads (a change of their content runs it again)."""
    h = hashlib.sha256()
    for f in plan.local_files:
        path = comfy.input_file(f.file)
        if path:
            h.update(digest_file(path).encode())
    return h.hexdigest()


# The gateway's widgets as ComfyUI hands them to execute when a prompt leaves them out (their defaults)
WIDGET_DEFAULTS = {"workflow_id": "", "run_on": "cloud", "timeout_s": run.DEFAULT_TIMEOUT_S, "target": "", "runs": 1,
                   "transfer": ""}


def signature(gpugeek_plan, **widgets) -> str:
    """The gateway's cache key as ComfyUI makes it: its plan, its widgets and what its IS_CHANGED says."""
    values = {k: widgets.get(k, d) for k, d in WIDGET_DEFAULTS.items()}
    values = {k: (d if v is None else v) for (k, d), v in zip(WIDGET_DEFAULTS.items(), values.values())}
    values[PLAN_INPUT] = gpugeek_plan
    return ahead.signature(values, GPUGeekCloudExecute.IS_CHANGED(gpugeek_plan=gpugeek_plan))


def _passthrough(kw):
    outs = [kw.get(n) for n in GATEWAY_OUTPUTS]
    return {"ui": {"gpugeek": [{"state": "local"}]}, "result": tuple(outs) + ("",)}


def _done(out, started: float) -> dict:
    d = out.detail
    return {"state": "done", "task_id": out.task_id, "run_ms": d.run_duration_ms, "queue_ms": d.queue_duration_ms,
            "price": d.origin_price, "wall_s": round(time.monotonic() - started, 3),
            "uploaded_bytes": out.uploaded_bytes, "task_ids": out.task_ids or [out.task_id],
            # how the images came back and their bytes, for the gateway's closing line
            "transfer": out.transfer, "bytes_down": out.bytes_down}


class _Progress:
    """The job's events as the node's progress: text, bar and the editor's status message. Runs on the
    prompt's loop (the owner hands events over), so ComfyUI's progress hooks see the executing node. With
    ``runs`` > 1, one line for all runs ("3/8 done · run 4: running 12.3 s") and a bar of runs done."""

    # The editor is told of an unchanged status this often (it shows the elapsed time).
    REPEAT_S = 0.5

    def __init__(self, unique_id, lang: str, shown=()):
        self.unique_id, self.lang, self.shown = unique_id, lang, list(shown)
        self.bar = comfy.Bar(unique_id)
        self.board = RunsBoard()
        self.last_key, self.last_at, self.last_preview = None, 0.0, None

    def changed(self, detail, run) -> bool:
        key = (run, detail.status, detail.current_position, detail.node, detail.node_value)
        now = time.monotonic()
        if key == self.last_key and now - self.last_at < self.REPEAT_S:
            return False
        self.last_key, self.last_at = key, now
        return True

    def __call__(self, kind, detail=None, expected=None, run=None, runs=1, **info):
        if kind == "status" and detail is not None and detail.preview and detail.preview[3] != self.last_preview:
            self.last_preview = detail.preview[3]
            comfy.send("gpugeek.preview", preview_record(self.unique_id, detail))
        if kind == "status" and detail is not None and run is not None:
            self.board.update(run, detail.status)
        if kind == "status" and (detail is None or not self.changed(detail, run)):
            return
        line = event_text(kind, self.lang, detail, expected, **info)
        if line and run is not None:
            line = self.board.line(self.lang, runs, run, line)
        if line:
            self.text(line)
        if kind == "status":
            percent = bar_percent(detail, expected) if run is None else 100 * self.board.done() / runs
            if percent is not None:
                self.bar.set(percent)
            record = status_record(self.unique_id, detail, expected, self.lang, info.get("failure"))
            if run is not None:
                record.update(self.board.record(runs), run=run)
            comfy.send("gpugeek.status", record)

    def text(self, line: str) -> None:
        for node in [self.unique_id] + self.shown:
            comfy.progress_text(line, node)
