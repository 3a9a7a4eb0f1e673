"""The third target: the Comfy API v2, with comfy-api-proxy as a real peer. The proxy runs as a subprocess in front of
the ComfyUI stand-in (tests/fake_comfyui.py); the gateway targets ``v2:<proxy URL>``. CI installs the proxy
(requirements-test.txt): these tests are skipped only where it is missing."""
import asyncio
import atexit
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HAVE = importlib.util.find_spec("comfy_api_proxy") is not None and importlib.util.find_spec("comfy_sdk") is not None
pytestmark = pytest.mark.skipif(not HAVE, reason="comfy-api-proxy or comfy-sdk is not installed: pip install -r "
                                "requirements.txt -r requirements-test.txt (CI does)")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

import mini_comfy  # noqa: E402
from conftest import JsonRequest, SECRET_KEY, command_line, comfy_env, core, load_pack, produced, said  # noqa: E402
from fake_comfyui import MODELS, FakeComfyUI  # noqa: E402
from fake_gpugeek import photo_png  # noqa: E402
from other_host import OtherHost  # noqa: E402

pack = load_pack()
import comfy.model_management as mm  # noqa: E402
import folder_paths  # noqa: E402
from server import PromptServer  # noqa: E402

E = core("errors")
C = core("config")
T = core("targets")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    """comfy-api-proxy (the PyPI package, its own CLI) in front of a ComfyUI at ``upstream``."""

    def __init__(self, upstream: str, token: str | None = None, log_path=None, python: str = sys.executable):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [python, "-m", "comfy_api_proxy.cli", "--comfyui", upstream, "--port", str(self.port)]
        if token:
            args += ["--token", token]
        self.log = open(log_path or os.devnull, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        atexit.register(lambda proc=self.proc: proc.poll() is None and proc.kill())   # never left behind
        end = time.time() + 30
        while time.time() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"comfy-api-proxy exited with {self.proc.returncode}")
                time.sleep(0.05)
        raise TimeoutError("comfy-api-proxy did not start")

    def stop(self):
        self.proc.terminate()   # aiohttp's graceful stop waits for open event streams: not for long here
        try:
            self.proc.wait(0.5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def remote():
    srv = FakeComfyUI().start()
    yield srv
    srv.stop()


@pytest.fixture
def proxy(remote):
    p = Proxy(remote.url)
    yield p
    p.stop()


@pytest.fixture
def env(proxy, monkeypatch, tmp_path):
    for var in ("COMFY_API_KEY", "COMFY_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GPUGEEK_TARGET", "v2:" + proxy.url)
    classes = comfy_env(tmp_path)
    mm.interrupt_flag = False
    PromptServer.instance.sent.clear()
    return classes


def graph():
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "", "run_on": "cloud",
                                                                   "timeout_s": 30, "image_1": ["2", 0]}}}


def execute(prompt, classes):
    return asyncio.run(mini_comfy.execute(prompt, classes, PromptServer.instance))


def png_tensor(data):
    import numpy as np
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype("float32") / 255)


def test_round_trip_through_the_proxy_journaled_and_loadable(env, remote, proxy):
    remote.step_s = 0.15   # the proxy sends at most two progress events a second
    p = graph()
    p["3"] = {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "mine"}}   # a cloud save
    results, ui, _ = execute(p, env)
    pid = results["10"][6]
    assert len(remote.outputs) == 2
    assert any(torch.equal(results["10"][0][0], png_tensor(data)) for data in remote.outputs.values())
    # the cloud's own SaveImage comes home too: both files kept in output/gpugeek
    kept = sorted(p.name for p in Path(folder_paths.get_output_directory(), "gpugeek").iterdir())
    assert len(kept) == 2 and all(name.endswith(".png") for name in kept)
    # the job ran on the ComfyUI behind the proxy, under the job's id
    assert pid in remote.history and remote.history[pid]["status"]["status_str"] == "success"
    live = [d for e, d, _ in PromptServer.instance.sent if e == "gpugeek.status" and d.get("cloud_node")]
    assert any(d["cloud_node"] == "2" and d["cloud_max"] == 5 for d in live)
    rec = pack.nodes.cloud.journal().by_prompt_id(pid)
    assert rec["status"] == "succeeded" and rec["target"].startswith("v2@") and rec["target_url"] == "v2:" + proxy.url
    # the cloud's file is kept under its own name, and Load Result brings the image back from the journal
    assert {i["filename"] for i in ui["10"]["images"]} == set(kept)
    L = pack.NODE_CLASS_MAPPINGS["GPUGeekLoadResult"]
    img, _ = asyncio.run(L().load(prompt_id=pid, unique_id="50"))   # every image file of the task
    assert img.shape[0] == 2 and any(torch.equal(img[i:i + 1], results["10"][0]) for i in range(2))


