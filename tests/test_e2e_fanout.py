"""End to end, fan-out and pools (issue 17) in a real ComfyUI: a gateway with runs = 4 over a seeded cloud node
gives four submissions with four seeds and a batch of four; over a pool of two real ComfyUI servers both
receive work. Skipped unless COMFYUI_DIR points at a ComfyUI (see tests/test_e2e_comfyui.py)."""
from __future__ import annotations

import time

import pytest
import requests

from real_comfyui import start_comfyui
from test_e2e_comfyui import COMFY, WF, free_port, history, post, stack, stack_env, wait_http  # noqa: F401

pytestmark = pytest.mark.skipif(not COMFY, reason="COMFYUI_DIR is not set")


def seeded(runs: int, target: str = "", seed: int = 500) -> dict:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0x808080}},
            "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": seed, "strength": 0.5}},
            "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": WF, "run_on": "cloud", "timeout_s": 120,
                                                                   "image_1": ["2", 0], "runs": runs, "target": target}},
            "11": {"class_type": "SaveImage", "inputs": {"filename_prefix": "e2e_runs", "images": ["10", 0]}}}


def cloud_seeds(url: str, since: set) -> list:
    h = requests.get(url + "/history", timeout=10).json()
    return sorted(e["prompt"][2]["2"]["inputs"]["seed"] for pid, e in h.items() if pid not in since
                  and "2" in e["prompt"][2] and e["prompt"][2]["2"]["class_type"] == "ImageAddNoise")


def test_four_runs_four_seeds_one_batch(stack):
    before = set(requests.get(stack["cloud"] + "/history", timeout=10).json())
    t0 = time.time()
    h = history(stack, post(stack, seeded(4)).json()["prompt_id"])
    wall = time.time() - t0
    assert h["status"]["status_str"] == "success"
    assert cloud_seeds(stack["cloud"], before) == [500, 501, 502, 503]
    assert len(h["outputs"]["11"]["images"]) == 4                    # one batch of the four runs' images
    print(f"\n4 runs through the GPUGeek fake: {wall:.2f} s")


@pytest.fixture(scope="module")
def second_cloud(stack, tmp_path_factory):
    port = free_port()
    out = tmp_path_factory.mktemp("cloud2")
    p = start_comfyui(out, "cloud2", port, "--output-directory", str(out / "output"), pack=False)
    try:
        wait_http(f"http://127.0.0.1:{port}/object_info/SaveImage")
        yield f"http://127.0.0.1:{port}"
    finally:
        p.terminate()
        p.wait(20)


def test_a_pool_of_two_comfyui_servers_both_receive_work(stack, second_cloud):
    servers = [stack["cloud"], second_cloud]
    before = [set(requests.get(u + "/history", timeout=10).json()) for u in servers]
    p = seeded(4, target=",".join(servers), seed=900)
    p["2"]["inputs"]["strength"] = 0.6   # not the cached part of the other test
    h = history(stack, post(stack, p).json()["prompt_id"])
    assert h["status"]["status_str"] == "success"
    got = [cloud_seeds(u, b) for u, b in zip(servers, before)]
    assert all(got) and sorted(got[0] + got[1]) == [900, 901, 902, 903]
    assert len(h["outputs"]["11"]["images"]) == 4
