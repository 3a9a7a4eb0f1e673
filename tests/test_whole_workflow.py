"""A whole workflow in the cloud: the planner's pass (pure) and the queue-time hook's switch."""
import copy
import json

import pytest
from conftest import core, said
from test_plan import table

import templates_corpus as corpus
from pathlib import Path

plan = core("plan")
L = lambda n, s=0: [n, s]  # noqa: E731


def downloaded(prefix="ComfyUI", nested=False):
    """A text-to-image graph as downloaded: no gateway, a save and a preview, a local image in an img2img
    branch. ``nested``: ids as the editor gives a graph built with subgraphs."""
    i = (lambda n: f"12:{n}") if nested else (lambda n: n)
    p = {i("4"): {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "cloud_only.safetensors"}},
         i("6"): {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": L(i("4"), 1)}},
         i("7"): {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": L(i("4"), 1)}},
         "20": {"class_type": "LoadImage", "inputs": {"image": "here.png"}},
         i("23"): {"class_type": "VAEEncode", "inputs": {"pixels": L("20"), "vae": L(i("4"), 2)}},
         i("3"): {"class_type": "KSampler", "inputs": {"seed": 1, "model": L(i("4")), "positive": L(i("6")),
                                                        "negative": L(i("7")), "latent_image": L(i("23"))}},
         i("8"): {"class_type": "VAEDecode", "inputs": {"samples": L(i("3")), "vae": L(i("4"), 2)}},
         "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": L(i("8"))},
               "_meta": {"title": "Save the cat"}},
         "12:7:2": {"class_type": "PreviewImage", "inputs": {"images": L(i("8"))}}}
    return p


def whole(prompt, files=("here.png",), **kw):
    return plan.make_plan(copy.deepcopy(prompt), table(), set(files).__contains__, whole=True, **kw)


@pytest.mark.parametrize("nested", [False, True])
def test_one_cloud_part_holding_every_node_and_a_stand_in_under_each_output_id(nested):
    p = downloaded(nested=nested)
    res = whole(p)
    g = plan.WHOLE
    gp = res.plans[g]
    assert res.refusals == {} and gp.mode == "cloud" and gp.whole
    # the cloud part: every node of the graph, nothing added but nothing crossing in
    assert sorted(gp.prompt) == sorted(p) and gp.crossings == []
    assert gp.user_outputs == sorted(["9", "12:7:2"])
    assert [f.file for f in gp.local_files] == ["here.png"]  # a local file: uploaded at run time
    # here: the gateway, and the output nodes under their own ids, reading the gateway's task
    assert sorted(res.local_prompt) == sorted([g, "9", "12:7:2"])
    save = res.local_prompt["9"]
    assert save["class_type"] == plan.CLOUD_OUTPUT and save["_meta"] == {"title": "Save the cat"}
    assert save["inputs"] == {plan.OUTPUT_NODE_INPUT: "9", plan.OUTPUT_CLASS_INPUT: "SaveImage",
                              plan.OUTPUT_PREFIX_INPUT: "ComfyUI", "task_id": [g, plan.TASK_ID_SLOT],
                              plan.OUTPUT_LANG_INPUT: "en"}
    assert res.local_prompt["12:7:2"]["inputs"][plan.OUTPUT_CLASS_INPUT] == "PreviewImage"
    written = plan.GatewayPlan.from_json(res.local_prompt[g]["inputs"][plan.PLAN_INPUT])
    assert written.whole and written.leads and written.user_outputs == gp.user_outputs
    # the editor marks every node as cloud, also inside subgraphs; the gateway is no node of the editor
    assert set(res.roles) == set(p) and set(res.roles.values()) == {"cloud"}
    assert set(res.owner) == set(p) and set(res.owner.values()) == {g}


def test_switch_off_or_a_gateway_keeps_the_planner_as_it_was():
    p = downloaded()
    off = plan.make_plan(copy.deepcopy(p), table(), lambda f: True)
    assert off.local_prompt == p and off.plans == {}
    p["10"] = {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "", "run_on": "cloud", "timeout_s": 60,
                                                                "image_1": L("8")}}
    p["9"]["inputs"]["images"] = L("10")
    with_gateway = whole(p)
    assert plan.WHOLE not in with_gateway.plans and "10" in with_gateway.plans
    assert with_gateway.local_prompt["9"]["class_type"] == "SaveImage"


def test_a_prefix_made_by_a_node_is_left_to_the_default():
    p = downloaded()
    p["30"] = {"class_type": "PrimitiveString", "inputs": {"value": "cats"}}
    p["9"]["inputs"]["filename_prefix"] = L("30")
    res = whole(p)
    assert res.local_prompt["9"]["inputs"][plan.OUTPUT_PREFIX_INPUT] == ""
    assert "30" in res.plans[plan.WHOLE].prompt


def test_a_node_that_only_makes_sense_here_is_refused_on_that_node_and_nothing_else_runs():
    p = downloaded()
    p["40"] = {"class_type": "GPUGeekLoadResult", "inputs": {"prompt_id": "123"}}
    p["41"] = {"class_type": "PreviewImage", "inputs": {"images": L("40")}}
    res = whole(p, lang="zh")
    # only stand-ins that say why: ComfyUI reports them as those nodes' errors; nothing is submitted
    assert sorted(res.local_prompt) == ["40"]
    text = res.local_prompt["40"]["inputs"][plan.REFUSAL_INPUT]
    assert text == said("refuse_whole_here_only", node="#40 GPUGeekLoadResult")
    assert res.local_prompt["40"]["class_type"] == plan.CLOUD_OUTPUT
    assert "40" in res.flagged and res.refusals[plan.WHOLE] == [text]


