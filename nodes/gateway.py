"""GPUGeek Cloud Execute: the gateway. Everything that feeds it runs in the cloud; everything it feeds runs here.

V1 node API (classic class attributes) with an ``async`` function: it works from ComfyUI 0.3.44 (async
nodes) to 0.8, where the V3 API is still moving; hidden inputs carry the queue-time plan.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time

from ..offload import config as C
from ..offload import errors as E
from ..offload import gateway_run
from ..offload import plan as P
from ..offload.run import DEFAULT_TIMEOUT_S, status_text
from ..offload.wire import RUNNING, TaskDetail
from . import cloud, comfy


def _tooltip(kind: str, n: int) -> str:
    return (f"{'An image' if kind == 'image' else 'A mask'} made by the cloud part; it comes back as output "
            f"{kind}_{n}. Everything that feeds this input runs on GPUGeek.")


class GPUGeekCloudExecute:
    CATEGORY = "GPUGeek"
    DESCRIPTION = ("Runs every node that feeds it on GPUGeek's cloud GPUs and brings the images back here. "
                   "Nodes after it run on this machine.")
    RETURN_TYPES = ("IMAGE",) * len(P.IMAGE_INPUTS) + ("MASK",) * len(P.MASK_INPUTS) + ("STRING",)
    RETURN_NAMES = P.IMAGE_INPUTS + P.MASK_INPUTS + ("task_id",)
    OUTPUT_TOOLTIPS = tuple(f"The cloud result of input {n}." for n in P.IMAGE_INPUTS + P.MASK_INPUTS) + (
        "The GPUGeek task id (load its results again with GPUGeek Load Result).",)
    FUNCTION = "execute"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        opt = {n: ("IMAGE", {"tooltip": _tooltip("image", i + 1)}) for i, n in enumerate(P.IMAGE_INPUTS)}
        opt.update({n: ("MASK", {"tooltip": _tooltip("mask", i + 1)}) for i, n in enumerate(P.MASK_INPUTS)})
        return {
            "required": {
                "workflow_id": ("STRING", {"default": "", "tooltip": "The GPUGeek workflow id (15 digits) whose "
                                           "cloud environment runs this part. Empty: the default from Settings."}),
                "run_on": (["cloud", "local"], {"default": "cloud", "tooltip": "cloud: run the nodes that feed this "
                           "one on GPUGeek. local: run everything on this machine and pass the images through."}),
                "timeout_s": ("INT", {"default": DEFAULT_TIMEOUT_S, "min": 10, "max": 86400, "step": 10,
                                      "tooltip": "Cancel the cloud task if it has not finished after this many "
                                                 "seconds (queue time included)."}),
            },
            "optional": {**opt, "target": ("STRING", {"default": "", "tooltip": "Where this cloud part runs: empty "
                         "for the target in Settings (GPUGeek by default), or the URL of a ComfyUI server such as "
                         "http://127.0.0.1:8188."})},
            "hidden": {P.PLAN_INPUT: "GPUGEEK_PLAN", "unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, gpugeek_plan=None):
        """A refusal from the queue-time plan becomes ComfyUI's validation error on this node."""
        if gpugeek_plan is None:
            return True
        try:
            plan = json.loads(gpugeek_plan)
        except (TypeError, ValueError):
            return "The queue-time plan is unreadable: queue the workflow again."
        if plan.get("mode") == "refused":
            return " ".join(plan.get("refusals") or ["The cloud part cannot be sent."])
        return True

    @classmethod
    def IS_CHANGED(cls, gpugeek_plan=None, **kw):
        """Local files the cloud part uploads: a change of their content must run the cloud part again."""
        try:
            plan = json.loads(gpugeek_plan or "{}")
        except ValueError:
            return float("nan")
        h = hashlib.sha256()
        for f in plan.get("local_files", []) or []:
            path = comfy.input_file(f["file"])
            if path:
                with open(path, "rb") as fh:
                    h.update(hashlib.sha256(fh.read()).digest())
        return h.hexdigest()

    async def execute(self, workflow_id="", run_on="cloud", timeout_s=DEFAULT_TIMEOUT_S, gpugeek_plan=None,
                      unique_id=None, target="", **kw):
        label = cloud.node_label("GPUGeek Cloud Execute", unique_id)
        if gpugeek_plan is None:
            if run_on == "local":
                return self._passthrough(kw)
            raise E.PlanError(f"{label}: this prompt was not planned by the GPUGeek pack (was it queued "
                              "through ComfyUI's /prompt?)", hint="Queue it again from the editor.")
        plan = json.loads(gpugeek_plan)
        if plan.get("mode") == "local":
            return self._passthrough(kw)
        if plan.get("mode") == "refused":
            raise E.PlanError(f"{label}: " + " ".join(plan.get("refusals", [])))
        try:
            if plan.get("lead") != plan.get("gateway"):
                return await self._follow(plan, kw, label, unique_id, target)
            return await self._lead(plan, kw, label, unique_id, workflow_id, timeout_s, target)
        except BaseException as e:  # noqa: BLE001 - mapped below
            if isinstance(e, asyncio.CancelledError):
                raise
            cloud.reraise(e, label)

    # ---- modes -------------------------------------------------------------------------------------
    @staticmethod
    def _passthrough(kw):
        outs = [kw.get(n) for n in P.GATEWAY_OUTPUTS]
        return {"ui": {"gpugeek": [{"state": "local"}]}, "result": tuple(outs) + ("",)}

    async def _lead(self, plan, kw, label, unique_id, workflow_id, timeout_s, target):
        cfg = C.load_config()
        where = cloud.target_of(cfg, target)
        wf = None if C.is_comfy_target(where) else cfg.resolve_workflow_id(workflow_id)
        values = {c["input"]: kw.get(c["input"]) for c in plan.get("crossings", [])}
        started = time.monotonic()
        progress = _Progress(unique_id)
        job = cloud.owner().start(lambda job: gateway_run.lead(
            job, cfg=cfg, where=where, plan=plan, values=values, passthrough=kw, workflow_id=wf, timeout_s=timeout_s,
            journal=cloud.journal(), uploads=cloud.uploads(), read_file=_read_input_file,
            output_dir=comfy.output_dir(), label=label, meta={"node": str(unique_id), "target_url": where}),
            label=label, on_event=progress)
        out = await job.wait(comfy.interrupted)
        progress.bar.set(100)
        d = out.detail
        return {"ui": {"images": out.previews,
                       "gpugeek": [{"state": "done", "task_id": out.task_id, "run_ms": d.run_duration_ms,
                                    "queue_ms": d.queue_duration_ms, "price": d.origin_price,
                                    "wall_s": round(time.monotonic() - started, 3),
                                    "uploaded_bytes": out.uploaded_bytes}]},
                "result": tuple(out.outputs) + (out.task_id,)}

    async def _follow(self, plan, kw, label, unique_id, target=""):
        """A gateway merged into another's task: take this gateway's images from that task."""
        task_id = kw.get(P.LEAD_INPUT)
        if not task_id:
            raise E.PlanError(f"{label}: the gateway that runs the shared task gave no task id")
        comfy.progress_text(f"Shared task {task_id}", unique_id)
        job = cloud.owner().start(lambda job: gateway_run.follow(
            job, cfg=C.load_config(), plan=plan, task_id=task_id, passthrough=kw, journal=cloud.journal(),
            output_dir=comfy.output_dir(), member=str(unique_id), target_override=target), label=label)
        out = await job.wait(comfy.interrupted)
        return {"ui": {"images": out.previews}, "result": tuple(out.outputs) + (task_id,)}


