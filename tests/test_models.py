"""Your models go where your workflow runs (issue 40): a local model a ComfyUI server lacks goes up once by content
(offload/run/models.py, to the pack's own receiver on the server: offload/receive.py, taught to the fake ComfyUI),
a template's model is fetched by the server itself, hostile names and formats are refused, and on GPUGeek a model the
cloud's list lacks is named on its node before anything is paid."""
import asyncio
import hashlib
import json
import os
import struct
import threading
from pathlib import Path

import pytest
from aiohttp import web

import mini_comfy
from conftest import SECRET_KEY, comfy_env, core, load_pack, said
from fake_comfyui import FakeComfyUI
from fake_gpugeek import close_server_loop

pack = load_pack()
import folder_paths  # noqa: E402
import comfy.model_management as mm  # noqa: E402
from server import PromptServer  # noqa: E402

E = core("errors")
receive = core("receive")
cat = core("catalog")
models = core("run.models")
WF = "123456789012345"


def safetensors(n_floats: int = 2, seed: int = 0) -> bytes:
    """A small valid safetensors file: 8-byte header length, the JSON header, the tensor's bytes."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}).encode()
    header += b" " * (-len(header) % 8)
    body = bytes((seed + i) % 251 for i in range(4 * n_floats))
    return struct.pack("<Q", len(header)) + header + body


@pytest.fixture
def local_models(tmp_path, monkeypatch):
    """This machine's model folders (ComfyUI's folder_paths): loras under tmp/models/loras."""
    base = tmp_path / "local_models"
    (base / "loras").mkdir(parents=True)
    kinds = {"loras": ([str(base / "loras")], {".safetensors", ".ckpt"})}
    monkeypatch.setattr(folder_paths, "folder_names_and_paths", kinds, raising=False)
    monkeypatch.setattr(folder_paths, "get_filename_list", lambda kind: sorted(
        os.path.relpath(os.path.join(d, f), kinds[kind][0][0]).replace(os.sep, "/")
        for d, _, fs in os.walk(kinds[kind][0][0]) for f in fs) if kind in kinds else [])
    monkeypatch.setattr(folder_paths, "get_full_path", lambda kind, name: os.path.join(kinds[kind][0][0], name)
                        if kind in kinds and os.path.isfile(os.path.join(kinds[kind][0][0], name)) else None,
                        raising=False)
    return base


@pytest.fixture
def remote(tmp_path):
    srv = FakeComfyUI().start()
    srv.receive_models(tmp_path / "server_models")
    yield srv
    srv.stop()


@pytest.fixture
def env(remote, monkeypatch, tmp_path):
    monkeypatch.setenv("GPUGEEK_TARGET", remote.url)
    classes = comfy_env(tmp_path)
    mm.interrupt_flag = False
    PromptServer.instance.sent.clear()
    return classes


def lora_graph(lora="mine.safetensors", seed=1, runs=1):
    L = lambda n, s=0: [n, s]  # noqa: E731
    return {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
            "5": {"class_type": "LoraLoader", "inputs": {"model": L("4"), "clip": L("4", 1), "lora_name": lora,
                                                         "strength_model": 1.0, "strength_clip": 1.0}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": L("5", 1)}},
            "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "3": {"class_type": "KSampler", "inputs": {"seed": seed, "model": L("5"), "positive": L("6"),
                                                       "negative": L("6"), "latent_image": L("7")}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": L("3"), "vae": L("4", 2)}},
            "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": WF, "run_on": "cloud",
                                                                   "timeout_s": 60, "image_1": L("8"),
                                                                   "runs": runs}}}


def execute(prompt, classes, extra_data=None):
    return asyncio.run(mini_comfy.execute(prompt, classes, PromptServer.instance, extra_data=extra_data))


def sent_prompts(srv):
    return [h["prompt"][2] for h in srv.history.values()]


def test_a_local_lora_goes_up_once_and_its_second_use_sends_nothing(env, remote, local_models):
    data = safetensors(64)
    (local_models / "loras" / "mine.safetensors").write_bytes(data)
    _, ui, _ = execute(lora_graph(seed=1), env)
    assert remote.calls.count("model_upload") == 1
    assert ui["10"]["gpugeek"][0]["uploaded_bytes"] == len(data)   # the gateway's record counts what went up
    held = Path(remote.models_dir, "loras", "gpugeek", "mine.safetensors")
    assert held.read_bytes() == data
    assert sent_prompts(remote)[-1]["5"]["inputs"]["lora_name"] == "gpugeek/mine.safetensors"
    # as the user's progress: the model named on the node while it went up
    assert any("mine.safetensors" in t for t, _ in PromptServer.instance.progress_texts)
    execute(lora_graph(seed=2), env)   # a second use: asked by content, nothing sent
    assert remote.calls.count("model_upload") == 1
    assert len(remote.history) == 2
    assert sent_prompts(remote)[-1]["5"]["inputs"]["lora_name"] == "gpugeek/mine.safetensors"


def test_a_model_the_server_holds_under_its_own_name_is_not_sent(env, remote, local_models):
    data = safetensors(16, seed=3)
    (local_models / "loras" / "same.safetensors").write_bytes(data)
    Path(remote.models_dir, "loras", "same.safetensors").write_bytes(data)
    execute(lora_graph("same.safetensors"), env)
    assert "model_upload" not in remote.calls
    assert sent_prompts(remote)[-1]["5"]["inputs"]["lora_name"] == "same.safetensors"


def test_a_pool_of_two_servers_each_gets_it_once(env, remote, local_models, tmp_path, monkeypatch):
    other = FakeComfyUI(step_s=0.05).start()
    try:
        other.receive_models(tmp_path / "other_models")
        remote.step_s = 0.05
        monkeypatch.setenv("GPUGEEK_TARGET", f"{remote.url},{other.url}")
        (local_models / "loras" / "mine.safetensors").write_bytes(safetensors(32))
        execute(lora_graph(runs=2), env)
        execute(lora_graph(seed=7, runs=2), env)
        for srv in (remote, other):
            assert srv.history, "each server of the pool ran a task"
            assert srv.calls.count("model_upload") == 1
            assert all(p["5"]["inputs"]["lora_name"] == "gpugeek/mine.safetensors" for p in sent_prompts(srv))
    finally:
        other.stop()


def test_a_broken_upload_resumes_from_the_servers_offset(env, remote, local_models):
    data = safetensors(3 * receive.CHUNK // 4 + 1000)   # three pieces and a bit
    (local_models / "loras" / "big.safetensors").write_bytes(data)
    remote.break_upload_after = receive.CHUNK   # the first upload's connection drops after one piece
    execute(lora_graph("big.safetensors"), env)
    assert Path(remote.models_dir, "loras", "gpugeek", "big.safetensors").read_bytes() == data
    # resumed where it broke, never from the start again
    assert remote.model_bytes_in <= len(data) + receive.CHUNK
    assert remote.calls.count("model_upload") >= 2


def test_a_broken_upload_is_one_line_in_the_servers_log_not_a_traceback(env, remote, local_models, caplog):
    """The connection lost mid-upload (the client's link, its ComfyUI stopped): the server keeps the partial file for
    the client to resume, and says so in one line, not aiohttp's "Error handling request" with a traceback."""
    import logging
    data = safetensors(3 * receive.CHUNK // 4 + 1000)
    (local_models / "loras" / "cut.safetensors").write_bytes(data)
    remote.break_upload_after = receive.CHUNK
    with caplog.at_level(logging.INFO):
        execute(lora_graph("cut.safetensors"), env)
    assert Path(remote.models_dir, "loras", "gpugeek", "cut.safetensors").read_bytes() == data
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("broke off" in r.getMessage() for r in caplog.records if r.name.startswith("gpugeek"))


def test_a_pickle_is_refused_with_a_sentence_and_nothing_runs(env, remote, local_models):
    (local_models / "loras" / "evil.ckpt").write_bytes(b"\x80\x04" + b"x" * 100)
    with pytest.raises(Exception) as got:
        execute(lora_graph("evil.ckpt"), env)
    assert said("receive_pickle", "en", name="evil.ckpt") in str(got.value)
    assert "prompt" not in remote.calls and "model_upload" not in remote.calls
    assert not list(Path(remote.models_dir, "loras").rglob("evil.ckpt"))


def test_the_receiver_refuses_names_that_leave_its_folder(tmp_path):
    rec = receive.Receiver(lambda kind: [str(tmp_path / "loras")] if kind == "loras" else [])
    (tmp_path / "loras").mkdir()
    sha = "0" * 64
    for bad in ("../x.safetensors", "/etc/x.safetensors", "a/../../x.safetensors", "C:/x.safetensors",
                "a\\..\\x.safetensors", "x\x00.safetensors"):
        with pytest.raises(receive.Refused) as got:
            rec.have("loras", bad, 10, sha)
        assert got.value.key == "receive_bad_name", bad
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "loras" / "gpugeek").mkdir()
    os.symlink(outside, tmp_path / "loras" / "gpugeek" / "link")
    with pytest.raises(receive.Refused) as got:
        rec.have("loras", "link/x.safetensors", 10, sha)
    assert got.value.key == "receive_bad_name"
    with pytest.raises(receive.Refused) as got:
        rec.have("embeddings", "x.safetensors", 10, sha)
    assert got.value.key == "receive_bad_kind"
    with pytest.raises(receive.Refused) as got:
        rec.have("loras", "x.exe", 10, sha)
    assert got.value.key == "receive_format"


def test_the_routes_are_off_by_default_and_ask_for_the_token(remote, tmp_path):
    import requests
    body = {"kind": "loras", "name": "../x.safetensors", "size": 10, "sha256": "0" * 64}
    rec = remote.receiver
    remote.receiver = None   # receiving off: as a server without the pack
    assert requests.post(remote.url + receive.HAS, json=body, timeout=10).status_code == 404
    remote.receiver = rec
    r = requests.post(remote.url + receive.HAS, json=body, timeout=10)
    assert r.status_code == 400 and r.json()["key"] == "receive_bad_name"
    rec.token = "s3cret"
    assert requests.post(remote.url + receive.HAS, json=body, timeout=10).status_code == 401
    r = requests.post(remote.url + receive.HAS, json=body, timeout=10, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 400
    # a body that is not declared JSON (a cross-site form) acts on nothing
    r = requests.post(remote.url + receive.HAS, data=json.dumps(body), timeout=10,
                      headers={"Authorization": "Bearer s3cret", "Content-Type": "text/plain"})
    assert r.status_code == 415


def test_the_size_limit_and_the_disk_are_said(tmp_path, monkeypatch):
    (tmp_path / "loras").mkdir()
    rec = receive.Receiver(lambda kind: [str(tmp_path / "loras")], max_bytes=1000)
    with pytest.raises(receive.Refused) as got:
        rec.have("loras", "x.safetensors", 1001, "0" * 64)
    assert got.value.key == "receive_too_big" and got.value.status == 413
    rec = receive.Receiver(lambda kind: [str(tmp_path / "loras")], reserve=1 << 60)

    async def one():
        yield b"x"
    with pytest.raises(receive.Refused) as got:
        asyncio.run(rec.receive("loras", "x.safetensors", 10, "0" * 64, 0, one()))
    assert got.value.key == "receive_disk"
    monkeypatch.setenv("GPUGEEK_MAX_MODEL_BYTES", "5")
    assert receive.Receiver(lambda kind: []).max_bytes == 5


def test_content_other_than_announced_is_not_kept(tmp_path):
    (tmp_path / "loras").mkdir()
    rec = receive.Receiver(lambda kind: [str(tmp_path / "loras")])

    async def body():
        yield b"abcdefgh"
    with pytest.raises(receive.Refused) as got:
        asyncio.run(rec.receive("loras", "x.safetensors", 8, hashlib.sha256(b"other!!!").hexdigest(), 0, body()))
    assert got.value.key == "receive_hash"
    assert not list((tmp_path / "loras").rglob("x.safetensors"))


class FileServer:
    """A plain HTTP server on loopback holding one file (a template's model address)."""

    def __init__(self, data: bytes, slow_s: float = 0.0):
        self.data, self.gets, self.slow_s = data, 0, slow_s

    async def h(self, request):
        self.gets += 1
        if not self.slow_s:
            return web.Response(body=self.data)
        r = web.StreamResponse(headers={"Content-Length": str(len(self.data))})   # a piece at a time, slowly
        await r.prepare(request)
        for i in range(0, len(self.data), 1024):
            await r.write(self.data[i:i + 1024])
            await asyncio.sleep(self.slow_s)
        await r.write_eof()
        return r

    def start(self):
        ready = threading.Event()

        def run():
            self.loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_get("/{name}", self.h)
            runner = web.AppRunner(app, access_log=None)
            self.loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
            ready.set()
            self.loop.run_forever()
            close_server_loop(self.loop, runner)
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)
        return self

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def template_workflow(url, sha=None, name="tmpl.safetensors"):
    entry = {"name": name, "url": url, "directory": "loras"}
    if sha:
        entry.update(hash=sha, hash_type="SHA256")
    return {"workflow": {"nodes": [{"id": 5, "type": "LoraLoader", "properties": {"models": [entry]}}]}}


def test_a_templates_model_is_fetched_by_the_server(env, remote, local_models, monkeypatch):
    data = safetensors(40, seed=9)
    files = FileServer(data).start()
    try:
        monkeypatch.setattr(receive, "ALLOW_HTTP_LOOPBACK_FOR_TESTS", True)
        wf = template_workflow(files.url + "/tmpl.safetensors", hashlib.sha256(data).hexdigest())
        execute(lora_graph("tmpl.safetensors"), env, extra_data={"extra_pnginfo": wf})
        assert files.gets == 1 and "model_upload" not in remote.calls
        assert Path(remote.models_dir, "loras", "gpugeek", "tmpl.safetensors").read_bytes() == data
        assert sent_prompts(remote)[-1]["5"]["inputs"]["lora_name"] == "gpugeek/tmpl.safetensors"
        execute(lora_graph("tmpl.safetensors", seed=5), env, extra_data={"extra_pnginfo": wf})
        assert files.gets == 1   # held by its hash: not downloaded again
    finally:
        files.stop()


def test_a_templates_model_over_plain_http_or_with_another_hash_is_refused(env, remote, local_models, monkeypatch):
    data = safetensors(8)
    files = FileServer(data).start()
    try:
        wf = template_workflow(files.url + "/tmpl.safetensors")
        with pytest.raises(Exception) as got:   # no test hook: https only
            execute(lora_graph("tmpl.safetensors"), env, extra_data={"extra_pnginfo": wf})
        assert said("receive_https_only", "en", url=files.url + "/tmpl.safetensors") in str(got.value)
        assert files.gets == 0 and "prompt" not in remote.calls
        monkeypatch.setattr(receive, "ALLOW_HTTP_LOOPBACK_FOR_TESTS", True)
        wf = template_workflow(files.url + "/tmpl.safetensors", "1" * 64)
        with pytest.raises(Exception) as got:
            execute(lora_graph("tmpl.safetensors"), env, extra_data={"extra_pnginfo": wf})
        assert said("receive_hash", "en", name="tmpl.safetensors") in str(got.value)
        assert not list(Path(remote.models_dir, "loras").rglob("tmpl.safetensors"))
    finally:
        files.stop()


def test_a_server_without_receiving_runs_as_before(env, remote, local_models):
    remote.receiver = None
    (local_models / "loras" / "mine.safetensors").write_bytes(safetensors(8))
    with pytest.raises(E.GPUGeekError):   # the server's own check: its list lacks it, as today
        execute(lora_graph(), env)
    assert "model_upload" not in remote.calls and remote.calls.count("model_has") == 1


def test_template_models_are_read_from_nodes_subgraphs_and_the_workflow():
    wf = {"models": [{"name": "a.safetensors", "url": "https://x/a", "directory": "vae"}],
          "nodes": [{"properties": {"models": [{"name": "b.gguf", "url": "https://x/b", "directory": "unet",
                                                "hash": "ab", "hash_type": "SHA256"}]}}],
          "definitions": {"subgraphs": [{"nodes": [{"properties": {"models": [
              {"name": "c.safetensors", "url": "https://x/c", "directory": "loras"}]}}]}]}}
    got = models.template_models(wf)
    assert got["a.safetensors"]["directory"] == "vae" and got["b.gguf"]["hash"] == "ab"
    assert got["c.safetensors"]["url"] == "https://x/c"
    assert models.template_models(None) == {} and models.template_models({"nodes": "x"}) == {}


# ---- GPUGeek: no uploads of models; a model its list lacks is named before paying --------------------------------

@pytest.fixture
def gg_env(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("GPUGEEK_API_KEY", SECRET_KEY)
    monkeypatch.setenv("GPUGEEK_BASE_URL", fake.base_url)
    monkeypatch.setenv("GPUGEEK_TARGET", "gpugeek")
    monkeypatch.setattr(cat, "_server_state", {})
    classes = comfy_env(tmp_path)
    mm.interrupt_flag = False
    PromptServer.instance.sent.clear()
    return classes


def test_gpugeek_names_a_model_its_list_lacks_before_paying(gg_env, fake, local_models):
    (local_models / "loras" / "mine.safetensors").write_bytes(safetensors(8))
    key = cat.gpugeek_key(fake.base_url, WF)
    cat.catalog().learn(key, "server", {"LoraLoader": {"lora_name": ["detail.safetensors", "style.safetensors"]}},
                        replace=True)
    with pytest.raises(mini_comfy.ValidationError) as got:   # at queue time, on the gateway
        execute(lora_graph(), gg_env)
    text = str(got.value)
    assert "mine.safetensors" in text and str(local_models / "loras" / "mine.safetensors") in text
    assert said("model_missing", "en", node="#5 LoraLoader", name="mine.safetensors") in text
    assert not fake.tasks, "nothing was submitted, nothing paid"
    # where the template names its address, that is where it comes from
    wf = template_workflow("https://example.com/m/mine.safetensors", name="mine.safetensors")
    (local_models / "loras" / "mine.safetensors").unlink()
    with pytest.raises(mini_comfy.ValidationError) as got:
        execute(lora_graph(seed=3), gg_env, extra_data={"extra_pnginfo": wf})
    assert "https://example.com/m/mine.safetensors" in str(got.value) and not fake.tasks
    # the editor marks the node (POST /gpugeek/plan reads the same check)
    res = pack.nodes.hook.plan_prompt(lora_graph(seed=4), "en")
    pack.nodes.hook.refuse_missing_models(res, {"extra_pnginfo": wf}, "en")
    assert "5" in res.flagged and res.plans["10"].mode == "refused" and "mine.safetensors" in res.refusals["10"][0]


def test_a_list_learned_after_the_queue_still_stops_the_run_before_anything_is_sent(fake, local_models):
    """The run's own check (offload/run/models.py): the cloud's list may be learned between the queue and the run."""
    from types import SimpleNamespace
    (local_models / "loras" / "mine.safetensors").write_bytes(safetensors(8))
    cat.catalog().learn(cat.gpugeek_key(fake.base_url, WF), "server", {"LoraLoader": {"lora_name": ["a.safetensors"]}},
                        replace=True)
    gpugeek = SimpleNamespace(client=SimpleNamespace(base_url=fake.base_url))
    source = models.ModelSource(find=pack.nodes.models.find_model)
    prompt = {"5": {"class_type": "LoraLoader", "inputs": {"lora_name": "mine.safetensors"}}}
    with pytest.raises(E.PlanError) as got:
        asyncio.run(models.make_available(prompt, gpugeek, source, workflow_id=WF))
    assert got.value.lines[0].values["id"] == "5"
    assert str(local_models / "loras" / "mine.safetensors") in got.value.message_in("zh")


def test_gpugeek_sends_a_model_its_list_holds_or_does_not_know(gg_env, fake, local_models):
    (local_models / "loras" / "detail.safetensors").write_bytes(safetensors(8))
    key = cat.gpugeek_key(fake.base_url, WF)
    cat.catalog().learn(key, "server", {"LoraLoader": {"lora_name": ["detail.safetensors"]}}, replace=True)
    execute(lora_graph("detail.safetensors"), gg_env)
    assert len(fake.tasks) == 1


def test_receiving_is_switched_on_by_the_setting_or_the_environment_on_a_comfyui_with_the_pack(env, tmp_path,
                                                                                              monkeypatch):
    """The pack's own routes as ComfyUI serves them (nodes/routes.py): 404 until the owner switches receiving on,
    from the settings (POST /gpugeek/config) or GPUGEEK_RECEIVE_MODELS, which wins."""
    from aiohttp import ClientSession
    from aiohttp.test_utils import TestServer
    monkeypatch.delenv("GPUGEEK_RECEIVE_MODELS", raising=False)
    (tmp_path / "srv_loras").mkdir()
    monkeypatch.setattr(folder_paths, "folder_names_and_paths", {"loras": ([str(tmp_path / "srv_loras")], set())},
                        raising=False)
    monkeypatch.setattr(folder_paths, "get_folder_paths", lambda kind: [str(tmp_path / "srv_loras")], raising=False)
    table = [(m, p, fn) for m, p, fn in PromptServer.instance.routes.routes if p.startswith("/gpugeek/")]
    data = safetensors(8)
    sha = hashlib.sha256(data).hexdigest()

    async def go(steps):
        app = web.Application()
        for method, path, fn in table:
            app.router.add_route(method, path, fn)
        out = []
        async with TestServer(app) as server, ClientSession() as s:
            for method, path, kw in steps:
                async with s.request(method, server.make_url(path), **kw) as r:
                    out.append((r.status, await r.text()))
        return out
    has = ("POST", receive.HAS, {"json": {"kind": "loras", "name": "a.safetensors", "size": len(data), "sha256": sha}})
    up = ("PUT", receive.UPLOAD, {"params": {"kind": "loras", "name": "a.safetensors", "size": str(len(data)),
                                             "sha256": sha, "offset": "0"}, "data": data,
                                  "headers": {"Content-Type": "application/octet-stream"}})
    assert [s for s, _ in asyncio.run(go([has, up]))] == [404, 404]
    on = ("POST", "/gpugeek/config", {"json": {"receive_models": True}})
    got = asyncio.run(go([on, has, up, has]))
    assert [s for s, _ in got] == [200, 200, 200, 200]
    assert json.loads(got[0][1])["receive_models"] is True
    assert json.loads(got[1][1]) == {"offset": 0} and json.loads(got[3][1]) == {"name": "gpugeek/a.safetensors"}
    assert (tmp_path / "srv_loras" / "gpugeek" / "a.safetensors").read_bytes() == data
    monkeypatch.setenv("GPUGEEK_RECEIVE_MODELS", "0")   # the server's environment wins over the setting
    assert [s for s, _ in asyncio.run(go([has]))] == [404]
    monkeypatch.setenv("GPUGEEK_RECEIVE_MODELS", "1")
    monkeypatch.setenv("GPUGEEK_RECEIVE_TOKEN", "tok")
    assert [s for s, _ in asyncio.run(go([has]))] == [401]


def test_a_templates_model_without_a_hash_is_fetched_once(env, remote, local_models, monkeypatch):
    data = safetensors(12, seed=4)
    files = FileServer(data).start()
    try:
        monkeypatch.setattr(receive, "ALLOW_HTTP_LOOPBACK_FOR_TESTS", True)
        wf = template_workflow(files.url + "/tmpl.safetensors")
        for seed in (1, 2):
            execute(lora_graph("tmpl.safetensors", seed=seed), env, extra_data={"extra_pnginfo": wf})
        assert files.gets == 1 and len(remote.history) == 2
        assert Path(remote.models_dir, "loras", "gpugeek", "tmpl.safetensors").read_bytes() == data
    finally:
        files.stop()


def test_a_v2_target_names_a_model_its_list_lacks_at_queue_time(local_models, monkeypatch, tmp_path):
    v2 = "v2:http://127.0.0.1:9"
    monkeypatch.setenv("GPUGEEK_TARGET", v2)
    monkeypatch.setenv("COMFY_API_KEY", SECRET_KEY)
    comfy_env(tmp_path)
    (local_models / "loras" / "mine.safetensors").write_bytes(safetensors(8))
    cat.catalog().learn(v2, "server", {"LoraLoader": {"lora_name": ["a.safetensors"]}}, replace=True)
    res = pack.nodes.hook.plan_prompt(lora_graph(), "zh")
    pack.nodes.hook.refuse_missing_models(res, {}, "zh")
    assert res.plans["10"].mode == "refused" and "5" in res.flagged
    assert str(local_models / "loras" / "mine.safetensors") in res.refusals["10"][0]
    assert said("model_missing", "zh", node="#5 LoraLoader", name="mine.safetensors") in res.refusals["10"][0]


def test_a_files_hash_is_made_once_and_kept_one_entry_a_file(tmp_path, monkeypatch):
    f = tmp_path / "m.safetensors"
    f.write_bytes(safetensors(8))
    made = []
    real = receive.sha256_file
    monkeypatch.setattr(receive, "sha256_file", lambda p, *a: made.append(p) or real(p, *a))
    cache = receive.ShaCache(tmp_path / "sha.json")
    first = cache.get(f)
    assert receive.ShaCache(tmp_path / "sha.json").get(f) == first and len(made) == 1   # a new process too
    f.write_bytes(safetensors(8, seed=5))
    os.utime(f, ns=(1, 1))
    assert cache.get(f) != first and len(made) == 2
    assert len(json.loads((tmp_path / "sha.json").read_text())) == 1


def test_a_partial_upload_nobody_resumed_for_a_week_is_deleted(tmp_path):
    (tmp_path / "loras").mkdir()
    rec = receive.Receiver(lambda kind: [str(tmp_path / "loras")])
    stale = rec._partial(rec.folder("loras"), "a" * 64)
    stale.write_bytes(b"x" * 10)
    os.utime(stale, (1, 1))
    fresh = rec._partial(rec.folder("loras"), "b" * 64)
    fresh.write_bytes(b"y" * 10)
    data = safetensors(4)

    async def body():
        yield data
    got = asyncio.run(rec.receive("loras", "n.safetensors", len(data), hashlib.sha256(data).hexdigest(), 0, body()))
    assert got == {"name": "gpugeek/n.safetensors"} and not stale.exists() and fresh.exists()


def test_a_text_that_ends_like_a_model_is_never_sent_nor_rewritten(env, remote, local_models):
    """Only an input whose list offers the value names a model where the class is installed here (a prompt's text
    naming a file of the model folders stays a text)."""
    (local_models / "loras" / "mine.safetensors").write_bytes(safetensors(8))
    (local_models / "loras" / "cat.safetensors").write_bytes(safetensors(8, seed=2))
    p = lora_graph()
    p["6"]["inputs"]["text"] = "cat.safetensors"
    execute(p, env)
    sent = sent_prompts(remote)[-1]
    assert sent["6"]["inputs"]["text"] == "cat.safetensors" and remote.calls.count("model_upload") == 1
    assert not Path(remote.models_dir, "loras", "gpugeek", "cat.safetensors").exists()


def test_an_installed_loaders_list_names_the_model(env, remote, local_models):
    (local_models / "loras" / "mine.safetensors").write_bytes(safetensors(8))
    env["LoraLoader"] = mini_comfy.stub_class("LoraLoader", {"model": ("MODEL",), "clip": ("CLIP",)}, ("MODEL", "CLIP"),
                                              widgets={"lora_name": (folder_paths.get_filename_list("loras"),)})
    import nodes
    nodes.NODE_CLASS_MAPPINGS["LoraLoader"] = env["LoraLoader"]
    execute(lora_graph(), env)
    assert remote.calls.count("model_upload") == 1
    assert sent_prompts(remote)[-1]["5"]["inputs"]["lora_name"] == "gpugeek/mine.safetensors"


def test_a_templates_address_on_the_servers_own_network_is_refused(tmp_path):
    (tmp_path / "loras").mkdir()
    rec = receive.Receiver(lambda kind: [str(tmp_path / "loras")])
    for url in ("https://127.0.0.1/m.safetensors", "https://10.1.2.3/m.safetensors", "https://169.254.169.254/x",
                "https://[::1]/m.safetensors"):
        with pytest.raises(receive.Refused) as got:
            asyncio.run(rec.fetch("loras", "m.safetensors", url, None, None))
        assert got.value.key == "receive_private_host", url
    with pytest.raises(receive.Refused) as got:
        rec.have("loras", ".partial/x.safetensors", 10, "0" * 64)
    assert got.value.key == "receive_bad_name"


def test_a_retrained_lora_of_the_same_name_runs_again(env, remote, local_models):
    """ComfyUI's cache keeps the gateway's images while nothing it reads changed: a local model it sends is read."""
    f = local_models / "loras" / "mine.safetensors"
    f.write_bytes(safetensors(8))
    cache = mini_comfy.Cache()
    asyncio.run(mini_comfy.execute(lora_graph(), env, PromptServer.instance, cache=cache))
    asyncio.run(mini_comfy.execute(lora_graph(), env, PromptServer.instance, cache=cache))
    assert len(remote.history) == 1 and "10" not in cache.ran[1]   # the same: served from the cache
    f.write_bytes(safetensors(8, seed=7))
    os.utime(f, ns=(os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns + 10**9))
    asyncio.run(mini_comfy.execute(lora_graph(), env, PromptServer.instance, cache=cache))
    assert len(remote.history) == 2 and remote.calls.count("model_upload") == 2


def test_a_templates_download_shows_how_far_it_is_on_the_node(env, remote, local_models, monkeypatch):
    data = safetensors(2048, seed=6)   # 8 KB, sent 1 KB every 50 ms
    files = FileServer(data, slow_s=0.05).start()
    targets = core("targets.comfyui")
    try:
        monkeypatch.setattr(receive, "ALLOW_HTTP_LOOPBACK_FOR_TESTS", True)
        monkeypatch.setattr(receive, "FETCH_FIRST_WAIT_S", 0.01)
        monkeypatch.setattr(targets, "MODEL_FETCH_POLL_S", 0.05)
        monkeypatch.setattr(models, "PROGRESS_EVERY_S", 0.0)
        wf = template_workflow(files.url + "/tmpl.safetensors", hashlib.sha256(data).hexdigest())
        execute(lora_graph("tmpl.safetensors"), env, extra_data={"extra_pnginfo": wf})
        assert remote.calls.count("model_fetch") >= 3 and files.gets == 1
        said_on = [t for t, _ in PromptServer.instance.progress_texts if "tmpl.safetensors" in t]
        assert any(t.endswith(" / 8 KB") for t in said_on), said_on
        assert Path(remote.models_dir, "loras", "gpugeek", "tmpl.safetensors").read_bytes() == data
    finally:
        files.stop()


def test_a_name_in_two_kinds_folders_goes_to_the_kind_its_input_names(local_models, tmp_path, monkeypatch):
    (local_models / "vae").mkdir()
    for kind in ("loras", "vae"):
        (local_models / kind / "same.safetensors").write_bytes(safetensors(4))
    kinds = {k: ([str(local_models / k)], {".safetensors"}) for k in ("loras", "vae")}
    monkeypatch.setattr(folder_paths, "folder_names_and_paths", kinds, raising=False)
    monkeypatch.setattr(folder_paths, "get_filename_list", lambda kind: ["same.safetensors"] if kind in kinds else [])
    monkeypatch.setattr(folder_paths, "get_full_path", lambda kind, name: os.path.join(kinds[kind][0][0], name),
                        raising=False)
    find = pack.nodes.models.find_model
    assert find("same.safetensors", None, "vae_name")[0] == "vae"
    assert find("same.safetensors", None, "lora_name")[0] == "loras"


def test_the_servers_token_goes_with_the_model(env, remote, local_models, monkeypatch):
    remote.receiver.token = "tok-123"
    (local_models / "loras" / "mine.safetensors").write_bytes(safetensors(8))
    with pytest.raises(E.GPUGeekError) as got:   # no token here: refused, said as the server's refusal
        execute(lora_graph(), env)
    assert "HTTP 401" in str(got.value) and "prompt" not in remote.calls
    monkeypatch.setenv("GPUGEEK_TARGET_TOKEN", "tok-123")
    execute(lora_graph(seed=2), env)
    assert remote.calls.count("model_upload") == 1


def test_an_upload_whose_answer_was_lost_is_finished_when_asked_again(tmp_path):
    """Every byte arrived but the connection broke before the answer: asked again, the server finishes it."""
    (tmp_path / "loras").mkdir()
    rec = receive.Receiver(lambda kind: [str(tmp_path / "loras")], index_path=tmp_path / "index.json")
    data = safetensors(16)
    sha = hashlib.sha256(data).hexdigest()
    rec._partial(rec.folder("loras"), sha).write_bytes(data)
    assert rec.have("loras", "m.safetensors", len(data), sha) == {"name": "gpugeek/m.safetensors"}
    (tmp_path / "index.json").unlink()   # the index lost: the file is still found by its name and content
    assert rec.have("loras", "m.safetensors", len(data), sha) == {"name": "gpugeek/m.safetensors"}


# ---- the template fetch connects only where it checked (issue 40's hardening) ------------------------------------
class Resolving:
    """socket.getaddrinfo for the names a test makes up (``answers``: name -> the addresses of each successive
    lookup, the last one repeated), the real one for the rest; ``asked`` counts the lookups of each name."""

    def __init__(self, monkeypatch, answers: dict):
        import socket
        self.answers, self.asked, real = answers, {}, socket.getaddrinfo

        def fake(host, port, *a, **kw):
            if host not in self.answers:
                return real(host, port, *a, **kw)
            n = self.asked[host] = self.asked.get(host, 0) + 1
            ips = self.answers[host][min(n, len(self.answers[host])) - 1]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port or 0))) for ip in ips]
        monkeypatch.setattr(socket, "getaddrinfo", fake)