def test_a_local_video_goes_up_with_the_graph_and_a_missing_one_passes_by_name():
    p = downloaded()
    p["50"] = {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}}
    p["51"] = {"class_type": "SaveVideo", "inputs": {"video": L("50"), "filename_prefix": "v"}}
    res = whole(p, files=("here.png", "clip.mp4"), lang="en")
    assert res.refusals == {} and "51" in res.local_prompt and "50" not in res.local_prompt
    assert ("50", "file", "clip.mp4") in [(f.node, f.input, f.file) for f in res.plans[plan.WHOLE].local_files]
    passes = whole(p, files=("here.png",))
    assert passes.refusals == {} and "51" in passes.plans[plan.WHOLE].user_outputs  # unknown class, nothing reads it
    assert "50" not in [f.node for f in passes.plans[plan.WHOLE].local_files]


def test_the_switch_refused_by_the_configuration_is_said_on_every_output_node():
    p = downloaded()
    why = plan.Refusal("whole_no_key", {})
    res = whole(p, unavailable=[why], lang="en")
    assert sorted(res.local_prompt) == ["12:7:2", "9"]
    for n in ("9", "12:7:2"):
        assert res.local_prompt[n]["inputs"][plan.REFUSAL_INPUT] == said("whole_no_key", "en")


def test_a_wrong_value_is_said_on_its_node():
    classes = table()
    classes["KSampler"] = plan.ClassInfo(("LATENT",), False, {}, spec=lambda: {
        "required": {"steps": ("INT", {"min": 1, "max": 100})}})
    p = downloaded()
    p["3"]["inputs"]["steps"] = 0
    res = plan.make_plan(copy.deepcopy(p), classes, lambda f: True, whole=True, lang="en")
    assert sorted(res.local_prompt) == ["3"]
    assert "steps" in res.local_prompt["3"]["inputs"][plan.REFUSAL_INPUT]


def test_no_output_node_is_refused():
    p = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}}}
    res = whole(p)
    assert res.refusals and list(res.local_prompt) == [plan.WHOLE]
    assert plan.GatewayPlan.from_json(res.local_prompt[plan.WHOLE]["inputs"][plan.PLAN_INPUT]).mode == "refused"


def test_an_upload_image_still_runs_here_and_crosses_in():
    p = downloaded()
    p["22"] = {"class_type": "GPUGeekUploadImage", "inputs": {"image": L("20")}}
    p["23"]["inputs"]["pixels"] = L("22")
    res = whole(p)
    gp = res.plans[plan.WHOLE]
    assert "20" in res.local_prompt and "22" in res.local_prompt and "20" not in gp.prompt
    assert [c.kind for c in gp.crossings] == ["url"]
    assert json.dumps(res.local_prompt[plan.WHOLE]["inputs"]).count('"22"') == 1


# ---- the hook and the nodes, in the ComfyUI stand-in against the GPUGeek fake --------------------------------
import asyncio  # noqa: E402
import time  # noqa: E402
import io  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

WF = "123456789012345"


def _node_env():
    from conftest import load_pack
    load_pack()
    import folder_paths
    import mini_comfy
    from server import PromptServer
    return folder_paths, mini_comfy, PromptServer.instance


def queue(prompt, classes, extra_data=None):
    _, mini_comfy, server = _node_env()
    return asyncio.run(mini_comfy.execute(copy.deepcopy(prompt), classes, server, extra_data=extra_data))


def pixels(path_or_bytes):
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    return np.asarray(Image.open(src).convert("RGB"))


@pytest.fixture
def wenv(env, monkeypatch):
    monkeypatch.setenv("GPUGEEK_WORKFLOW_ID", WF)
    monkeypatch.delenv("GPUGEEK_WHOLE_WORKFLOW", raising=False)
    folder_paths, _, _ = _node_env()
    from fake_gpugeek import photo_png
    Image.open(io.BytesIO(photo_png(40, 32, seed=3))).save(Path(folder_paths.get_input_directory(), "here.png"))
    return env


def runnable():
    """The downloaded graph, with its save reading the local photo straight (the fake serves an uploaded
    image back as the result of the SaveImage that reads it), and the preview reading the sampler's image."""
    p = downloaded()
    p["9"]["inputs"]["images"] = L("20")
    return p


@pytest.mark.parametrize("how", ["extra_data", "env"])
def test_one_submission_holding_every_node_and_the_saves_on_their_own_nodes(wenv, fake, monkeypatch, how):
    folder_paths, mini_comfy, server = _node_env()
    extra = {"gpugeek_whole_workflow": True} if how == "extra_data" else None
    if how == "env":
        monkeypatch.setenv("GPUGEEK_WHOLE_WORKFLOW", "1")
    results, ui, local = queue(runnable(), wenv, extra)
    assert len(fake.tasks) == 1
    task = next(iter(fake.tasks.values()))
    # every node of the graph in the one submission; the local photo uploaded and read by URL
    assert set(runnable()) <= set(task.prompt)
    assert task.prompt["20"]["inputs"]["image"].startswith(fake.base_url + "/oss/") and fake.count("put") == 1
    # nothing ran here but the gateway and the stand-ins (the local SaveImage class never ran)
    assert sorted(local) == sorted([plan.WHOLE, "9", "12:7:2"]) and mini_comfy.SAVED == []
    # the save: in output/ with its own prefix, the cloud's pixels, on node 9, type output
    (img,) = ui["9"]["images"]
    assert img["type"] == "output" and img["subfolder"] == "" and img["filename"] == "ComfyUI_00001_.png"
    saved = Path(folder_paths.get_output_directory(), img["filename"])
    (cloud_name, cloud_bytes), = task.files["9"]
    assert (pixels(saved) == pixels(cloud_bytes)).all()
    assert (pixels(saved) == pixels(Path(folder_paths.get_input_directory(), "here.png"))).all()
    assert "workflow" not in Image.open(saved).info and "prompt" in Image.open(saved).info
    # the preview: in temp/, on its own (subgraph) node
    (prev,) = ui["12:7:2"]["images"]
    assert prev["type"] == "temp" and Path(folder_paths.get_temp_directory(), prev["filename"]).is_file()
    # the gateway shows no images of its own (they are on the nodes), but its task and price
    assert ui[plan.WHOLE]["images"] == [] and ui[plan.WHOLE]["gpugeek"][0]["state"] == "done"
    # progress on the nodes the editor has
    assert any(n == "9" and t.startswith("Done") for t, n in server.progress_texts)
    # the journal has the task, for Load Result and the tasks tab
    import conftest
    rec = conftest.load_pack().nodes.cloud.journal().by_prompt_id(task.prompt_id)
    assert rec["status"] == "succeeded"
    # the owner let go of the files once each output node took its own
    assert conftest.load_pack().nodes.cloud.owner().held() == 0


