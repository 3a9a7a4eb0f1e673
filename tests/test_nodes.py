"""The three nodes, run as ComfyUI runs them (tests/mini_comfy.py), against the fake GPUGeek server."""
import asyncio
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mini_comfy
from conftest import SECRET_KEY, core, load_pack, produced, said, until, when
from fake_gpugeek import photo_png

pack = load_pack()
import folder_paths  # noqa: E402  (the stub installed by load_pack)
import comfy.model_management as mm  # noqa: E402
from server import PromptServer  # noqa: E402

E = core("errors")
WF = "123456789012345"




def t2i(**gw):
    L = lambda n, s=0: [n, s]  # noqa: E731
    p = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "cloud_only.safetensors"}},
         "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": L("4", 1)}},
         "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": L("4", 1)}},
         "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
         "3": {"class_type": "KSampler", "inputs": {"seed": 1, "model": L("4"), "positive": L("6"),
                                                    "negative": L("7"), "latent_image": L("5")}},
         "8": {"class_type": "VAEDecode", "inputs": {"samples": L("3"), "vae": L("4", 2)}},
         "10": {"class_type": "GPUGeekCloudExecute",
                "inputs": {"workflow_id": WF, "run_on": "cloud", "timeout_s": 60, "image_1": L("8"), **gw}},
         "12": {"class_type": "SaveImage", "inputs": {"filename_prefix": "local", "images": L("10", 0)}}}
    return p


def execute(prompt, classes):
    return asyncio.run(mini_comfy.execute(prompt, classes, PromptServer.instance))


def png_tensor(data):
    im = Image.open(io.BytesIO(data)).convert("RGB")
    return torch.from_numpy(np.asarray(im).astype(np.float32) / 255.0)


def test_text_to_image_returns_cloud_pixels_exactly(env, fake):
    results, ui, local = execute(t2i(), env)
    assert sorted(local) == ["10", "12"]  # the checkpoint never reaches local validation
    task = next(iter(fake.tasks.values()))
    (name, data), = next(iter(task.files.values()))
    img = results["10"][0]
    assert img.shape == (1, 64, 64, 3) and img.dtype == torch.float32
    assert torch.equal(img[0], png_tensor(data))
    assert results["10"][6] == task.prompt_id
    assert mini_comfy.SAVED[0] is img
    # the cloud prompt is exactly the cloud part plus the save the gateway needs
    assert sorted(task.prompt) == ["3", "4", "5", "6", "7", "8", "gpugeek_out_0"]
    # previews and the file kept in output/gpugeek
    prev = ui["10"]["images"]
    assert prev and prev[0]["subfolder"] == "gpugeek" and prev[0]["type"] == "output"
    saved = Path(folder_paths.get_output_directory(), "gpugeek", prev[0]["filename"])
    assert saved.read_bytes() == data
    texts = [t for t, n in PromptServer.instance.progress_texts if n == "10"]
    assert any(t.startswith("Done: ran") and "price 0.25" in t for t in texts)
    rec = pack.nodes.cloud.journal().by_prompt_id(task.prompt_id)
    assert rec["status"] == "succeeded" and rec["price"] == 0.25 and rec["files"] == [str(saved)]
    # the bytes moved, for the tasks tab: the result file down, nothing up (the cloud part needs no input)
    assert rec["bytes_down"] == len(data) and rec["bytes_up"] == 0
    public = pack.nodes.routes._public_task(rec)
    assert public["bytes_down"] == len(data) and public["bytes_up"] == 0


def test_same_input_image_uploads_zero_bytes_the_second_time(env, fake):
    Image.open(io.BytesIO(photo_png(48, 40, seed=5))).save(Path(folder_paths.get_input_directory(), "photo.png"))
    p = t2i()
    p["20"] = {"class_type": "LoadImage", "inputs": {"image": "photo.png"}}
    p["22"] = {"class_type": "GPUGeekUploadImage", "inputs": {"image": ["20", 0]}}
    p["23"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["22", 0], "vae": ["4", 2]}}
    p["3"]["inputs"]["latent_image"] = ["23", 0]
    del p["5"]
    execute(json.loads(json.dumps(p)), env)
    first = fake.bytes_uploaded
    assert first > 0 and fake.count("put") == 1
    task = list(fake.tasks.values())[-1]
    loader = task.prompt["gpugeek_in_0"]
    assert loader["class_type"] == "LoadImage" and loader["inputs"]["image"].startswith(fake.base_url + "/oss/")
    assert task.prompt["23"]["inputs"]["pixels"] == ["gpugeek_in_0", 0]
    execute(json.loads(json.dumps(p)), env)   # the same cloud prompt: its results again, nothing sent or paid
    assert fake.bytes_uploaded == first and fake.count("put") == 1 and len(fake.tasks) == 1
    p["3"]["inputs"]["seed"] = 2   # a new task, the same image: nothing goes up again
    execute(json.loads(json.dumps(p)), env)
    assert fake.bytes_uploaded == first and fake.count("put") == 1 and len(fake.tasks) == 2