async def _listener(host: str, port: int = 0):
    """A TCP listener counting the connections it takes (and closing them)."""
    seen = []

    async def take(reader, writer):
        seen.append(writer.get_extra_info("peername"))
        writer.close()
    srv = await asyncio.start_server(take, host, port)
    return srv, srv.sockets[0].getsockname()[1], seen


def test_a_templates_host_that_answers_a_private_address_the_second_time_is_never_reached(tmp_path, monkeypatch):
    """DNS rebinding: the host is checked public, then answers 127.0.0.1 when asked again. The download connects to
    the address that was checked, never asks again, and the server's own network takes no connection. (Here the
    public internet stands at 127.0.0.2: the test's rule of what is public says so.)"""
    (tmp_path / "loras").mkdir()
    rec = receive.Receiver(lambda kind: [str(tmp_path / "loras")])
    monkeypatch.setattr(receive, "public_address", lambda ip: str(ip) == "127.0.0.2")
    dns = Resolving(monkeypatch, {"models.example": [["127.0.0.2"], ["127.0.0.1"]]})

    async def go():
        own, port, own_seen = await _listener("127.0.0.1")
        public, _, public_seen = await _listener("127.0.0.2", port)
        try:
            with pytest.raises(receive.Refused) as got:
                await rec.fetch("loras", "m.safetensors", f"https://models.example:{port}/m.safetensors", None)
            return got.value, own_seen, public_seen
        finally:
            own.close()
            public.close()
    refused, own_seen, public_seen = asyncio.run(go())
    assert refused.key == "receive_fetch_failed"   # the public host spoke no TLS
    assert own_seen == [] and len(public_seen) >= 1
    assert dns.asked["models.example"] == 1


