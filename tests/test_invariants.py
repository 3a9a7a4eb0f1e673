"""Money and files as invariants (issue 38): hypothesis draws graphs (gateways x runs x whole mode x savers that share
prefixes) and hostile platforms (statuses in any order, missing and extra fields, odd names, failures and faults at any
step, big files under a small budget, a daily limit), runs each prompt as ComfyUI runs it (tests/mini_comfy.py, with
ComfyUI's cache), queues it again with only the prefixes changed, and after each example asserts the invariants of
tests/invariants.py: spent <= limit + one task, one task journaled per run, succeeded journaled exactly when the
platform succeeded with every result address, no file overwritten; and that whatever failed, failed with the pack's
own clear error (never a KeyError or a UnicodeError), and memory stayed within the task's byte budget."""
from __future__ import annotations

import asyncio
import copy
import os
import shutil
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import invariants
import mini_comfy
from conftest import SECRET_KEY, comfy_env, core, load_pack

pack = load_pack()
import comfy.model_management as mm  # noqa: E402
from server import PromptServer  # noqa: E402

E = core("errors")
WF = "123456789012345"
L = lambda n, s=0: [n, s]  # noqa: E731
CI = bool(os.environ.get("CI"))
# A task's byte budget in the examples that draw big files: a file of twice that is refused as it arrives.
SMALL_BUDGET = 4 * 1024 * 1024
# What memory may grow by in such an example beyond the budget: the decoders, the fake's own buffers, Python.
MEMORY_SLACK = 24 * 1024 * 1024

FAULTS = [("task", "http500"), ("task", "reset"), ("task", "http502html"), ("task", "slow:0.2"),
          ("file", "truncate"), ("file", "http500"), ("file", "reset"), ("presign", "http500"), ("put", "reset"),
          ("submit", "lost"), ("submit", "http500"), ("submit", "code_error"), ("cancel", "http500")]
NAMES = ["ComfyUI_{node}_{i:05d}_.png", "café {node} #{i}.png", "a%20b?{node}&{i}.png", "../../{node}_{i}.png",
         "x" * 300 + "{node}{i}.png", "名字_{node}_{i}.png"]


@st.composite
def scenarios(draw):
    whole = draw(st.booleans())
    savers = draw(st.integers(1, 3))
    prefixes = [draw(st.sampled_from(["same", "same", "other/dir", ""])) for _ in range(savers)]
    return {
        "whole": whole,
        "gateways": 1 if whole else draw(st.integers(1, 2)),
        "runs": draw(st.integers(1, 4)),
        "prefixes": prefixes,
        "limit": draw(st.sampled_from([None, None, 0.1, 0.3, 0.6, 2.0])),
        "spent_before": draw(st.sampled_from([0.0, 0.0, 0.2])),
        "price": draw(st.sampled_from([0.05, 0.11, 0.25])),
        "faults": draw(st.lists(st.sampled_from(FAULTS), max_size=3)),
        "variants": draw(st.sets(st.sampled_from(["prompt_id_int", "result_url_str", "errors_as_200"]))),
        "fail": draw(st.sampled_from([None, None, None, "CUDA out of memory"])),
        "status_script": draw(st.lists(st.sampled_from([1, 2, 0, 7, 1]), max_size=3)),
        "drop_fields": draw(st.sets(st.sampled_from(["queue_duration", "run_duration", "current_position",
                                                     "queue_size", "created_at", "error_msg", "env_id"]))),
        "extra": draw(st.booleans()),
        "name": draw(st.sampled_from(NAMES)),
        "batch": draw(st.integers(1, 3)),
        "big": draw(st.sampled_from([False, False, False, True])),
    }


def graph(sc: dict) -> dict:
    """A text-to-image graph whose image goes to ``savers`` SaveImage nodes, through one or two gateways (or none:
    the whole workflow)."""
    p = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "cloud_only.safetensors"}},
         "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": L("4", 1)}},
         "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": sc["batch"]}},
         "3": {"class_type": "KSampler", "inputs": {"seed": 7, "model": L("4"), "positive": L("6"),
                                                    "negative": L("6"), "latent_image": L("5")}},
         "8": {"class_type": "VAEDecode", "inputs": {"samples": L("3"), "vae": L("4", 2)}}}
    sources = ["8"]
    if not sc["whole"]:
        for g in range(sc["gateways"]):
            if g:   # a second cloud part of its own
                p["18"] = {"class_type": "VAEDecode", "inputs": {"samples": L("3"), "vae": L("4", 2)}}
                p["19"] = {"class_type": "ImageInvert", "inputs": {"image": L("18")}}
            p[f"1{g}0"] = {"class_type": "GPUGeekCloudExecute",
                           "inputs": {"workflow_id": WF, "run_on": "cloud", "timeout_s": 60,
                                      "image_1": L("19" if g else "8"), "runs": sc["runs"]}}
        sources = [f"1{g}0" for g in range(sc["gateways"])]
    for i, prefix in enumerate(sc["prefixes"]):
        p[f"9{i}"] = {"class_type": "SaveImage",
                      "inputs": {"filename_prefix": prefix, "images": L(sources[i % len(sources)])}}
    return p


def with_prefixes(p: dict, suffix: str) -> dict:
    q = copy.deepcopy(p)
    for node in q.values():
        if node["class_type"] == "SaveImage":
            node["inputs"]["filename_prefix"] += suffix
    return q