def test_local_file_in_cloud_loadimage_uploaded_once_and_absent_passed_by_name(env, fake):
    Image.open(io.BytesIO(photo_png(32, 32, seed=9))).save(Path(folder_paths.get_input_directory(), "here.png"))
    p = t2i()
    p["20"] = {"class_type": "LoadImage", "inputs": {"image": "here.png"}}
    p["21"] = {"class_type": "LoadImage", "inputs": {"image": "cloud_only.png"}}
    p["23"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["20", 0], "vae": ["4", 2]}}
    p["24"] = {"class_type": "ImageInvert", "inputs": {"image": ["21", 0]}}
    p["3"]["inputs"]["latent_image"] = ["23", 0]
    p["10"]["inputs"]["image_2"] = ["24", 0]
    del p["5"]
    results, _, _ = execute(json.loads(json.dumps(p)), env)
    task = list(fake.tasks.values())[-1]
    assert task.prompt["20"]["inputs"]["image"].startswith(fake.base_url + "/oss/")
    assert task.prompt["21"]["inputs"]["image"] == "cloud_only.png"
    execute(json.loads(json.dumps(p)), env)
    assert fake.count("put") == 1
    assert results["10"][1] is not None and results["10"][2] is None


@pytest.mark.parametrize("phase", ["queued", "running"])
def test_interrupt_cancels_the_remote_task_once(env, fake, phase, monkeypatch):
    """Stop while the task queues or runs, long before the owner would look at it again: the prompt ends without
    waiting for the cancel (its answer is held until then), and the owner cancels at once, not at its next status
    call, exactly once. Before: both "within a second of Stop", timed."""
    fake.task_opts.update(queue_s=30 if phase == "queued" else 0, run_s=30)
    fake.fault("cancel", "held")
    monkeypatch.setattr(core("poll").PollSchedule, "next_delay", lambda self, d: 3600.0)   # the next look: far off

    def in_phase():
        t = next(iter(list(fake.tasks.values())), None)
        return t is not None and fake.status_of(t)[0] == (1 if phase == "queued" else 2) and t.polls >= 1
    when(in_phase, lambda: setattr(mm, "interrupt_flag", True))
    with pytest.raises(mm.InterruptProcessingException):
        execute(t2i(), env)
    assert fake.unreleased == 0   # the prompt did not wait for the cancel
    fake.release()
    assert core("owner").owner().drain(10)
    t = next(iter(fake.tasks.values()))
    assert fake.count("cancel") == 1 and t.cancelled_at is not None
    # cancelled at once, not at the next status call: one look before it; one after, which reads how it ended
    calls = [c for c, _ in fake.calls if c in ("task", "cancel")]
    assert calls == ["task", "cancel", "task"]
    assert fake.running_tasks() == []
    rec = pack.nodes.cloud.journal().by_prompt_id(t.prompt_id)
    assert rec["status"] == "cancelled"


def test_a_stop_that_lands_on_a_progress_update_still_cancels(env, fake, monkeypatch):
    """ComfyUI's progress hook raises a pending Stop and clears it: the gateway's own bar update must not eat the
    user's Stop (the prompt would then wait for a task the user stopped, and pay for it)."""
    fake.task_opts.update(run_s=30)
    server = PromptServer.instance
    plain = server.send_progress_text

    def stop_while_reporting(text, node_id, sid=None):
        plain(text, node_id, sid)
        if text.startswith("Running"):
            mm.interrupt_flag = True   # the Stop arrives between the text and the bar of one status update
    monkeypatch.setattr(server, "send_progress_text", stop_while_reporting)
    with pytest.raises(mm.InterruptProcessingException):
        execute(t2i(), env)
    assert core("owner").owner().drain(10)
    assert fake.count("cancel") == 1 and fake.running_tasks() == []


def test_timeout_cancels_remotely(env, fake):
    fake.task_opts.update(run_s=30)
    with pytest.raises(E.TaskTimeoutError) as ei:
        execute(t2i(timeout_s=1), env)
    assert fake.count("cancel") == 1 and fake.running_tasks() == []
    assert "GPUGeek Cloud Execute #10" in str(ei.value)


def test_cloud_failure_surfaces_error_msg_with_node_and_task(env, fake):
    fake.task_opts.update(fail="CUDA out of memory in KSampler")
    with pytest.raises(E.TaskFailedError) as ei:
        execute(t2i(), env)
    text = str(ei.value)
    produced(text)
    assert "CUDA out of memory in KSampler" in text and "GPUGeek Cloud Execute #10" in text
    assert next(iter(fake.tasks)) in text


def test_lost_submit_answer_never_resubmits(env, fake):
    fake.fault("submit", "lost")
    with pytest.raises(E.SubmitUnknownError) as ei:
        execute(t2i(), env)
    assert fake.count("submit") == 1 and len(fake.tasks) == 1
    assert "paid task may exist" in str(ei.value)
    recs = pack.nodes.cloud.journal().tasks()
    assert recs[0]["status"] == "unknown"


