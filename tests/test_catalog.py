"""What the cloud has (offload/catalog.py): a cloud node's lists come from its target's node definitions, from
what the cloud's refusals and successful runs taught, and from names the user added; kept per target in the
user folder, bounded, robust to a damaged file; served to the editor by POST /gpugeek/lists."""
import asyncio
import json
import os
import subprocess
import sys

import pytest

import mini_comfy
from conftest import ROOT, SECRET_KEY, comfy_env, core, load_pack, said
from big_answers import big_object_info, serve_in_another_process
from fake_comfyui import MODELS, FakeComfyUI

pack = load_pack()
from server import PromptServer  # noqa: E402
import comfy.model_management as mm  # noqa: E402

cat = core("catalog")
C = core("config")
E = core("errors")
cloud_errors = core("cloud_errors")
WF = "123456789012345"
CKPT = {"CheckpointLoaderSimple": ["ckpt_name"]}


@pytest.fixture(autouse=True)
def _fresh_server_state(monkeypatch):
    monkeypatch.setattr(cat, "_server_state", {})


@pytest.fixture
def remote():
    srv = FakeComfyUI().start()
    yield srv
    srv.stop()


def route(handler, body):
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request
    req = make_mocked_request("POST", "/gpugeek/lists")
    req.json = mock.AsyncMock(return_value=body)
    return expand(json.loads(asyncio.run(handler(req)).body, parse_constant=not_json))


def not_json(name):
    raise AssertionError(f"{name} is not JSON: the editor's JSON.parse refuses it")


def expand(answer):
    """The answer as the editor reads it: each distinct list is sent once (``values``), and each class's input
    names the one it offers (``{list, sources}``)."""
    if not answer.get("ok") or "lists" not in answer:
        return answer
    values = answer["values"]
    assert len({json.dumps(v) for v in values}) == len(values), "a list was sent twice"
    return {**answer, "lists": {cls: {name: {"values": values[e["list"]], "sources": e["sources"]}
                                      for name, e in ins.items()} for cls, ins in answer["lists"].items()}}


def lists(body):
    return route(pack.nodes.routes.post_lists, {"lang": "en", **body})


# ---- a ComfyUI server's own node definitions -----------------------------------------------------------------

