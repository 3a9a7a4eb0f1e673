"""A whole workflow in the cloud: the planner's pass (pure) and the queue-time hook's switch."""
import copy
import json

import pytest
from conftest import core, said
from test_plan import table

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
                              plan.OUTPUT_PREFIX_INPUT: "ComfyUI", "task_id": [g, plan.TASK_ID_SLOT]}
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


def test_a_local_video_the_pack_does_not_upload_is_refused_and_a_missing_one_passes_by_name():
    p = downloaded()
    p["50"] = {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}}
    p["51"] = {"class_type": "SaveVideo", "inputs": {"video": L("50"), "filename_prefix": "v"}}
    res = whole(p, files=("here.png", "clip.mp4"), lang="en")
    assert sorted(res.local_prompt) == ["50"]
    assert "clip.mp4" in res.local_prompt["50"]["inputs"][plan.REFUSAL_INPUT]
    passes = whole(p, files=("here.png",))
    assert passes.refusals == {} and "51" in passes.plans[plan.WHOLE].user_outputs  # unknown class, nothing reads it


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
