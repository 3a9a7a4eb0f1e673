"""End to end, models where the workflow runs (issue 40), the server side in a real ComfyUI: a ComfyUI with the pack
and GPUGEEK_RECEIVE_MODELS=1 takes a local LoRA (a small valid safetensors file) from the pack's client once, lists it
to LoraLoader as gpugeek/<name>, reuses it by content the second time, refuses a pickle and a name with ../, and acts
on no cross-site "simple" request. Skipped unless COMFYUI_DIR points at a ComfyUI (see tests/test_e2e_comfyui.py)."""
from __future__ import annotations

import asyncio
import json
import struct

import aiohttp
import pytest
import requests

from conftest import core
from real_comfyui import start_comfyui, stop
from test_e2e_comfyui import COMFY, free_port, wait_http

pytestmark = pytest.mark.skipif(not COMFY, reason="COMFYUI_DIR is not set")


def safetensors(seed: int = 0) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + bytes((seed + i) % 251 for i in range(16))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("receiving")
    port = free_port()
    p = start_comfyui(tmp, "srv", port, env={"GPUGEEK_RECEIVE_MODELS": "1", "GPUGEEK_HOME": str(tmp / "home")})
    try:
        wait_http(f"http://127.0.0.1:{port}/object_info/LoraLoader", timeout=180)
        yield {"url": f"http://127.0.0.1:{port}", "tmp": tmp, "models": tmp / "comfyui-srv" / "models"}
    finally:
        stop([p])


def send(url: str, value: str, path) -> str:
    """The pack's client making ``value`` (this machine's file at ``path``) available on the server."""
    models, targets = core("run.models"), core("targets.comfyui")

    async def go():
        src = models.ModelSource(find=lambda v, *a: ("loras", str(path)) if v == value else None)
        prompt = {"5": {"class_type": "LoraLoader", "inputs": {"lora_name": value}}}
        async with aiohttp.ClientSession() as s:
            t = targets.ComfyUITarget(s, url, allow_lan_http=True)
            try:
                await models.make_available(prompt, t, src)
            finally:
                await t.close()
        return prompt["5"]["inputs"]["lora_name"]
    return asyncio.run(go())


def test_a_local_lora_goes_up_once_and_is_listed(server):
    f = server["tmp"] / "mine.safetensors"
    f.write_bytes(safetensors())
    assert send(server["url"], "mine.safetensors", f) == "gpugeek/mine.safetensors"
    held = server["models"] / "loras" / "gpugeek" / "mine.safetensors"
    assert held.read_bytes() == f.read_bytes()
    first = held.stat().st_mtime_ns
    assert send(server["url"], "mine.safetensors", f) == "gpugeek/mine.safetensors"
    assert held.stat().st_mtime_ns == first   # asked by content: nothing sent again
    listed = requests.get(server["url"] + "/object_info/LoraLoader", timeout=30).json()
    assert "gpugeek/mine.safetensors" in listed["LoraLoader"]["input"]["required"]["lora_name"][0]


def test_a_pickle_and_a_name_with_dotdot_are_refused(server):
    bad = server["tmp"] / "evil.ckpt"
    bad.write_bytes(b"\x80\x04" + b"x" * 10)
    with pytest.raises(Exception) as got:
        send(server["url"], "evil.ckpt", bad)
    assert "pickle" in str(got.value)
    assert not list(server["models"].rglob("evil.ckpt"))
    r = requests.post(server["url"] + "/gpugeek/models/has", timeout=10,
                      json={"kind": "loras", "name": "../x.safetensors", "size": 1, "sha256": "0" * 64})
    assert r.status_code == 400 and r.json()["key"] == "receive_bad_name"
    r = requests.post(server["url"] + "/api/gpugeek/models/has", data="{}", headers={"Content-Type": "text/plain"},
                      timeout=10)
    assert r.status_code == 415
