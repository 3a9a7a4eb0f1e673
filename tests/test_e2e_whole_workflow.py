"""End to end in a real ComfyUI: a graph with no gateway runs as one cloud part when the whole-workflow switch
is on (GPUGEEK_WHOLE_WORKFLOW=1 here, or the prompt's extra_data), against the GPUGeek-compatible fake whose
tasks run on a second real ComfyUI. Skipped unless COMFYUI_DIR is set (see tests/test_e2e_comfyui.py)."""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from real_comfyui import cloud_saved
from test_e2e_comfyui import COMFY, WF, editor_url, history, stack, stats  # noqa: F401  (this module's own)

pytestmark = pytest.mark.skipif(not COMFY, reason="COMFYUI_DIR is not set")


@pytest.fixture(scope="module")
def stack_env():
    return {"GPUGEEK_WHOLE_WORKFLOW": "1", "GPUGEEK_WORKFLOW_ID": WF}


def photo(w=40, h=32):
    rng = np.random.default_rng(7)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue(), arr


@pytest.fixture(scope="module")
def here_only(stack):
    """A photo that exists only in this ComfyUI's input folder."""
    data, arr = photo()
    (stack["tmp"] / "comfyui-local" / "input" / "only_here.png").write_bytes(data)
    return arr


def downloaded(nested=False):
    """A graph as downloaded: no gateway; a local photo inverted and saved, an empty image previewed (ids as
    the editor gives a graph built with subgraphs when ``nested``)."""
    i = (lambda n: f"12:{n}") if nested else (lambda n: n)
    return {i("1"): {"class_type": "LoadImage", "inputs": {"image": "only_here.png"}},
            i("2"): {"class_type": "ImageInvert", "inputs": {"image": [i("1"), 0]}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "whole/cats", "images": [i("2"), 0]}},
            i("7:1"): {"class_type": "EmptyImage", "inputs": {"width": 48, "height": 40, "batch_size": 1,
                                                               "color": 0x00FF00}},
            "12:7:2": {"class_type": "PreviewImage", "inputs": {"images": [i("7:1"), 0]}}}


def cloud_file(stack):
    """The file the cloud's own SaveImage wrote last, as pixels."""
    return np.asarray(Image.open(cloud_saved(stack["tmp"], ".png")).convert("RGB"))


def inverted(got, original):
    """ComfyUI's ImageInvert and an 8-bit save truncate: within one level of 255 - x."""
    return np.abs(got.astype(int) - (255 - original.astype(int))).max() <= 1


def post(stack, prompt, extra=None):
    body = {"prompt": prompt, "client_id": "e2e-whole"}
    if extra is not None:
        body["extra_data"] = extra
    return requests.post(stack["local"] + "/prompt", json=body, timeout=30)


def new_tasks(stack, before):
    seen = {t["prompt_id"] for t in before["tasks"]}
    return [t for t in stats(stack)["tasks"] if t["prompt_id"] not in seen]


@pytest.mark.parametrize("how", ["environment", "extra_data"])
def test_one_submission_holding_every_node_and_the_save_in_local_history(stack, here_only, how):
    before = stats(stack)
    extra = {"gpugeek_whole_workflow": True} if how == "extra_data" else None
    p = downloaded()
    if how == "extra_data":  # a new content: not served from ComfyUI's cache of the first run (a new prefix
        p["9"]["inputs"]["filename_prefix"] = "whole/dogs"   # alone is not: it only names the files here)
        p["7:1"]["inputs"]["width"] = 50
    r = post(stack, p, extra)
    assert r.status_code == 200, r.text
    h = history(stack, r.json()["prompt_id"])
    assert h["status"]["status_str"] == "success", h["status"]
    new = new_tasks(stack, before)
    assert len(new) == 1
    cloud = new[0]["prompt"]
    assert set(p) <= set(cloud)  # every node of the graph in the one submission
    # the photo that exists only here was uploaded and is read by URL
    assert "/oss/" in cloud["1"]["inputs"]["image"] and stats(stack)["calls"]["put"] >= 1
    # the save's images, in this prompt's local history on node 9, with the right pixels
    (img,) = h["outputs"]["9"]["images"]
    assert img["type"] == "output" and img["subfolder"] == "whole"
    got = np.asarray(Image.open(stack["tmp"] / "out" / "whole" / img["filename"]).convert("RGB"))
    assert (got == cloud_file(stack)).all()  # the cloud's pixels, exactly
    assert inverted(got, here_only)
    (prev,) = h["outputs"]["12:7:2"]["images"]
    assert prev["type"] == "temp"
    shown = requests.get(stack["local"] + "/view", params=prev, timeout=10)
    assert shown.status_code == 200
    assert (np.asarray(Image.open(io.BytesIO(shown.content)).convert("RGB")) == [0, 255, 0]).all()


