"""Secrets bound to their destination, Test connection's sentences, the command line's file confinement,
Load Result for ComfyUI-server tasks, per-frame masks, call 2 only for external addresses, and the suite
from a clone named as the README installs it."""
import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

import mini_comfy
from conftest import SECRET_KEY, comfy_env, core, load_pack, command_line, said
from fake_comfyui import FakeComfyUI
from fake_gpugeek import photo_png
from other_host import OtherHost

pack = load_pack()
from server import PromptServer  # noqa: E402

C = core("config")
E = core("errors")
T = core("targets")
cli = command_line()
routes = pack.nodes.routes
ROOT = Path(__file__).resolve().parents[1]


def post(handler, path, body):
    class Req:
        async def json(self):
            return body
    res = asyncio.run(handler(Req()))
    return res.status, json.loads(res.body)


def test_env_key_never_follows_a_base_url_changed_from_the_editor(monkeypatch):
    monkeypatch.setenv("GPUGEEK_API_KEY", SECRET_KEY)
    status, body = post(routes.post_config, "/gpugeek/config", {"base_url": "https://attacker.example.com"})
    assert status == 400 and "GPUGEEK_API_KEY" in body["error"] and "https://comfyapi.gpugeek.com" in body["error"]
    assert C.load_config().base_url == C.DEFAULT_BASE_URL
    # even a base URL saved by other means is not where the environment's key goes
    C.save_settings(base_url="https://attacker.example.com")
    cfg = C.load_config()
    assert cfg.base_url == C.DEFAULT_BASE_URL and cfg.problems
    status, body = post(routes.post_config, "/gpugeek/config", {"base_url": "https://x.example.com", "lang": "zh"})
    assert status == 400 and said("env_key_base_url") in body["error"]


def test_a_saved_key_is_forgotten_with_its_address_and_the_answer_says_so(monkeypatch):
    post(routes.post_config, "/gpugeek/config", {"api_key": SECRET_KEY})
    assert C.load_config().api_key is not None
    status, body = post(routes.post_config, "/gpugeek/config", {"base_url": "https://other.example.com"})
    assert status == 200 and body["key_set"] is False and any("removed" in n for n in body["notes"])
    # a key saved for one address is not used for another, however the address changed
    post(routes.post_config, "/gpugeek/config", {"api_key": SECRET_KEY})
    C.save_settings(base_url="https://third.example.com")
    assert C.load_config().api_key is None


def test_a_key_saved_with_a_new_address_is_bound_to_where_it_will_go():
    post(routes.post_config, "/gpugeek/config", {"base_url": "https://other.example.com"})
    status, body = post(routes.post_config, "/gpugeek/config", {"base_url": "", "api_key": SECRET_KEY})
    assert status == 200 and body["key_set"] is True and body["base_url"] == C.DEFAULT_BASE_URL
    post(routes.post_config, "/gpugeek/config", {"target": "http://127.0.0.1:8188"})
    post(routes.post_config, "/gpugeek/config", {"target": "http://127.0.0.1:9999", "target_token": "tok-new"})
    assert C.load_config().target_token == "tok-new" and C.load_config().api_key is not None


def test_changing_the_target_forgets_the_token(monkeypatch):
    post(routes.post_config, "/gpugeek/config", {"target": "http://127.0.0.1:8188", "target_token": "tok-abc"})
    assert C.load_config().target_token == "tok-abc"
    status, body = post(routes.post_config, "/gpugeek/config", {"target": "http://127.0.0.1:9999"})
    assert status == 200 and C.load_config().target_token is None and body["notes"]
    monkeypatch.setenv("GPUGEEK_TARGET_TOKEN", "env-token")
    status, body = post(routes.post_config, "/gpugeek/config", {"target": "http://127.0.0.1:7777"})
    assert status == 400 and "GPUGEEK_TARGET_TOKEN" in body["error"]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_test_connection_names_each_failure(fake, monkeypatch, lang):
    monkeypatch.setenv("GPUGEEK_API_KEY", SECRET_KEY)
    monkeypatch.setenv("GPUGEEK_BASE_URL", fake.base_url)
    monkeypatch.setattr(core("transport").RetryPolicy, "attempts", 1)
    ok, body = post(routes.post_test, "/gpugeek/test", {"lang": lang})
    assert body["ok"] is True and said("ping_ok", lang, url=fake.base_url) in body["message"]
    page = OtherHost(404, html=True)
    try:
        monkeypatch.setenv("GPUGEEK_BASE_URL", page.url)
        _, body = post(routes.post_test, "/gpugeek/test", {"lang": lang})
        assert body["ok"] is False and said("ping_not_gpugeek", lang, url=page.url) in body["message"]
    finally:
        page.stop()
    monkeypatch.setenv("GPUGEEK_BASE_URL", "http://127.0.0.1:9")
    _, body = post(routes.post_test, "/gpugeek/test", {"lang": lang})
    assert body["ok"] is False and said("ping_connect", lang, url="http://127.0.0.1:9") in body["message"]
    monkeypatch.setenv("GPUGEEK_BASE_URL", fake.base_url)
    monkeypatch.setenv("GPUGEEK_API_KEY", "sk-wrong-key-000000")
    _, body = post(routes.post_test, "/gpugeek/test", {"lang": lang})
    assert body["ok"] is False and said("ping_key_refused", lang, url=fake.base_url) in body["message"]


