"""End to end, models where the workflow runs (issue 40), the server side in a real ComfyUI: a ComfyUI with the pack
and GPUGEEK_RECEIVE_MODELS=1 takes a local LoRA (a small valid safetensors file) from the pack's client once, lists it
to LoraLoader as gpugeek/<name>, reuses it by content the second time, refuses a pickle and a name with ../, and acts
on no cross-site "simple" request. Through a real local ComfyUI with the pack as the client: a pool of two receiving
servers each gets the local LoRA once and a second use sends nothing; a template's model (``properties.models``) is
fetched by the server itself from a local HTTP server, and a wrong hash is refused. A large model's upload cut
mid-way by a TCP proxy goes on from the server's offset. Skipped unless COMFYUI_DIR points at a ComfyUI (see
tests/test_e2e_comfyui.py).

The servers' ComfyUI loads two test-only custom nodes written here (never part of the pack): a probe node that reads
a LoRA the way ComfyUI's loaders do (folder_paths, comfy.utils.load_torch_file) and gives an image, so that a cloud
part runs on a CPU without a checkpoint; and, on the first server only, the hook that lets a template's model come
over plain http from loopback (offload/receive.py ALLOW_HTTP_LOOPBACK_FOR_TESTS: a module constant no setting or
environment variable reaches)."""
from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import socket
import struct
import threading
import time

import aiohttp
import pytest
import requests

from conftest import core
from real_comfyui import base_directory, start_comfyui, stop
from test_e2e_comfyui import COMFY, WF, free_port, wait_http

# three ComfyUIs start on a CPU shared with others: the module's first test waits for them
pytestmark = [pytest.mark.skipif(not COMFY, reason="COMFYUI_DIR is not set"), pytest.mark.timeout(600)]


def safetensors(seed: int = 0) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + bytes((seed + i) % 251 for i in range(16))


# A test-only custom node for the receiving servers: a cloud node that reads a LoRA as ComfyUI's loaders do and makes
# an image of it (LoraLoader itself needs a checkpoint, which a CPU test machine has none of), and a count of the
# pack's model routes each server answered (``GET /gpugeek_e2e/calls``).
PROBE = """
import collections, folder_paths, comfy.utils, torch
from aiohttp import web
from server import PromptServer

CALLS = collections.Counter()

@web.middleware
async def count(request, handler):
    if request.path.startswith(("/gpugeek/models/", "/api/gpugeek/models/")):
        CALLS[request.method + " " + request.path.split("/models/")[1]] += 1
    return await handler(request)

PromptServer.instance.app.middlewares.append(count)

@PromptServer.instance.routes.get("/gpugeek_e2e/calls")
async def calls(request):
    return web.json_response(dict(CALLS))

class GPUGeekE2ELoraProbe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"lora_name": (folder_paths.get_filename_list("loras"),),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31})}}
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "probe"
    CATEGORY = "testing"

    def probe(self, lora_name, seed):
        path = folder_paths.get_full_path("loras", lora_name)
        if path is None:
            raise FileNotFoundError(lora_name)
        w = comfy.utils.load_torch_file(path, safe_load=True)["w"]   # a valid safetensors file, or this raises
        return (torch.full((1, 8, 8, 3), (w.numel() + seed) % 251 / 251.0),)

NODE_CLASS_MAPPINGS = {"GPUGeekE2ELoraProbe": GPUGeekE2ELoraProbe}
"""
# Test-only, the first server alone: a template's model may come over http from loopback. The pack's module is found
# whatever order ComfyUI loads custom nodes in (it is set on every request, before the pack's routes answer).
LOOPBACK_HOOK = """
import sys
from aiohttp import web
from server import PromptServer

@web.middleware
async def loopback_for_tests(request, handler):
    for name, module in list(sys.modules.items()):
        if name.endswith(".offload.receive") and hasattr(module, "ALLOW_HTTP_LOOPBACK_FOR_TESTS"):
            module.ALLOW_HTTP_LOOPBACK_FOR_TESTS = True
    return await handler(request)

PromptServer.instance.app.middlewares.append(loopback_for_tests)
NODE_CLASS_MAPPINGS = {}
"""