def test_switch_false_runs_here_and_submits_nothing(stack, here_only):
    before = stats(stack)
    p = downloaded()
    p["9"]["inputs"]["filename_prefix"] = "here/cats"
    h = history(stack, post(stack, p, {"gpugeek_whole_workflow": False}).json()["prompt_id"])
    assert h["status"]["status_str"] == "success", h["status"]
    time.sleep(0.5)
    after = stats(stack)
    assert new_tasks(stack, before) == [] and after["calls"] == before["calls"]
    assert sorted(h["prompt"][2]) == sorted(p)  # the graph as it was, run here
    (img,) = h["outputs"]["9"]["images"]
    got = np.asarray(Image.open(stack["tmp"] / "out" / "here" / img["filename"]).convert("RGB"))
    assert inverted(got, here_only)


def test_subgraph_ids_run(stack, here_only):
    before = stats(stack)
    p = downloaded(nested=True)
    p["9"]["inputs"]["filename_prefix"] = "nested/cats"
    h = history(stack, post(stack, p).json()["prompt_id"])
    assert h["status"]["status_str"] == "success", h["status"]
    (task,) = new_tasks(stack, before)
    assert {"12:1", "12:2", "12:7:1", "12:7:2", "9"} <= set(task["prompt"])
    (img,) = h["outputs"]["9"]["images"]
    got = np.asarray(Image.open(stack["tmp"] / "out" / "nested" / img["filename"]).convert("RGB"))
    assert (got == cloud_file(stack)).all() and inverted(got, here_only)


def test_a_node_that_only_makes_sense_here_is_refused_on_it_and_nothing_is_sent(stack, here_only):
    before = stats(stack)
    p = downloaded()
    p["40"] = {"class_type": "GPUGeekLoadResult", "inputs": {"prompt_id": "123"}}
    p["41"] = {"class_type": "PreviewImage", "inputs": {"images": ["40", 0]}}
    r = post(stack, p)
    assert r.status_code == 400, r.text
    errs = r.json()["node_errors"]
    assert list(errs) == ["40"] and "GPUGeek" in json.dumps(errs["40"])
    time.sleep(0.5)
    assert stats(stack)["calls"] == before["calls"]