def _redirecting(monkeypatch, location: str):
    """A loopback file address (the tests' hook on) that sends the download to ``location``."""
    monkeypatch.setattr(receive, "ALLOW_HTTP_LOOPBACK_FOR_TESTS", True)
    hits = []

    async def h(request):
        hits.append(request.path)
        if request.path == "/m.safetensors":
            raise web.HTTPFound(location.replace("PORT", str(request.url.port)))
        return web.Response(body=safetensors(4))
    app = web.Application()
    app.router.add_get("/{name}", h)
    return app, hits


@pytest.mark.parametrize("location,key", [
    ("http://files.example/m2.safetensors", "receive_https_only"),          # down to plain http
    ("https://10.0.0.5/m2.safetensors", "receive_private_host"),            # the server's own network
    ("https://100.100.100.200/latest/meta-data", "receive_private_host"),   # a cloud's metadata service (shared space)
    ("https://internal.example/m2.safetensors", "receive_private_host"),    # a name that answers a private address
    ("https://[::ffff:10.0.0.5]/m2.safetensors", "receive_private_host"),   # the same, written as IPv6
    ("ftp://127.0.0.1:PORT/m2.safetensors", "receive_https_only"),
])
def test_every_redirect_of_a_templates_download_is_checked_like_its_first_address(tmp_path, monkeypatch, location,
                                                                                  key):
    from aiohttp.test_utils import TestServer
    (tmp_path / "loras").mkdir()
    rec = receive.Receiver(lambda kind: [str(tmp_path / "loras")])
    Resolving(monkeypatch, {"internal.example": [["10.1.2.3"]], "files.example": [["93.184.216.34"]]})
    app, hits = _redirecting(monkeypatch, location)

    async def go():
        async with TestServer(app, host="127.0.0.1") as srv:
            with pytest.raises(receive.Refused) as got:
                await rec.fetch("loras", "m.safetensors", f"http://127.0.0.1:{srv.port}/m.safetensors", None)
            return got.value
    assert asyncio.run(go()).key == key
    assert hits == ["/m.safetensors"]
    assert not list((tmp_path / "loras").rglob("m*.safetensors"))