def start_receiving(tmp, name: str, loopback: bool = False):
    """A ComfyUI with the pack, receiving on, the probe node (and the loopback hook where asked)."""
    nodes = base_directory(tmp, name) / "custom_nodes"
    (nodes / "gpugeek_e2e_probe.py").write_text(PROBE)
    if loopback:
        (nodes / "gpugeek_e2e_loopback.py").write_text(LOOPBACK_HOOK)
    port = free_port()
    p = start_comfyui(tmp, name, port, env={"GPUGEEK_RECEIVE_MODELS": "1", "GPUGEEK_HOME": str(tmp / f"home-{name}")})
    return p, {"url": f"http://127.0.0.1:{port}", "tmp": tmp, "models": tmp / f"comfyui-{name}" / "models"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two receiving servers (the first with the tests' loopback hook) and a local ComfyUI with the pack."""
    tmp = tmp_path_factory.mktemp("receiving")
    procs, out = [], []
    try:
        for name, loopback in (("srv", True), ("srv2", False)):
            p, info = start_receiving(tmp, name, loopback)
            procs.append(p)
            out.append(info)
        local_port = free_port()
        (tmp / "user").mkdir()
        (base_directory(tmp, "local") / "models" / "loras").mkdir(parents=True, exist_ok=True)
        procs.append(start_comfyui(tmp, "local", local_port, "--output-directory", str(tmp / "out"),
                                   "--user-directory", str(tmp / "user"), env={"GPUGEEK_HOME": str(tmp / "home")}))
        for info in out:
            wait_http(info["url"] + "/object_info/GPUGeekE2ELoraProbe", timeout=300)
        wait_http(f"http://127.0.0.1:{local_port}/object_info/GPUGeekCloudExecute", timeout=300)
        yield {"servers": out, "local": f"http://127.0.0.1:{local_port}", "tmp": tmp,
               "local_models": tmp / "comfyui-local" / "models"}
    finally:
        stop(procs)


@pytest.fixture(scope="module")
def server(servers):
    return servers["servers"][0]


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


# ---- through a real local ComfyUI with the pack: a pool, a template's model --------------------------------------
def probe_prompt(lora: str, target: str, runs: int = 1, seed: int = 0) -> dict:
    return {"20": {"class_type": "GPUGeekE2ELoraProbe", "inputs": {"lora_name": lora, "seed": seed}},
            "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": WF, "run_on": "cloud",
                                                                   "timeout_s": 240, "image_1": ["20", 0],
                                                                   "runs": runs, "target": target}},
            "11": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}}}


def run_local(servers, prompt: dict, extra: dict | None = None, timeout: float = 300) -> dict:
    """The prompt queued on the local ComfyUI, its history entry once it ended."""
    r = requests.post(servers["local"] + "/prompt", timeout=30,
                      json={"prompt": prompt, "client_id": "e2e-models", "extra_data": extra or {}})
    assert r.status_code == 200, r.text
    pid = r.json()["prompt_id"]
    end = time.time() + timeout
    while time.time() < end:
        h = requests.get(f"{servers['local']}/history/{pid}", timeout=10).json()
        if pid in h and h[pid].get("status", {}).get("completed") is not None:
            return h[pid]
        time.sleep(0.5)
    raise TimeoutError(pid)


def error_of(h: dict) -> str:
    return json.dumps([m for m in h["status"].get("messages", []) if m[0] == "execution_error"])


def calls(info: dict) -> dict:
    """The pack's model routes a server answered so far (the probe's count)."""
    return requests.get(info["url"] + "/gpugeek_e2e/calls", timeout=10).json()


def probed(info: dict) -> list:
    """The lora_name of every probe the server ran."""
    h = requests.get(info["url"] + "/history", timeout=10).json()
    return [e["prompt"][2]["20"]["inputs"]["lora_name"] for e in h.values()
            if e["prompt"][2].get("20", {}).get("class_type") == "GPUGeekE2ELoraProbe"]


