"""The second target: the same gateway offloading to a ComfyUI server (tests/fake_comfyui.py)."""
import asyncio
import io
import json
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import mini_comfy
from conftest import comfy_env, core, load_pack
from fake_comfyui import FakeComfyUI
from fake_gpugeek import photo_png

pack = load_pack()
import folder_paths  # noqa: E402
import comfy.model_management as mm  # noqa: E402
from server import PromptServer  # noqa: E402

E = core("errors")
C = core("config")
T = core("targets")


@pytest.fixture
def remote():
    srv = FakeComfyUI().start()
    yield srv
    srv.stop()


@pytest.fixture
def env(remote, monkeypatch, tmp_path):
    monkeypatch.setenv("GPUGEEK_TARGET", remote.url)
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


def test_round_trip_needs_no_key_and_reports_node_progress(env, remote):
    remote.step_s = 0.1
    results, ui, _ = execute(graph(), env)
    pid = results["10"][6]
    (fname, data), = [(k, v) for k, v in remote.outputs.items()]
    im = torch.from_numpy(__import__("numpy").asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype("float32") / 255)
    assert torch.equal(results["10"][0][0], im)
    assert remote.history[pid]["status"]["status_str"] == "success"
    live = [d for e, d, _ in PromptServer.instance.sent if e == "gpugeek.status" and d.get("cloud_node")]
    assert any(d["cloud_node"] == "2" and d["cloud_max"] == 5 for d in live)
    rec = pack.nodes.cloud.journal().by_prompt_id(pid)
    assert rec["status"] == "succeeded" and rec["target"].startswith("comfyui@") and rec["target_url"] == remote.url


def test_upload_boundary_honoured_and_not_reuploaded(env, remote):
    Image.open(io.BytesIO(photo_png(16, 12, seed=2))).save(Path(folder_paths.get_input_directory(), "mine.png"))
    p = {"1": {"class_type": "LoadImage", "inputs": {"image": "mine.png"}},
         "5": {"class_type": "GPUGeekUploadImage", "inputs": {"image": ["1", 0]}},
         "2": {"class_type": "ImageInvert", "inputs": {"image": ["5", 0]}},
         "3": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "x"}},
         "9": {"class_type": "LoadImage", "inputs": {"image": "x"}},
         "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "", "run_on": "cloud", "timeout_s": 30,
                                                                "image_1": ["2", 0]}}}
    del p["3"], p["9"]
    execute(json.loads(json.dumps(p)), env)
    assert remote.calls.count("upload") == 1
    prompt = remote.history[list(remote.history)[-1]]["prompt"][2]
    loader = prompt["gpugeek_in_0"]
    assert loader["class_type"] == "LoadImage" and loader["inputs"]["image"].startswith("gpugeek/")
    assert loader["inputs"]["image"] in remote.inputs
    execute(json.loads(json.dumps(p)), env)
    assert remote.calls.count("upload") == 1


def test_node_errors_map_onto_the_users_nodes(env, remote):
    p = graph()
    p["2"] = {"class_type": "CloudOnlyUpscaler", "inputs": {"image": ["1", 0]}, "_meta": {"title": "My upscaler"}}
    with pytest.raises(E.BadRequestError) as ei:
        execute(p, env)
    # named by id and class: titles stay out of the cloud prompt (a rename must not miss ComfyUI's cache)
    text = str(ei.value)
    assert "The cloud has no node type CloudOnlyUpscaler (node #2)" in text and "take that node out" in text
    assert "{" not in text  # a sentence, not the server's JSON


def test_a_model_the_server_lacks_is_one_sentence_on_that_node(env, remote):
    p = graph()
    p["5"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}}
    p["8"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    p["7"] = {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["5", 2]}}
    p["10"]["inputs"]["image_1"] = ["7", 0]
    del p["1"], p["2"]
    with pytest.raises(E.BadRequestError) as ei:
        execute(p, env)
    said = ("#5 CheckpointLoaderSimple: the cloud has no ckpt_name named sd_xl_base_1.0.safetensors; pick one that "
            f"the server {remote.url} provides; it has: v1-5-pruned-emaonly.safetensors.")
    assert said in str(ei.value)
    # and the refusal taught the editor's list of that server (offload/catalog.py)
    learned = core("catalog").catalog().lists(remote.url)["CheckpointLoaderSimple"]["ckpt_name"]
    assert learned["refused"]["values"] == ["v1-5-pruned-emaonly.safetensors"]
    rec = pack.nodes.cloud.journal().tasks()[0]   # the tasks tab tells it the same way, in any language
    assert rec["status"] == "failed" and rec["error_lines"][0]["values"]["id"] == "5"