def test_the_switch_off_runs_here_and_submits_nothing(wenv, fake, monkeypatch):
    _, mini_comfy, _ = _node_env()
    monkeypatch.setenv("GPUGEEK_WHOLE_WORKFLOW", "1")
    p = {"20": {"class_type": "LoadImage", "inputs": {"image": "here.png"}},
         "24": {"class_type": "ImageInvert", "inputs": {"image": L("20")}},
         "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": L("24")}}}
    results, ui, local = queue(p, wenv, {"gpugeek_whole_workflow": False})
    assert local == p and len(fake.tasks) == 0 and fake.count("put") == 0
    assert len(mini_comfy.SAVED) == 1
    monkeypatch.delenv("GPUGEEK_WHOLE_WORKFLOW")
    queue(p, wenv)  # no switch anywhere: here too
    assert len(fake.tasks) == 0 and len(mini_comfy.SAVED) == 2


def test_cached_gateway_and_a_new_prefix_fetch_the_files_again_from_the_journal(wenv, fake):
    folder_paths, _, _ = _node_env()
    p = runnable()
    _, ui, local = queue(p, wenv, {"gpugeek_whole_workflow": True})
    task_id = next(iter(fake.tasks))
    # ComfyUI kept the gateway's output and runs only the changed output node: it reads the task again
    import conftest
    cls = wenv["GPUGeekCloudOutput"]
    out = asyncio.run(cls().show(task_id=task_id, gpugeek_node="9", gpugeek_class="SaveImage",
                                 gpugeek_prefix="cats/again", unique_id="9"))
    (img,) = out["ui"]["images"]
    assert img["subfolder"] == "cats" and img["filename"] == "again_00001_.png"
    saved = Path(folder_paths.get_output_directory(), "cats", "again_00001_.png")
    assert (pixels(saved) == pixels(Path(folder_paths.get_input_directory(), "here.png"))).all()
    assert len(fake.tasks) == 1 and conftest.load_pack().nodes.cloud.owner().held() == 0


def test_nothing_came_back_says_where_it_is_left(wenv, fake):
    _, _, server = _node_env()
    cls = wenv["GPUGeekCloudOutput"]
    queue(runnable(), wenv, {"gpugeek_whole_workflow": True})
    task_id = next(iter(fake.tasks))
    out = asyncio.run(cls().show(task_id=task_id, gpugeek_node="3", gpugeek_class="ShowText", unique_id="3",
                                 gpugeek_out_lang="zh"))
    assert out["ui"]["gpugeek"][0] == {"state": "left", "task_id": task_id}
    assert (said("whole_left_in_cloud", "zh", task=task_id), "3") in server.progress_texts


def test_no_key_is_refused_on_the_output_nodes_and_nothing_is_sent(wenv, fake, monkeypatch):
    import mini_comfy
    monkeypatch.delenv("GPUGEEK_API_KEY")
    with pytest.raises(mini_comfy.ValidationError) as e:
        queue(runnable(), wenv, {"gpugeek_whole_workflow": True, "gpugeek_lang": "zh"})
    assert sorted(e.value.node_errors) == ["12:7:2", "9"]
    assert said("whole_no_key", "zh") in json.dumps(e.value.node_errors, ensure_ascii=False)
    assert len(fake.tasks) == 0 and fake.count("put") == 0


def test_a_node_that_only_makes_sense_here_is_refused_at_queue_time(wenv, fake):
    import mini_comfy
    p = runnable()
    p["40"] = {"class_type": "GPUGeekLoadResult", "inputs": {"prompt_id": "123"}}
    p["41"] = {"class_type": "PreviewImage", "inputs": {"images": L("40")}}
    with pytest.raises(mini_comfy.ValidationError) as e:
        queue(p, wenv, {"gpugeek_whole_workflow": "true"})
    assert list(e.value.node_errors) == ["40"]
    assert len(fake.tasks) == 0 and fake.count("put") == 0


def test_the_plan_route_marks_the_whole_graph(wenv, fake):
    from conftest import load_pack
    routes = load_pack().nodes.routes

    class Req:
        async def json(self):
            return {"prompt": runnable(), "lang": "en", "extra_data": {"gpugeek_whole_workflow": True}}
    answer = json.loads(asyncio.run(routes.post_plan(Req())).text)
    assert answer["ok"] and set(answer["roles"]) == set(runnable()) and set(answer["roles"].values()) == {"cloud"}
    assert set(answer["owner"].values()) == {plan.WHOLE} and plan.WHOLE in answer["expected"]