def test_a_pool_of_two_servers_each_gets_the_local_lora_once_and_a_second_use_sends_nothing(servers):
    a, b = servers["servers"]
    f = servers["local_models"] / "loras" / "pool.safetensors"
    f.write_bytes(safetensors(seed=3))
    target = ",".join([a["url"], b["url"]])
    before = [calls(x) for x in (a, b)]
    h = run_local(servers, probe_prompt("pool.safetensors", target, runs=2, seed=10))
    assert h["status"]["status_str"] == "success", error_of(h)
    assert len(h["outputs"]["11"]["images"]) == 2
    first = [calls(x) for x in (a, b)]
    held = [x["models"] / "loras" / "gpugeek" / "pool.safetensors" for x in (a, b)]
    for was, now, copy, x in zip(before, first, held, (a, b)):
        assert now.get("PUT upload", 0) - was.get("PUT upload", 0) == 1   # each member got it once
        assert copy.read_bytes() == f.read_bytes()
        assert "gpugeek/pool.safetensors" in probed(x)   # each ran it under its own copy's name
    marks = [copy.stat().st_mtime_ns for copy in held]

    h = run_local(servers, probe_prompt("pool.safetensors", target, runs=2, seed=20))
    assert h["status"]["status_str"] == "success", error_of(h)
    second = [calls(x) for x in (a, b)]
    for was, now in zip(first, second):
        assert now.get("PUT upload", 0) == was.get("PUT upload", 0)   # nothing sent to either
        assert now.get("POST has", 0) > was.get("POST has", 0)        # each asked by content, and used
    assert [copy.stat().st_mtime_ns for copy in held] == marks
    assert [probed(x).count("gpugeek/pool.safetensors") for x in (a, b)] == [2, 2]


class Files:
    """A plain HTTP server on loopback holding a template's model files; ``gets`` counts the downloads by path."""

    def __init__(self, files: dict):
        self.files, self.gets = files, {}
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.gets[self.path] = outer.gets.get(self.path, 0) + 1
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def template(name: str, url: str, sha: str) -> dict:
    """The editor's workflow (extra_pnginfo.workflow) naming a model's address as ComfyUI's templates do."""
    return {"extra_pnginfo": {"workflow": {"nodes": [{"id": 20, "type": "GPUGeekE2ELoraProbe", "properties": {
        "models": [{"name": name, "url": url, "directory": "loras", "hash": sha, "hash_type": "SHA256"}]}}]}}}


def test_a_templates_model_is_fetched_by_the_server_and_a_wrong_hash_is_refused(servers):
    from conftest import said
    a, b = servers["servers"]
    data = safetensors(seed=5)
    sha = hashlib.sha256(data).hexdigest()
    files = Files({"/tmpl.safetensors": data, "/bad.safetensors": data})
    try:
        sent_before = calls(a).get("PUT upload", 0)
        wf = template("tmpl.safetensors", files.url + "/tmpl.safetensors", sha)
        h = run_local(servers, probe_prompt("tmpl.safetensors", a["url"], seed=30), wf)
        assert h["status"]["status_str"] == "success", error_of(h)
        assert files.gets == {"/tmpl.safetensors": 1}   # the server downloaded it itself
        assert calls(a).get("PUT upload", 0) == sent_before   # nothing went up from this machine
        held = a["models"] / "loras" / "gpugeek" / "tmpl.safetensors"
        assert hashlib.sha256(held.read_bytes()).hexdigest() == sha
        assert "gpugeek/tmpl.safetensors" in probed(a)
        h = run_local(servers, probe_prompt("tmpl.safetensors", a["url"], seed=31), wf)
        assert h["status"]["status_str"] == "success", error_of(h)
        assert files.gets == {"/tmpl.safetensors": 1}   # held by its hash: not downloaded again

        bad = template("bad.safetensors", files.url + "/bad.safetensors", "1" * 64)
        h = run_local(servers, probe_prompt("bad.safetensors", a["url"], seed=32), bad)
        assert h["status"]["status_str"] == "error"
        assert said("receive_hash", "en", name="bad.safetensors") in error_of(h)
        assert not list(a["models"].rglob("bad.safetensors"))

        # the second server has no test hook: as in production, a plain-http address is not fetched at all
        h = run_local(servers, probe_prompt("tmpl.safetensors", b["url"], seed=33), wf)
        assert h["status"]["status_str"] == "error"
        assert said("receive_https_only", "en", url=files.url + "/tmpl.safetensors") in error_of(h)
        assert files.gets == {"/tmpl.safetensors": 1, "/bad.safetensors": 1}
        assert not list(b["models"].rglob("tmpl.safetensors"))
    finally:
        files.close()


