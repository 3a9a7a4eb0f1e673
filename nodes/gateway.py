"""GPUGeek Cloud Execute: the gateway. Everything that feeds it runs in the cloud; everything it feeds runs here.

V1 node API (classic class attributes) with an ``async`` function: it works from ComfyUI 0.3.44 (async
nodes) to 0.8, where the V3 API is still moving; hidden inputs carry the queue-time plan.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import time

from ..offload import codec
from ..offload import config as C
from ..offload import errors as E
from ..offload import plan as P
from ..offload.run import DEFAULT_TIMEOUT_S, fetch_results, run_plan, status_text
from ..offload.transfer import IMAGE_EXTS, ByteBudget, gather_bounded, safe_file_name, save_into
from ..offload.wire import RUNNING, SUCCEEDED, TaskDetail
from . import cloud, comfy

RESULTS_SUBFOLDER = "gpugeek"


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
        bar = comfy.Bar(unique_id)
        values = {c["input"]: kw.get(c["input"]) for c in plan.get("crossings", [])}
        from .routes import UI_LANG
        lang = os.environ.get("GPUGEEK_LANG") or UI_LANG["lang"]
        started = time.monotonic()
        last_sent = {"key": None, "at": 0.0}

        def changed(detail) -> bool:
            """Tell the editor when something it shows changed, or every half second (elapsed time)."""
            key = (detail.status, detail.current_position, detail.node, detail.node_value)
            now = time.monotonic()
            if key == last_sent["key"] and now - last_sent["at"] < 0.5:
                return False
            last_sent.update(key=key, at=now)
            return True

        def on_event(kind, detail: TaskDetail | None = None, expected=None, **info):
            if kind == "uploading":
                comfy.progress_text("Uploading inputs…" if lang == "en" else "正在上传输入…", unique_id)
            elif kind == "submitted":
                comfy.progress_text(("已提交：任务 " if lang == "zh" else "Submitted: task ") + str(info.get("prompt_id")),
                                    unique_id)
            elif kind == "status_error":
                comfy.progress_text(("等待中（状态查询失败：" if lang == "zh" else "Waiting (status check failed: ")
                                    + str(info.get("error")) + ("）" if lang == "zh" else ")"), unique_id)
            elif kind == "status" and detail is not None and changed(detail):
                text = status_text(detail, expected, lang)
                if detail.node and detail.status == RUNNING:
                    text += f" · #{detail.node}" + (f" {detail.node_value}/{detail.node_max}" if detail.node_max else "")
                comfy.progress_text(text, unique_id)
                if detail.status == RUNNING and expected and expected.get("run_ms"):
                    bar.set(95 * min(1.0, detail.run_duration_ms / expected["run_ms"]))
                elif detail.status == RUNNING:
                    bar.set(min(90, 10 + detail.run_duration_ms / 1000))
                comfy.send("gpugeek.status", {"node": str(unique_id), "task_id": detail.prompt_id,
                                              "status": detail.status, "position": detail.current_position,
                                              "queue_size": detail.queue_size, "run_ms": detail.run_duration_ms,
                                              "price": detail.origin_price, "error": detail.error_msg,
                                              "expected": expected, "cloud_node": detail.node,
                                              "cloud_value": detail.node_value, "cloud_max": detail.node_max})

        async with cloud.open_target(cfg, where) as tgt:
            outcome = await run_plan(
                plan, target=tgt, journal=cloud.journal(), uploads=cloud.uploads(), values=values,
                workflow_id=wf, timeout_s=timeout_s, interrupted=comfy.interrupted, on_event=on_event,
                read_file=_read_input_file, daily_limit=cfg.daily_limit, label=label,
                meta={"node": str(unique_id), "target_url": where},
                # merged gateways read this task's files too: fetch them all here; otherwise the files are
                # fetched below, each decoded as soon as it arrives
                fetch_nodes=None if plan.get("members", [None])[1:] else set())
            result = await self._deliver(plan, kw, outcome.detail, outcome.files, outcome.journal_key, tgt)
        bar.set(100)
        elapsed = time.monotonic() - started
        result["ui"]["gpugeek"] = [{"state": "done", "task_id": outcome.prompt_id, "run_ms": outcome.detail.run_duration_ms,
                                    "queue_ms": outcome.detail.queue_duration_ms, "price": outcome.detail.origin_price,
                                    "wall_s": round(elapsed, 3), "uploaded_bytes": outcome.uploaded_bytes}]
        if plan.get("members", [None])[1:]:
            _FILES[outcome.prompt_id] = outcome.files  # merged gateways of this run read them from here
        while len(_FILES) > _FILES_KEPT:
            _FILES.pop(next(iter(_FILES)))
        return result

    async def _follow(self, plan, kw, label, unique_id, target=""):
        """A gateway merged into another's task: take this gateway's images from that task."""
        task_id = kw.get(P.LEAD_INPUT)
        if not task_id:
            raise E.PlanError(f"{label}: the gateway that runs the shared task gave no task id")
        files = _FILES.get(task_id)
        if files is None:
            rec = cloud.journal().by_prompt_id(task_id) or {}
            detail = TaskDetail(prompt_id=task_id, status=SUCCEEDED, result_url=rec.get("result_url") or {})
            async with cloud.open_target(override=rec.get("target_url") or target) as tgt:
                files = await fetch_results(detail, tgt, {o.get("save") for o in plan["outputs"]})
        comfy.progress_text(f"Shared task {task_id}", unique_id)
        detail = TaskDetail(prompt_id=task_id, status=SUCCEEDED)
        return await self._deliver(plan, kw, detail, files, None, None, save_user_outputs=False)

    async def _deliver(self, plan, kw, detail, files, journal_key, target, save_user_outputs=True):
        """Decode each output's files into tensors (fetching what is not here yet, each file decoded as soon
        as it arrives), save the cloud files into the output folder and preview them."""
        outs = [None] * len(P.GATEWAY_OUTPUTS)
        previews, saved = [], []
        folder = os.path.join(comfy.output_dir(), RESULTS_SUBFOLDER)
        files = dict(files)
        budget = ByteBudget()
        # one decoding thread: libspng holds the GIL, so decodes in parallel threads only fight each other;
        # one thread decodes each file while the next ones download
        decoder = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpugeek-decode")
        loop = asyncio.get_running_loop()

        async def fetch_into(node, dec=None):
            urls = [u for u in detail.result_url.get(node, [])]
            got = [None] * len(urls)

            async def one(i, url):
                data = await target.fetch(url)
                budget.take(len(data))
                got[i] = (url, data)
                if dec is not None:
                    await loop.run_in_executor(decoder, dec.add, i, data)
            await gather_bounded([one(i, u) for i, u in enumerate(urls)])
            files[node] = got
            return len(urls)

        async def decode(o):
            node = o["save"]
            have = files.get(node)
            count = len(have) if have is not None else len(detail.result_url.get(node, []))
            if not count:
                raise E.ResultError(f"The cloud task returned no file for {P.GATEWAY_OUTPUTS[o['slot']]}",
                                    task_id=detail.prompt_id, call="results")
            dec = codec.BatchDecoder(count)
            if have is None:
                await fetch_into(node, dec)
            else:
                await loop.run_in_executor(decoder, lambda: [dec.add(i, d) for i, (_, d) in enumerate(have)])
            image, _mask = dec.result()
            return o, (image[..., 0].contiguous() if o["kind"] == "mask" else image)

        for o in plan.get("outputs", []):
            if o["kind"] == "pass":
                outs[o["slot"]] = kw.get(o["input"])
        # keep every paid file: results into output/gpugeek, previewed on the node
        nodes = [o["save"] for o in plan.get("outputs", []) if o.get("save")]
        if save_user_outputs:
            nodes += plan.get("user_outputs", [])

        extra = [n for n in (plan.get("user_outputs", []) if save_user_outputs else []) if n not in files]
        try:
            decoded = await gather_bounded([decode(o) for o in plan.get("outputs", []) if o["kind"] != "pass"]
                                           + [fetch_into(n) for n in extra], limit=4)
        finally:
            decoder.shutdown(wait=False)
        decoded = [d for d in decoded if isinstance(d, tuple)]

        def save_all():
            for node in nodes:
                for i, (url, data) in enumerate(files.get(node) or []):
                    name = safe_file_name(url, f"{detail.prompt_id}_{node}_{i}")
                    path = save_into(folder, f"{detail.prompt_id}_{name}", data)
                    saved.append(str(path))
                    if path.suffix.lower() in IMAGE_EXTS:
                        previews.append({"filename": path.name, "subfolder": RESULTS_SUBFOLDER, "type": "output"})
        await asyncio.to_thread(save_all)
        for o, t in decoded:
            outs[o["slot"]] = t
        if journal_key:
            cloud.journal().update(journal_key, files=saved)
        return {"ui": {"images": previews}, "result": tuple(outs) + (detail.prompt_id,)}


_FILES: dict = {}  # task id -> downloaded files, for merged gateways of the same run
_FILES_KEPT = 4     # a few runs' worth: merged gateways read them within the same prompt


def _read_input_file(name: str) -> bytes:
    path = comfy.input_file(name)
    if not path:
        raise E.PlanError(f"The input file {name!r} disappeared from the input folder", hint="Choose it again.")
    with open(path, "rb") as f:
        return f.read()