def test_refusal_is_a_validation_error_on_the_gateway(env, fake):
    p = t2i()
    p["13"] = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}}
    p["14"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["13", 0]}}
    with pytest.raises(mini_comfy.ValidationError) as ei:
        execute(p, env)
    assert list(ei.value.node_errors) == ["10"]
    assert "LATENT cannot cross" in json.dumps(ei.value.node_errors)
    assert fake.calls == []


def test_the_prompt_carries_its_language_to_refusals_progress_and_errors(env, fake):
    """The editor puts its language on each gateway (gpugeek_lang): a refusal, the progress texts and an error
    of that prompt speak it, and the next prompt without it speaks English again (no language left behind)."""
    p = t2i(gpugeek_lang="zh")
    p["13"] = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}}
    p["14"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["13", 0]}}
    with pytest.raises(mini_comfy.ValidationError) as ei:
        execute(p, env)
    assert said("refuse_type_crossing", type="LATENT") in json.dumps(ei.value.node_errors, ensure_ascii=False)
    fake.task_opts.update(fail="CUDA out of memory")
    with pytest.raises(E.TaskFailedError) as ei:
        execute(t2i(gpugeek_lang="zh"), env)
    assert said("err_task_failed", label="GPUGeek Cloud Execute #10", reason="CUDA out of memory") in str(ei.value)
    assert said("hint_TaskFailedError") in str(ei.value)
    texts = [t for t, _ in PromptServer.instance.progress_texts]
    assert said("progress_uploading") in texts and any(t.startswith(said("progress_submitted")) for t in texts)
    PromptServer.instance.progress_texts.clear()
    with pytest.raises(E.TaskFailedError) as ei:
        execute(t2i(), env)
    assert "the cloud run failed: CUDA out of memory" in str(ei.value)
    assert "Uploading inputs…" in [t for t, _ in PromptServer.instance.progress_texts]


def test_a_wrong_value_in_the_cloud_part_is_refused_before_paying(env, fake):
    """A cloud node whose class is installed here is checked as ComfyUI checks it: a value out of range, or not
    among the choices the cloud's list is known to hold (here: what a refusal of that cloud taught), refuses the
    task at queue time, naming the node; a model name only the cloud knows passes."""
    catalog = core("catalog")
    catalog.catalog().learn(catalog.gpugeek_key(fake.base_url, WF), catalog.REFUSED,
                            {"KSampler": {"sampler_name": ["euler", "euler_ancestral"]}}, replace=True)
    p = t2i()
    p["3"]["inputs"].update(steps=0, sampler_name="no_such_sampler")
    with pytest.raises(mini_comfy.ValidationError) as ei:
        execute(p, env)
    told = json.dumps(ei.value.node_errors)
    assert list(ei.value.node_errors) == ["10"] and "#3 KSampler: steps is 0, outside its range 1 to 10000" in told
    assert "sampler_name is no_such_sampler, which is not one of its choices (euler, euler_ancestral)" in told
    assert fake.calls == []
    ok = t2i()
    ok["3"]["inputs"].update(steps=4, sampler_name="euler")  # and ckpt_name "cloud_only.safetensors": not ours to judge
    execute(ok, env)
    assert fake.count("submit") == 1


def test_run_here_passes_inputs_through_without_cloud(env, fake, monkeypatch):
    monkeypatch.delenv("GPUGEEK_API_KEY")
    p = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
         "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "", "run_on": "local",
                                                                "timeout_s": 60, "image_1": ["1", 0]}},
         "2": {"class_type": "ImageInvert", "inputs": {"image": ["10", 0]}}}
    Image.new("RGB", (8, 8), (255, 0, 0)).save(Path(folder_paths.get_input_directory(), "a.png"))
    results, _, _ = execute(p, env)
    assert torch.equal(results["10"][0], results["1"][0]) and fake.calls == []


def test_two_gateways_run_their_tasks_at_the_same_time(env, fake):
    """Each task runs until both exist (the test ends them then): gateways that ran their tasks one after the
    other would not get there. Before: the second had to be created within the first's 0.6 s, timed."""
    fake.task_opts.update(run_s=3600)
    p = t2i()
    p["33"] = {"class_type": "LoadImage", "inputs": {"image": "cloud_b.png"}}
    p["34"] = {"class_type": "ImageInvert", "inputs": {"image": ["33", 0]}}
    p["30"] = {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": WF, "run_on": "cloud",
                                                               "timeout_s": 60, "image_1": ["34", 0]}}

    def end_them():
        fake.task_opts.update(run_s=0.05)   # (after the safety limit, a task still to come ends soon too)
        for t in list(fake.tasks.values()):
            fake.finish(t)
    both = when(lambda: len(fake.tasks) == 2, end_them)
    results, _, _ = execute(p, env)
    assert both["met"] and len(fake.tasks) == 2   # the second started before the first ended
    assert results["30"][0] is not None and results["10"][0] is not None


