"""GPUGeek Load Result: the images of any task the pack submitted (or any result URLs), as IMAGE + MASK.

It reads the journal first (files already saved here), then the task's result URLs; a task still
running is waited for. Nothing paid for is lost: a task id is all it needs.
"""
from __future__ import annotations

import asyncio
import os

from ..offload import batch
from ..offload import errors
from ..offload.run import DEFAULT_TIMEOUT_S, wait_task
from ..offload.transfer import IMAGE_EXTS, gather_bounded, safe_file_name
from ..offload.transport import PARALLEL_DOWNLOADS, ByteBudget
from ..offload.wire import SUCCEEDED, TaskDetail, result_urls
from . import cloud, comfy


class GPUGeekLoadResult:
    CATEGORY = "GPUGeek"
    DESCRIPTION = "Loads the images of a GPUGeek task by its id (or from result URLs), waiting if it still runs."
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = ("All images of the task as one batch (sizes fitted to the first).",
                       "Their alpha as masks (empty 64x64 when none has alpha).")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
                    "prompt_id": ("STRING", {"default": "", "tooltip": "The GPUGeek task id (from a gateway's "
                                             "task_id output or the GPUGeek tasks tab; several ids separated by "
                                             "commas load as one batch). Empty: use urls."})},
                "optional": {
                    "urls": ("STRING", {"default": "", "multiline": True,
                                        "tooltip": "Result file URLs, one per line (used when prompt_id is empty)."}),
                    "timeout_s": ("INT", {"default": DEFAULT_TIMEOUT_S, "min": 10, "max": 86400,
                                          "tooltip": "How long to wait for a task that is still running."})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    @classmethod
    def VALIDATE_INPUTS(cls, prompt_id="", urls=""):
        pid = str(prompt_id or "").strip()
        if not pid and not str(urls or "").strip():
            return "Give a task id (prompt_id) or result URLs to load."
        return True

    async def load(self, prompt_id="", urls="", timeout_s=DEFAULT_TIMEOUT_S, unique_id=None):
        label = cloud.node_label("GPUGeek Load Result", unique_id)
        try:
            ids = [p.strip() for p in str(prompt_id or "").split(",") if p.strip()] or [""]
            files = []   # a fan-out's task_id output names every run: their images in run order, one batch
            budget = ByteBudget()   # the memory one task's results may take, across every run's files
            for pid in ids:
                files += await self._files(pid, str(urls or ""), timeout_s, unique_id, label, budget)
            if not files:
                raise errors.ResultError(f"Task {prompt_id} has no image results", call="results",
                                    hint="Check the task in the GPUGeek tasks tab.")
            image, mask = await asyncio.to_thread(batch.decode_batch, files, 2)
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, asyncio.CancelledError):
                raise
            cloud.reraise(e, label)
        comfy.progress_text(f"Loaded {image.shape[0]} image(s)", unique_id)
        return (image, mask)

    async def _files(self, pid, urls, timeout_s, unique_id, label, budget=None):
        if not pid:
            lines = [u.strip() for u in urls.splitlines() if u.strip()]
            async with cloud.open_target() as target:
                return list(await gather_bounded([target.fetch(u, budget=budget) for u in lines],
                                                 limit=PARALLEL_DOWNLOADS))
        rec = cloud.journal().by_prompt_id(pid)
        if rec and rec.get("status") == "succeeded":
            local = [p for p in rec.get("files") or [] if os.path.splitext(p)[1].lower() in IMAGE_EXTS
                     and os.path.isfile(p)]
            if local:
                return [open(p, "rb").read() for p in local]
        async with cloud.open_target(override=(rec or {}).get("target_url")) as target:
            if rec and rec.get("status") == "succeeded" and rec.get("result_url"):
                detail = TaskDetail(prompt_id=pid, status=SUCCEEDED, result_url=result_urls(rec["result_url"]))
            else:
                def on_event(kind, detail=None, **_):
                    if detail is not None:
                        comfy.progress_text(f"Task {pid}: {detail.status_name}", unique_id)
                detail = await wait_task(pid, target=target, journal=cloud.journal(), key=(rec or {}).get("key"),
                                         timeout_s=timeout_s, interrupted=comfy.interrupted, on_event=on_event,
                                         label=label, cancel_on_exit=False)
            # the file's own name decides (a ComfyUI server's results are /view?filename=...)
            wanted = [u for _, u in detail.all_urls()
                      if os.path.splitext(safe_file_name(u, "result"))[1] in IMAGE_EXTS]
            return list(await gather_bounded([target.fetch(u, budget=budget) for u in wanted],
                                             limit=PARALLEL_DOWNLOADS))