def test_cloud_failure_named(env, remote):
    remote.fail_class = "ImageInvert"
    with pytest.raises(E.TaskFailedError) as ei:
        execute(graph(), env)
    assert "CUDA out of memory" in str(ei.value) and "#2" in str(ei.value)


@pytest.mark.parametrize("jobs_api", [True, False], ids=["0.33", "0.3"])
@pytest.mark.parametrize("phase", ["pending", "running"])
def test_stop_cancels_exactly_that_prompt(env, remote, phase, jobs_api):
    """A server with ComfyUI 0.33's /api/jobs/{id}/cancel cancels that prompt in one atomic call (no gap between
    reading the queue and acting on it); an older one is read from its queue, then dequeued or interrupted."""
    remote.cancel_route = jobs_api
    remote.step_s, remote.steps = 0.5, 100   # every prompt would run 50 s: Stop comes while it runs or waits
    other = {"1": {"class_type": "EmptyImage", "inputs": {}}, "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}}
    if phase == "pending":  # someone else's long prompt runs first
        remote.pending.append([0, "someone-else", other, "another-client"])

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
    with pytest.raises(mm.InterruptProcessingException):
        execute(graph(), env)
    assert core("owner").owner().drain(10)  # the prompt ended at once; the cancel finishes on the owner
    mine = [pid for pid in remote.job_cancels if pid != "someone-else"]
    if jobs_api:
        assert len(mine) == 1 and mine == remote.job_cancels and remote.deleted == [] and remote.interrupts == []
        assert all(p[1] != mine[0] for p in remote.pending) and (remote.history.get(mine[0]) or {}).get("status", {}).get("status_str") != "success"
        return
    assert remote.job_cancels == []   # a 0.3.x server has no such route (404): the queue's way
    if phase == "pending":
        assert len(remote.deleted) == 1 and remote.deleted[0] != "someone-else" and remote.interrupts == []
    else:
        assert len(remote.interrupts) == 1 and remote.interrupts[0] not in (None, "someone-else")
        assert remote.deleted == []


def test_two_gateways_both_finish(env, remote):
    p = graph()
    p["3"] = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 5}}
    p["4"] = {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}}
    p["20"] = {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "", "run_on": "cloud", "timeout_s": 30,
                                                               "image_1": ["4", 0]}}
    results, _, _ = execute(p, env)
    assert results["10"][0] is not None and results["20"][0] is not None
    assert len(remote.history) == 2


def test_per_gateway_target_overrides_settings(env, remote, monkeypatch, fake):
    monkeypatch.setenv("GPUGEEK_TARGET", "gpugeek")
    monkeypatch.delenv("GPUGEEK_API_KEY", raising=False)
    p = graph()
    p["10"]["inputs"]["target"] = remote.url
    results, _, _ = execute(p, env)
    assert results["10"][0] is not None and fake.calls == []


def test_token_sent_and_lan_http_needs_opt_in(monkeypatch):
    srv = FakeComfyUI(token="tok-123456789").start()
    try:
        cfg = C.Config(api_key=None, target=srv.url, target_token="tok-123456789")

        async def go():
            async with T.open_target(cfg) as t:
                return await t.ping()
        ok, message = asyncio.run(go())
        assert ok and "ComfyUI 0.3.64-fake" in message
        cfg.target_token = "wrong"
        ok, message = asyncio.run(go())
        assert not ok and "refused access" in message
    finally:
        srv.stop()
    monkeypatch.setenv("GPUGEEK_TARGET", "http://192.168.1.20:8188")
    cfg = C.load_config()
    assert cfg.problems and "unencrypted" in cfg.problems[0]
    monkeypatch.setenv("GPUGEEK_ALLOW_LAN_HTTP", "1")
    assert C.load_config().target == "http://192.168.1.20:8188"


def test_sampler_previews_come_home_on_the_cloud_node(env, remote):
    """A ComfyUI server's previews (binary frames, with and without their node in a header) reach the editor as
    gpugeek.preview on the cloud node that made them; previews are asked for with the prompt."""
    remote.step_s, remote.steps = 0.05, 6
    PromptServer.instance.sent.clear()
    execute(graph(), env)
    assert remote.previews_sent >= 4
    shown = [d for kind, d, _ in PromptServer.instance.sent if kind == "gpugeek.preview"]
    assert shown and all(d["node"] == "2" and d["gateway"] == "10" for d in shown)
    assert all(d["image"].startswith("data:image/jpeg;base64,") for d in shown)