def test_a_redirect_to_a_checked_address_is_followed(tmp_path, monkeypatch):
    from aiohttp.test_utils import TestServer
    (tmp_path / "loras").mkdir()
    rec = receive.Receiver(lambda kind: [str(tmp_path / "loras")])
    app, hits = _redirecting(monkeypatch, "http://localhost:PORT/m2.safetensors")

    async def go():
        async with TestServer(app, host="127.0.0.1") as srv:
            return await rec.fetch("loras", "m.safetensors", f"http://127.0.0.1:{srv.port}/m.safetensors", None)
    assert asyncio.run(go()) == {"name": "gpugeek/m.safetensors"}
    assert hits == ["/m.safetensors", "/m2.safetensors"]
    assert (tmp_path / "loras" / "gpugeek" / "m.safetensors").read_bytes() == safetensors(4)


def test_a_templates_address_that_answers_an_error_is_said_with_its_status(tmp_path, monkeypatch):
    from aiohttp.test_utils import TestServer
    (tmp_path / "loras").mkdir()
    rec = receive.Receiver(lambda kind: [str(tmp_path / "loras")])
    monkeypatch.setattr(receive, "ALLOW_HTTP_LOOPBACK_FOR_TESTS", True)
    app = web.Application()

    async def gone(request):
        return web.Response(status=404)
    app.router.add_get("/{name}", gone)

    async def go():
        async with TestServer(app, host="127.0.0.1") as srv:
            url = f"http://127.0.0.1:{srv.port}/gone.safetensors"
            with pytest.raises(receive.Refused) as got:
                await rec.fetch("loras", "gone.safetensors", url, None)
            return url, got.value
    url, refused = asyncio.run(go())
    assert (refused.key, refused.status) == ("receive_fetch_failed", 424)
    assert str(refused) == said("receive_fetch_failed", "en", url=url, status=404)


