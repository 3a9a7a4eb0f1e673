"""The queue-time plan against the shared vectors (tests/fixtures/plan_vectors.json) and chosen cases."""
import copy
import json
from pathlib import Path

import pytest
from conftest import core

plan = core("plan")
FIX = Path(__file__).parent / "fixtures"
CLASSES_RAW = json.loads((FIX / "classes.json").read_text())
VECTORS = json.loads((FIX / "plan_vectors.json").read_text())["vectors"]


def table(extra=None):
    raw = dict(CLASSES_RAW)
    raw.update(extra or {})
    return {k: plan.ClassInfo(tuple(v.get("outputs", ())), bool(v.get("output_node")), dict(v.get("inputs", {})))
            for k, v in raw.items()}


def run(vec):
    files = set(vec.get("files", []))
    return plan.make_plan(copy.deepcopy(vec["prompt"]), table(vec.get("classes_extra")), files.__contains__)


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector(vec):
    res = run(vec)
    exp = vec["expect"]
    if exp.get("unchanged"):
        assert res.local_prompt == vec["prompt"] and res.plans == {}
        return
    refused = exp.get("refused")
    if refused is not None:
        assert set(res.refusals) == set(refused), res.refusals
        for g, words in refused.items():
            text = " ".join(res.refusals[g])
            for w in words:
                assert w in text, (w, text)
            assert plan.GatewayPlan.from_json(res.local_prompt[g]["inputs"][plan.PLAN_INPUT]).mode == "refused"
    if "local_nodes" in exp:
        assert sorted(res.local_prompt) == sorted(exp["local_nodes"])
    for g, nodes in exp.get("cloud", {}).items():
        assert res.plans[g].nodes == sorted(nodes)
        cp = res.plans[g].prompt
        for n in nodes:
            assert cp[n]["class_type"] == vec["prompt"][n]["class_type"]
    for n, role in exp.get("roles", {}).items():
        assert res.roles[n] == role, n
    for g, outs in exp.get("outputs", {}).items():
        got = [{"slot": o.slot, "kind": o.kind, "src": list(o.source)} for o in res.plans[g].outputs]
        assert got == outs
    for g, outs in exp.get("user_outputs", {}).items():
        assert res.plans[g].user_outputs == outs
    for g, cs in exp.get("crossings", {}).items():
        assert [{"kind": c.kind, "from": list(c.source)} for c in res.plans[g].crossings] == cs
    for g, links in exp.get("local_links", {}).items():
        for name, link in links.items():
            assert res.local_prompt[g]["inputs"][name] == link
    for g, nodes in exp.get("cloud_links", {}).items():
        for n, links in nodes.items():
            for name, link in links.items():
                assert res.plans[g].prompt[n]["inputs"][name] == link
    for g, files in exp.get("local_files", {}).items():
        assert [{"node": f.node, "file": f.file} for f in res.plans[g].local_files] == files
    for g, lead in exp.get("groups", {}).items():
        assert res.groups[g] == lead
    for n, links in exp.get("rewired", {}).items():
        for name, link in links.items():
            assert res.local_prompt[n]["inputs"][name] == link
    for g, mode in exp.get("mode", {}).items():
        assert res.plans[g].mode == mode


def test_plan_is_written_into_the_gateway_and_cloud_prompt_is_complete():
    res = run(VECTORS[0])
    carried = plan.GatewayPlan.from_json(res.local_prompt["10"]["inputs"][plan.PLAN_INPUT])
    assert carried == res.plans["10"]
    cp = carried.prompt
    save = carried.outputs[0].save
    assert cp[save] == {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": f"gpugeek/{save}"}}
    # every link of the cloud prompt points inside it
    for node in cp.values():
        for v in node["inputs"].values():
            if plan.is_link(v):
                assert str(v[0]) in cp
    assert "image_1" not in res.local_prompt["10"]["inputs"]


def test_mask_output_goes_through_mask_to_image():
    vec = copy.deepcopy(VECTORS[0])
    p = vec["prompt"]
    p["20"] = {"class_type": "LoadImageMask", "inputs": {"image": "m.png", "channel": "alpha"}}
    p["10"]["inputs"]["mask_1"] = ["20", 0]
    res = run(vec)
    outs = {o.slot: o for o in res.plans["10"].outputs}
    assert outs[4].kind == "mask"
    cp = res.plans["10"].prompt
    conv = cp[outs[4].save]["inputs"]["images"][0]
    assert cp[conv] == {"class_type": "MaskToImage", "inputs": {"mask": ["20", 0]}}


def test_merged_gateways_do_not_duplicate_shared_nodes():
    vec = next(v for v in VECTORS if v["name"].startswith("two gateways sharing"))
    res = run(vec)
    assert res.plans["30"].prompt is None and res.plans["30"].lead == "10"
    cp = res.plans["10"].prompt
    assert sum(1 for n in cp.values() if n["class_type"] == "CheckpointLoaderSimple") == 1
    saves = {o.save for g in ("10", "30") for o in res.plans[g].outputs}
    assert len(saves) == 2 and saves <= set(cp)


def test_upload_image_skips_when_its_url_is_unused():
    vec = next(v for v in VECTORS if v["name"].startswith("image-to-image"))
    res = run(vec)
    assert plan.SKIP_UPLOAD_INPUT not in res.local_prompt["22"]["inputs"]
    p = copy.deepcopy(vec["prompt"])
    p["10"]["inputs"]["run_on"] = "local"
    res2 = plan.make_plan(p, table(), lambda n: True)
    assert res2.local_prompt["22"]["inputs"][plan.SKIP_UPLOAD_INPUT] is True


def test_literal_crossing_from_upload_url():
    vec = copy.deepcopy(VECTORS[0])
    p = vec["prompt"]
    p["20"] = {"class_type": "LoadImage", "inputs": {"image": "a.png"}}
    p["22"] = {"class_type": "GPUGeekUploadImage", "inputs": {"image": ["20", 0]}}
    p["6"]["inputs"]["text"] = ["22", 1]
    res = plan.make_plan(p, table(), lambda n: True)
    c = res.plans["10"].crossings
    assert c == [plan.Crossing(kind="literal", source=("22", 1), targets=[["6", "text"]], input="gpugeek_x0")]
    assert res.plans["10"].prompt["6"]["inputs"]["text"] is None
    assert res.local_prompt["10"]["inputs"]["gpugeek_x0"] == ["22", 1]


def test_same_prompt_same_plan_and_hash_tracks_widgets():
    a = run(VECTORS[0])
    b = run(VECTORS[0])
    assert a.local_prompt == b.local_prompt and a.plans == b.plans
    vec = copy.deepcopy(VECTORS[0])
    vec["prompt"]["3"]["inputs"]["seed"] = 2
    assert run(vec).plans["10"].hash != a.plans["10"].hash