def test_test_connection_names_dns_and_tls(monkeypatch):
    monkeypatch.setenv("GPUGEEK_API_KEY", SECRET_KEY)
    monkeypatch.setattr(core("transport").RetryPolicy, "attempts", 1)
    monkeypatch.setenv("GPUGEEK_BASE_URL", "https://no-such-host.invalid")
    _, body = post(routes.post_test, "/gpugeek/test", {})
    assert body["ok"] is False and "was not found" in body["message"]


@pytest.mark.parametrize("name", ["/etc/passwd", "../../.ssh/id_rsa", "sub/../../x.png"])
def test_cli_refuses_files_outside_its_input_folder(fake, tmp_path, monkeypatch, capsys, name):
    monkeypatch.setenv("GPUGEEK_API_KEY", SECRET_KEY)
    monkeypatch.setenv("GPUGEEK_BASE_URL", fake.base_url)
    (tmp_path / "in").mkdir()
    (tmp_path / "secret.png").write_bytes(photo_png(8, 8))
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    p = tmp_path / "in" / "wf_api.json"
    p.write_text(json.dumps(wf))
    code = cli.main(["run", str(p), "--workflow-id", "123456789012345", "--out", str(tmp_path / "out")])
    assert code == 2 and "outside the input folder" in capsys.readouterr().err
    assert fake.count("put") == 0 and fake.count("submit") == 0


def test_load_result_loads_a_comfyui_server_task(monkeypatch, tmp_path):
    remote = FakeComfyUI().start()
    try:
        monkeypatch.setenv("GPUGEEK_TARGET", remote.url)
        classes = comfy_env(tmp_path)
        p = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
             "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
             "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "", "run_on": "cloud",
                                                                    "timeout_s": 30, "image_1": ["2", 0]}}}
        results, _, _ = asyncio.run(mini_comfy.execute(p, classes, PromptServer.instance))
        pid = results["10"][6]
        rec = pack.nodes.cloud.journal().by_prompt_id(pid)
        for f in rec["files"]:
            os.remove(f)  # not on disk any more: load from the server's /view addresses
        assert all("/view?" in u for urls in rec["result_url"].values() for u in urls)
        image, _ = asyncio.run(classes["GPUGeekLoadResult"]().load(prompt_id=pid))
        assert image.shape[0] == 1
    finally:
        remote.stop()


def test_every_frame_of_a_batch_keeps_its_mask():
    run = core("run")
    prompt = {"in": {"class_type": "LoadImage", "inputs": {"image": None}},
              "use_i": {"class_type": "ImageInvert", "inputs": {"image": ["in", 0]}},
              "use_m": {"class_type": "InvertMask", "inputs": {"mask": ["in", 1]}}}
    core("run.inputs")._batch_loaders(prompt, "in", ["u2", "u3"])
    assert prompt["use_i"]["inputs"]["image"] != ["in", 0]
    m = prompt["use_m"]["inputs"]["mask"]
    assert prompt[m[0]]["class_type"] == "ImageToMask"
    # the mask join reads the mask of every frame's loader, in order
    masks = sorted(v["inputs"]["mask"][0] for v in prompt.values() if v["class_type"] == "MaskToImage")
    assert masks == ["in", "in_f1", "in_f2"]


def test_call_2_only_for_external_addresses(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("GPUGEEK_API_KEY", SECRET_KEY)
    monkeypatch.setenv("GPUGEEK_BASE_URL", fake.base_url)
    classes = comfy_env(tmp_path)
    import folder_paths
    Path(folder_paths.get_input_directory(), "local.png").write_bytes(photo_png(8, 8))
    p = {"20": {"class_type": "LoadImage", "inputs": {"image": "local.png"}},
         "22": {"class_type": "GPUGeekUploadImage", "inputs": {"image": ["20", 0]}},
         "2": {"class_type": "ImageInvert", "inputs": {"image": ["22", 0]}},
         "3": {"class_type": "LoadImage", "inputs": {"image": "https://example.org/external.png"}},
         "4": {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}},
         "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "123456789012345", "run_on": "cloud",
                                                                "timeout_s": 30, "image_1": ["2", 0],
                                                                "image_2": ["4", 0]}}}
    for _ in range(2):
        asyncio.run(mini_comfy.execute(json.loads(json.dumps(p)), classes, PromptServer.instance))
    assert fake.count("put") == 1  # the local image went up once (Upload Image), reused on the second run
    assert fake.count("commit") == 2  # the external address, once per run; never the platform's own upload


def test_the_suite_runs_from_a_clone_named_comfyui_gpugeek(tmp_path):
    """The README, the Manager and comfy-cli install the pack as ``comfyui-gpugeek``; pytest must not import
    its root ``__init__.py`` as a test package there."""
    dest = tmp_path / "custom_nodes" / "comfyui-gpugeek"
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".git", ".venv*", "__pycache__", "bench", "docs",
                                                              "example_workflows", ".hypothesis"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "tests/test_config.py"],
                       cwd=dest, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "passed" in r.stdout


