"""End to end in a real ComfyUI (issue 38): the money-and-files promises as a user meets them, against the
GPUGeek-compatible fake whose tasks run on a second real ComfyUI: a daily limit with runs, a failure then a rerun then a
new prefix, two savers of one prefix queued again and again. The invariants of tests/invariants.py are checked after
each test by the fixture in tests/conftest.py as well. Skipped unless COMFYUI_DIR is set."""
from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from PIL import Image

from test_e2e_comfyui import COMFY, WF, history, stack, stats  # noqa: F401  (this module's own)
from test_e2e_whole_workflow import new_tasks, post

pytestmark = pytest.mark.skipif(not COMFY, reason="COMFYUI_DIR is not set")


@pytest.fixture(scope="module")
def stack_env():
    return {"GPUGEEK_WHOLE_WORKFLOW": "1", "GPUGEEK_WORKFLOW_ID": WF}


def opts(stack, **kw):
    requests.post(stack["fake"] + "/_fake/opts", json=kw, timeout=10)


def settings(stack, **kw):
    r = requests.post(stack["local"] + "/gpugeek/config", json=kw, timeout=10)
    assert r.status_code == 200, r.text


def colours(a: int, b: int, prefix_a="same", prefix_b="same") -> dict:
    """Two savers, each of its own colour."""
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 1, "color": a}},
            "2": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 1, "color": b}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix_a, "images": ["1", 0]}},
            "19": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix_b, "images": ["2", 0]}}}


def pixel(stack, entry) -> tuple:
    path = stack["tmp"] / "out" / entry.get("subfolder", "") / entry["filename"]
    return tuple(np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB"))[0, 0])


def test_two_savers_of_one_prefix_keep_files_of_their_own_run_after_run(stack):
    """Issue 38, 3: in 1 to 3 of 3 runs both nodes showed one file, the other node's pixels lost."""
    names = set()
    for run in range(3):
        r = post(stack, colours(0xFF0000 + run, 0x0000FF + (run << 8)))
        assert r.status_code == 200, r.text
        h = history(stack, r.json()["prompt_id"])
        assert h["status"]["status_str"] == "success", h["status"]
        (a,), (b,) = h["outputs"]["9"]["images"], h["outputs"]["19"]["images"]
        assert a["filename"] != b["filename"] and not {a["filename"], b["filename"]} & names
        names |= {a["filename"], b["filename"]}
        assert pixel(stack, a)[0] == 255 and pixel(stack, b)[2] == 255   # each node's own pixels


def test_a_failure_a_rerun_and_a_new_prefix_pay_once_for_the_result(stack):
    """Issue 38, 2: a whole workflow that failed in the cloud, queued again and succeeding, then only its prefix
    changed: a third task was submitted and paid."""
    before = stats(stack)
    p = colours(0x123456, 0x654321, "fail_then", "fail_then_b")
    opts(stack, fail="CUDA out of memory")
    try:
        h = history(stack, post(stack, p).json()["prompt_id"])
    finally:
        opts(stack, fail=None)
    assert h["status"]["status_str"] == "error"
    h = history(stack, post(stack, p).json()["prompt_id"])
    assert h["status"]["status_str"] == "success" and len(new_tasks(stack, before)) == 2
    p["9"]["inputs"]["filename_prefix"] = "renamed"
    h = history(stack, post(stack, p).json()["prompt_id"])
    assert h["status"]["status_str"] == "success"
    assert len(new_tasks(stack, before)) == 2, "a new prefix paid for the cloud part again"
    assert h["outputs"]["9"]["images"][0]["filename"].startswith("renamed_")


def test_a_daily_limit_with_eight_runs_of_a_part_never_run(stack):
    """Issue 38, 1: limit = spent + 0.25, a part never run before with runs = 8 at 0.11 a task: eight were sent. Its
    price unknown, the first run goes alone; then each counts at its price: what is sent passes the limit by at most one
    task."""
    tasks = requests.get(stack["local"] + "/gpugeek/tasks", timeout=10).json()["tasks"]
    spent = sum(float(t.get("price") or 0) for t in tasks)
    opts(stack, price=0.11)
    settings(stack, daily_limit=round(spent + 0.25, 6))
    before = stats(stack)
    try:
        r = post(stack, colours(0x0A0B0C, 0x0C0B0A, "limit", "limit"), {"gpugeek_runs": 8})
        assert r.status_code == 200, r.text
        h = history(stack, r.json()["prompt_id"])
    finally:
        settings(stack, daily_limit=None)
        opts(stack, price=0.25)
    sent = new_tasks(stack, before)
    assert 1 <= len(sent) <= 3 and sum(float(t["price"] or 0) for t in sent) <= 0.25 + 0.11 + 1e-9
    if h["status"]["status_str"] == "success":   # the runs that went are delivered
        assert len(h["outputs"]["9"]["images"]) == len(sent)


def test_runs_past_eight_are_eight(stack):
    """Runs capped at 8 everywhere: a script asking for 64 gets 8."""
    before = stats(stack)
    r = post(stack, colours(0x010203, 0x030201, "many", "many"), {"gpugeek_runs": 64})
    h = history(stack, r.json()["prompt_id"])
    assert h["status"]["status_str"] == "success" and len(new_tasks(stack, before)) == 8


def test_a_prompt_for_the_cloud_sent_as_text_is_refused(stack):
    """Issue 38, 9: ComfyUI's /prompt reads text/plain; a prompt for the cloud is taken only as JSON."""
    import json
    before = stats(stack)
    body = json.dumps({"prompt": colours(0x111111, 0x222222, "x", "y"), "extra_data": {"gpugeek_runs": 8}})
    r = requests.post(stack["local"] + "/prompt", data=body.encode(), headers={"Content-Type": "text/plain"}, timeout=30)
    assert r.status_code == 415 and "application/json" in r.json()["error"]["message"]
    assert new_tasks(stack, before) == []
