"""End to end in a real ComfyUI: a graph with no gateway runs as one cloud part when the whole-workflow switch
is on (GPUGEEK_WHOLE_WORKFLOW=1 here, or the prompt's extra_data), against the GPUGeek-compatible fake whose
tasks run on a second real ComfyUI. Skipped unless COMFYUI_DIR is set (see tests/test_e2e_comfyui.py)."""
from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import requests
from PIL import Image

from test_e2e_comfyui import COMFY, WF, history, stack, stats  # noqa: F401  (the module's own stack)

pytestmark = pytest.mark.skipif(not COMFY, reason="COMFYUI_DIR is not set")


@pytest.fixture(scope="module")
def stack_env():
    return {"GPUGEEK_WHOLE_WORKFLOW": "1", "GPUGEEK_WORKFLOW_ID": WF}


def photo(w=40, h=32):
    rng = np.random.default_rng(7)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue(), arr


@pytest.fixture(scope="module")
def here_only(stack):
    """A photo that exists only in this ComfyUI's input folder."""
    data, arr = photo()
    (stack["tmp"] / "comfyui-local" / "input" / "only_here.png").write_bytes(data)
    return arr


def downloaded(nested=False):
    """A graph as downloaded: no gateway; a local photo inverted and saved, an empty image previewed (ids as
    the editor gives a graph built with subgraphs when ``nested``)."""
    i = (lambda n: f"12:{n}") if nested else (lambda n: n)
    return {i("1"): {"class_type": "LoadImage", "inputs": {"image": "only_here.png"}},
            i("2"): {"class_type": "ImageInvert", "inputs": {"image": [i("1"), 0]}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "whole/cats", "images": [i("2"), 0]}},
            i("7:1"): {"class_type": "EmptyImage", "inputs": {"width": 48, "height": 40, "batch_size": 1,
                                                               "color": 0x00FF00}},
            "12:7:2": {"class_type": "PreviewImage", "inputs": {"images": [i("7:1"), 0]}}}


def cloud_file(stack, prefix):
    """The file the cloud's own SaveImage wrote for ``prefix`` (the latest), as pixels."""
    folder, name = prefix.split("/")
    files = sorted((stack["tmp"] / "cloud-out" / folder).glob(f"{name}_*.png"), key=lambda f: f.stat().st_mtime)
    return np.asarray(Image.open(files[-1]).convert("RGB"))


def inverted(got, original):
    """ComfyUI's ImageInvert and an 8-bit save truncate: within one level of 255 - x."""
    return np.abs(got.astype(int) - (255 - original.astype(int))).max() <= 1


def post(stack, prompt, extra=None):
    body = {"prompt": prompt, "client_id": "e2e-whole"}
    if extra is not None:
        body["extra_data"] = extra
    return requests.post(stack["local"] + "/prompt", json=body, timeout=30)


def new_tasks(stack, before):
    seen = {t["prompt_id"] for t in before["tasks"]}
    return [t for t in stats(stack)["tasks"] if t["prompt_id"] not in seen]


@pytest.mark.parametrize("how", ["environment", "extra_data"])
def test_one_submission_holding_every_node_and_the_save_in_local_history(stack, here_only, how):
    before = stats(stack)
    extra = {"gpugeek_whole_workflow": True} if how == "extra_data" else None
    p = downloaded()
    if how == "extra_data":  # a new content: not served from ComfyUI's cache of the first run
        p["9"]["inputs"]["filename_prefix"] = "whole/dogs"
    r = post(stack, p, extra)
    assert r.status_code == 200, r.text
    h = history(stack, r.json()["prompt_id"])
    assert h["status"]["status_str"] == "success", h["status"]
    new = new_tasks(stack, before)
    assert len(new) == 1
    cloud = new[0]["prompt"]
    assert set(p) <= set(cloud)  # every node of the graph in the one submission
    # the photo that exists only here was uploaded and is read by URL
    assert "/oss/" in cloud["1"]["inputs"]["image"] and stats(stack)["calls"]["put"] >= 1
    # the save's images, in this prompt's local history on node 9, with the right pixels
    (img,) = h["outputs"]["9"]["images"]
    assert img["type"] == "output" and img["subfolder"] == "whole"
    got = np.asarray(Image.open(stack["tmp"] / "out" / "whole" / img["filename"]).convert("RGB"))
    assert (got == cloud_file(stack, p["9"]["inputs"]["filename_prefix"])).all()  # the cloud's pixels, exactly
    assert inverted(got, here_only)
    (prev,) = h["outputs"]["12:7:2"]["images"]
    assert prev["type"] == "temp"
    shown = requests.get(stack["local"] + "/view", params=prev, timeout=10)
    assert shown.status_code == 200
    assert (np.asarray(Image.open(io.BytesIO(shown.content)).convert("RGB")) == [0, 255, 0]).all()


def test_switch_false_runs_here_and_submits_nothing(stack, here_only):
    before = stats(stack)
    p = downloaded()
    p["9"]["inputs"]["filename_prefix"] = "here/cats"
    h = history(stack, post(stack, p, {"gpugeek_whole_workflow": False}).json()["prompt_id"])
    assert h["status"]["status_str"] == "success", h["status"]
    time.sleep(0.5)
    after = stats(stack)
    assert new_tasks(stack, before) == [] and after["calls"] == before["calls"]
    assert sorted(h["prompt"][2]) == sorted(p)  # the graph as it was, run here
    (img,) = h["outputs"]["9"]["images"]
    got = np.asarray(Image.open(stack["tmp"] / "out" / "here" / img["filename"]).convert("RGB"))
    assert inverted(got, here_only)


def test_subgraph_ids_run(stack, here_only):
    before = stats(stack)
    p = downloaded(nested=True)
    p["9"]["inputs"]["filename_prefix"] = "nested/cats"
    h = history(stack, post(stack, p).json()["prompt_id"])
    assert h["status"]["status_str"] == "success", h["status"]
    (task,) = new_tasks(stack, before)
    assert {"12:1", "12:2", "12:7:1", "12:7:2", "9"} <= set(task["prompt"])
    (img,) = h["outputs"]["9"]["images"]
    got = np.asarray(Image.open(stack["tmp"] / "out" / "nested" / img["filename"]).convert("RGB"))
    assert (got == cloud_file(stack, "nested/cats")).all() and inverted(got, here_only)


def test_a_node_that_only_makes_sense_here_is_refused_on_it_and_nothing_is_sent(stack, here_only):
    before = stats(stack)
    p = downloaded()
    p["40"] = {"class_type": "GPUGeekLoadResult", "inputs": {"prompt_id": "123"}}
    p["41"] = {"class_type": "PreviewImage", "inputs": {"images": ["40", 0]}}
    r = post(stack, p)
    assert r.status_code == 400, r.text
    errs = r.json()["node_errors"]
    assert list(errs) == ["40"] and "GPUGeek" in json.dumps(errs["40"])
    time.sleep(0.5)
    assert stats(stack)["calls"] == before["calls"]
