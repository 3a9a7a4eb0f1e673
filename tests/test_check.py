"""The queue-time check of a cloud part refuses only what ComfyUI would refuse in the cloud and this machine can
know (issue 31): lists filled from this machine's folders are the cloud's to judge (Load VAE's ``pixel_space``
with no VAE here), inputs a class validates itself are its own (ModelAttentionBackend), dynamic inputs are read
as ComfyUI reads them, numbers are converted as ComfyUI converts them, and a value the cloud's lists hold passes."""
import copy
import os

import pytest

from conftest import core, load_pack

pack = load_pack()
plan = core("plan")
import folder_paths  # noqa: E402  (the stub installed by load_pack)
import nodes  # noqa: E402

comfy = pack.nodes.comfy


class LoadVAE:
    """As ComfyUI's: the VAE folder, the approximate VAEs found there, and a built-in entry."""
    RETURN_TYPES = ("VAE",)

    @classmethod
    def INPUT_TYPES(cls):
        vaes = folder_paths.get_filename_list("vae")
        vaes.append("pixel_space")
        return {"required": {"vae_name": (vaes,)}}


class LoadImage:
    RETURN_TYPES = ("IMAGE", "MASK")

    @classmethod
    def INPUT_TYPES(cls):
        folder = folder_paths.get_input_directory()
        files = sorted(f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f)))
        return {"required": {"image": (files, {"image_upload": True})}}


class KSamplerLike:
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                             "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0}),
                             "sampler_name": (["euler", "euler_ancestral", "dpmpp_2m"],)}}


class Decode:
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "vae": ("VAE",)}}


class AttentionBackend:
    """As ComfyUI 0.33's ModelAttentionBackend: a list filled at start from what is installed, judged by the
    class itself."""
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"attention": (["pytorch attention"],)}}

    @classmethod
    def VALIDATE_INPUTS(cls, attention):
        return True


class Judges:
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mode": (["a", "b"],), "count": ("INT", {"min": 1, "max": 4})}}

    @classmethod
    def VALIDATE_INPUTS(cls, **kwargs):
        return True


@pytest.fixture
def table(tmp_path):
    folder_paths.base = str(tmp_path / "comfy")
    for d in ("input", "output", "temp", "user"):
        os.makedirs(os.path.join(folder_paths.base, d), exist_ok=True)
    saved = dict(nodes.NODE_CLASS_MAPPINGS)
    nodes.NODE_CLASS_MAPPINGS.clear()
    nodes.NODE_CLASS_MAPPINGS.update({"VAELoader": LoadVAE, "LoadImage": LoadImage, "KSampler": KSamplerLike,
                                      "ModelAttentionBackend": AttentionBackend, "Judges": Judges,
                                      "VAEDecode": Decode})
    yield comfy.ClassTable()
    nodes.NODE_CLASS_MAPPINGS.clear()
    nodes.NODE_CLASS_MAPPINGS.update(saved)


def told(node, classes, class_type=None, cloud_choices=None):
    found = plan.check.check_node("1", {"class_type": class_type or node.pop("class_type"), "inputs": node},
                                  classes, "#1 Node", cloud_choices)
    return [r.text("en") for r in found]


def test_load_vae_with_no_vae_here_is_the_clouds_to_judge(table):
    assert told({"vae_name": "ae.safetensors"}, table, "VAELoader") == []
    assert told({"vae_name": "pixel_space"}, table, "VAELoader") == []


def test_a_list_of_the_input_folder_is_the_clouds_even_when_it_holds_no_file_like_name(table):
    open(os.path.join(folder_paths.get_input_directory(), "README"), "w").close()
    assert told({"image": "example.png"}, table, "LoadImage") == []


def test_the_probe_changes_nothing_for_anyone_else(table):
    before = folder_paths.get_filename_list("vae")
    table.get("VAELoader").machine()
    assert folder_paths.get_filename_list("vae") == before
    assert not os.listdir(folder_paths.get_input_directory())


def test_numbers_are_checked_as_comfyui_checks_them(table):
    said = told({"steps": 0, "cfg": 7, "sampler_name": "euler"}, table, "KSampler")
    assert said == ["#1 Node: steps is 0, outside its range 1 to 10000: change it."]
    assert told({"steps": "12", "cfg": "7.5", "sampler_name": "euler"}, table, "KSampler") == []  # converted
    assert any("steps is twelve, which is not a number" in s   # a word the cloud's known list lacks
               for s in told({"steps": "twelve", "cfg": 7, "sampler_name": "euler"}, table, "KSampler",
                             lambda c, n: {"8"} if n == "steps" else None))
    wrapped = {"steps": 5, "cfg": 7, "sampler_name": {"__value__": "euler"}}
    assert told(wrapped, table, "KSampler") == []