def test_a_servers_checkpoints_are_the_cloud_nodes_list_without_a_run(remote):
    got = lists({"target": remote.url, "nodes": CKPT})
    entry = got["lists"]["CheckpointLoaderSimple"]["ckpt_name"]
    assert got["ok"] and entry["values"] == MODELS and got["problems"] == []
    assert entry["sources"][0]["source"] == "server" and entry["sources"][0]["at"] > 0
    assert remote.calls.count("object_info") == 1
    lists({"target": remote.url, "nodes": CKPT})   # read once per process...
    assert remote.calls.count("object_info") == 1
    remote.object_info = {"CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [["new.safetensors"], {}]}}}}
    again = lists({"target": remote.url, "nodes": CKPT, "refresh": True})   # ...and again on demand
    assert again["lists"]["CheckpointLoaderSimple"]["ckpt_name"]["values"] == ["new.safetensors"]
    assert remote.calls.count("object_info") == 2


def test_newer_comfyui_combo_specs_and_any_list_a_node_declares(remote):
    remote.object_info = {
        "UNETLoader": {"input": {"required": {"unet_name": ["COMBO", {"options": ["flux.safetensors"]}],
                                              "weight_dtype": [["default", "fp8_e4m3fn"]]}}},
        "KSampler": {"input": {"required": {"seed": ["INT", {}], "sampler_name": [["euler", "dpmpp_2m"], {}]}}}}
    got = lists({"target": remote.url, "nodes": {"UNETLoader": ["unet_name", "weight_dtype"],
                                                 "KSampler": ["sampler_name", "seed"]}})["lists"]
    assert got["UNETLoader"]["unet_name"]["values"] == ["flux.safetensors"]
    assert got["UNETLoader"]["weight_dtype"]["values"] == ["default", "fp8_e4m3fn"]
    assert got["KSampler"] == {"sampler_name": got["KSampler"]["sampler_name"]}   # no list for a number


def test_the_server_token_goes_only_to_the_configured_server(monkeypatch):
    srv = FakeComfyUI(token="tok-123").start()
    other = FakeComfyUI(token="tok-123").start()
    try:
        monkeypatch.setenv("GPUGEEK_TARGET", srv.url)
        monkeypatch.setenv("GPUGEEK_TARGET_TOKEN", "tok-123")
        assert lists({"target": "", "nodes": CKPT})["lists"]["CheckpointLoaderSimple"]["ckpt_name"]["values"] == MODELS
        # a URL a workflow names is not the configured server: no token for it (and so it refuses)
        got = lists({"target": other.url, "nodes": CKPT})
        assert got["lists"] == {} and said("lists_unreachable", "en", url=other.url) in got["problems"][0]
        assert "tok-123" not in json.dumps(got)
    finally:
        srv.stop()
        other.stop()


def test_garbage_an_enormous_answer_and_silence_are_a_sentence_and_keep_the_old_list(remote, monkeypatch):
    assert lists({"target": remote.url, "nodes": CKPT})["lists"]   # kept from a first read
    remote.object_info = "<html>a proxy's login page</html>"
    got = lists({"target": remote.url, "nodes": CKPT, "refresh": True})
    assert got["problems"] == [said("lists_garbage", "en", url=remote.url)]
    assert got["lists"]["CheckpointLoaderSimple"]["ckpt_name"]["values"] == MODELS   # nothing lost
    remote.object_info = {"not": "definitions"}
    assert lists({"target": remote.url, "nodes": CKPT, "refresh": True})["problems"] == [
        said("lists_garbage", "en", url=remote.url)]
    remote.object_info = {f"Class{i}": {"input": {"required": {"x": [[f"v{j}" for j in range(50)], {}]}}}
                          for i in range(400)}
    monkeypatch.setattr(cat, "MAX_OBJECT_INFO_BYTES", 64 * 1024)
    got = lists({"target": remote.url, "nodes": CKPT, "refresh": True})
    assert got["problems"] == [said("lists_too_big", "en", url=remote.url, mb=0)]
    assert got["lists"]["CheckpointLoaderSimple"]["ckpt_name"]["values"] == MODELS

    import socket
    with socket.socket() as silent:   # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        cat.catalog().learn(url, "server", {"CheckpointLoaderSimple": {"ckpt_name": MODELS}}, replace=True)
        monkeypatch.setattr(cat, "SERVER_READ_TIMEOUT_S", 0.5)
        got = lists({"target": url, "nodes": CKPT})
    assert got["problems"] == [said("lists_silent", "en", url=url, seconds="0.5")]
    assert got["lists"]["CheckpointLoaderSimple"]["ckpt_name"]["values"] == MODELS   # kept from before


def test_a_server_that_is_not_there_is_a_sentence():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"   # closed once this block ends: nobody listens
    got = lists({"target": url, "nodes": CKPT})
    assert got["ok"] and got["lists"] == {} and said("lists_unreachable", "en", url=url) in got["problems"][0]
    assert lists({"target": url, "nodes": CKPT})["problems"] == got["problems"]   # not asked again, still said


def test_lists_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(cat, "MAX_VALUES", 100)
    monkeypatch.setattr(cat, "MAX_LISTS", 10)
    info = {f"C{i}": {"input": {"required": {"x": [[f"m{j}.safetensors" for j in range(1000)] + ["a" * 1000], {}]}}}
            for i in range(50)}
    found = cat.lists_of_object_info(info)
    assert sum(len(v) for v in found.values()) == 10
    assert all(len(v["x"]) == 100 for v in found.values())
    c = cat.Catalog(tmp_path)
    c.learn("http://127.0.0.1:1", "server", found, replace=True)
    assert len(c.lists("http://127.0.0.1:1")) == 10


# ---- learned from the cloud's answers, persisted ---------------------------------------------------------------

def refusal(values, details=None):
    """ComfyUI's value_not_in_list as validate_inputs writes it (input_config only up to 20 values)."""
    cfg = [values, {}] if len(values) <= 20 else None
    listed = str(values) if len(values) <= 20 else f"(list of length {len(values)})"
    return json.dumps({"4": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                         "details": details or f"ckpt_name: 'sd_xl.safetensors' not in {listed}",
                                         "extra_info": {"input_name": "ckpt_name", "input_config": cfg,
                                                        "received_value": "sd_xl.safetensors"}}],
                             "dependent_outputs": ["9"], "class_type": "CheckpointLoaderSimple"}})


def test_a_refusal_names_a_few_of_the_values_the_cloud_has():
    names = [f"m{i}.safetensors" for i in range(15)]
    where = core("texts").Said("where_workflow", {"workflow": WF})
    (line,) = cloud_errors.explain(refusal(names), {}, where)
    assert line.text("en") == ("#4 CheckpointLoaderSimple: the cloud has no ckpt_name named sd_xl.safetensors; pick "
                               f"one that workflow {WF} provides; it has: m0.safetensors, m1.safetensors, "
                               "m2.safetensors and 12 more.")
    assert said("names_and_more", "zh", names="m0.safetensors, m1.safetensors, m2.safetensors", more=12) in line.text("zh")
    # without input_config, the list in the details text
    (line,) = cloud_errors.explain(refusal(["a.safetensors"], "ckpt_name: 'x' not in ['a.safetensors']").replace(
        '"input_config": [["a.safetensors"], {}], ', ""), {}, where)
    assert line.text("en").endswith("it has: a.safetensors.")
    # more than 20: ComfyUI sends only the count
    (line,) = cloud_errors.explain(refusal([f"m{i}" for i in range(57)]), {}, where)
    assert "57" in line.text("en") and line.key == "cloud_value_not_in_list_count"
    assert cloud_errors.accepted(refusal(names), {}) == [("CheckpointLoaderSimple", "ckpt_name", names)]