def test_the_default_saved_from_the_settings_and_the_environment(wenv, monkeypatch):
    from conftest import load_pack
    pack = load_pack()
    routes, hook, config = pack.nodes.routes, pack.nodes.hook, pack.offload.config

    class Req:
        def __init__(self, body):
            self.body = body

        async def json(self):
            return self.body
    assert hook.whole_switch({"extra_data": {}}) is False
    answer = json.loads(asyncio.run(routes.post_config(Req({"whole_workflow": True}))).text)
    assert answer["ok"] and answer["whole_workflow"] is True and answer["whole_workflow_env"] is False
    assert hook.whole_switch({}) is True and hook.whole_switch({"extra_data": {"gpugeek_whole_workflow": False}}) is False
    monkeypatch.setenv("GPUGEEK_WHOLE_WORKFLOW", "0")  # the environment wins over the saved setting
    assert hook.whole_switch({}) is False and config.load_config().public()["whole_workflow_env"] is True
    asyncio.run(routes.post_config(Req({"whole_workflow": False})))
    monkeypatch.delenv("GPUGEEK_WHOLE_WORKFLOW")
    assert hook.whole_switch({}) is False


def test_stop_cancels_the_whole_workflows_task_and_the_daily_limit_counts_it(wenv, fake, monkeypatch):
    import threading

    import comfy.model_management as mm
    from conftest import load_pack
    fake.task_opts.update(run_s=30)

    def stopper():
        while not fake.tasks:
            time.sleep(0.01)
        t = next(iter(fake.tasks.values()))
        while fake.status_of(t)[0] != 2 or t.polls < 1:
            time.sleep(0.01)
        mm.interrupt_flag = True
    threading.Thread(target=stopper, daemon=True).start()
    with pytest.raises(mm.InterruptProcessingException):
        queue(runnable(), wenv, {"gpugeek_whole_workflow": True})
    assert core("owner").owner().drain(10)
    t = next(iter(fake.tasks.values()))
    assert fake.count("cancel") == 1 and t.cancelled_at is not None
    assert load_pack().nodes.cloud.journal().by_prompt_id(t.prompt_id)["status"] == "cancelled"
    # the daily limit refuses the whole workflow's task as a gateway's, before it is submitted
    mm.interrupt_flag = False
    fake.task_opts.update(run_s=0)
    monkeypatch.setenv("GPUGEEK_DAILY_LIMIT", "0.3")
    queue(runnable(), wenv, {"gpugeek_whole_workflow": True})  # 0.25 spent
    p = runnable()
    p["9"]["inputs"]["filename_prefix"] = "again"
    with pytest.raises(Exception) as e:
        queue(p, wenv, {"gpugeek_whole_workflow": True})
    assert "0.3" in str(e.value) and len(fake.tasks) == 2


def test_video_audio_and_animations_are_kept_as_they_came_and_shown_as_the_savers_would(wenv):
    folder_paths, _, _ = _node_env()
    from conftest import load_pack
    output = load_pack().nodes.output
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:])
    files = [("http://x/view?filename=clip_00001_.mp4", b"\x00\x00\x00\x18ftypmp42"),
             ("http://x/view?filename=anim.webp", buf.getvalue())]
    ui = output.save_as(files, "SaveVideo", "video/cats")
    assert ui["animated"] == [True] and [f["filename"] for f in ui["images"]] == ["cats_00001_.mp4", "cats_00002_.webp"]
    assert Path(folder_paths.get_output_directory(), "video", "cats_00001_.mp4").read_bytes() == files[0][1]
    ui = output.save_as([("http://x/o/sound.flac", b"fLaC....")], "SaveAudio", "")
    assert ui == {"audio": [{"filename": "ComfyUI_00001_.flac", "subfolder": "", "type": "output"}]}
    ui = output.save_as([("http://x/o/model.glb", b"glTF")], "Save3D", "m")
    assert ui == {} and Path(folder_paths.get_output_directory(), "m_00001_.glb").is_file()  # kept, not shown


def test_a_cloud_png_keeps_its_bytes_and_gets_this_machines_prompt_and_workflow():
    from fake_gpugeek import photo_png
    codec = core("codec")
    src = Image.open(io.BytesIO(photo_png(48, 32, seed=2)))
    buf = io.BytesIO()
    from PIL.PngImagePlugin import PngInfo
    info = PngInfo()
    info.add_text("prompt", '{"cloud": "prompt"}')
    src.save(buf, "PNG", pnginfo=info)
    workflow = json.dumps({"extra": {"note": "\u732b"}})  # a text Latin-1 cannot hold: iTXt
    out = codec.png_with_text(buf.getvalue(), {"prompt": '{"local": 1}', "workflow": workflow})
    back = Image.open(io.BytesIO(out))
    assert back.info["prompt"] == '{"local": 1}' and json.loads(back.info["workflow"]) == json.loads(workflow)
    assert (np.asarray(back) == np.asarray(src)).all()
    # the image data itself is the cloud's, byte for byte
    assert buf.getvalue()[buf.getvalue().index(b"IDAT"):] in out or out.endswith(buf.getvalue()[-12:])
    with pytest.raises(core("errors").ResultError):
        codec.png_with_text(buf.getvalue()[:40], {})