def test_inputs_are_assets_uploaded_once_and_found_by_hash_after(env, remote, caplog):
    Image.open(io.BytesIO(photo_png(16, 12, seed=2))).save(Path(folder_paths.get_input_directory(), "mine.png"))
    p = {"1": {"class_type": "LoadImage", "inputs": {"image": "mine.png"}},
         "5": {"class_type": "GPUGeekUploadImage", "inputs": {"image": ["1", 0]}},
         "2": {"class_type": "ImageInvert", "inputs": {"image": ["5", 0]}},
         "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "", "run_on": "cloud", "timeout_s": 30,
                                                                "image_1": ["2", 0]}}}
    results, _, _ = execute(json.loads(json.dumps(p)), env)
    assert remote.calls.count("upload") == 1
    token = results["5"][1]
    assert token.startswith("core/ASSET:") and json.loads(token[len("core/ASSET:"):])["hash"].startswith("blake3:")
    loader = remote.history[results["10"][6]]["prompt"][2]["gpugeek_in_0"]
    # the proxy resolved the core/ASSET reference to the file it put in ComfyUI's input folder
    assert loader["class_type"] == "LoadImage" and loader["inputs"]["image"] in remote.inputs
    # a changed cloud part with the same input: a new job, and no byte of the image sent again
    p["2"]["class_type"] = "ImageScaleBy"
    p["2"]["inputs"] = {"image": ["5", 0], "upscale_method": "nearest-exact", "scale_by": 1.0}
    caplog.clear()
    results2, _, _ = execute(json.loads(json.dumps(p)), env)
    assert results2["10"][6] != results["10"][6] and len(remote.history) == 2
    assert remote.calls.count("upload") == 1
    assert "was there already (found by its hash): nothing sent" in caplog.text


def test_a_local_file_a_cloud_loader_reads_goes_up_from_the_file_under_the_packs_name(env, remote):
    """A cloud LoadImage's file of the input folder goes up as an asset hashed and sent from the file (comfy-sdk's
    file source), named as the pack names uploads (its digest first), never read whole by the pack."""
    data = photo_png(16, 12, seed=5)
    Path(folder_paths.get_input_directory(), "mine.png").write_bytes(data)
    p = {"1": {"class_type": "LoadImage", "inputs": {"image": "mine.png"}},
         "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
         "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "", "run_on": "cloud", "timeout_s": 30,
                                                                "image_1": ["2", 0]}}}
    results, _, _ = execute(p, env)
    loader = remote.history[results["10"][6]]["prompt"][2]["1"]
    name = loader["inputs"]["image"]
    assert remote.calls.count("upload") == 1 and remote.inputs[name] == data
    assert name.rsplit("/", 1)[-1].startswith("gpugeek_") and name.endswith("_mine.png")


def test_node_errors_map_onto_the_users_nodes_in_both_languages(env, remote, proxy):
    p = graph()
    p["2"] = {"class_type": "CloudOnlyUpscaler", "inputs": {"image": ["1", 0]}}
    with pytest.raises(E.BadRequestError) as ei:
        execute(p, env)
    assert "The cloud has no node type CloudOnlyUpscaler (node #2)" in str(ei.value) and "{" not in str(ei.value)
    p = graph()
    p["5"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}}
    p["8"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    p["7"] = {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["5", 2]}}
    p["10"]["inputs"]["image_1"] = ["7", 0]
    del p["1"], p["2"]
    with pytest.raises(E.BadRequestError) as ei:
        execute(p, env)
    assert "#5 CheckpointLoaderSimple: the cloud has no ckpt_name named sd_xl_base_1.0.safetensors" in str(ei.value)
    told = [d for kind, d, _ in PromptServer.instance.sent if kind == "gpugeek.cloud_errors"]
    assert told[-1]["gateway"] == "10" and [e["id"] for e in told[-1]["errors"]] == ["5"]   # outlined on node 5
    p["10"]["inputs"]["gpugeek_lang"] = "zh"
    with pytest.raises(E.BadRequestError) as ei:
        execute(p, env)
    assert said("err_v2_rejected") in str(ei.value)
    assert said("cloud_value_not_in_list", node="#5 CheckpointLoaderSimple", value="sd_xl_base_1.0.safetensors",
                input="ckpt_name") in str(ei.value)
    assert remote.history == {}
    # the refusal named what the server has: the editor's list of this v2 target learned it (offload/catalog.py)
    learned = core("catalog").catalog().view(["v2:" + proxy.url], {"CheckpointLoaderSimple": ["ckpt_name"]})
    assert learned["CheckpointLoaderSimple"]["ckpt_name"]["values"] == MODELS