# ---- a first use without a hashing pass of its own (the server holds nothing of its size: nothing to reuse) -------
def send_model(srv, path, value="mine.safetensors", hashes=None) -> str:
    """The pack's client making ``value`` (the file at ``path``) available on ``srv``: the server's name for it."""
    import aiohttp
    targets = core("targets.comfyui")
    source = models.ModelSource(find=lambda v, *a: ("loras", str(path)) if v == value else None,
                                hashes=hashes if hashes is not None else receive.ShaCache())
    prompt = {"5": {"class_type": "LoraLoader", "inputs": {"lora_name": value}}}

    async def go():
        async with aiohttp.ClientSession() as s:
            t = targets.ComfyUITarget(s, srv.url, allow_lan_http=True)
            try:
                await models.make_available(prompt, t, source)
            finally:
                await t.close()
    asyncio.run(go())
    return prompt["5"]["inputs"]["lora_name"]


@pytest.fixture
def passes(monkeypatch):
    """Every whole pass made to hash a file (this machine's ShaCache, the server's), by path."""
    made = []
    real = receive.sha256_file
    monkeypatch.setattr(receive, "sha256_file", lambda p, *a: made.append(str(p)) or real(p, *a))
    return made


def test_a_first_use_with_nothing_of_its_size_on_the_server_is_hashed_as_it_goes_up(env, remote, local_models,
                                                                                    passes):
    data = safetensors(3 * receive.CHUNK // 4 + 1000, seed=4)   # three pieces and a bit
    (local_models / "loras" / "mine.safetensors").write_bytes(data)
    execute(lora_graph(), env)
    assert passes == []   # no pass over the file before it went up, nor after it, on either side
    assert Path(remote.models_dir, "loras", "gpugeek", "mine.safetensors").read_bytes() == data
    assert remote.calls.count("model_upload") == 1 and remote.model_bytes_in == len(data)
    assert sent_prompts(remote)[-1]["5"]["inputs"]["lora_name"] == "gpugeek/mine.safetensors"
    execute(lora_graph(seed=2), env)   # its hash, made as it went up, is kept: asked by it, nothing sent
    assert passes == [] and remote.calls.count("model_upload") == 1
    assert sent_prompts(remote)[-1]["5"]["inputs"]["lora_name"] == "gpugeek/mine.safetensors"


def test_a_broken_upload_hashed_as_it_goes_resumes_even_in_another_process(remote, tmp_path, monkeypatch, passes):
    data = safetensors(3 * receive.CHUNK // 4 + 1000, seed=8)
    f = tmp_path / "big.safetensors"
    f.write_bytes(data)
    remote.break_upload_after = receive.CHUNK
    monkeypatch.setattr(models, "UPLOAD_TRIES", 1)   # this run gives up after the break
    with pytest.raises(E.PlanError):
        send_model(remote, f, "big.safetensors")
    assert remote.model_bytes_in >= receive.CHUNK and not Path(remote.models_dir, "loras", "gpugeek",
                                                               "big.safetensors").exists()
    # another process (nothing of the first one's in memory): the server's partial upload goes on at its offset
    assert send_model(remote, f, "big.safetensors") == "gpugeek/big.safetensors"
    assert Path(remote.models_dir, "loras", "gpugeek", "big.safetensors").read_bytes() == data
    assert remote.model_bytes_in <= len(data) + receive.CHUNK and passes == []
    assert not list(Path(remote.models_dir, "loras", "gpugeek", ".partial").glob("*.part"))


def test_a_file_of_its_size_on_the_server_means_hashed_first_and_reused_under_any_name(remote, tmp_path, passes):
    data = safetensors(64, seed=5)
    a, b, c = (tmp_path / n for n in ("a.safetensors", "b.safetensors", "c.safetensors"))
    a.write_bytes(data)
    assert send_model(remote, a, "a.safetensors") == "gpugeek/a.safetensors"
    b.write_bytes(data)   # the same content under another name, its hash not known here
    assert send_model(remote, b, "b.safetensors") == "gpugeek/a.safetensors"
    assert passes == [str(b)] and remote.calls.count("model_upload") == 1
    c.write_bytes(safetensors(64, seed=6))   # other content of the same size: its ends tell it apart (no pass)
    assert send_model(remote, c, "c.safetensors") == "gpugeek/c.safetensors"
    assert passes == [str(b)] and remote.calls.count("model_upload") == 2
    assert Path(remote.models_dir, "loras", "gpugeek", "c.safetensors").read_bytes() == c.read_bytes()


def test_same_size_models_told_apart_by_their_ends_and_a_partial_by_its_head(tmp_path):
    """The server holds a model of this size: only where its first and last MiB are this one's is the client made to
    hash the whole file first (a LoRA trained with the same settings has the same size and header, never the same
    last weights); a partial upload by hash is this one's only where its head is."""
    (tmp_path / "loras" / "gpugeek" / ".partial").mkdir(parents=True)
    rec = receive.Receiver(lambda kind: [str(tmp_path / "loras")], index_path=tmp_path / "index.json")
    n = 3 * receive.ENDS_BYTES
    mine = bytearray(os.urandom(n))
    held = bytearray(mine)
    held[-10] ^= 0xFF   # the same size and head, another last MiB
    (tmp_path / "loras" / "x.safetensors").write_bytes(held)   # a file of the name asked, of its size
    f = tmp_path / "mine.safetensors"
    f.write_bytes(mine)
    marks = receive.file_marks(f)
    assert rec.ask("loras", "x.safetensors", n, "f" * 64, **marks).get("upload")   # told apart: sent at once
    assert rec.ask("loras", "x.safetensors", n, "f" * 64) == {"hash_first": True}   # an older client: as before
    (tmp_path / "loras" / "y.safetensors").write_bytes(mine)   # this very model: hashed first, then reused
    assert rec.ask("loras", "y.safetensors", n, "e" * 64, **marks) == {"hash_first": True}
    part = tmp_path / "loras" / "gpugeek" / ".partial" / (hashlib.sha256(b"x").hexdigest() + ".part")
    part.write_bytes(bytes(mine[:receive.ENDS_BYTES + 5]))   # an older client's upload of this model, broken off
    assert rec.ask("loras", "z.safetensors", n, "d" * 64, **marks) == {"hash_first": True}
    part.write_bytes(os.urandom(receive.ENDS_BYTES + 5))   # another model's
    assert rec.ask("loras", "z.safetensors", n, "d" * 64, **marks).get("upload")


def test_a_hashless_upload_whose_final_hash_differs_is_refused_and_nothing_lands(tmp_path):
    (tmp_path / "loras").mkdir()
    rec = receive.Receiver(lambda kind: [str(tmp_path / "loras")], index_path=tmp_path / "index.json")
    data = safetensors(16)
    asked = rec.ask("loras", "x.safetensors", len(data), "f" * 64)
    assert asked["offset"] == 0 and asked["upload"]
    assert rec.ask("loras", "x.safetensors", len(data), "f" * 64) == asked   # the same file: the same upload
    assert rec.ask("loras", "x.safetensors", len(data), "e" * 64)["upload"] != asked["upload"]

    async def body():
        yield data
    got = asyncio.run(rec.receive("loras", "x.safetensors", len(data), None, 0, body(), upload=asked["upload"]))
    assert got == {"offset": len(data)}   # whole, kept apart until its hash is told
    assert not list((tmp_path / "loras").rglob("x.safetensors"))
    with pytest.raises(receive.Refused) as lied:
        asyncio.run(rec.finish("loras", "x.safetensors", len(data), hashlib.sha256(b"other").hexdigest(),
                               asked["upload"]))
    assert lied.value.key == "receive_hash" and lied.value.status == 422
    assert not list((tmp_path / "loras").rglob("x.safetensors"))
    assert not list((tmp_path / "loras").rglob("*.part"))
    assert rec.ask("loras", "x.safetensors", len(data), "f" * 64)["offset"] == 0   # sent again from its start
    for bad in ("../../x", "", "g" * 32):
        with pytest.raises(receive.Refused) as got:
            asyncio.run(rec.receive("loras", "x.safetensors", len(data), None, 0, body(), upload=bad))
        assert got.value.key == "receive_bad_upload"
    with pytest.raises(receive.Refused) as got:
        rec.ask("loras", "x.safetensors", len(data), "../x")
    assert got.value.key == "receive_bad_upload"


def test_a_server_that_does_not_know_the_hashless_ask_is_asked_by_hash(remote, tmp_path, monkeypatch, passes):
    """An older receiver refuses an ask without a SHA-256 (receive_bad_hash): asked by hash, as it knows."""
    monkeypatch.setattr(receive.Receiver, "ask", lambda self, kind, name, size, file, *marks: self.have(kind, name, size, None))
    data = safetensors(3 * receive.CHUNK // 4 + 1000, seed=2)
    f = tmp_path / "old.safetensors"
    f.write_bytes(data)
    remote.break_upload_after = receive.CHUNK   # and resumed by hash
    assert send_model(remote, f, "old.safetensors") == "gpugeek/old.safetensors"
    assert Path(remote.models_dir, "loras", "gpugeek", "old.safetensors").read_bytes() == data
    assert passes == [str(f)] and remote.model_bytes_in <= len(data) + receive.CHUNK


def test_an_upload_by_id_whose_hash_was_never_told_is_finished_by_the_next_run(remote, tmp_path, passes):
    """Every byte went up by id, then the client stopped before telling its hash: the next run tells it."""
    data = safetensors(64, seed=11)
    f = tmp_path / "late.safetensors"
    f.write_bytes(data)
    rec = remote.receiver
    asked = rec.ask("loras", "late.safetensors", len(data), models.file_key(f, os.stat(f)))

    async def body():
        yield data
    assert asyncio.run(rec.receive("loras", "late.safetensors", len(data), None, 0, body(),
                                   upload=asked["upload"])) == {"offset": len(data)}
    assert send_model(remote, f, "late.safetensors") == "gpugeek/late.safetensors"
    assert "model_upload" not in remote.calls and passes == []
    assert Path(remote.models_dir, "loras", "gpugeek", "late.safetensors").read_bytes() == data


def test_a_file_shorter_than_said_while_it_goes_up_breaks_off_and_is_not_kept(remote, tmp_path):
    """A model is sent with its length: a file that became shorter ends the request (the server would wait for
    the rest), which the upload's tries then resume or say."""
    import aiohttp
    targets = core("targets.comfyui")
    data = safetensors(64, seed=12)
    f = tmp_path / "short.safetensors"
    f.write_bytes(data)
    sha = hashlib.sha256(data + b"0123456789").hexdigest()

    async def go():
        async with aiohttp.ClientSession() as s:
            t = targets.ComfyUITarget(s, remote.url, allow_lan_http=True)
            try:
                return await asyncio.wait_for(t.model_upload("loras", "short.safetensors", len(data) + 10, sha,
                                                             str(f), 0), 120)   # a guard against a hang only
            finally:
                await t.close()
    with pytest.raises(E.TransportError):
        asyncio.run(go())
    assert not Path(remote.models_dir, "loras", "gpugeek", "short.safetensors").exists()