def test_a_target_that_refuses_the_graph_says_it_node_by_node_and_outlines_those_nodes(wenv, fake):
    from server import PromptServer
    E = core("errors")
    raw = json.dumps({"4": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                        "details": "ckpt_name: 'cloud_only.safetensors' not in []",
                                        "extra_info": {"input_name": "ckpt_name",
                                                       "received_value": "cloud_only.safetensors"}}],
                            "dependent_outputs": ["9"], "class_type": "CheckpointLoaderSimple"}})
    fake.task_opts.update(fail=raw)
    with pytest.raises(E.TaskFailedError) as ei:
        queue(runnable(), wenv, {"gpugeek_whole_workflow": True})
    text = str(ei.value)
    # told by an output node, which the editor has (the whole workflow's gateway is none of its nodes)
    assert text.startswith(("Save the cat #9: ", "PreviewImage #12:7:2: "))
    assert "#4 CheckpointLoaderSimple" in text and "{" not in text
    told = [d for kind, d, _ in PromptServer.instance.sent if kind == "gpugeek.cloud_errors"]
    assert [e["id"] for e in told[-1]["errors"]] == ["4"]  # outlined on the user's own node


def test_a_planning_bug_runs_nothing_here_or_there(wenv, fake, monkeypatch):
    import mini_comfy
    from conftest import load_pack
    hook = load_pack().nodes.hook

    def broken(*a, **kw):
        raise KeyError("bug")
    monkeypatch.setattr(hook.plan, "make_plan", broken)
    with pytest.raises(mini_comfy.ValidationError) as e:
        queue(runnable(), wenv, {"gpugeek_whole_workflow": True})
    assert list(e.value.node_errors) == [plan.WHOLE] and "KeyError" in json.dumps(e.value.node_errors)
    assert len(fake.tasks) == 0 and mini_comfy.SAVED == []


def test_a_new_file_name_prefix_alone_changes_nothing_the_cloud_runs():
    """Issue 25's note: the user's prefix is applied here when the files are saved; the cloud part, its plan and
    so ComfyUI's cache of the gateway are the same, so nothing runs or is paid for again."""
    a, b = whole(downloaded(prefix="cats/one")), whole(downloaded(prefix="dogs/two"))
    assert a.local_prompt[plan.WHOLE] == b.local_prompt[plan.WHOLE]
    assert a.plans[plan.WHOLE].hash == b.plans[plan.WHOLE].hash
    assert a.local_prompt["9"]["inputs"][plan.OUTPUT_PREFIX_INPUT] == "cats/one"
    assert b.local_prompt["9"]["inputs"][plan.OUTPUT_PREFIX_INPUT] == "dogs/two"


def test_queue_selected_outputs_sends_only_what_they_need():
    p = downloaded()
    p["30"] = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}
    p["31"] = {"class_type": "PreviewImage", "inputs": {"images": L("30")}}
    every = whole(p)
    assert {"30", "31"} <= set(every.plans[plan.WHOLE].prompt)
    res = whole(p, targets=["31"])
    gp = res.plans[plan.WHOLE]
    assert sorted(gp.prompt) == ["30", "31"] and gp.user_outputs == ["31"] and gp.local_files == []
    assert sorted(res.local_prompt) == sorted([plan.WHOLE, "31"])
    assert whole(p, targets=["no such node"]).plans[plan.WHOLE].user_outputs == every.plans[plan.WHOLE].user_outputs


def test_the_hook_reads_the_queued_outputs_from_the_prompt(wenv):
    from conftest import load_pack
    hook = load_pack().nodes.hook
    body = {"prompt": downloaded(), "extra_data": {"gpugeek_whole_workflow": True},
            "partial_execution_targets": ["12:7:2"]}
    local = hook.on_prompt(copy.deepcopy(body))["prompt"]
    assert sorted(local) == sorted([plan.WHOLE, "12:7:2"])
    sent = plan.GatewayPlan.from_json(local[plan.WHOLE]["inputs"][plan.PLAN_INPUT])
    assert sent.user_outputs == ["12:7:2"] and "9" not in sent.prompt and "8" in sent.prompt


def test_a_failed_cloud_run_is_told_on_an_output_node_and_runs_again_when_queued(wenv, fake, monkeypatch):
    """The whole workflow's gateway is no node of the editor: a run that fails in the cloud is told by the output
    nodes, titled as the user sees them, and the next queue runs it again instead of ComfyUI's cached failure."""
    monkeypatch.setenv("GPUGEEK_WHOLE_WORKFLOW", "1")
    from conftest import load_pack
    E = core("errors")
    _, _, server = _node_env()
    local = server.trigger_on_prompt({"prompt": runnable(), "extra_data": {}})["prompt"]
    gateway = load_pack().NODE_CLASS_MAPPINGS[plan.GATEWAY]
    plan_json = local[plan.WHOLE]["inputs"][plan.PLAN_INPUT]
    before = gateway.IS_CHANGED(gpugeek_plan=plan_json)
    fake.task_opts.update(fail="CUDA out of memory")
    with pytest.raises(E.TaskFailedError) as ei:
        queue(runnable(), wenv)
    text = str(ei.value)
    assert text.startswith(("Save the cat #9: ", "PreviewImage #12:7:2: ")) and "CUDA out of memory" in text
    failed = gateway.IS_CHANGED(gpugeek_plan=plan_json)
    assert failed != before and gateway.IS_CHANGED(gpugeek_plan=plan_json) == failed
    fake.task_opts.pop("fail")
    queue(runnable(), wenv)
    assert len(fake.tasks) == 2
    assert gateway.IS_CHANGED(gpugeek_plan=plan_json) == failed   # a success changes nothing ComfyUI caches on


def test_runs_make_that_many_variations_at_once_and_each_output_node_shows_them_all(wenv, fake):
    """extra_data.gpugeek_runs (the editor's runs beside the switch): the whole workflow as N tasks at once, seeds
    offset by the run's index, every run's files on each output node."""
    results, ui, local = queue(runnable(), wenv, {"gpugeek_whole_workflow": True, "gpugeek_runs": 3})
    assert len(fake.tasks) == 3
    assert sorted(t.prompt["3"]["inputs"]["seed"] for t in fake.tasks.values()) == [1, 2, 3]
    assert len(ui["9"]["images"]) == 3 and len(ui["12:7:2"]["images"]) == 3
    assert len(results[plan.WHOLE][plan.TASK_ID_SLOT].split(",")) == 3