@pytest.fixture
def env(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("GPUGEEK_API_KEY", SECRET_KEY)
    monkeypatch.setenv("GPUGEEK_BASE_URL", fake.base_url)
    classes = comfy_env(tmp_path)
    mm.interrupt_flag = False
    PromptServer.instance.sent.clear()
    return classes


def t2i(ckpt="sd_xl.safetensors"):
    L = lambda n, s=0: [n, s]  # noqa: E731
    return {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo.png", "clip": L("4", 1)}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "3": {"class_type": "KSampler", "inputs": {"seed": 1, "model": L("4"), "positive": L("6"),
                                                       "negative": L("6"), "latent_image": L("5")}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": L("3"), "vae": L("4", 2)}},
            "10": {"class_type": "GPUGeekCloudExecute",
                   "inputs": {"workflow_id": WF, "run_on": "cloud", "timeout_s": 60, "image_1": L("8")}}}


def execute(prompt, classes):
    return asyncio.run(mini_comfy.execute(prompt, classes, PromptServer.instance))


def test_gpugeek_refusals_and_successful_runs_teach_the_workflows_list(env, fake):
    names = ["v1-5.safetensors", "sdxl_base.safetensors", "flux_dev.safetensors"]
    fake.task_opts.update(fail=refusal(names))
    with pytest.raises(E.TaskFailedError) as ei:
        execute(t2i(), env)
    assert "it has: v1-5.safetensors, sdxl_base.safetensors, flux_dev.safetensors." in str(ei.value)
    got = lists({"target": "", "workflow_id": WF, "nodes": CKPT})["lists"]["CheckpointLoaderSimple"]["ckpt_name"]
    assert got["values"] == names and got["sources"][0]["source"] == "refused"
    # another workflow is another environment: it knows nothing
    assert lists({"target": "gpugeek", "workflow_id": "999999999999999", "nodes": CKPT})["lists"] == {}
    fake.task_opts.clear()
    execute(t2i("my_private_upload.safetensors"), env)   # ran: that value is the cloud's too
    got = lists({"target": "", "workflow_id": WF, "nodes": {**CKPT, "CLIPTextEncode": ["text"]}})["lists"]
    assert got["CheckpointLoaderSimple"]["ckpt_name"]["values"] == names + ["my_private_upload.safetensors"]
    assert [s["source"] for s in got["CheckpointLoaderSimple"]["ckpt_name"]["sources"]] == ["refused", "ran"]
    assert "CLIPTextEncode" not in got   # a prompt's text is never learned
    # a loader of another class with the same input shares the list (one model folder)
    other = lists({"target": "", "workflow_id": WF, "nodes": {"CheckpointLoader": ["ckpt_name"]}})["lists"]
    assert other["CheckpointLoader"]["ckpt_name"]["values"] == names + ["my_private_upload.safetensors"]