def test_a_failing_cloud_node_is_named(env, remote):
    remote.fail_class = "ImageInvert"
    with pytest.raises(E.TaskFailedError) as ei:
        execute(graph(), env)
    assert "CUDA out of memory" in str(ei.value) and "ImageInvert #2" in str(ei.value)
    rec = pack.nodes.cloud.journal().tasks(1)[0]
    assert rec["status"] == "failed" and "ImageInvert #2" in rec["error"]
    p = graph()
    p["10"]["inputs"]["gpugeek_lang"] = "zh"
    with pytest.raises(E.TaskFailedError) as ei:
        execute(p, env)
    assert said("err_task_failed", reason="ImageInvert #2: CUDA out of memory", label="GPUGeek Cloud Execute #10") in str(ei.value)


def _stop_when(remote, phase):
    def stop():
        end = time.time() + 20
        while time.time() < end:
            mine = [p for p in remote.pending if p[1] != "someone-else"]
            running_mine = remote.running and remote.running[1] != "someone-else"
            if (phase == "pending" and mine) or (phase == "running" and running_mine):
                time.sleep(0.3)
                mm.interrupt_flag = True
                return
            time.sleep(0.02)
    threading.Thread(target=stop, daemon=True).start()


@pytest.mark.parametrize("phase", ["pending", "running"])
def test_stop_cancels_exactly_that_job(env, remote, phase):
    remote.step_s, remote.steps = 0.5, 100   # every prompt would run 50 s: Stop comes while it runs or waits
    other = {"1": {"class_type": "EmptyImage", "inputs": {}},
             "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}}
    if phase == "pending":  # someone else's long prompt runs first
        remote.pending.append([0, "someone-else", other, "another-client"])
    _stop_when(remote, phase)
    with pytest.raises(mm.InterruptProcessingException):
        execute(graph(), env)
    assert core("owner").owner().drain(15)  # the prompt ended at once; the cancel finishes on the owner
    rec = pack.nodes.cloud.journal().tasks(1)[0]
    assert remote.job_cancels == [rec["prompt_id"]] and rec["status"] == "cancelled"
    assert remote.interrupts == [] and remote.deleted == []   # nothing but that job's own cancel
    if phase == "running":
        msgs = remote.history[rec["prompt_id"]]["status"]["messages"]
        assert msgs[-1][0] == "execution_interrupted"
    else:   # someone else's prompt runs to its end (sped up now); ours never ran
        remote.step_s = 0.01
        end = time.time() + 15
        while "someone-else" not in remote.history and time.time() < end:
            time.sleep(0.1)
        assert "someone-else" in remote.history and rec["prompt_id"] not in remote.history


def test_a_cancel_the_server_ignores_is_reported(env, remote, monkeypatch):
    """comfy-api-proxy in front of a ComfyUI without /api/jobs/{id}/cancel (0.3.x) takes the cancel and runs on:
    the pack does not believe it, and the journal says the job may still run."""
    monkeypatch.setattr(core("targets.comfy_v2"), "CANCEL_SETTLE_S", 0.6)
    remote.cancel_route, remote.step_s, remote.steps = False, 0.5, 20
    _stop_when(remote, "running")
    with pytest.raises(mm.InterruptProcessingException):
        execute(graph(), env)
    assert core("owner").owner().drain(20)
    rec = pack.nodes.cloud.journal().tasks(1)[0]
    assert rec["status"] == "unknown" and "may still run" in rec["error"]
    remote.running and setattr(remote, "_interrupt", True)


def test_previews_come_home_on_the_cloud_node(env, remote):
    remote.preview_all, remote.step_s, remote.steps = True, 0.3, 6   # a server started with --preview-method
    execute(graph(), env)
    shown = [d for kind, d, _ in PromptServer.instance.sent if kind == "gpugeek.preview"]
    assert shown and all(d["node"] == "2" and d["gateway"] == "10" for d in shown)
    assert all(d["image"].startswith("data:image/jpeg;base64,") for d in shown)


@pytest.fixture
def guarded(remote):
    """The proxy with a bearer token: the Comfy API key is that token."""
    p = Proxy(remote.url, token=SECRET_KEY)
    yield p
    p.stop()


def test_the_key_goes_to_its_v2_address_only(guarded, remote, monkeypatch, tmp_path):
    other = OtherHost(status=404)
    try:
        monkeypatch.setenv("COMFY_API_KEY", SECRET_KEY)
        monkeypatch.setenv("GPUGEEK_TARGET", "v2:" + guarded.url)
        classes = comfy_env(tmp_path)
        mm.interrupt_flag = False
        results, _, _ = execute(graph(), classes)   # the key opens the proxy
        assert results["10"][0] is not None
        p = graph()
        p["10"]["inputs"]["target"] = "v2:" + other.url   # a workflow names another host: it never gets the key
        with pytest.raises(E.GPUGeekError) as ei:
            execute(p, classes)
        produced(ei.value)
        assert other.seen and not any(SECRET_KEY in json.dumps(h) for _, _, h in other.seen)
        cfg = C.load_config()
        assert cfg.comfy_key_for(guarded.url) is not None and cfg.comfy_key_for(other.url) is None
        public = json.dumps(cfg.public())
        assert SECRET_KEY not in public and cfg.public()["comfy_key_last4"] == SECRET_KEY[-4:]
        # no key, or a wrong one: one sentence that says which
        monkeypatch.delenv("COMFY_API_KEY")
        with pytest.raises(E.AuthError) as ei:
            execute(graph(), classes)
        assert "needs a Comfy API key (HTTP 401)" in str(ei.value) and "COMFY_API_KEY" in ei.value.text("zh")
        monkeypatch.setenv("COMFY_API_KEY", "comfyui-wrong-key-1234")
        with pytest.raises(E.AuthError) as ei:
            execute(graph(), classes)
        assert "refused the Comfy API key (HTTP 401)" in str(ei.value)
        produced(ei.value)
    finally:
        other.stop()


def test_a_saved_key_is_bound_to_the_v2_address_it_was_saved_for(monkeypatch):
    for var in ("COMFY_API_KEY", "COMFY_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    C.save_settings(target="v2:http://127.0.0.1:8189", comfy_key_url="http://127.0.0.1:8189")
    C.save_comfy_api_key(SECRET_KEY)
    cfg = C.load_config()
    assert cfg.comfy_key_source == "saved" and cfg.comfy_key_for("http://127.0.0.1:8189") is not None
    assert cfg.comfy_key_for("http://127.0.0.1:9999") is None and cfg.comfy_key_for("https://cloud.comfy.org") is None
    assert (C.data_dir() / C.COMFY_KEY_FILE).stat().st_mode & 0o077 == 0
    assert SECRET_KEY not in repr(cfg) and SECRET_KEY not in json.dumps(cfg.public())
    # from the environment: to GPUGEEK_TARGET's v2 address, else COMFY_BASE_URL's, else Comfy Cloud's
    monkeypatch.setenv("COMFY_API_KEY", SECRET_KEY)
    assert C.load_config().comfy_key_url == "https://cloud.comfy.org"
    monkeypatch.setenv("GPUGEEK_TARGET", "v2:https://example.run.comfy.app")
    assert C.load_config().comfy_key_url == "https://example.run.comfy.app"
    assert C.load_config().target == "v2:https://example.run.comfy.app"
    monkeypatch.setenv("GPUGEEK_TARGET", "v2:http://10.1.2.3:8189")
    assert C.load_config().problems and "unencrypted" in C.load_config().problems[0]


def test_settings_route_binds_and_forgets_the_comfy_key(monkeypatch):
    for var in ("COMFY_API_KEY", "COMFY_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    routes = pack.nodes.routes

    def post(body):
        return json.loads(asyncio.run(routes.post_config(JsonRequest(body))).text)

    out = post({"target": "v2:http://127.0.0.1:8189/", "comfy_api_key": SECRET_KEY})
    assert out["ok"] and out["target"] == "v2:http://127.0.0.1:8189" and out["comfy_key_set"]
    assert out["comfy_key_url"] == "http://127.0.0.1:8189" and SECRET_KEY not in json.dumps(out)
    out = post({"target": "v2:http://127.0.0.1:8190"})   # another v2 address: the key is not taken along
    assert out["ok"] and not out["comfy_key_set"] and "removed" in " ".join(out["notes"])
    out = post({"target": "v2:ftp://x"})
    assert not out["ok"]


@pytest.mark.parametrize("status,cls,words", [
    (401, "AuthError", "needs a Comfy API key (HTTP 401)"),
    (403, "AuthError", "needs a Comfy API key (HTTP 403)"),
    (404, "NotFoundError", "answered HTTP 404 to the task status"),
    (402, "QuotaError", "not enough credits"),
    (409, "BadRequestError", "refused the task status (HTTP 409"),
    (422, "BadRequestError", "refused the task status (HTTP 422"),
    (429, "BusyError", "is busy or failing (HTTP 429"),
    (503, "BusyError", "is busy or failing (HTTP 503"),
])
def test_http_answers_become_one_sentence(status, cls, words):
    other = OtherHost(status=status)
    try:
        cfg = C.Config(api_key=None, target="gpugeek")

        async def go():
            async with T.open_target(cfg, "v2:" + other.url) as t:
                t.retry.attempts, t.retry.base_s = 2, 0.01
                return await t.status("8f1f3f61-0d7c-4f2e-9d35-0b6f0d4c2f11")
        with pytest.raises(E.GPUGeekError) as ei:
            asyncio.run(go())
        assert type(ei.value).__name__ == cls and words in str(ei.value), str(ei.value)
        zh = ei.value.text("zh")
        assert "Comfy API v2" in zh and other.url in zh and zh.count("。") <= 1
    finally:
        other.stop()


def test_ping_tells_a_v2_server_from_something_else(proxy, remote):
    cfg = C.Config(api_key=None, target="gpugeek")

    async def ping(where):
        async with T.open_target(cfg, where) as t:
            return await t.ping("en")
    ok, message = asyncio.run(ping("v2:" + proxy.url))
    assert ok and message == f"Connected to the Comfy API v2 at {proxy.url}."
    ok, message = asyncio.run(ping("v2:" + remote.url))   # a plain ComfyUI is no v2 server
    assert not ok and "not as a Comfy API v2" in message
    ok, message = asyncio.run(ping(f"v2:http://127.0.0.1:{free_port()}"))
    assert not ok and "Cannot connect" in message


def test_command_line_runs_on_a_v2_address(proxy, remote, tmp_path, monkeypatch):
    for var in ("COMFY_API_KEY", "COMFY_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    cli = command_line()
    (tmp_path / "in.png").write_bytes(photo_png(16, 16, seed=1))
    wf = tmp_path / "wf_api.json"
    wf.write_text(json.dumps({
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}))
    out = tmp_path / "out"
    assert cli.main(["run", str(wf), "--target", "v2:" + proxy.url, "--out", str(out)]) == 0
    files = list(out.glob("*.png"))
    assert len(files) == 1 and files[0].read_bytes() == (tmp_path / "in.png").read_bytes()
    pid = next(iter(remote.history))
    assert cli.main(["results", pid, "--out", str(tmp_path / "again")]) == 0
    assert len(list((tmp_path / "again").glob("*.png"))) == 1


class Stub:
    """A v2 server whose answers a test writes: ``answer(request, n)`` for the n-th request (0-based)."""

    def __init__(self, answer):
        from aiohttp import web
        self.answer, self.seen = answer, []
        ready = threading.Event()

        async def any_(request):
            self.seen.append((request.method, request.path_qs, dict(request.headers), await request.read()))
            return await self.answer(request, len(self.seen) - 1)

        def serve():
            self.loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", any_)
            runner = web.AppRunner(app, access_log=None)
            self.loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
            ready.set()
            self.loop.run_forever()
        threading.Thread(target=serve, daemon=True).start()
        ready.wait(10)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)


def _on(url, fn):
    cfg = C.Config(api_key=None, target="gpugeek")

    async def go():
        async with T.open_target(cfg, "v2:" + url) as t:
            t.retry.attempts, t.retry.base_s = 2, 0.01
            return await fn(t)
    return asyncio.run(go())


def test_a_lost_submit_answer_is_never_a_second_job():
    """The answer to a submit is lost: it is sent again under the same Idempotency-Key, which the server refuses
    (the first one arrived), so the pack says a job may exist and sends nothing more."""
    from aiohttp import web

    async def answer(request, n):
        if n == 0:
            await request.read()
            request.transport.close()   # the job was made; the answer never leaves
            return web.Response()
        return web.json_response({"error": {"code": "idempotency_key_reuse", "message": "used"}}, status=422)
    stub = Stub(answer)
    try:
        with pytest.raises(E.SubmitUnknownError) as ei:
            _on(stub.url, lambda t: t.submit({"1": {"class_type": "EmptyImage", "inputs": {}}}))
        keys = [h.get("Idempotency-Key") for m, p, h, _ in stub.seen if p == "/api/v2/jobs"]
        assert len(keys) == 2 and keys[0] == keys[1] and keys[0]
        assert "a paid job may exist" in str(ei.value) and said("err_v2_submit_unknown") in ei.value.text("zh")
    finally:
        stub.stop()


def test_an_unknown_asset_and_the_pack_s_caps():
    from aiohttp import web
    missing = {"error": {"code": "missing_asset", "message": "Unresolvable core/ASSET reference(s): a",
                         "details": {"missing_ids": ["a"]}}}

    async def answer(request, n):
        if request.path == "/api/v2/jobs":
            return web.json_response(missing, status=422)
        if request.path.endswith("/content"):   # a result this server no longer has
            return web.json_response({"error": {"code": "output_unavailable", "message": "gone"}}, status=404)
        if request.path.endswith("/gz"):   # compressed although identity was asked for
            return web.Response(body=b"\x1f\x8b" + b"0" * 20, headers={"Content-Encoding": "gzip"})
        return web.Response(status=302, headers={"Location": "http://127.0.0.1:9/elsewhere"})
    stub = Stub(answer)
    try:
        token = 'core/ASSET:{"hash":"blake3:00","id":"a"}'
        with pytest.raises(E.BadRequestError) as ei:
            _on(stub.url, lambda t: t.submit({"1": {"class_type": "LoadImage", "inputs": {"image": token}}}))
        assert "no longer has an input image" in str(ei.value)
        body = json.loads(stub.seen[0][3])   # the uploaded input went as a core/ASSET reference
        assert body["workflow"]["1"]["inputs"]["image"] == {"__type": "core/ASSET",
                                                           "info": {"hash": "blake3:00", "id": "a"}}
        with pytest.raises(E.ResultError) as ei:
            _on(stub.url, lambda t: t.status("gz"))
        assert "compressed" in str(ei.value)
        with pytest.raises(E.GPUGeekError) as ei:   # a redirect is never followed by an API call
            _on(stub.url, lambda t: t.status("8f1f3f61-0d7c-4f2e-9d35-0b6f0d4c2f11"))
        assert "HTTP 302" in str(ei.value)
        with pytest.raises(E.NotFoundError) as ei:
            _on(stub.url, lambda t: t.fetch(stub.url + "/api/v2/assets/abc/content?filename=ComfyUI_00001_.png"))
        assert "no longer has this result file (HTTP 404)" in str(ei.value) and "--state-dir" in str(ei.value)
        assert stub.seen[-1][1] == "/api/v2/assets/abc/content"   # the file's name is the pack's own: not sent
    finally:
        stub.stop()


def test_runs_at_once_are_jobs_at_once(env, remote):
    p = graph()
    p["10"]["inputs"]["runs"] = 3
    results, _, _ = execute(p, env)
    assert results["10"][0].shape[0] == 3 and len(remote.history) == 3
    ids = results["10"][6].split(",")
    assert sorted(ids) == sorted(remote.history) and all(
        pack.nodes.cloud.journal().by_prompt_id(i)["status"] == "succeeded" for i in ids)


@pytest.mark.parametrize("name", ["caf\udce9_{n:05d}_", "high\ud800_{n:05d}_", "nul\x00_{n:05d}_",
                                  "x" * 5000 + "_{n:05d}_"])
def test_a_job_whose_outputs_have_odd_names_is_journaled_succeeded_with_every_address(env, remote, name):
    """Issue 38 (4): the job's outputs are named as the server's files are (not UTF-8, a lone surrogate, NUL,
    very long): the job is journaled succeeded with every address, and the file comes home by its asset."""
    from urllib.parse import unquote_to_bytes, urlsplit
    remote.output_name = name
    try:
        execute(graph(), env)
    except E.GPUGeekError as e:
        print("RAISED", e)  # what the proxy with such a name is the proxy's (its /view upstream)
    (rec,) = [r for r in pack.nodes.cloud.journal().tasks() if r.get("prompt_id")]
    assert rec["status"] == "succeeded", rec
    (urls,) = rec["result_url"].values()
    (saved,) = remote.outputs
    assert len(urls) == 1 and urls[0].isascii()
    raw = urlsplit(urls[0]).query.split("=", 1)[1]
    assert unquote_to_bytes(raw) == core("transfer").exact_bytes(saved)