def test_an_output_refused_on_its_own_values_is_left_out_and_the_others_run():
    """As ComfyUI runs a prompt (an output that fails validation is left out, said on its node; the rest runs), where
    leaving it out leaves out nothing else: a template's stray Save Video with nothing connected does not stop the
    graph, and the task still holds every node the other outputs need."""
    classes = table()
    classes["SaveVideo"] = plan.ClassInfo((), True, {}, spec=lambda: {
        "required": {"video": ("VIDEO", {}), "filename_prefix": ("STRING", {})}})
    p = downloaded()
    p["40"] = {"class_type": "SaveVideo", "inputs": {"filename_prefix": "video/x"}}   # nothing connected
    res = plan.make_plan(copy.deepcopy(p), classes, lambda f: True, whole=True, lang="en")
    gp = res.plans[plan.WHOLE]
    assert res.refusals == {} and sorted(gp.prompt) == sorted(set(p) - {"40"})
    assert corpus.fragment(p, gp.prompt, {"9", "12:7:2", "40"}, left_out={"40"}) == {}
    assert sorted(res.local_prompt) == sorted([plan.WHOLE, "9", "12:7:2", "40"])
    assert "video" in res.local_prompt["40"]["inputs"][plan.REFUSAL_INPUT]


def test_an_output_whose_graph_has_a_wrong_value_stops_the_whole_workflow_not_only_itself():
    """Issue 38: the cloud is paid per task, so a whole workflow goes whole or not at all. An output whose graph has a
    wrong value upstream is not left out while the others go (before: the others' part was sent and paid, a fragment
    that cannot make what the workflow makes): nothing is sent, the wrong value is said on its node and every other
    output says why it did not go alone."""
    classes = table()
    classes["KSampler"] = plan.ClassInfo(("LATENT",), False, {}, spec=lambda: {
        "required": {"steps": ("INT", {"min": 1, "max": 100})}})
    p = downloaded()
    p["3"]["inputs"]["steps"] = 0
    p["30"] = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}
    p["31"] = {"class_type": "PreviewImage", "inputs": {"images": L("30")}}
    for lang in ("en", "zh"):
        res = plan.make_plan(copy.deepcopy(p), classes, lambda f: True, whole=True, lang=lang)
        assert plan.WHOLE not in res.local_prompt and res.refusals   # nothing submitted
        assert sorted(res.local_prompt) == ["3", "31"]
        assert said("refuse_cloud_range", lang, node="#3 KSampler", input="steps", value="0", low="1", high="100") \
            in res.local_prompt["3"]["inputs"][plan.REFUSAL_INPUT]
        assert said("refuse_whole_not_alone", lang, node="#31 PreviewImage") in \
            res.local_prompt["31"]["inputs"][plan.REFUSAL_INPUT]
        assert "#9 Save the cat" in res.local_prompt["31"]["inputs"][plan.REFUSAL_INPUT]
    # queued alone (queue selected outputs), the good output goes: what was queued, whole
    res = plan.make_plan(copy.deepcopy(p), classes, lambda f: True, whole=True, lang="en", targets=["31"])
    gp = res.plans[plan.WHOLE]
    assert res.refusals == {} and sorted(gp.prompt) == ["30", "31"]
    del p["31"], p["30"]   # every output has the wrong value: the whole graph is refused, said on the nodes concerned
    res = plan.make_plan(copy.deepcopy(p), classes, lambda f: True, whole=True, lang="en")
    assert sorted(res.local_prompt) == ["3"]


LTX = json.loads((Path(__file__).parent / "fixtures" / "ltx2_3_prompts.json").read_text())


def ltx_classes() -> dict:
    """The fixture's classes as ComfyUI 0.33.0 told them (Create Video's inputs too: what its value is judged by)."""
    return {c: plan.ClassInfo(tuple(v["outputs"]), v["output_node"], {},
                              spec=(lambda s=v["input"]: s) if v.get("input") else None)
            for c, v in LTX["classes"].items()}


@pytest.mark.parametrize("name", sorted(LTX["prompts"]))
def test_a_template_made_on_a_newer_comfyui_goes_to_the_cloud_whole(name):
    """Issue 38, the prompts ComfyUI 0.33.0's editors queued for three LTX-2.3 templates: 9 of 55, 8 of 45 and 9 of
    51 nodes were sent and paid. Their Create Video's bit_depth is 'auto', a list's value in the ComfyUI they were
    made on and a number on 0.33.0: judged here as a wrong number, it left Save Video out and sent the Preview Any's
    prompt enhancer alone. A word for a number is the cloud's to judge: the task holds every node ComfyUI would run
    for the queued outputs. Where the cloud's list for bit_depth is known and lacks 'auto', nothing is sent, the value
    is said on its node and the other output says why it did not go alone."""
    p = LTX["prompts"][name]
    classes = ltx_classes()
    outputs = corpus.comfy_outputs(p, lambda c: classes[c].output_node)
    assert sorted(p[o]["class_type"] for o in outputs) == ["PreviewAny", "SaveVideo"]
    res = plan.make_plan(copy.deepcopy(p), classes, lambda f: True, whole=True, lang="en")
    gp = res.plans[plan.WHOLE]
    assert res.refusals == {} and gp.mode == "cloud"
    assert corpus.fragment(p, gp.prompt, outputs) == {} and set(gp.nodes) == corpus.upstream(p, outputs)
    assert gp.user_outputs == sorted(outputs)
    video = next(n for n, v in p.items() if v["class_type"] == "CreateVideo")
    lists = lambda g, c, n: {8, 10} if (c, n) == ("CreateVideo", "bit_depth") else None  # noqa: E731
    res = plan.make_plan(copy.deepcopy(p), classes, lambda f: True, whole=True, lang="en", cloud_choices=lists)
    assert plan.WHOLE not in res.local_prompt and res.refusals   # refused before paying
    assert "bit_depth is auto" in res.local_prompt[video]["inputs"][plan.REFUSAL_INPUT]
    preview = next(o for o in outputs if p[o]["class_type"] == "PreviewAny")
    saver = next(o for o in outputs if p[o]["class_type"] == "SaveVideo")
    assert said("refuse_whole_not_alone", "en", node=plan.node_label(p, preview), other=plan.node_label(p, saver)) == \
        res.local_prompt[preview]["inputs"][plan.REFUSAL_INPUT]