GRAPH = """(prefix) => {
  const g = app.graph; g.clear();
  const mk = (type, pos) => { const n = LiteGraph.createNode(type); n.pos = pos; g.add(n); return n; };
  const load = mk("LoadImage", [40, 80]), inv = mk("ImageInvert", [400, 80]), save = mk("SaveImage", [760, 80]);
  const empty = mk("EmptyImage", [40, 470]), prev = mk("PreviewImage", [400, 470]);
  const w = (n, name, v) => { n.widgets.find((x) => x.name === name).value = v; };
  w(load, "image", "example.png"); w(save, "filename_prefix", prefix); w(empty, "width", 64); w(empty, "height", 48);
  load.connect(0, inv, 0); inv.connect(0, save, 0); empty.connect(0, prev, 0);
  return { save: String(save.id), prev: String(prev.id), ids: g.nodes.map((n) => String(n.id)) };
}"""


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="no chromium")
def test_editor_switch_marks_the_whole_graph_and_the_results_land_on_the_output_nodes(editor_url, stack):
    from playwright.sync_api import sync_playwright
    from test_e2e_comfyui import open_editor
    requests.post(editor_url + "/gpugeek/config", json={"workflow_id": WF}, timeout=10)  # as Settings saves it
    bodies = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = open_editor(browser, editor_url, on_request=lambda r: bodies.append(r.post_data)
                               if r.url.endswith("/prompt") and r.method == "POST" else None)
            prefix = f"editor_whole_{abs(hash(editor_url)) % 10000}"
            ids = page.evaluate(GRAPH, prefix)
            page.wait_for_selector("#gpugeek-whole-switch", timeout=10000)
            # on by default where GPUGEEK_WHOLE_WORKFLOW=1 (the stack's ComfyUI), else flipped on by hand
            flipped = page.evaluate("document.getElementById('gpugeek-whole-switch').dataset.on") != "true"
            if flipped:
                page.click("#gpugeek-whole-switch")
            # the whole graph marked as cloud, and the switch kept in the workflow
            page.wait_for_function("(ids) => ids.every((i) => window.__gpugeekMarking.roles[i] === 'cloud')",
                                   arg=ids["ids"], timeout=20000)
            kept = page.evaluate("(app.rootGraph ?? app.graph).extra.gpugeek_whole_workflow")
            assert kept is (True if flipped else None)  # a flip is kept in the workflow; the default is not
            before = stats(stack)
            page.evaluate("""() => { window.__done = null;
                app.api.addEventListener('execution_success', () => window.__done = 'ok');
                app.api.addEventListener('execution_error', (e) => window.__done = JSON.stringify(e.detail)); }""")
            page.evaluate("app.queuePrompt(0)")
            page.wait_for_function("window.__done", timeout=120000)
            assert page.evaluate("window.__done") == "ok"
            assert json.loads(bodies[-1])["extra_data"]["gpugeek_whole_workflow"] is True
            assert len(new_tasks(stack, before)) == 1
            # the images on the very nodes: the save's and the preview's
            page.wait_for_function("(ids) => [ids.save, ids.prev].every((i) => (app.graph.getNodeById(i)?.imgs || []).length)",
                                   arg=ids, timeout=20000)
            # off: the marking goes, the graph runs here, nothing is submitted
            page.click("#gpugeek-whole-switch")
            page.wait_for_function("(ids) => ids.every((i) => (window.__gpugeekMarking.roles[i] || 'local') === 'local')",
                                   arg=ids["ids"], timeout=20000)
            page.evaluate(f"() => {{ window.__done = null; app.graph.getNodeById({ids['save']}).widgets[0].value = '{prefix}_here'; }}")
            before = stats(stack)
            page.evaluate("app.queuePrompt(0)")
            page.wait_for_function("window.__done", timeout=120000)
            assert page.evaluate("window.__done") == "ok"
            assert json.loads(bodies[-1])["extra_data"]["gpugeek_whole_workflow"] is False
            assert new_tasks(stack, before) == []
        finally:
            browser.close()


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="no chromium")
def test_editor_marks_the_nodes_inside_a_subgraph(editor_url, stack):
    from playwright.sync_api import sync_playwright
    from test_e2e_comfyui import open_editor
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = open_editor(browser, editor_url)
            page.evaluate(GRAPH, "editor_whole_sub")
            if not page.evaluate("typeof app.graph.convertToSubgraph === 'function'"):
                pytest.skip("this editor has no subgraphs")
            page.evaluate("""() => { app.graph.convertToSubgraph(new Set(app.graph.nodes.filter(
                (n) => ['LoadImage', 'ImageInvert'].includes(n.type)))); }""")
            if page.evaluate("document.getElementById('gpugeek-whole-switch').dataset.on") != "true":
                page.click("#gpugeek-whole-switch")
            inner = page.evaluate("""async () => {
                const { executionId } = await import('/extensions/comfyui-gpugeek/lib/exec_id.js');
                const sub = app.graph.nodes.find((n) => n.subgraph);
                return sub.subgraph.nodes.map((n) => executionId(n, app.rootGraph ?? app.graph)); }""")
            assert len(inner) == 2 and all(":" in i for i in inner)  # "12:3": as the API prompt names them
            page.wait_for_function("(ids) => ids.every((i) => window.__gpugeekMarking.roles[i] === 'cloud')",
                                   arg=inner, timeout=20000)
        finally:
            browser.close()


# last, on this module's stack: the key is in none of its history, outputs (PNG metadata included) or logs
from test_e2e_comfyui import test_key_never_in_history_object_info_or_outputs  # noqa: E402,F401