class Example:
    """One example's world: a fresh platform, journal, ComfyUI folders and environment, all undone after."""

    def __init__(self, sc: dict):
        from fake_gpugeek import FakeGPUGeek, Generated
        self.sc = sc
        self.tmp = Path(tempfile.mkdtemp(prefix="gpugeek-inv-"))
        self.env = {"GPUGEEK_HOME": str(self.tmp / "home"), "GPUGEEK_API_KEY": SECRET_KEY,
                    "GPUGEEK_WORKFLOW_ID": WF, "GPUGEEK_DAILY_LIMIT": str(sc["limit"] or ""),
                    "GPUGEEK_WHOLE_WORKFLOW": "1" if sc["whole"] else ""}
        self.fake = FakeGPUGeek(api_key=SECRET_KEY, seed=len(str(sc))).start()
        self.env["GPUGEEK_BASE_URL"] = self.fake.base_url
        self.saved_env = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        self.fake.variants |= sc["variants"]
        self.fake.task_opts.update(price=sc["price"], run_s=0.05, status_script=sc["status_script"],
                                   drop_fields=sorted(sc["drop_fields"]), name=sc["name"],
                                   extra_fields={"gpu": "4090", "status_text": "ok"} if sc["extra"] else {})
        if sc["fail"]:
            self.fake.task_opts["fail"] = sc["fail"]
        for call, kind in sc["faults"]:
            self.fake.fault(call, kind)
        if sc["big"]:   # every saver's file twice the task's budget, made as it is sent
            self.fake.runner = lambda prompt, task: {n: [(f"big_{n}.png", Generated(2 * SMALL_BUDGET, seed=1))]
                                                     for n, v in prompt.items() if v["class_type"] == "SaveImage"}
        import folder_paths
        self.folders = folder_paths.base   # put back after (tests that follow write where the last one pointed)
        self.classes = comfy_env(self.tmp)
        if sc["spent_before"]:
            j = core("journal").Journal()
            k = j.begin(plan_hash="earlier")
            j.update(k, status="succeeded", price=sc["spent_before"], prompt_id="1")
        mm.interrupt_flag = False
        mini_comfy.SHOWN.clear()

    def queue(self, prompt, cache):
        return asyncio.run(mini_comfy.execute(prompt, self.classes, PromptServer.instance, cache=cache))

    def close(self):
        core("owner").owner().drain(15)
        for t in self.fake.running_tasks():
            t.cancelled_at = t.cancelled_at or 0.0
        self.fake.stop()
        for k, v in self.saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        import folder_paths
        folder_paths.base = self.folders
        shutil.rmtree(self.tmp, ignore_errors=True)


def clear_error(e: BaseException) -> bool:
    """What a user may be shown: the pack's own errors, ComfyUI's validation refusal, a Stop."""
    return isinstance(e, (E.GPUGeekError, mini_comfy.ValidationError, mm.InterruptProcessingException))


@settings(max_examples=40 if CI else 25, deadline=None, derandomize=CI,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(sc=scenarios())
def test_money_and_files_hold_whatever_the_platform_and_the_graph(sc, monkeypatch):
    monkeypatch.setattr(core("run.task"), "CANCEL_PAUSE_S", 0.05)
    monkeypatch.setattr(core("transport"), "MAX_TASK_BYTES", SMALL_BUDGET)
    monkeypatch.setattr(core("transport").RetryPolicy, "base_s", 0.01)
    ex = Example(sc)
    try:
        cache = mini_comfy.Cache()
        p = graph(sc)
        tracemalloc.start()
        errors_seen = []
        for attempt in (p, with_prefixes(p, "_again")):   # queued, then again with only its prefixes changed
            before = len(ex.fake.tasks)
            try:
                ex.queue(attempt, cache)
                ok = True
            except BaseException as e:  # noqa: BLE001 - judged below
                errors_seen.append(e)
                ok = False
            if attempt is not p and ok and errors_seen == []:
                # one payment per result: the prefixes changed nothing the cloud makes, so nothing was sent again
                assert len(ex.fake.tasks) == before, f"a new prefix sent {len(ex.fake.tasks) - before} task(s) again"
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        unclear = [f"{type(e).__name__}: {e}" for e in errors_seen if not clear_error(e)]
        assert unclear == [], f"failed without a clear error: {unclear}"
        if sc["big"]:
            assert peak < SMALL_BUDGET + MEMORY_SLACK, f"memory grew {peak / 2**20:.0f} MiB past a 4 MiB budget"
        core("owner").owner().drain(15)
        journal = core("journal").Journal()
        journal.store.refresh()
        bad = invariants.money(invariants.fake_tasks(ex.fake), journal.store.all(), sc["limit"])
        bad += invariants.files(mini_comfy.SHOWN)
        if sc["limit"]:   # the day's spending of the examples before this one counts as the journal says
            spent = sum(float(t["price"] or 0) for t in invariants.fake_tasks(ex.fake)) + sc["spent_before"]
            most = max([float(t["price"] or 0) for t in invariants.fake_tasks(ex.fake)], default=0)
            if spent > max(sc["limit"] + most, sc["spent_before"]) + 1e-9:
                bad.append(f"spent {spent:g} (with {sc['spent_before']:g} before) against a limit of {sc['limit']:g}")
        assert bad == [], "; ".join(bad)
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        ex.close()
