"""The editor extension's JavaScript tests (node's own test runner), run from the Python suite so that one
command runs everything. They include the shared plan vectors (tests/fixtures/plan_vectors.json)."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_javascript_suite():
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is required in CI for the editor tests")
        pytest.skip("node is not installed: the editor's JavaScript tests cannot run")
    res = subprocess.run([node, "--test", str(ROOT / "web" / "tests")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "# fail 0" in res.stdout and "# pass " in res.stdout


def test_editor_plan_matches_server_plan_on_random_graphs(tmp_path):
    """The editor's marking (web/lib/plan.js) and the server's plan agree on 300 random graphs."""
    import json
    import random

    from conftest import core
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is required in CI for the editor tests")
        pytest.skip("node is not installed")
    plan = core("plan")
    raw = json.loads((ROOT / "tests" / "fixtures" / "classes.json").read_text())
    classes = {k: plan.ClassInfo(tuple(v.get("outputs", ())), bool(v.get("output_node")), dict(v.get("inputs", {})))
               for k, v in raw.items()}
    names = sorted(raw) + ["CloudOnlyNode"]
    rng = random.Random(5)
    graphs = []
    for _ in range(300):
        n = rng.randint(1, 25)
        ids = [str(i) for i in range(n)]
        p = {}
        for i, nid in enumerate(ids):
            cls = rng.choice(names)
            inputs = {}
            if cls == plan.GATEWAY:
                inputs.update(workflow_id=rng.choice(["1", "2"]), run_on=rng.choice(["cloud", "cloud", "local"]))
            for j in range(rng.randint(0, 3)):
                if i == 0:
                    break
                name = rng.choice(plan.GATEWAY_OUTPUTS) if cls == plan.GATEWAY else f"in{j}"
                inputs[name] = [rng.choice(ids[:i]), rng.randint(0, 2)]
            p[nid] = {"class_type": cls, "inputs": inputs}
        graphs.append(p)
    expected = []
    for p in graphs:
        r = plan.make_plan(json.loads(json.dumps(p)), classes)
        expected.append({"roles": r.roles, "refused": sorted(r.refusals), "local": sorted(r.local_prompt),
                         "groups": r.groups if any(v["class_type"] == plan.GATEWAY for v in p.values()) else {}})
    (tmp_path / "graphs.json").write_text(json.dumps({"graphs": graphs, "classes": raw}))
    script = (f"import {{ makePlan }} from {json.dumps((ROOT / 'web' / 'lib' / 'plan.js').as_uri())};\n"
              "import { readFileSync } from 'node:fs';\n"
              f"const d = JSON.parse(readFileSync({json.dumps(str(tmp_path / 'graphs.json'))}, 'utf8'));\n"
              "const out = d.graphs.map((g) => { const r = makePlan(g, d.classes);"
              " return { roles: r.roles, refused: Object.keys(r.refusals).sort(), local: r.localNodes, groups: r.groups }; });\n"
              "console.log(JSON.stringify(out));\n")
    (tmp_path / "run.mjs").write_text(script)
    res = subprocess.run([node, str(tmp_path / "run.mjs")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout)
    for i, (a, b) in enumerate(zip(expected, got)):
        assert a == b, (i, graphs[i], a, b)