def test_another_target_in_settings_runs_the_whole_workflow_again_there(wenv, monkeypatch):
    """The whole workflow's gateway carries where it runs (the settings at queue time): what ComfyUI caches it on
    changes with the target, so the task of the target before is never served for the new one."""
    from conftest import load_pack
    hook = load_pack().nodes.hook
    body = {"prompt": downloaded(), "extra_data": {"gpugeek_whole_workflow": True}}
    first = hook.on_prompt(copy.deepcopy(body))["prompt"][plan.WHOLE]["inputs"]
    monkeypatch.setenv("GPUGEEK_TARGET", "http://127.0.0.1:8188")
    second = hook.on_prompt(copy.deepcopy(body))["prompt"][plan.WHOLE]["inputs"]
    assert first[plan.PLAN_INPUT] == second[plan.PLAN_INPUT] and first != second
    assert second["target"] == "http://127.0.0.1:8188" and first["workflow_id"] == WF


def _queue_cached(prompt, classes, cache, extra_data=None):
    _, mini_comfy, server = _node_env()
    return asyncio.run(mini_comfy.execute(copy.deepcopy(prompt), classes, server, extra_data=extra_data, cache=cache))


def test_a_new_prefix_after_a_failure_and_a_success_pays_nothing_more(wenv, fake, monkeypatch):
    """One payment per result: a failed run, queued again and succeeding, then only the saver's prefix changes.
    ComfyUI serves the cloud part from its cache (the stand-in keeps ComfyUI's cache, IS_CHANGED included): no third
    task. The files land under the new prefix, read again from the task that made them."""
    import mini_comfy
    folder_paths, _, _ = _node_env()
    monkeypatch.setenv("GPUGEEK_WHOLE_WORKFLOW", "1")
    cache = mini_comfy.Cache()
    fake.task_opts.update(fail="CUDA out of memory")
    with pytest.raises(core("errors").TaskFailedError):
        _queue_cached(runnable(), wenv, cache)
    fake.task_opts.pop("fail")
    _queue_cached(runnable(), wenv, cache)
    assert len(fake.tasks) == 2
    p = runnable()
    p["9"]["inputs"]["filename_prefix"] = "renamed"
    _, ui, _ = _queue_cached(p, wenv, cache)
    assert len(fake.tasks) == 2, "a new prefix paid for the cloud part again"
    assert plan.WHOLE not in cache.ran[-1] and "9" in cache.ran[-1]
    (img,) = ui["9"]["images"]
    assert img["filename"] == "renamed_00001_.png"
    assert Path(folder_paths.get_output_directory(), img["filename"]).is_file()


def test_a_failed_run_runs_again_each_time_it_is_queued_until_it_succeeds(wenv, fake, monkeypatch):
    """The other side: a failure is never served from ComfyUI's cache, however many times it failed."""
    import mini_comfy
    monkeypatch.setenv("GPUGEEK_WHOLE_WORKFLOW", "1")
    cache = mini_comfy.Cache()
    fake.task_opts.update(fail="CUDA out of memory")
    for n in (1, 2, 3):
        with pytest.raises(core("errors").TaskFailedError):
            _queue_cached(runnable(), wenv, cache)
        assert len(fake.tasks) == n
    fake.task_opts.pop("fail")
    _queue_cached(runnable(), wenv, cache)
    _queue_cached(runnable(), wenv, cache)
    assert len(fake.tasks) == 4