def test_token_never_goes_to_a_url_a_workflow_names():
    mine = FakeComfyUI(token="tok-mine-12345").start()
    other = FakeComfyUI().start()
    seen = []
    try:
        cfg = C.Config(api_key=None, target=mine.url, target_token="tok-mine-12345")

        async def headers_sent(url):
            async with T.open_target(cfg, url) as t:
                seen.append(dict(t._headers))
        asyncio.run(headers_sent(mine.url))
        asyncio.run(headers_sent(other.url))
        assert seen[0].get("Authorization") == "Bearer tok-mine-12345" and "Authorization" not in seen[1]
    finally:
        mine.stop()
        other.stop()


def test_input_file_never_escapes_comfyui_folders(tmp_path):
    comfy_env(tmp_path)
    import folder_paths
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    rel = os.path.relpath(secret, folder_paths.get_output_directory())
    assert pack.nodes.comfy.input_file(f"{rel} [output]") is None
    assert pack.nodes.comfy.input_file("../secret.txt") is None
    ok = os.path.join(folder_paths.get_output_directory(), "a.png")
    open(ok, "wb").write(b"1")
    assert pack.nodes.comfy.input_file("a.png [output]") == os.path.realpath(ok)


def test_changing_the_base_url_forgets_the_saved_key():
    from aiohttp.test_utils import make_mocked_request
    C.save_api_key(SECRET_KEY)

    async def post(body):
        req = make_mocked_request("POST", "/gpugeek/config")
        async def js():
            return body
        req.json = js
        return await pack.nodes.routes.post_config(req)
    asyncio.run(post({"base_url": "https://evil.example.com"}))
    assert C.load_config().api_key is None
    asyncio.run(post({"base_url": "https://other.example.com", "api_key": "sk-new-key-9876"}))
    cfg = C.load_config()
    assert cfg.api_key.reveal() == "sk-new-key-9876" and cfg.base_url == "https://other.example.com"


@pytest.mark.parametrize("bad", ["../../x", "1/2", "a b", ""])
def test_task_ids_are_safe(bad):
    with pytest.raises(ValueError):
        core("wire").prompt_id_str(bad)


@pytest.mark.parametrize("url,name", [
    ("http://h/view?filename=..%2F..%2Fa.png&subfolder=x&type=output", "a.png"),
    ("http://h/files/1/..%2F..%2Fevil.png", "evil.png"),
    ("http://h/x/ComfyUI_0001_.png?sig=1", "ComfyUI_0001_.png"),
    ("http://h/view?filename=a%5C..%5Cb.png", "b.png"),
    ("http://h/run.sh", "run.bin"),
])
def test_result_file_names_are_safe(url, name):
    assert core("transfer").safe_file_name(url, "f") == name


def test_a_comfyui_servers_token_never_goes_through_the_proxy(no_env_proxy):
    """HTTP_PROXY and WS_PROXY set, no NO_PROXY: the ComfyUI server at http://localhost is reached directly, its
    calls and its websocket; the proxy sees nothing (it saw every call, bearer token included)."""
    proxy, srv = OtherHost(), FakeComfyUI(token="tok-local-12345").start()
    try:
        for name in ("HTTP_PROXY", "WS_PROXY"):
            no_env_proxy.setenv(name, proxy.url)
        url = srv.url.replace("127.0.0.1", "localhost")
        cfg = C.Config(api_key=None, target=url, target_token="tok-local-12345")
        prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
                  "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}

        async def go():
            async with T.open_target(cfg) as t:
                await t.submit(prompt)
                return t.client_id, await t.ping()
        client_id, (ok, _) = asyncio.run(go())
        assert proxy.seen == []
        assert ok and "prompt" in srv.calls and client_id in srv.sockets
    finally:
        srv.stop()
        proxy.stop()


def test_a_v2_target_takes_the_proxy_for_the_outside_world_only(no_env_proxy):
    """comfy-sdk's httpx client follows the transport's rule: a v2 server on localhost is reached directly
    whatever HTTP_PROXY says (httpx sent it, and its key, to the proxy), and one outside goes through the tunnel
    HTTPS_PROXY names."""
    pytest.importorskip("comfy_sdk")
    proxy, server = OtherHost(status=502), OtherHost(status=404)
    try:
        for name in ("HTTP_PROXY", "HTTPS_PROXY"):
            no_env_proxy.setenv(name, proxy.url)
        cfg = C.Config(api_key=None, target="gpugeek")

        async def ping(where):
            async with T.open_target(cfg, where) as t:
                return await t.ping("en")
        asyncio.run(ping("v2:" + server.url.replace("127.0.0.1", "localhost")))
        assert proxy.seen == [] and server.seen
        ok, _ = asyncio.run(ping("v2:https://cloud.example.invalid"))
        assert not ok and proxy.seen and all(method == "CONNECT" and headers["Host"] == "cloud.example.invalid:443"
                                             for method, _, headers in proxy.seen)
    finally:
        server.stop()
        proxy.stop()