def test_the_wait_follows_the_websocket_instead_of_looking_every_few_milliseconds(env, remote, monkeypatch):
    """A 1 s prompt: the wait reads the task's state when a websocket message comes (and twice a second for the
    elapsed time), so about one status read per message; before, it looked every 20 ms (~50 reads). Progress
    still reaches the node."""
    target_cls = core("targets.comfyui").ComfyUITarget
    real, reads = target_cls.status, []

    async def status(self, task_id):
        reads.append(task_id)
        return await real(self, task_id)
    monkeypatch.setattr(target_cls, "status", status)
    remote.step_s = 0.2
    results, _, _ = execute(graph(), env)
    assert results["10"][0] is not None
    live = [d for e, d, _ in PromptServer.instance.sent if e == "gpugeek.status" and d.get("cloud_node")]
    assert any(d["cloud_max"] == 5 for d in live)
    assert len(reads) <= 30, len(reads)


# ---- names and texts a server may answer with (issue 38, 4) ----------------------------------------------------
# A file name Linux lets exist that is not UTF-8 (its history says "caf\udce9"), a lone surrogate only JSON carries,
# a NUL, a very long name; a Preview Any text holding all of them, longer than the journal keeps.
ODD_NAMES = ["caf\udce9_{n:05d}_", "high\ud800_{n:05d}_", "nul\x00_{n:05d}_", "x" * 5000 + "_{n:05d}_"]
ODD_TEXT = "caf\udce9 \ud800 nul\x00 " + "\u732b" * 30000


def exact(s: str) -> bytes:
    """The bytes a server's str stands for: a file name's own (surrogateescape), else the str's code points."""
    try:
        return s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("name", ODD_NAMES)
def test_a_task_with_odd_names_and_texts_ends_succeeded_with_every_address(remote, name, tmp_path):
    """The server's answer holds names and texts that are not UTF-8 (surrogates), NUL, very long: the task is read
    as succeeded with every address (the exact name rides percent-encoded in the address), and journaled so."""
    from urllib.parse import parse_qs, unquote_to_bytes, urlsplit
    comfyui, journal = core("targets.comfyui"), core("journal")
    remote.output_name, remote.ui_text = name, ODD_TEXT
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}

    async def go():
        async with T.open_target(C.Config(api_key=None, target=remote.url)) as t:
            pid = await t.submit(prompt)
            while True:
                d = await t.status(pid)
                if d.final:
                    return d, [await t.fetch(u) for u in d.result_url["2"] if u.startswith(comfyui.TEXT_PREFIX)]
                await asyncio.sleep(0.02)
    d, (text,) = asyncio.run(go())
    assert d.status == core("wire").SUCCEEDED
    (saved,) = [k for k in remote.outputs]
    (view,) = [u for u in d.result_url["2"] if not u.startswith(comfyui.TEXT_PREFIX)]
    query = urlsplit(view).query
    assert view.isascii() and "\x00" not in view
    raw = dict(p.split("=", 1) for p in query.split("&"))
    assert unquote_to_bytes(raw["filename"]) == exact(saved)   # the exact name the server gave, kept
    assert parse_qs(query)["type"] == ["output"]
    cut = exact(ODD_TEXT)[:comfyui.MAX_TEXT_BYTES]
    assert text.startswith(cut[:comfyui.MAX_TEXT_BYTES - 6]) and text.endswith("\u2026".encode())
    assert len(text) <= comfyui.MAX_TEXT_BYTES
    # journaled with every address, read back the same
    j = journal.Journal(tmp_path / "tasks.jsonl")
    key = j.begin(prompt_id=d.prompt_id)
    j.update(key, status="succeeded", result_url=d.result_url)
    assert journal.Journal(tmp_path / "tasks.jsonl").by_prompt_id(d.prompt_id)["result_url"] == d.result_url
    # the node's text shows what it can, the file's local name is made safe
    ui = pack.nodes.output.save_as([(u, text) for u in d.result_url["2"] if u.startswith(comfyui.TEXT_PREFIX)],
                                   "PreviewAny", "")
    (shown,) = ui["text"]
    assert shown.startswith("caf\ufffd") and "nul\x00" in shown
    local = core("transfer").safe_file_name(view, "f")
    assert local.endswith(".png") and len(local) <= 130 and local.isascii() and "\x00" not in local


def test_a_gateways_task_with_a_name_that_is_not_utf8_is_journaled_succeeded(env, remote):
    """The wait no longer "cancels" a task that finished: the gateway's task is journaled succeeded with its
    address, whatever the download of a name the server's /view cannot serve then says."""
    remote.output_name = "caf\udce9_{n:05d}_"
    try:
        execute(graph(), env)
    except E.GPUGeekError:
        pass   # /view decodes its query as UTF-8 (ComfyUI's, via yarl): that file cannot be served by name
    (rec,) = [r for r in pack.nodes.cloud.journal().tasks() if r.get("prompt_id")]
    assert rec["status"] == "succeeded", rec
    (urls,) = rec["result_url"].values()
    assert len(urls) == 1 and "caf%E9_00000_.png" in urls[0]