def test_merged_gateways_share_one_task(env, fake):
    p = t2i()
    p["38"] = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}}
    p["39"] = {"class_type": "ImageInvert", "inputs": {"image": ["38", 0]}}
    p["30"] = {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": WF, "run_on": "cloud",
                                                               "timeout_s": 60, "image_1": ["39", 0]}}
    results, _, _ = execute(p, env)
    assert len(fake.tasks) == 1 and fake.count("submit") == 1
    assert results["30"][0].shape == (1, 64, 64, 3) and results["30"][6] == results["10"][6]
    assert not torch.equal(results["30"][0], results["10"][0])


def test_load_result_by_task_id_and_by_urls(env, fake):
    results, _, _ = execute(t2i(), env)
    pid = results["10"][6]
    L = pack.NODE_CLASS_MAPPINGS["GPUGeekLoadResult"]
    img, mask = asyncio.run(L().load(prompt_id=pid, unique_id="50"))
    assert torch.equal(img, results["10"][0]) and mask.shape == (1, 64, 64)
    url = fake.detail(fake.tasks[pid])["result_url"]["gpugeek_out_0"][0]
    img2, _ = asyncio.run(L().load(prompt_id="", urls=url + "\n", unique_id="51"))
    assert torch.equal(img2, img)
    assert L.VALIDATE_INPUTS(prompt_id="", urls="") != True  # noqa: E712


def test_load_result_waits_for_a_running_task(env, fake):
    fake.task_opts.update(run_s=0.5)
    from fake_gpugeek import FakeGPUGeek  # noqa: F401
    pid = asyncio.run(_submit_directly(fake))
    L = pack.NODE_CLASS_MAPPINGS["GPUGeekLoadResult"]
    img, _ = asyncio.run(L().load(prompt_id=pid, unique_id="50"))
    assert img.shape[0] == 1 and fake.tasks[pid].polls >= 2


async def _submit_directly(fake):
    client = core("targets.gpugeek_api")
    C = core("config")
    async with client.GPUGeekClient.open(fake.base_url, C.ApiKey(SECRET_KEY)) as c:
        return await c.submit(int(WF), {"9": {"class_type": "SaveImage", "inputs": {"images": None}}})


def test_upload_node_passes_through_and_dedups(env, fake):
    U = pack.NODE_CLASS_MAPPINGS["GPUGeekUploadImage"]
    img = torch.rand((2, 16, 16, 3))
    mask = torch.zeros((1, 16, 16))
    out = asyncio.run(U().upload(img, mask, unique_id="5"))["result"]
    assert out[0] is img and out[2] is mask and len(out[1].splitlines()) == 2
    asyncio.run(U().upload(img, mask, unique_id="5"))
    assert fake.count("put") == 2
    up = list(fake.uploads.values())[0]
    assert Image.open(io.BytesIO(up)).mode == "RGBA"


def test_no_key_is_a_clear_error_before_anything_is_sent(env, fake, monkeypatch):
    monkeypatch.delenv("GPUGEEK_API_KEY")
    with pytest.raises(E.ConfigError) as ei:
        execute(t2i(), env)
    assert "No GPUGeek API key" in str(ei.value) and fake.calls == []


@pytest.mark.parametrize("wf,words", [("abc", "not a number"), ("", "No workflow id")])
def test_bad_workflow_id_is_a_clear_error(env, fake, wf, words):
    with pytest.raises(E.ConfigError) as ei:
        execute(t2i(workflow_id=wf), env)
    assert words in str(ei.value) and fake.count("submit") == 0


def test_spending_limit_refuses_before_submitting(env, fake, monkeypatch):
    execute(t2i(), env)   # 0.25 spent
    monkeypatch.setenv("GPUGEEK_DAILY_LIMIT", "0.4")
    with pytest.raises(E.SpendLimitError) as ei:
        execute(t2i(), env)   # same cloud part: expected 0.25 more
    assert "0.25" in str(ei.value) and "daily limit of 0.4" in str(ei.value)
    assert fake.count("submit") == 1


CHILD = r"""
import asyncio, sys, json
sys.path.insert(0, sys.argv[1])
from conftest import load_pack
pack = load_pack()
import nodes, mini_comfy
from server import PromptServer
classes = mini_comfy.stub_classes(); classes.update(pack.NODE_CLASS_MAPPINGS)
nodes.NODE_CLASS_MAPPINGS.update(classes)
prompt = json.loads(sys.argv[2])
asyncio.run(mini_comfy.execute(prompt, classes, PromptServer.instance))
"""


def test_task_survives_a_killed_process_and_loads_in_a_new_one(env, fake, tmp_path):
    fake.task_opts.update(run_s=3600)   # runs until the process is killed; the test ends it then (before: 1.5 s)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(Path(__file__).parent), json.dumps(t2i())],
                            env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not fake.tasks or next(iter(fake.tasks.values())).polls < 1:
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    pid = next(iter(fake.tasks))
    rec = pack.nodes.cloud.journal().by_prompt_id(pid)
    assert rec and rec["status"] in ("queued", "running")
    fake.finish(fake.tasks[pid])
    L = pack.NODE_CLASS_MAPPINGS["GPUGeekLoadResult"]
    img, _ = asyncio.run(L().load(prompt_id=pid, unique_id="60"))
    (name, data), = next(iter(fake.tasks[pid].files.values()))
    assert torch.equal(img[0], png_tensor(data))
    assert pack.nodes.cloud.journal().by_prompt_id(pid)["status"] == "succeeded"


