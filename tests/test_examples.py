"""The example workflows pass the queue-time checks: every gateway gets a cloud plan, nothing is refused; an
example with no gateway is a downloaded-style graph saved with Run in the cloud on, and runs whole there."""
import json
from pathlib import Path

import pytest
from conftest import core

plan = core("plan")
ROOT = Path(__file__).resolve().parents[1]
RAW = json.loads((ROOT / "tests" / "fixtures" / "classes.json").read_text())
CLASSES = {k: plan.ClassInfo(tuple(v.get("outputs", ())), bool(v.get("output_node")), dict(v.get("inputs", {})))
           for k, v in RAW.items()}
API = sorted((ROOT / "example_workflows" / "api").glob("*_api.json"))


@pytest.mark.parametrize("path", API, ids=[p.stem for p in API])
def test_example_plans_without_refusal(path):
    prompt = json.loads(path.read_text())
    gateways = [n for n, v in prompt.items() if v["class_type"] == plan.GATEWAY]
    res = plan.make_plan(prompt, CLASSES, lambda name: name == "example.png", whole=not gateways)
    if not gateways:  # the whole workflow in the cloud: every node in one cloud part, the outputs shown here
        assert res.refusals == {} and set(res.plans[plan.WHOLE].prompt) >= set(prompt)
        assert all(res.local_prompt[n]["class_type"] == plan.CLOUD_OUTPUT for n in res.plans[plan.WHOLE].user_outputs)
        return
    assert res.refusals == {}
    for g in gateways:
        assert res.plans[g].mode == "cloud"
    if gateways:
        cloud_classes = {prompt[n]["class_type"] for n, r in res.roles.items() if r == "cloud"}
        assert "CheckpointLoaderSimple" in cloud_classes or "EmptyImage" in cloud_classes
        assert not any(v["class_type"] == "CheckpointLoaderSimple" for v in res.local_prompt.values())


def test_ui_examples_have_thumbnails_and_api_twins():
    ui = sorted((ROOT / "example_workflows").glob("*.json"))
    assert len(ui) >= 4
    for p in ui:
        wf = json.loads(p.read_text())
        assert "nodes" in wf and "links" in wf, p.name
        assert (any(n["type"] == plan.GATEWAY for n in wf["nodes"])
                or wf.get("extra", {}).get("gpugeek_whole_workflow") is True), p.name
        assert p.with_suffix(".jpg").exists(), p.name
        assert (ROOT / "example_workflows" / "api" / f"{p.stem}_api.json").exists(), p.name