def test_a_value_of_a_list_is_judged_by_the_clouds_list_where_the_pack_knows_it(table):
    """A value this machine's list lacks came from another ComfyUI (a template made on a newer one): sent while the
    cloud's list is unknown; refused, with the cloud's choices, once it is known and lacks it."""
    cloud = {("KSampler", "sampler_name"): {"euler", "res_multistep_new"}}
    node = {"steps": 5, "cfg": 7, "sampler_name": "res_multistep_new"}
    assert told(dict(node), table, "KSampler", lambda c, n: cloud.get((c, n))) == []
    assert told(dict(node), table, "KSampler", lambda c, n: None) == []
    assert told(dict(node), table, "KSampler") == []
    wrong = dict(node, sampler_name="no_such_sampler")
    assert told(wrong, table, "KSampler", lambda c, n: cloud.get((c, n))) == [
        "#1 Node: sampler_name is no_such_sampler, which is not one of its choices (euler, res_multistep_new): "
        "pick one of them."]
    local_only = dict(node, sampler_name="dpmpp_2m")   # this machine's value, which that cloud lacks
    assert told(local_only, table, "KSampler", lambda c, n: cloud.get((c, n))) != []


def test_a_word_for_a_number_is_the_clouds_unless_its_list_lacks_it(table):
    """An input that became a list in a newer ComfyUI (Create Video's bit_depth: "auto", issue 38's LTX-2.3
    templates): the cloud judges it where its list is not known; its list holding it passes, lacking it refuses. A
    number out of range, or a value no ComfyUI makes for a number (a list), is refused here."""
    node = {"steps": "auto", "cfg": 7, "sampler_name": "euler"}
    assert told(dict(node), table, "KSampler") == []
    assert told(dict(node), table, "KSampler", lambda c, n: {"auto", "8"} if n == "steps" else None) == []
    assert told(dict(node), table, "KSampler", lambda c, n: {"8", "10"} if n == "steps" else None) != []
    assert told(dict(node, steps=[1, 2, 3]), table, "KSampler") != []


def test_a_list_filled_from_this_machines_folders_is_never_judged_here(table):
    cloud = {("VAELoader", "vae_name"): {"other.safetensors", "pixel_space"}}
    assert told({"vae_name": "ae.safetensors"}, table, "VAELoader", lambda c, n: cloud.get((c, n))) == []


def test_inputs_a_class_validates_itself_are_its_own(table):
    assert told({"attention": "comfy kitchen attention"}, table, "ModelAttentionBackend") == []
    assert told({"mode": "z", "count": 99}, table, "Judges") == []
    assert told({"mode": "z"}, table, "Judges") == ["#1 Node: the input count is required: connect it or give it "
                                                    "a value."]


def test_dynamic_inputs_are_read_as_comfyui_reads_them():
    """A newer-schema class with an autogrow input: the prompt names its parts ``values.a``, ``values.b``;
    ComfyUI's own reading of them (the class's ``finalize``) decides what is required."""
    def spec():
        return {"required": {"expression": ("STRING", {}), "values": ("COMFY_AUTOGROW_V3", {})}}

    def finalize(s, inputs):
        out = {"required": {"expression": s["required"]["expression"]}, "optional": {}}
        for k in inputs:
            if k.startswith("values."):
                out["required"][k] = ("FLOAT", {"min": 0})
        return out
    classes = {"MathExpression": plan.ClassInfo(("FLOAT",), False, {}, spec=spec, finalize=finalize)}
    node = {"expression": "a+b", "values.a": 1.0, "values.b": ["5", 0]}
    assert told(dict(node), classes, "MathExpression") == []
    assert told(dict(node, **{"values.a": -1}), classes, "MathExpression") == [
        "#1 Node: a is -1, outside its range 0 to None: change it."]
    without = plan.ClassInfo(("FLOAT",), False, {}, spec=spec)   # what the check did before: refused
    assert told(dict(node), {"MathExpression": without}, "MathExpression") != []


def test_a_whole_workflow_with_load_vae_runs_on_a_machine_without_vae(table):
    p = {"1": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
         "2": {"class_type": "KSampler", "inputs": {"steps": 4, "cfg": 1.0, "sampler_name": "euler"}},
         "4": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 0]}},
         "3": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "x"}}}
    res = plan.make_plan(copy.deepcopy(p), table, lambda f: False, whole=True)
    assert res.refusals == {}
    gateway = {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "1", "run_on": "cloud",
                                                               "image_1": ["4", 0]}}
    del p["3"]
    res = plan.make_plan({**copy.deepcopy(p), "9": gateway}, table, lambda f: False)   # a gateway's cloud part
    assert res.refusals == {}