def _route(handler, method, path, body=None):
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request
    req = make_mocked_request(method, path)
    if body is not None:
        req.json = mock.AsyncMock(return_value=body)
    return json.loads(asyncio.run(handler(req)).body)


def test_the_editor_marks_from_the_servers_plan(env, fake):
    """POST /gpugeek/plan is the editor's only planner: roles, the gateway each cloud node runs for, refusals in
    the editor's language, the local nodes a refused crossing reaches."""
    routes = pack.nodes.routes
    p = t2i()
    p["13"] = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}}
    p["14"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["13", 0]}}
    res = _route(routes.post_plan, "POST", "/gpugeek/plan", {"prompt": p, "lang": "zh"})
    assert res["ok"] and res["roles"]["4"] == "cloud" and res["roles"]["12"] == "local"
    assert res["owner"]["8"] == "10" and "12" not in res["owner"]
    assert res["flagged"] == ["13"] and said("refuse_type_crossing", type="LATENT") in res["refusals"]["10"][0]
    ok = _route(routes.post_plan, "POST", "/gpugeek/plan", {"prompt": t2i()})
    assert ok["refusals"] == {} and ok["flagged"] == [] and "10" in ok["expected"]


def test_the_editor_reads_its_texts_from_locales():
    texts = _route(pack.nodes.routes.get_texts, "GET", "/gpugeek/texts?lang=zh")
    assert texts["lang"] == "zh" and texts["texts"]
    en = json.loads((Path(pack.__file__).parent / "locales" / "en" / "editor.json").read_text("utf-8"))
    assert set(en) <= set(texts["texts"])  # English fills what a language lacks
    zh_defs = json.loads((Path(pack.__file__).parent / "locales" / "zh" / "nodeDefs.json").read_text("utf-8"))
    assert texts["texts"]["node_GPUGeekCloudExecute"] == zh_defs["GPUGeekCloudExecute"]["display_name"]


def test_the_clouds_refusal_is_a_sentence_per_node_in_the_users_language(env, fake):
    """GPUGeek's hosted ComfyUI puts its validation answer (JSON) in error_msg: the gateway's error says, node by
    node, what the cloud lacks and what to do, in the prompt's language; the tasks tab says the same, the raw
    answer stays in the journal."""
    raw = json.dumps({"4": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                        "details": "ckpt_name: 'sd_xl_base_1.0.safetensors' not in []",
                                        "extra_info": {"input_name": "ckpt_name",
                                                       "received_value": "sd_xl_base_1.0.safetensors"}}],
                            "dependent_outputs": ["9"], "class_type": "CheckpointLoaderSimple"}})
    fake.task_opts.update(fail=raw)
    with pytest.raises(E.TaskFailedError) as ei:
        execute(t2i(), env)
    en_said = ("#4 CheckpointLoaderSimple: the cloud has no ckpt_name named sd_xl_base_1.0.safetensors; pick one that "
            f"workflow {WF} provides.")
    assert en_said in str(ei.value) and "{" not in str(ei.value)
    told = [d for kind, d, _ in PromptServer.instance.sent if kind == "gpugeek.cloud_errors"]
    assert told[-1]["gateway"] == "10" and told[-1]["errors"] == [{"id": "4", "text": en_said}]  # outlined there
    # the gateway's status line under the node and its progress text say that very sentence, not the raw JSON
    failed = [d for kind, d, _ in PromptServer.instance.sent if kind == "gpugeek.status" and d["status"] == 4]
    assert failed[-1]["error"] == en_said
    lines = [text for text, _node in PromptServer.instance.progress_texts]
    assert any(en_said in line for line in lines) and not any('"errors"' in line for line in lines)
    with pytest.raises(E.TaskFailedError) as ei:
        execute(t2i(gpugeek_lang="zh"), env)
    zh_said = said("cloud_value_not_in_list", node="#4 CheckpointLoaderSimple", input="ckpt_name",
                   value="sd_xl_base_1.0.safetensors", where=core("texts").Said("where_workflow", {"workflow": WF}))
    assert zh_said in str(ei.value)
    tasks = _route(pack.nodes.routes.get_tasks, "GET", "/gpugeek/tasks?lang=zh")["tasks"]
    assert zh_said in tasks[0]["error_text"] and tasks[0]["error_nodes"] == ["4"]
    assert tasks[0]["error"] == raw  # the raw answer, for whoever needs it
    en = _route(pack.nodes.routes.get_tasks, "GET", "/gpugeek/tasks")["tasks"]
    assert en_said in en[0]["error_text"]