class _Progress:
    """The job's events as the node's progress: text, bar and the editor's status message. Runs on the
    prompt's loop (the owner hands events over), so ComfyUI's progress hooks see the executing node."""

    def __init__(self, unique_id):
        from .routes import UI_LANG
        self.unique_id = unique_id
        self.lang = os.environ.get("GPUGEEK_LANG") or UI_LANG["lang"]
        self.bar = comfy.Bar(unique_id)
        self.last_key, self.last_at = None, 0.0

    def changed(self, detail) -> bool:
        """Tell the editor when something it shows changed, or every half second (elapsed time)."""
        key = (detail.status, detail.current_position, detail.node, detail.node_value)
        now = time.monotonic()
        if key == self.last_key and now - self.last_at < 0.5:
            return False
        self.last_key, self.last_at = key, now
        return True

    def __call__(self, kind, detail: TaskDetail | None = None, expected=None, **info):
        zh, uid = self.lang == "zh", self.unique_id
        if kind == "uploading":
            comfy.progress_text("正在上传输入…" if zh else "Uploading inputs…", uid)
        elif kind == "submitted":
            comfy.progress_text(("已提交：任务 " if zh else "Submitted: task ") + str(info.get("prompt_id")), uid)
        elif kind == "cancelling":
            comfy.progress_text("正在取消云端任务…" if zh else "Cancelling the cloud task…", uid)
        elif kind == "status_error":
            comfy.progress_text(("等待中（状态查询失败：" if zh else "Waiting (status check failed: ")
                                + str(info.get("error")) + ("）" if zh else ")"), uid)
        elif kind == "status" and detail is not None and self.changed(detail):
            text = status_text(detail, expected, self.lang)
            if detail.node and detail.status == RUNNING:
                text += f" · #{detail.node}" + (f" {detail.node_value}/{detail.node_max}" if detail.node_max else "")
            comfy.progress_text(text, uid)
            if detail.status == RUNNING and expected and expected.get("run_ms"):
                self.bar.set(95 * min(1.0, detail.run_duration_ms / expected["run_ms"]))
            elif detail.status == RUNNING:
                self.bar.set(min(90, 10 + detail.run_duration_ms / 1000))
            comfy.send("gpugeek.status", {"node": str(uid), "task_id": detail.prompt_id,
                                          "status": detail.status, "position": detail.current_position,
                                          "queue_size": detail.queue_size, "run_ms": detail.run_duration_ms,
                                          "price": detail.origin_price, "error": detail.error_msg,
                                          "expected": expected, "cloud_node": detail.node,
                                          "cloud_value": detail.node_value, "cloud_max": detail.node_max})


def _read_input_file(name: str) -> bytes:
    path = comfy.input_file(name)
    if not path:
        raise E.PlanError(f"The input file {name!r} disappeared from the input folder", hint="Choose it again.")
    with open(path, "rb") as f:
        return f.read()