def two_saves_one_prefix():
    """Two Save Image nodes of one prefix, different pixels: 9 saves the local photo, 13 the sampler's image."""
    p = runnable()
    p["13"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": L("8")}}
    return p


def test_two_saves_of_one_prefix_write_files_of_their_own(wenv, fake, monkeypatch):
    """Issue 38 (3): the two output nodes run at once (async nodes, ComfyUI runs them concurrently); the first is
    held between asking ComfyUI's counter and writing until the second has asked too (the second never gets that
    far while the first holds the folder: then the first goes on after a while). Each keeps its own files."""
    import threading
    folder_paths, _, _ = _node_env()
    real = folder_paths.get_save_image_path
    calls, second = [], threading.Event()

    def held(prefix, output_dir, *a):
        got = real(prefix, output_dir, *a)
        if prefix != "ComfyUI":   # the preview's, in temp/
            return got
        calls.append(prefix)
        if len(calls) == 1:
            second.wait(2.0)   # no timed assertion: this bounds how long the first waits for a second that can't come
        else:
            second.set()
        return got
    monkeypatch.setattr(folder_paths, "get_save_image_path", held)
    _, ui, _ = queue(two_saves_one_prefix(), wenv, {"gpugeek_whole_workflow": True})
    names = [i["filename"] for n in ("9", "13") for i in ui[n]["images"]]
    assert sorted(names) == ["ComfyUI_00001_.png", "ComfyUI_00002_.png"]
    task = next(iter(fake.tasks.values()))
    out = Path(folder_paths.get_output_directory())
    for n in ("9", "13"):   # each node's file holds that node's pixels
        (img,) = ui[n]["images"]
        ((_, cloud_bytes),) = task.files[n]
        assert (pixels(out / img["filename"]) == pixels(cloud_bytes)).all()
    a, b = pixels(out / names[0]), pixels(out / names[1])
    assert a.shape != b.shape or not (a == b).all()   # both pixel sets are there


def test_a_file_another_writer_made_meanwhile_is_never_overwritten(wenv, monkeypatch):
    """Another writer in the folder (a local Save Image, a second ComfyUI) makes the counter's file between the
    counter and the write: the save takes the next free counter instead."""
    folder_paths, _, _ = _node_env()
    from conftest import load_pack
    output = load_pack().nodes.output
    real = folder_paths.get_save_image_path

    def raced(prefix, output_dir, *a):
        folder, name, counter, sub, p = real(prefix, output_dir, *a)
        Path(folder, f"{name}_{counter:05}_.png").write_bytes(b"theirs")
        return folder, name, counter, sub, p
    monkeypatch.setattr(folder_paths, "get_save_image_path", raced)
    from fake_gpugeek import photo_png
    ui = output.save_as([("http://x/o/a.png", photo_png(8, 8, seed=1)), ("http://x/o/b.png", photo_png(8, 8, seed=2))],
                        "SaveImage", "race")
    out = Path(folder_paths.get_output_directory())
    assert (out / "race_00001_.png").read_bytes() == b"theirs"
    assert [i["filename"] for i in ui["images"]] == ["race_00002_.png", "race_00003_.png"]
    assert (pixels(out / "race_00003_.png") == pixels(photo_png(8, 8, seed=2))).all()


def test_after_a_restart_a_new_prefix_takes_the_results_already_paid_for(wenv, fake, monkeypatch):
    """One payment per result, whatever happened before (issue 38): ComfyUI restarted (its cache empty) or ran
    another workflow in between, and the same graph is queued with only its prefix changed: the cloud prompt is the
    same, so the results of the task that made them are brought back (the journal keeps them), nothing is submitted.
    Where those results are gone from the cloud, it runs again."""
    import mini_comfy
    folder_paths, _, server = _node_env()
    monkeypatch.setenv("GPUGEEK_WHOLE_WORKFLOW", "1")
    _queue_cached(runnable(), wenv, mini_comfy.Cache())
    assert len(fake.tasks) == 1
    (first,) = fake.tasks
    p = runnable()
    p["9"]["inputs"]["filename_prefix"] = "after_restart"
    _, ui, _ = _queue_cached(p, wenv, mini_comfy.Cache())   # a restarted ComfyUI: nothing in its cache
    assert len(fake.tasks) == 1, "the same cloud prompt was paid for again after a restart"
    (img,) = ui["9"]["images"]
    saved = Path(folder_paths.get_output_directory(), img["filename"])
    assert img["filename"] == "after_restart_00001_.png"
    assert (pixels(saved) == pixels(fake.tasks[first].files["9"][0][1])).all()
    assert any(str(first) in t for t, _ in server.progress_texts)   # said: the task it came from
    fake.tasks[first].files = {}   # the cloud no longer has them: it runs again (and is paid, once)
    p["9"]["inputs"]["filename_prefix"] = "gone"
    _queue_cached(p, wenv, mini_comfy.Cache())
    assert len(fake.tasks) == 2


def test_a_task_a_killed_comfyui_left_running_is_waited_for_not_paid_again(wenv, fake, monkeypatch):
    """One payment per result across a kill (issue 39: ComfyUI killed while a part ran, or before its queue reached a
    part sent ahead): the journal holds the task as queued, by a process now gone. The same graph queued after the
    restart (a new prefix, an empty cache) waits for that task and takes its results; nothing is submitted. A task so
    left that failed is not a result: the run is sent again."""
    import mini_comfy
    J = core("journal")
    folder_paths, _, server = _node_env()
    monkeypatch.setenv("GPUGEEK_WHOLE_WORKFLOW", "1")
    _queue_cached(runnable(), wenv, mini_comfy.Cache())
    (first,) = fake.tasks
    journal = J.Journal()
    (rec,) = [r for r in journal.tasks() if str(r.get("prompt_id")) == str(first)]
    # as a ComfyUI killed while it waited left it: queued, no results, another process's token and a dead pid
    journal.update(rec["key"], status="queued", result_url=None, price=None, proc="killed000000", pid=2 ** 22 + 7)
    p = runnable()
    p["9"]["inputs"]["filename_prefix"] = "after_kill"
    _, ui, _ = _queue_cached(p, wenv, mini_comfy.Cache())
    assert len(fake.tasks) == 1, "a task a killed ComfyUI left running was paid for again"
    (img,) = ui["9"]["images"]
    assert (pixels(Path(folder_paths.get_output_directory(), img["filename"]))
            == pixels(fake.tasks[first].files["9"][0][1])).all()
    now = J.Journal().get(rec["key"])   # as the file says now (another Journal, as a reader after a restart)
    assert now["status"] == "succeeded" and now["result_url"]
    assert any(str(first) in t for t, _ in server.progress_texts)   # said: the task it waited for
    # a left task that failed on the platform: the run goes again, once
    journal.update(rec["key"], status="running", result_url=None, proc="killed000000", pid=2 ** 22 + 7)
    fake.tasks[first].fail = "CUDA out of memory"
    p["9"]["inputs"]["filename_prefix"] = "after_failed"
    _queue_cached(p, wenv, mini_comfy.Cache())
    assert len(fake.tasks) == 2