def test_the_tasks_tab_shows_a_running_tasks_estimate(env, fake):
    """The tasks tab uses the same estimate as the editor, the poll schedule and the daily limit."""
    fake.task_opts.update(run_s=0.05, price=0.3)
    execute(t2i(), env)
    j = pack.nodes.cloud.journal()
    done = j.tasks()[0]
    key = j.begin(plan_hash="another-seed", shape_hash=done["shape_hash"], workflow_id=WF, form_hash=done["form_hash"])
    j.update(key, status="running", prompt_id="777")
    tasks = {t["prompt_id"]: t for t in _route(pack.nodes.routes.get_tasks, "GET", "/gpugeek/tasks")["tasks"]}
    assert tasks["777"]["expected"]["basis"] == "shape" and tasks["777"]["expected"]["price"] == 0.3
    assert "expected" not in tasks[done["prompt_id"]]


def test_the_tasks_tab_answer_is_bounded_whatever_the_cloud_answered(env):
    """Issue 38: the tasks tab's answer (GET /gpugeek/tasks) is made of what the cloud sent (its error texts, result
    addresses) as the journal kept it: each text at most TASK_TEXT_CHARS, a task's files at most TASK_FILES_SHOWN,
    the whole at most MAX_TASKS_ANSWER_BYTES (the newest tasks kept), whatever the journal holds."""
    routes = pack.nodes.routes
    j = pack.nodes.cloud.journal()
    huge = "é" * (1 << 19)   # half a MiB of the cloud's error text, per task
    for i in range(24):
        key = j.begin(prompt_id=f"p{i}", gateway="10")
        j.update(key, status="failed", error=huge, result_url="https://x/" + "a" * 100_000,
                 files=[f"/out/gpugeek/p{i}_{n:06d}.png" for n in range(5000)])
    res = asyncio.run(routes.get_tasks(__import__("aiohttp.test_utils").test_utils.make_mocked_request(
        "GET", "/gpugeek/tasks")))
    assert len(res.body) <= routes.MAX_TASKS_ANSWER_BYTES
    tasks = json.loads(res.body)["tasks"]
    assert tasks and tasks[0]["prompt_id"] == "p23"   # the newest first
    for t in tasks:
        assert len(t["error"]) <= routes.TASK_TEXT_CHARS and t["error"].startswith("é" * 100)
        assert len(t["result_url"]) <= routes.TASK_TEXT_CHARS
        assert len(t["files"]) == routes.TASK_FILES_SHOWN and t["files"][0].endswith("_000000.png")
    small = pack.nodes.routes._public_task({"error": "short", "files": ["a.png"]})
    assert small["error"] == "short" and small["files"] == ["a.png"]

@pytest.mark.parametrize("body", [["a", "list"], 42, "text"])
def test_every_post_route_answers_a_body_that_is_no_json_object_with_one_sentence(env, body):
    """Bad input of any kind: a JSON list, number or string is told as such (400), never a server error."""
    routes = pack.nodes.routes
    for handler, path in [(routes.post_config, "/gpugeek/config"), (routes.post_lists, "/gpugeek/lists"),
                          (routes.post_lists_add, "/gpugeek/lists/add")]:
        from unittest import mock

        from aiohttp.test_utils import make_mocked_request
        req = make_mocked_request("POST", path)
        req.json = mock.AsyncMock(return_value=body)
        res = asyncio.run(handler(req))
        assert res.status == 400 and "JSON object" in json.loads(res.body)["message"], path


# what a page on another origin can send without a preflight (a CORS "simple" request): text/plain, a form, a
# multipart form, or no body at all
SIMPLE = {"text/plain": {"data": b'{"whole_workflow": true, "target": "http://127.0.0.1:9", "lang": "en"}',
                         "headers": {"Content-Type": "text/plain"}},
          "form": {"data": {"whole_workflow": "1"}},
          "multipart": {"data": {"whole_workflow": "1", "f": io.BytesIO(b"x")}},
          "no body": {}}


def test_no_route_that_changes_state_takes_a_request_another_site_can_send(env, fake):
    """Every route but a GET, as ComfyUI serves it, refuses anything but Content-Type: application/json with 415
    before it acts (a text/plain POST saved another target and whole-workflow on where ComfyUI's origin check is
    off); the editor's own JSON (with or without a charset) is served."""
    from aiohttp import ClientSession, web
    from aiohttp.test_utils import TestServer
    table = [(m, p, fn) for m, p, fn in PromptServer.instance.routes.routes if p.startswith("/gpugeek/")]
    changing = [(m, p.replace("{pid}", "777")) for m, p, _ in table if m != "GET"]
    assert len(changing) >= 7

    async def go():
        app = web.Application()
        for method, path, fn in table:
            app.router.add_route(method, path, fn)
        async with TestServer(app) as server, ClientSession() as s:
            async def send(method, path, **kw):
                async with s.request(method, server.make_url(path), **kw) as r:
                    return r.status, await r.json()
            refused = {(path, kind): await send(m, path, **kw) for m, path in changing for kind, kw in SIMPLE.items()}
            served = [await send("POST", "/gpugeek/config", json={"whole_workflow": True}),
                      await send("POST", "/gpugeek/config", data=b'{"transfer": "compact"}',
                                 headers={"Content-Type": "application/json; charset=utf-8"}),
                      await send("GET", "/gpugeek/config"),
                      await send("POST", "/gpugeek/config", data=b"{}",   # said in the browser's language
                                 headers={"Content-Type": "text/plain", "Accept-Language": "zh-CN,zh;q=0.9"})]
            return refused, served
    cfg = core("config")
    refused, served = asyncio.run(go())
    wrong = {where: status for where, (status, _) in refused.items() if status != 415}
    # a model's bytes go up by PUT (never a "simple" request) as application/octet-stream (offload/receive.py)
    assert wrong == {} and all(body["ok"] is False and ("application/octet-stream" if where[0].endswith("/upload")
                                                        else "application/json") in body["message"]
                               for where, (_, body) in refused.items())
    assert [status for status, _ in served] == [200, 200, 200, 415]
    assert served[-1][1]["message"] == said("route_json_only", "zh")
    got = served[2][1]
    assert got["whole_workflow"] is True and got["transfer"] == "compact" and got["target"] == "gpugeek"
    assert cfg.load_config().target == "gpugeek"