def test_the_lists_survive_a_new_process(env, fake):
    fake.task_opts.update(fail=refusal(["a.safetensors", "b.safetensors"]))
    with pytest.raises(E.TaskFailedError):
        execute(t2i(), env)
    key = cat.gpugeek_key(fake.base_url, WF)
    code = ("import importlib.util, sys, json, types\n"
            f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
            "from conftest import core\n"
            "c = core('catalog')\n"
            f"print(json.dumps(c.catalog().view([{key!r}], {{'CheckpointLoaderSimple': ['ckpt_name']}})))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "GPUGEEK_HOME": str(C.data_dir())})
    assert out.returncode == 0, out.stderr[-2000:]
    view = json.loads(out.stdout.strip().splitlines()[-1])
    assert view["CheckpointLoaderSimple"]["ckpt_name"]["values"] == ["a.safetensors", "b.safetensors"]


def test_a_damaged_file_is_set_aside_said_and_the_lists_start_again(tmp_path):
    c = cat.Catalog(tmp_path)
    key = "http://127.0.0.1:8188"
    c.learn(key, "user", {"CheckpointLoaderSimple": {"ckpt_name": ["mine.safetensors"]}}, replace=False)
    path = c._path(key)
    path.write_bytes(b'{"key": "http://127.0.0.1:8188", "lists": {"Che')   # cut mid-write
    fresh = cat.Catalog(tmp_path)
    assert fresh.lists(key) == {}
    assert fresh.problem(key).key == "lists_damaged"
    aside = [p for p in os.listdir(tmp_path) if ".damaged-" in p]
    assert len(aside) == 1   # kept, not deleted
    assert said("lists_damaged", "en", where=key) in fresh.problem(key).text("en")
    fresh.learn(key, "user", {"CheckpointLoaderSimple": {"ckpt_name": ["again.safetensors"]}}, replace=False)
    assert cat.Catalog(tmp_path).view([key], CKPT)["CheckpointLoaderSimple"]["ckpt_name"]["values"] == ["again.safetensors"]
    # valid JSON of the wrong shape is damaged too; values that are not names are dropped
    path.write_text(json.dumps({"key": key, "lists": {"A": {"b": {"user": {"values": [1, None, "ok.pt"], "at": "x"}}}}}))
    assert cat.Catalog(tmp_path).lists(key) == {"A": {"b": {"user": {"values": ["ok.pt"], "at": None}}}}
    path.write_text("[1, 2]")
    broken = cat.Catalog(tmp_path)
    assert broken.lists(key) == {} and broken.problem(key) is not None


# ---- names the user adds ---------------------------------------------------------------------------------------

def test_names_added_by_hand_are_kept_per_workflow_and_need_one(env, fake, remote):
    add = pack.nodes.routes.post_lists_add
    body = {"target": "", "workflow_id": WF, "class": "LoraLoader", "input": "lora_name",
            "names": "detail.safetensors, style.safetensors\nstyle.safetensors", "lang": "en"}
    got = route(add, body)
    assert got["ok"] and got["lists"]["LoraLoader"]["lora_name"]["values"] == ["detail.safetensors", "style.safetensors"]
    assert got["lists"]["LoraLoader"]["lora_name"]["sources"][0]["source"] == "user"
    assert lists({"target": "", "workflow_id": WF, "nodes": {"LoraLoader": ["lora_name"]}})["lists"]
    assert lists({"target": "", "workflow_id": "999999999999999", "nodes": {"LoraLoader": ["lora_name"]}})["lists"] == {}
    no_wf = route(add, {**body, "workflow_id": ""})
    assert not no_wf["ok"] and no_wf["message"] == said("lists_need_workflow", "en")
    assert route(add, {**body, "names": " , "})["message"] == said("lists_no_names", "en")
    # on a ComfyUI server, names add to what its definitions list
    got = route(add, {**body, "target": remote.url, "class": "CheckpointLoaderSimple", "input": "ckpt_name",
                      "names": ["extra.safetensors"]})
    assert got["lists"]["CheckpointLoaderSimple"]["ckpt_name"]["values"] == MODELS + ["extra.safetensors"]
    assert SECRET_KEY not in json.dumps(got)


def test_a_pool_offers_what_every_server_has(tmp_path, monkeypatch):
    monkeypatch.setattr(cat, "catalog", lambda c=cat.Catalog(tmp_path): c)
    a, b = "http://127.0.0.1:1", "http://127.0.0.1:2"
    cat.catalog().learn(a, "server", {"L": {"ckpt_name": ["x.safetensors", "y.safetensors"]}}, replace=True)
    cat.catalog().learn(b, "server", {"L": {"ckpt_name": ["y.safetensors", "z.safetensors"]}}, replace=True)
    assert cat.catalog().view([a, b], {"L": ["ckpt_name"]})["L"]["ckpt_name"]["values"] == ["y.safetensors"]
    cfg = C.load_config({"GPUGEEK_TARGET": f"{a}, {b}"})
    assert cat.keys_for(cfg, "") == [a, b]
    assert cat.keys_for(cfg, "gpugeek", "123456789012345") == [cat.gpugeek_key(cfg.base_url, "123456789012345")]


def _counting_names():
    """A kind of name that counts each time it is hashed or compared: the work of merging lists of them, whatever
    the way it is done (sets, dicts, ``in`` on a list). Past ``budget`` it stops the merge (a quadratic one would
    otherwise take minutes here)."""
    class Name(str):
        ops, budget = 0, None

        def __hash__(self):
            Name._count()
            return str.__hash__(self)

        def __eq__(self, other):
            Name._count()
            return str.__eq__(self, other)

        @staticmethod
        def _count():
            Name.ops += 1
            if Name.budget is not None and Name.ops > Name.budget:
                raise AssertionError(f"merging the lists took more than {Name.budget} hashes and comparisons")
    return Name


def test_a_pools_lists_are_merged_in_linear_time(tmp_path, monkeypatch):
    """Issue 38: on a pool of two servers with 5,000-name lists, ten LoRA loaders' queue-time check
    (``whole_list``) and the editor's lists (``view``) merge them with work in proportion to the names: at most a
    few hashes or comparisons per name per server per input (a set per element before: 25 million per input, 391
    ms each, ComfyUI's loop held 9.2 s at queue time)."""
    Name = _counting_names()
    n, inputs = 5000, 10
    a, b = "http://127.0.0.1:1", "http://127.0.0.1:2"
    first = [Name(f"loras/style_{i:05d}.safetensors") for i in range(n)]
    second = first[1:] + [Name("loras/only_on_b.safetensors")]   # the two servers differ by one name
    classes = [f"LoraLoader{i}" for i in range(inputs)]
    lists = {a: {c: {"lora_name": {"server": {"values": first, "at": 1.0}}} for c in classes},
             b: {c: {"lora_name": {"server": {"values": second, "at": 1.0}}} for c in classes}}
    c = cat.Catalog(tmp_path)
    monkeypatch.setattr(c, "lists", lambda key: lists[key])
    per_input = 4 * 2 * n   # the cost model: a few hashes or comparisons per name of each of the two servers
    Name.ops, Name.budget = 0, inputs * per_input
    got = [c.whole_list([a, b], cls, "lora_name") for cls in classes]
    assert all(g == first[1:] for g in got)
    Name.ops = 0
    view = c.view([a, b], {cls: ["lora_name"] for cls in classes})
    assert all(view[cls]["lora_name"]["values"] == first[1:] for cls in classes)
    Name.ops = 0
    cat.answer(view)   # the answer: each distinct list found (by content) in linear time too
    assert Name.ops <= inputs * per_input


def test_the_lists_answer_is_bounded_and_says_which_lists_it_cut(tmp_path, monkeypatch):
    """Issue 38: a pool of two servers whose LoRA lists (4 MiB as the servers sent them; kept within a list's bounds)
    differ by one name, and 100 LoRA loaders, each with a name the user added for it: 100 lists that differ by one
    name, each a full copy in the answer (100 MiB here before; 191 MiB seen). The answer holds at most
    MAX_ANSWER_BYTES: a list that would pass it is cut to its first names, and the answer says so (``cut``: how
    many names the whole list has); lists cut alike are sent once; a small list is sent whole."""
    monkeypatch.setattr(cat, "catalog", lambda c=cat.Catalog(tmp_path): c)
    a, b = "http://127.0.0.1:1", "http://127.0.0.1:2"
    loras = [f"loras/{'detailed_style_' * 55}{i:05d}.safetensors" for i in range(5000)]
    assert len(json.dumps(loras)) > 4 << 20
    classes = [f"LoraLoader{i}" for i in range(100)]

    def info(names):
        return {c: {"input": {"required": {"lora_name": [names, {}],
                                           "sampler_name": [["euler", "dpmpp_2m"], {}]}}} for c in classes}
    for key, names in ((a, loras), (b, ["loras/only_on_b.safetensors"] + loras[1:])):
        cat.catalog().learn(key, "server", cat.lists_of_object_info(info(names)), replace=True)
        cat.catalog().learn(key, "user", {c: {"lora_name": [f"mine_{c}.safetensors"]} for c in classes},
                            replace=False)
    kept = cat.catalog().lists(a)[classes[0]]["lora_name"]["server"]["values"]
    assert 0 < len(kept) < len(loras) and len(C.json_bytes(kept)) <= cat.MAX_LIST_BYTES   # a list's own bounds
    full = cat.catalog().view([a, b], {c: ["lora_name"] for c in classes})
    monkeypatch.setenv("GPUGEEK_TARGET", f"{a},{b}")
    monkeypatch.setattr(cat, "_server_state", {a: None, b: None})   # read before: the lists kept are answered
    from aiohttp.test_utils import make_mocked_request
    from unittest import mock
    req = make_mocked_request("POST", "/gpugeek/lists")
    req.json = mock.AsyncMock(return_value={"target": "", "workflow_id": "", "lang": "en",
                                            "nodes": {c: ["lora_name", "sampler_name"] for c in classes}})
    body = asyncio.run(pack.nodes.routes.post_lists(req)).body
    assert len(body) <= cat.MAX_ANSWER_BYTES
    answer = json.loads(body)
    got = expand(answer)   # (each list sent once)
    assert answer["ok"] and answer["problems"] == []
    for c in classes:
        whole = full[c]["lora_name"]["values"]
        assert whole[-1] == f"mine_{c}.safetensors" and "loras/only_on_b.safetensors" not in whole
        # every name the loaders share, in order; only the loader's own name is past the cut
        assert got["lists"][c]["lora_name"]["values"] == whole[:-1]
        assert answer["lists"][c]["lora_name"]["cut"] == len(whole)
        assert got["lists"][c]["sampler_name"]["values"] == ["euler", "dpmpp_2m"]
        assert "cut" not in answer["lists"][c]["sampler_name"]
    # lists that differ from their first name: each cut to an equal share, the short ones whole
    view = {f"C{i}": {"x": {"values": [f"{i:02d}_{n:04d}_{'x' * 200}.pt" for n in range(5000)], "sources": []}}
            for i in range(20)}
    view["S"] = {"x": {"values": ["a.pt", "b.pt"], "sources": []}}
    body = cat.answer(view, ok=True)
    assert len(body) <= cat.MAX_ANSWER_BYTES
    got = expand(json.loads(body))
    shown = [got["lists"][f"C{i}"]["x"]["values"] for i in range(20)]
    assert all(s == view[f"C{i}"]["x"]["values"][:len(s)] for i, s in enumerate(shown))
    assert max(map(len, shown)) - min(map(len, shown)) <= 1 and len(shown[0]) > 1000
    assert json.loads(body)["lists"]["C0"]["x"]["cut"] == 5000 and got["lists"]["S"]["x"]["values"] == ["a.pt", "b.pt"]
    # under the bound, nothing is cut
    small = cat.answer(cat.catalog().view([a, b], {classes[0]: ["lora_name"]}))
    entry = json.loads(small)["lists"][classes[0]]["lora_name"]
    assert "cut" not in entry and json.loads(small)["values"][entry["list"]] == full[classes[0]]["lora_name"]["values"]


def test_inputs_past_the_answers_naming_share_are_left_out_and_said(monkeypatch):
    """What names the lists (class, input, sources) has its share of the answer too: a request of 2,000 inputs with
    names of 1,000 characters and a pool's sources; the inputs past it keep this machine's list, and it is said."""
    monkeypatch.setattr(cat, "MAX_ANSWER_BYTES", 1 << 20)
    monkeypatch.setattr(cat, "ANSWER_NAMING_BYTES", 256 << 10)
    sources = [{"source": "server", "at": 1.0, "count": 1}] * 8
    view = {f"{'C' * 1000}{i}": {"x": {"values": ["a.pt"], "sources": sources}} for i in range(2000)}
    answer = json.loads(cat.answer(view, "en", problems=[], ok=True, where=["http://127.0.0.1:1"]))
    shown = len(answer["lists"])
    assert 0 < shown < 2000 and len(answer["values"]) == 1
    assert list(answer["lists"]) == list(view)[:shown]   # the first inputs asked
    assert answer["problems"] == [said("lists_answer_cut", "en", n=2000 - shown, total=2000, mb=1)]
    assert len(cat.answer(view, ok=True)) <= cat.MAX_ANSWER_BYTES

# ---- names a cloud or a disk gives, and a paid result that nothing after it may lose ---------------------------

ODD = "caf\udce9.safetensors"   # a file name that is not UTF-8, as Linux (and so ComfyUI) lists it


def test_a_paid_success_is_journaled_before_anything_after_it_may_fail(env, fake, monkeypatch):
    """Learning the lists, decoding and saving the results all fail: the journal still has the paid task, its
    price and where its results are (Load Result can load them)."""
    boom = RuntimeError("a later step failed")

    def fail(*a, **k):
        raise boom
    monkeypatch.setattr(cat.Catalog, "learn", fail)
    monkeypatch.setattr(core("batch").BatchDecoder, "add", fail)
    monkeypatch.setattr(core("run.gateway"), "_save_one", fail)
    with pytest.raises(Exception):
        execute(t2i(ODD), env)
    (rec,) = pack.nodes.cloud.journal().tasks()
    assert rec["status"] == "succeeded" and rec["price"] == 0.25 and rec["result_url"]


def test_a_refusal_that_names_a_file_that_is_not_utf8_is_journaled_and_learned(env, fake):
    names = [ODD, "😀.safetensors"]
    fake.task_opts.update(fail=refusal(names))
    with pytest.raises(E.TaskFailedError) as ei:
        execute(t2i(ODD), env)
    assert "it has: caf" in str(ei.value)
    (rec,) = pack.nodes.cloud.journal().tasks()
    assert rec["status"] == "failed" and ODD in core("texts").Said.from_dict(rec["error_lines"][0]).text("en")
    got = lists({"target": "", "workflow_id": WF, "nodes": CKPT})["lists"]["CheckpointLoaderSimple"]["ckpt_name"]
    assert got["values"] == names


ODD_NAMES = [ODD, "\ud800lone.pt", "😀 smile.safetensors", "模型/风格.safetensors", 'a "quoted"\tname.ckpt']


def test_any_name_comfyui_can_list_is_kept_and_read_back(remote, tmp_path):
    remote.object_info = {"CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [ODD_NAMES, {}]}}}}
    got = lists({"target": remote.url, "nodes": CKPT})
    assert got["problems"] == [] and got["lists"]["CheckpointLoaderSimple"]["ckpt_name"]["values"] == ODD_NAMES
    c = cat.Catalog(tmp_path)
    c.learn("k", "user", {"模型 😀": {ODD: ODD_NAMES}}, replace=False)
    assert cat.Catalog(tmp_path).lists("k")["模型 😀"][ODD]["user"]["values"] == ODD_NAMES


def test_a_name_too_long_for_a_list_is_refused_with_a_sentence(env, fake, remote):
    add = pack.nodes.routes.post_lists_add
    body = {"target": remote.url, "class": "LoraLoader", "input": "lora_name", "names": ["ok.safetensors"],
            "lang": "en"}
    for field, value in (("class", "C" * 5_000_000), ("input", "i" * 10_000), ("names", ["n" * 10_000])):
        got = route(add, {**body, field: value})
        assert not got["ok"] and said("lists_too_long", "en", n=10_000 if field != "class" else 5_000_000,
                                      max=cat.MAX_NAME) in got["message"]
        assert len(got["message"]) < 400
    assert "LoraLoader" not in lists({"target": remote.url, "nodes": {"LoraLoader": ["lora_name"]}})["lists"]
    far = lists({"target": remote.url + "/" + "x" * 10_000, "nodes": CKPT})   # no place has a name that long
    assert not far["ok"] and said("lists_too_long", "en", n=len(remote.url) + 10_001, max=cat.MAX_NAME) in far["message"]


def test_the_answer_sends_each_distinct_list_once(tmp_path, monkeypatch):
    """Classes the cloud does not know borrow the list another class has for the same input name: 2,000 of them
    ask for it, and it is sent once."""
    monkeypatch.setattr(cat, "catalog", lambda c=cat.Catalog(tmp_path): c)
    monkeypatch.setenv("GPUGEEK_TARGET", "gpugeek")
    key = cat.gpugeek_key(C.load_config().base_url, WF)
    loras = [f"loras/style_{i:05d}_detailed_version.safetensors" for i in range(4000)]
    cat.catalog().learn(key, "user", {"LoraLoader": {"lora_name": loras}, "A": {"x": ["a.pt"]}}, replace=False)
    from aiohttp.test_utils import make_mocked_request
    from unittest import mock
    req = make_mocked_request("POST", "/gpugeek/lists")
    req.json = mock.AsyncMock(return_value={"target": "", "workflow_id": WF, "lang": "en",
                                            "nodes": {f"Custom{i}": ["lora_name", "x"] for i in range(1000)}})
    body = asyncio.run(pack.nodes.routes.post_lists(req)).body
    got = expand(json.loads(body))
    assert len(body) < 2 * len(json.dumps(loras)) + 300_000
    assert got["lists"]["Custom999"]["lora_name"]["values"] == loras
    assert got["lists"]["Custom0"]["x"]["values"] == ["a.pt"]


def test_a_damaged_file_of_any_kind_is_set_aside_a_few_kept_and_the_problem_clears(tmp_path):
    key = "http://127.0.0.1:8188"
    c = cat.Catalog(tmp_path)
    c.learn(key, "user", {"L": {"x": ["a.pt"]}}, replace=False)
    path = c._path(key)
    nested = '{"key": "%s", "lists": %s}' % (key, "[" * 200_000 + "]" * 200_000)
    for bad in (nested, nested, '{"key": "%s", "lists": {"L": {"x": {"user": {"values": ["a.pt"], "at": ' % key,
                "[1, 2]", b"\xff\xfe not utf-8", nested):
        (path.write_bytes if isinstance(bad, bytes) else path.write_text)(bad)
        fresh = cat.Catalog(tmp_path)
        assert fresh.lists(key) == {} and fresh.problem(key).key == "lists_damaged"
    assert len([p for p in os.listdir(tmp_path) if ".damaged-" in p]) == cat.DAMAGED_KEPT
    fresh.learn(key, "user", {"L": {"x": ["b.pt"]}}, replace=False)   # a good write: the problem is gone
    assert fresh.problem(key) is None and cat.Catalog(tmp_path).problem(key) is None
    # a time that is not a number (NaN passes Python's json) is dropped: the answer stays JSON
    path.write_text('{"key": "%s", "lists": {"L": {"x": {"user": {"values": ["a.pt"], "at": NaN}}}}}' % key)
    assert cat.Catalog(tmp_path).lists(key) == {"L": {"x": {"user": {"values": ["a.pt"], "at": None}}}}


def test_a_place_is_bounded_in_bytes_and_what_is_written_reads_back(tmp_path, monkeypatch):
    monkeypatch.setattr(cat, "MAX_PLACE_BYTES", 256 * 1024)
    c = cat.Catalog(tmp_path)
    emoji = "😀" * 200   # the most bytes a character can take, escaped
    for i in range(40):
        c.learn("k", "user", {f"C{i}": {ODD: [f"{emoji}{i}-{j}{ODD}" for j in range(40)]}}, replace=False)
    kept = c.lists("k")
    assert 0 < len(kept) < 40 and os.path.getsize(c._path("k")) <= cat.MAX_PLACE_BYTES
    assert cat.Catalog(tmp_path).lists("k") == kept


def test_node_definitions_are_read_in_pieces_as_python_reads_them(monkeypatch):
    """The reader of big node definitions (json_pieces.py) walks what does not fit its windows member by member: with
    tiny windows, documents of every shape read as json.loads reads them, and what json.loads refuses is refused."""
    import random
    jp = core("json_pieces")
    monkeypatch.setattr(jp, "WINDOWS", (8, 32))
    rnd = random.Random(7)
    atoms = [1, -2.5e10, True, False, None, 'a"b\\c', ODD, "😀", "模型\n\t", "", 2 ** 64 - 1]

    def value(depth=0):
        r = rnd.random()
        if depth > 5 or r < 0.4:
            return rnd.choice(atoms)
        if r < 0.7:
            return [value(depth + 1) for _ in range(rnd.randint(0, 6))]
        keys = ["k", "ключ", 'a"', "😀", "x\\"]
        return {rnd.choice(keys) + str(i): value(depth + 1) for i in range(rnd.randint(0, 6))}

    def read(text):
        got = {}
        jp.each_member(text, got.__setitem__)
        return got
    for _ in range(1500):
        doc = {f"C{i}": value() for i in range(rnd.randint(0, 4))}
        text = json.dumps(doc, ensure_ascii=rnd.random() < 0.5, indent=rnd.choice([None, 1]))
        assert read(text) == json.loads(text)
        cut = text[:rnd.randint(0, len(text))] + rnd.choice(["", "x", "]", "}", ",", '"'])
        try:
            expected = json.loads(cut)
        except ValueError:
            with pytest.raises(ValueError):
                read(cut)
        else:
            if isinstance(expected, dict):
                assert read(cut) == expected
    with pytest.raises(ValueError):   # nesting Python's parser would raise RecursionError for
        read('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert read(jp.decode(json.dumps({"A": [ODD]}).encode())) == {"A": [ODD]}


@pytest.fixture
def big_server(tmp_path):
    """A server in another process (no lock of this one shared) whose /object_info is at the size limit."""
    with serve_in_another_process(big_object_info(cat.MAX_OBJECT_INFO_BYTES), "object_info", tmp_path) as url:
        yield url


def test_a_big_object_info_is_parsed_in_a_child_while_the_loop_runs_on_and_reads_back_after_a_restart(
        big_server, tmp_path, monkeypatch):
    """A server's node definitions at the size limit (64 MiB) are parsed and learned by a child process, never by
    this one (ComfyUI's process: parsed on its event loop they held it 0.5-0.8 s, on a worker thread the GIL held it
    in turns), and the event loop goes on serving other work meanwhile. Asserted by what happens, not by a clock
    (a timed bar failed here while ComfyUI installed beside the suite): how long the loop is held is measured by
    bench/cloud_lists.py (29 ms median, 32 ms slowest of 10 in the last run)."""
    monkeypatch.setattr(cat, "catalog", lambda c=cat.Catalog(tmp_path / "lists"): c)
    cat.catalog().learn(big_server, "user", {"LoraLoader": {"lora_name": ["mine.safetensors"]}}, replace=False)
    cfg = C.load_config({"GPUGEEK_TARGET": big_server})
    parsed_here, children, ticks = [], [], []
    real_parse, real_child = cat.lists_of_object_info, cat._run_child

    def parse(body):
        parsed_here.append(len(body))
        return real_parse(body)

    async def child(folder, key, body):
        children.append(len(body))
        before = len(ticks)
        code, err = await real_child(folder, key, body)
        children.append(len(ticks) - before)   # the loop's other work done while the child parsed
        return code, err
    monkeypatch.setattr(cat, "lists_of_object_info", parse)
    monkeypatch.setattr(cat, "_run_child", child)

    async def read():
        done = asyncio.Event()

        async def other_work():   # what ComfyUI's loop does meanwhile: answer the editor
            while not done.is_set():
                ticks.append(1)
                await asyncio.sleep(0.002)
        beside = asyncio.ensure_future(other_work())
        try:
            return await cat.read_servers(cfg, [big_server], force=True)
        finally:
            done.set()
            await beside
    assert asyncio.run(read()) == []
    assert parsed_here == [] and len(children) == 2 and children[0] > cat.IN_PROCESS_BYTES
    assert children[1] >= 3, children   # the loop ran on: a 64 MiB parse takes seconds, the other work wakes each 2 ms
    again = cat.Catalog(tmp_path / "lists")   # after a restart: every list is there, the names typed by hand too
    kept = again.lists(big_server)
    assert kept["LoraLoader"]["lora_name"]["user"]["values"] == ["mine.safetensors"]
    assert len(kept["Node0"]["lora_name"]["server"]["values"]) == 4000 and len(kept) > 1000
    assert again.problem(big_server) is None and not [p for p in os.listdir(tmp_path / "lists") if ".damaged-" in p]