# ---- a broken upload resumed ----------------------------------------------------------------------------------
# The large model: tens of MB, so that the cut falls mid-upload, many pieces (receive.CHUNK) in.
BIG_FLOATS = 16 << 20   # 64 MiB of float32
# What may be sent twice when the link breaks: what was in flight and lost with it (the loopback sockets' buffers,
# which Linux grows to a few MB each way, and the server's piece not yet written, receive.CHUNK). Starting again from
# 0 would send the half before the cut again (32 MiB): well above this.
RESENT_ALLOWANCE = 16 << 20


class CuttingProxy:
    """A TCP proxy to ``upstream`` counting the bytes the client sends (``sent``); the first connection to carry more
    than ``cut_at`` bytes is cut there, both sides aborted as a broken link does (``cuts``)."""

    def __init__(self, upstream_port: int, cut_at: int):
        self.upstream_port, self.cut_at, self.sent, self.cuts = upstream_port, cut_at, 0, 0

    async def _pipe(self, reader, writer, counted: bool, state: dict, peers):
        try:
            while True:
                piece = await reader.read(1 << 16)
                if not piece:
                    break
                if counted:
                    self.sent += len(piece)
                    state["n"] += len(piece)
                    if not self.cuts and state["n"] > self.cut_at:
                        self.cuts += 1
                        for w in peers:
                            w.transport.abort()
                        return
                writer.write(piece)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for w in peers:
                w.close()

    async def _take(self, c_reader, c_writer):
        try:
            u_reader, u_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            c_writer.transport.abort()
            return
        state = {"n": 0}
        peers = (c_writer, u_writer)
        await asyncio.gather(self._pipe(c_reader, u_writer, True, state, peers),
                             self._pipe(u_reader, c_writer, False, state, peers))

    def start(self):
        ready = threading.Event()

        def run():
            self.loop = asyncio.new_event_loop()
            srv = self.loop.run_until_complete(asyncio.start_server(self._take, "127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
            ready.set()
            self.loop.run_forever()
            srv.close()
        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)
        return self

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_a_large_upload_cut_midway_goes_on_from_the_servers_offset(servers):
    import numpy as np
    b = servers["servers"][1]
    header = json.dumps({"w": {"dtype": "F32", "shape": [BIG_FLOATS], "data_offsets": [0, 4 * BIG_FLOATS]}}).encode()
    header += b" " * (-len(header) % 8)
    data = struct.pack("<Q", len(header)) + header + np.arange(BIG_FLOATS, dtype="<f4").tobytes()
    f = b["tmp"] / "big.safetensors"
    f.write_bytes(data)
    port = int(b["url"].rsplit(":", 1)[1])
    proxy = CuttingProxy(port, cut_at=len(data) // 2).start()
    try:
        assert send(proxy.url, "big.safetensors", f) == "gpugeek/big.safetensors"
    finally:
        proxy.stop()
    print(f"\n{len(data)} B model, cut after {len(data) // 2} B: {proxy.sent} B sent in all")
    assert proxy.cuts == 1
    held = b["models"] / "loras" / "gpugeek" / "big.safetensors"
    assert hashlib.sha256(held.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()   # whole
    assert len(data) < proxy.sent < len(data) + RESENT_ALLOWANCE < 2 * len(data)   # went on from the server's offset
    assert not list((b["models"] / "loras" / "gpugeek" / ".partial").glob("*.part"))