def test_results_decode_on_every_core_and_are_written_while_they_decode(env, fake, monkeypatch):
    """Four files back: two decode at the same moment (each decode waits, up to 5 s, until another thread is
    decoding too), and the first file is on disk before the last decode ends (writes do not wait for the
    decoding). Before: one decoding thread, files written after all decoding."""
    codec, gw = core("codec"), core("run.gateway")
    fake.task_opts["batch"] = 4
    real_decode, real_save = codec.decode_array, gw.save_into
    both = threading.Barrier(2, timeout=5)
    written = threading.Event()
    seen = {"parallel": 0, "written_before_last": False}
    lock = threading.Lock()
    calls = []

    def decode(data, use_spng=True):
        with lock:
            calls.append(1)
            last = len(calls) == 4
        try:
            both.wait()
            seen["parallel"] += 1
        except threading.BrokenBarrierError:
            pass
        if last:
            seen["written_before_last"] = written.wait(5)
        return real_decode(data, use_spng)

    def save(folder, name, data):
        path = real_save(folder, name, data)
        written.set()
        return path
    monkeypatch.setattr(codec, "decode_array", decode)
    monkeypatch.setattr(codec, "parallel_decoding", lambda: True)   # a decoder that lets go of the GIL is here
    monkeypatch.setattr(gw, "save_into", save)
    results, ui, _ = execute(t2i(), env)
    assert results["10"][0].shape[0] == 4 and len(ui["10"]["images"]) == 4
    assert seen["parallel"] >= 2 and seen["written_before_last"]


@pytest.mark.parametrize("runs", [1, 2])
def test_a_clips_many_files_come_down_eight_at_once(env, fake, runs):
    """Results are often many small files (a clip's 81 frames, compact): each costs the link's round trip, so a
    run keeps PARALLEL_DOWNLOADS requests in flight (issue 33: the clip behind a 30 ms link went from 1.23 s to
    0.72 s net with 8 instead of 4), and no more however many outputs or runs download at once: the session's
    other connections stay free for the API's calls (a status poll waiting for a connection counts against its
    connect timeout). The fake holds every file's answer until released, and counts the requests meanwhile."""
    fake.task_opts["batch"] = 20
    fake.fault("file", *["held"] * 20 * runs)
    done = {}
    worker = threading.Thread(target=lambda: done.update(out=execute(t2i(runs=runs), env)))
    worker.start()
    try:
        until(lambda: fake.count("file") >= 8, 10)
        time.sleep(0.3)   # a ninth request would come now, were it allowed
        in_flight = fake.count("file")
    finally:
        fake.release()
        worker.join(60)
    assert in_flight == 8
    assert done["out"][0]["10"][0].shape[0] == 20 * runs and fake.unreleased == 0


def test_a_cloud_part_run_again_decodes_into_a_batch_made_just_before_its_task_ends(env, fake, monkeypatch):
    """The journal keeps what each output decoded to; a run of the same part (a new seed) makes that batch
    shortly before its task is expected to end (not while it queues, nor early in a long run, which would hold
    the memory) and its files are decoded into it. Before: the batch was made, and its memory faulted in page
    by page, after the task ended."""
    batch, gw = core("batch"), core("run.gateway")
    queue_s, run_s = 0.3, 2.0
    # the second run as long as the first, so that its end is where the journal expects it
    fake.task_opts.update(batch=3, queue_s=queue_s, run_s=run_s, queue_jitter_s=0, run_jitter=0)
    made = []
    real_reserve = batch.reserve

    def reserve(count, h, w):
        task = list(fake.tasks.values())[-1]
        made.append(((count, h, w), time.monotonic() - task.created, real_reserve(count, h, w)))
        fake.finish(task)   # a run after the first lasts until its batch is made: the batch comes before its end
        return made[-1][2]
    monkeypatch.setattr(batch, "reserve", reserve)
    first, _, _ = execute(t2i(), env)
    assert made == [] and first["10"][0].shape == (3, 64, 64, 3)
    rec = pack.nodes.cloud.journal().by_prompt_id(first["10"][6])
    assert rec["result_shape"] == {"gpugeek_out_0": [3, 64, 64]}
    # the runs after it would run an hour (their history says 2 s): each ends when its batch is made, so the batch
    # is made while it runs (before: before a 2 s run's end, timed); one never made times the run out
    fake.task_opts.update(run_s=3600)
    p = t2i(timeout_s=30)
    p["3"]["inputs"]["seed"] = 2
    second, _, _ = execute(p, env)
    assert len(made) == 1 and made[0][0] == (3, 64, 64)
    assert queue_s + run_s - gw.RESERVE_LEAD_S - 0.2 <= made[0][1]   # not while it queued, nor early in its run
    assert second["10"][0].data_ptr() == made[0][2].data_ptr()
    task = list(fake.tasks.values())[-1]
    assert torch.equal(second["10"][0][0], png_tensor(task.files["gpugeek_out_0"][0][1]))
    fake.task_opts.update(batch=2)   # another shape this time: decoded as without a batch made ahead
    p["3"]["inputs"]["seed"] = 3
    third, _, _ = execute(p, env)
    assert len(made) == 2 and third["10"][0].shape == (2, 64, 64, 3)
    assert third["10"][0].data_ptr() != made[1][2].data_ptr()


