"""End to end on the third target: a real ComfyUI as the cloud, comfy-api-proxy in front of it (with a bearer
token: the Comfy API key), and a second real ComfyUI with the pack whose gateways target ``v2:<proxy URL>``.
Skipped unless COMFYUI_DIR points at a ComfyUI checkout whose Python (COMFYUI_PYTHON) has comfy-sdk; the proxy
runs on this Python (comfy-api-proxy installed here, as requirements-test.txt does).

  COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python python -m pytest tests/test_e2e_v2.py
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time
import uuid

import pytest
import requests

from real_comfyui import stop, COMFY, comfyui_command
from test_e2e_comfyui import free_port, history, wait_http

KEY = "comfyui-e2e-V2-DISTINCTIVE-5b7d2e91"
pytestmark = [pytest.mark.skipif(not COMFY, reason="COMFYUI_DIR is not set"), pytest.mark.timeout(600),
              pytest.mark.skipif(importlib.util.find_spec("comfy_api_proxy") is None,
                                 reason="comfy-api-proxy is not installed (pip install -r requirements-test.txt)")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from other_host import OtherHost
    from test_v2_target import Proxy
    tmp = tmp_path_factory.mktemp("e2e_v2")
    cloud_port, local_port = free_port(), free_port()
    procs, logs = [], {}

    def start(name, args, env):
        logs[name] = tmp / f"{name}.log"
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("GPUGEEK_", "COMFY_"))}
        procs.append(subprocess.Popen(args, stdout=open(logs[name], "w"), stderr=subprocess.STDOUT, cwd=COMFY,
                                      env={**clean, **env}))
    start("cloud", comfyui_command(tmp, "cloud", cloud_port, "--output-directory", str(tmp / "cloud-out"),
                                   "--input-directory", str(tmp / "cloud-in"), pack=False), {})
    cloud = f"http://127.0.0.1:{cloud_port}"
    proxy, other = None, OtherHost(status=404)
    try:
        wait_http(cloud + "/object_info/SaveImage")
        logs["proxy"] = tmp / "proxy.log"
        proxy = Proxy(cloud, token=KEY, log_path=logs["proxy"])
        (tmp / "in").mkdir()
        (tmp / "user").mkdir()
        start("local", comfyui_command(tmp, "local", local_port, "--output-directory", str(tmp / "out"),
                                       "--input-directory", str(tmp / "in"), "--user-directory", str(tmp / "user")),
              {"COMFY_API_KEY": KEY, "GPUGEEK_TARGET": "v2:" + proxy.url})
        wait_http(f"http://127.0.0.1:{local_port}/object_info/GPUGeekCloudExecute", timeout=180)
        yield {"local": f"http://127.0.0.1:{local_port}", "cloud": cloud, "proxy": proxy.url, "other": other,
               "tmp": tmp, "logs": logs}
    finally:
        stop(procs)
        if proxy is not None:
            proxy.stop()
        other.stop()


def run(stack, prompt, timeout=180):
    r = requests.post(stack["local"] + "/prompt", json={"prompt": prompt, "client_id": "e2e-v2"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["prompt_id"], history(stack, r.json()["prompt_id"], timeout)


def gateway(image, **inputs):
    return {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "", "run_on": "cloud", "timeout_s": 300,
                                                           "image_1": image, **inputs}}


def small(color=0xFF8000):
    """EmptyImage and ImageInvert in the cloud, ImageInvert and SaveImage here: the colour comes back."""
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": color}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "10": gateway(["2", 0]),
            "11": {"class_type": "ImageInvert", "inputs": {"image": ["10", 0]}},
            "12": {"class_type": "SaveImage", "inputs": {"filename_prefix": "e2e_v2", "images": ["11", 0]}}}


def failure(h) -> str:
    return json.dumps(h["status"]["messages"])


def test_images_come_back_journaled_and_loadable(stack):
    import numpy as np
    from PIL import Image
    pid, h = run(stack, small())
    assert h["status"]["status_str"] == "success", failure(h)
    f = h["outputs"]["12"]["images"][0]
    px = np.asarray(Image.open(stack["tmp"] / "out" / f["filename"]).convert("RGB"))
    assert px.shape == (48, 64, 3) and abs(px[0, 0].astype(int) - [255, 128, 0]).max() <= 1
    task = requests.get(stack["local"] + "/gpugeek/tasks", timeout=10).json()["tasks"][0]
    assert task["status"] == "succeeded" and task["target"].startswith("v2@127.0.0.1:")
    job = task["prompt_id"]   # the job ran on the ComfyUI behind the proxy, under the job's id
    ran = requests.get(f"{stack['cloud']}/history/{job}", timeout=10).json()[job]
    assert ran["status"]["status_str"] == "success"
    pid, h = run(stack, {"1": {"class_type": "GPUGeekLoadResult", "inputs": {"prompt_id": job}},
                         "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "e2e_v2_lr", "images": ["1", 0]}}})
    assert h["status"]["status_str"] == "success", failure(h)


def test_a_second_run_uploads_nothing(stack):
    from PIL import Image
    Image.new("RGB", (40, 32), (10, 200, 30)).save(stack["tmp"] / "in" / "photo.png")
    p = {"5": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},   # a cloud LoadImage of a local file
         "6": {"class_type": "ImageInvert", "inputs": {"image": ["5", 0]}},
         "10": gateway(["6", 0]),
         "12": {"class_type": "SaveImage", "inputs": {"filename_prefix": "e2e_v2_up", "images": ["10", 0]}}}
    _, h = run(stack, p)
    assert h["status"]["status_str"] == "success", failure(h)
    p["6"] = {"class_type": "ImageScaleBy", "inputs": {"image": ["5", 0], "upscale_method": "nearest-exact",
                                                       "scale_by": 2.0}}
    _, h = run(stack, p)   # another cloud part, the same input image
    assert h["status"]["status_str"] == "success", failure(h)
    assert h["outputs"]["12"]["images"]
    log = [line for line in stack["logs"]["local"].read_text().splitlines() if "input gpugeek_" in line]
    assert len(log) == 2 and "uploaded (" in log[0] and "nothing sent" in log[1], log
    assert len(list((stack["tmp"] / "cloud-in").rglob("gpugeek_*"))) == 1


def test_a_failing_cloud_node_is_named_on_the_gateway(stack):
    p = small()
    p["2"] = {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 31, "sigma": 1.0}}
    p["1"]["inputs"].update(width=8, height=8)
    _, h = run(stack, p)
    assert h["status"]["status_str"] == "error"
    said = failure(h)
    assert "ImageBlur #2" in said and "the cloud run failed" in said
    p = small()
    p["2"] = {"class_type": "LoadImage", "inputs": {"image": "nowhere_to_be_found.png"}}
    p["10"]["inputs"]["image_1"] = ["2", 0]
    del p["1"]
    _, h = run(stack, p)
    said = failure(h)
    assert h["status"]["status_str"] == "error" and "refused the cloud part" in said and "#2 LoadImage" in said


def test_the_key_never_reaches_another_host(stack):
    p = small(color=0x123456)
    p["10"]["inputs"]["target"] = "v2:" + stack["other"].url   # a workflow that names another address
    _, h = run(stack, p)
    assert h["status"]["status_str"] == "error" and stack["other"].seen
    assert not [s for s in stack["other"].seen if KEY in json.dumps(s)]
    texts = [requests.get(stack["local"] + u, timeout=60).text
             for u in ("/history", "/gpugeek/config", "/gpugeek/tasks", "/object_info/GPUGeekCloudExecute")]
    texts += [stack["logs"]["local"].read_text()]
    for folder in ("out", "user"):
        texts += [p.read_bytes().decode("latin-1") for p in (stack["tmp"] / folder).rglob("*") if p.is_file()
                  and p.name != "comfy_api_key"]
    assert not [t[:80] for t in texts if KEY in t]
    assert json.loads(texts[1])["comfy_key_set"] and json.loads(texts[1])["comfy_key_last4"] == KEY[-4:]


def test_stop_cancels_that_job_or_says_it_could_not(stack):
    """The proxy cancels through ComfyUI's /api/jobs/{id}/cancel; a ComfyUI without it (0.3.x) keeps running the
    job, and the pack says so (the task is journaled as possibly still running) instead of trusting the proxy."""
    can = requests.post(f"{stack['cloud']}/api/jobs/{uuid.uuid4()}/cancel", timeout=10).status_code not in (404, 405)
    p = small()   # a cloud part that runs for a minute or more on a CPU: a chain of wide blurs
    p["1"]["inputs"].update(width=1536, height=1536, batch_size=4)
    for i in range(2, 8):
        p[str(i)] = {"class_type": "ImageBlur", "inputs": {"image": [str(i - 1), 0], "blur_radius": 31, "sigma": 8.0}}
    p["10"]["inputs"]["image_1"] = ["7", 0]
    pid = requests.post(stack["local"] + "/prompt", json={"prompt": p}, timeout=30).json()["prompt_id"]
    end = time.time() + 60
    while time.time() < end and not requests.get(stack["cloud"] + "/queue", timeout=10).json()["queue_running"]:
        time.sleep(0.2)
    t0 = time.time()
    requests.post(stack["local"] + "/interrupt", json={}, timeout=10)
    h = history(stack, pid)
    assert time.time() - t0 < 10 and "interrupted" in json.dumps(h["status"]).lower()
    end, task = time.time() + 90, None
    while time.time() < end:
        task = requests.get(stack["local"] + "/gpugeek/tasks", timeout=10).json()["tasks"][0]
        if task["status"] not in ("queued", "running", "cancelling"):
            break
        time.sleep(1)
    if can:
        assert task["status"] == "cancelled", task
    elif task["status"] == "cancelled":   # the job ended there all the same (seen once in CI; why is not known):
        assert not requests.get(f"{stack['cloud']}/queue", timeout=10).json()["queue_running"]   # a true claim
    else:
        assert task["status"] == "unknown" and "may still run" in (task["error"] or ""), task
        assert requests.get(f"{stack['cloud']}/queue", timeout=10).json()["queue_running"]   # it does run on
        requests.post(stack["cloud"] + "/interrupt", json={}, timeout=10)   # stop it there, as the error says