def test_only_a_whole_list_the_cloud_told_for_that_very_class_judges_a_value(env, fake):
    """A list taught for another class (Dual CLIP Loader's types) or names added one by one (the user's) say what
    the cloud has, not what it lacks: a value they do not hold is still sent."""
    catalog = core("catalog")
    key = catalog.gpugeek_key(fake.base_url, WF)
    catalog.catalog().learn(key, catalog.REFUSED, {"DualCLIPLoader": {"sampler_name": ["flux", "sd3"]}}, replace=True)
    catalog.catalog().learn(key, catalog.USER, {"KSampler": {"sampler_name": ["euler"]}}, replace=False)
    p = t2i()
    p["3"]["inputs"].update(steps=4, sampler_name="res_multistep_newer")
    execute(p, env)
    assert fake.count("submit") == 1
    assert next(iter(fake.tasks.values())).prompt["3"]["inputs"]["sampler_name"] == "res_multistep_newer"


def test_a_prompt_for_the_cloud_is_taken_only_as_json(env, fake, monkeypatch):
    """Issue 38, 9: ComfyUI's /prompt reads text/plain bodies, so where its origin check does not apply another site
    could queue a whole workflow in the cloud (runs 64) with a simple request. Such a prompt is refused before ComfyUI
    queues it (415, a sentence in the browser's language); the editor's JSON, and a text/plain prompt that stays here,
    go on to ComfyUI's own handler as before."""
    from aiohttp import ClientSession, web
    from aiohttp.test_utils import TestServer
    hook = pack.nodes.hook
    assert hook.cloud_prompts_json_only in PromptServer.instance.app.middlewares   # installed as the pack loads
    queued = []

    async def comfy_prompt(request):   # ComfyUI's handler: reads the body as JSON text whatever its type
        queued.append(json.loads(await request.text()))
        return web.json_response({"prompt_id": "x", "number": len(queued)})
    whole = {"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}}},
             "extra_data": {"gpugeek_whole_workflow": True, "gpugeek_runs": 64}}
    gateway = {"prompt": t2i()}
    here = {"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}}}}

    async def go():
        app = web.Application(middlewares=[web.middleware(hook.cloud_prompts_json_only)])
        app.router.add_post("/prompt", comfy_prompt)
        app.router.add_post("/api/prompt", comfy_prompt)
        out = []
        async with TestServer(app) as server, ClientSession() as s:
            for path, body, kw in [("/api/prompt", whole, {"headers": {"Content-Type": "text/plain"}}),
                                   ("/prompt", gateway, {"headers": {"Content-Type": "text/plain",
                                                                    "Accept-Language": "zh-CN"}}),
                                   ("/prompt", whole, {"headers": {"Content-Type": "application/x-www-form-urlencoded"}}),
                                   ("/prompt", here, {"headers": {"Content-Type": "text/plain"}}),
                                   ("/api/prompt", whole, {"headers": {"Content-Type": "application/json"}})]:
                async with s.post(server.make_url(path), data=json.dumps(body).encode(), **kw) as r:
                    out.append((r.status, await r.json()))
        return out
    out = asyncio.run(go())
    assert [status for status, _ in out] == [415, 415, 415, 200, 200]
    assert out[1][1]["error"]["message"] == said("prompt_json_only", "zh")
    assert len(queued) == 2 and queued[1]["extra_data"]["gpugeek_runs"] == 64   # taken as JSON: runs capped later
    assert hook.runs_of(queued[1]["extra_data"]) == 8
    monkeypatch.setenv("GPUGEEK_WHOLE_WORKFLOW", "1")   # the default on: a text/plain prompt would go to the cloud
    assert hook.goes_to_the_cloud(here) and not hook.goes_to_the_cloud({**here, "extra_data": {
        "gpugeek_whole_workflow": False}})
