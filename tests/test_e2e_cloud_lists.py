"""End to end: a cloud node's model list is the cloud's, in a real ComfyUI with nothing in its models folder.

A "cloud" ComfyUI (no pack) has one checkpoint; the GPUGeek fake runs its tasks there. In the editor (the
bundled one and, with COMFYUI_FRONTEND_NEW, the newest): with that ComfyUI as the gateway's target, the cloud
loader's combo offers its checkpoint without any run; with GPUGeek, one run refused for a checkpoint the cloud
lacks teaches the list, which is still there after the local ComfyUI restarts; a loader that runs here keeps
this machine's (empty) list. GPUGEEK_SCREENSHOTS=dir keeps screenshots of the list open on a cloud node.

  COMFYUI_DIR=... COMFYUI_PYTHON=... [COMFYUI_FRONTEND_NEW=.../static] python -m pytest tests/test_e2e_cloud_lists.py
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from real_comfyui import COMFY, PY, ROOT, base_directory, start_comfyui
from test_e2e_comfyui import FRONTEND_NEW, free_port, launch, set_locale, wait_http

KEY = "sk-e2e-LISTS-5e0c7a19b3"
WF = "123456789012345"
CLOUD_CKPT = "cloud_tiny_model.safetensors"
pytestmark = [pytest.mark.skipif(not COMFY, reason="COMFYUI_DIR is not set"), pytest.mark.timeout(600),
              pytest.mark.skipif(not shutil.which("chromium") and not Path("/usr/bin/chromium").exists(),
                                 reason="no chromium")]


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The cloud ComfyUI (a checkpoint in its models folder) and the GPUGeek fake that runs tasks on it."""
    tmp = tmp_path_factory.mktemp("e2e-lists")
    cloud_base = base_directory(tmp, "cloud", pack=False)
    (cloud_base / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
    (cloud_base / "models" / "checkpoints" / CLOUD_CKPT).write_bytes(b"\0" * 64)   # listed, never loaded
    cloud_port, fake_port = free_port(), free_port()
    cloud = start_comfyui(tmp, "cloud", cloud_port, "--output-directory", str(tmp / "cloud-out"), pack=False)
    fake = subprocess.Popen([PY, str(ROOT / "tests" / "fake_gpugeek.py"), "--port", str(fake_port), "--key", KEY,
                             "--comfy", f"http://127.0.0.1:{cloud_port}"], cwd=str(ROOT / "tests"),
                            stdout=open(tmp / "fake.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{cloud_port}/object_info/SaveImage")
        yield {"cloud": f"http://127.0.0.1:{cloud_port}", "fake": f"http://127.0.0.1:{fake_port}", "tmp": tmp}
    finally:
        stop(fake)
        stop(cloud)


def local_comfyui(stack, name, user_dir, frontend=None):
    """A local ComfyUI with the pack and nothing in its models folder; ``frontend``: --front-end-root."""
    port = free_port()
    extra = ["--front-end-root", frontend] if frontend else []
    proc = start_comfyui(stack["tmp"], name, port, *extra, "--output-directory", str(stack["tmp"] / f"out-{name}"),
                         "--user-directory", str(user_dir),
                         env={"GPUGEEK_API_KEY": KEY, "GPUGEEK_BASE_URL": stack["fake"]})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/object_info/GPUGeekCloudExecute", timeout=180)
    except TimeoutError:
        stop(proc)
        raise
    return proc, url


def workflow(target="", ckpt="does_not_exist_here.safetensors", local=True):
    """Text to image in the cloud (loader #4 there), plus (``local``) a loader #20 that runs here."""
    wf = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 1, "cfg": 7, "sampler_name": "euler",
                  "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0],
                  "negative": ["7", 0], "latent_image": ["5", 0]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": WF, "run_on": "cloud",
                                                                   "timeout_s": 120, "image_1": ["8", 0],
                                                                   "target": target}},
            "20": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "local_model.safetensors"}},
            "21": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "22": {"class_type": "VAEEncode", "inputs": {"pixels": ["21", 0], "vae": ["20", 2]}},
            "23": {"class_type": "VAEDecode", "inputs": {"samples": ["22", 0], "vae": ["20", 2]}},
            "12": {"class_type": "SaveImage", "inputs": {"filename_prefix": "e2e", "images": ["10", 0]}},
            "24": {"class_type": "PreviewImage", "inputs": {"images": ["23", 0]}}}
    if not local:   # queued: local validation would refuse the local loader's missing model
        for n in ("20", "21", "22", "23", "24"):
            del wf[n]
    return wf


def open_editor(browser, url):
    page = browser.new_page(viewport={"width": 1500, "height": 900})
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_function("window.app && window.app.graph && window.__gpugeekMarking && window.__gpugeekCloudLists",
                           timeout=60000)
    time.sleep(2)
    page.keyboard.press("Escape")
    set_locale(page, "en")
    return page


VALUES_JS = """(id) => { const n = app.graph.getNodeById(id);
  const w = n && n.widgets.find(w => w.name === 'ckpt_name');
  const v = w && w.options.values;
  return { values: Array.isArray(v) ? v : typeof v === 'function' ? v() : v, value: w && w.value,
           line: window.__gpugeekCloudLists.lines.get(String(id)) || null }; }"""

# the combo of loader #4, clicked as a user clicks it: its list opens (LiteGraph's menu)
OPEN_COMBO_JS = """() => { const n = app.graph.getNodeById(4), c = app.canvas;
  const w = n.widgets.find(w => w.name === 'ckpt_name');
  const y = n.pos[1] + (w.y ?? w.last_y ?? 0) + 10, x = n.pos[0] + n.size[0] / 2;
  const r = c.canvas.getBoundingClientRect(), ds = c.ds;
  return [r.left + (x + ds.offset[0]) * ds.scale, r.top + (y + ds.offset[1]) * ds.scale]; }"""


# the loader's menu entry, as a user picks it, the names typed in the frontend's prompt dialog
ADD_BY_HAND_JS = """() => {
  const typed = 'handmade_a.safetensors, handmade_b.safetensors';
  const d = app.extensionManager?.dialog;
  if (d) d.prompt = async () => typed;
  window.prompt = () => typed;
  const entries = (id) => (app.canvas.getNodeMenuOptions(app.graph.getNodeById(id)) || [])
    .filter((o) => o && String(o.content).startsWith('Add cloud model names to '));
  const item = entries(4)[0];
  if (item) item.callback();
  return { cloud: !!item, here: entries(20).length };
}"""


TITLE_JS = """() => { const n = app.graph.getNodeById(4), c = app.canvas, ds = c.ds;
  const r = c.canvas.getBoundingClientRect(), x = n.pos[0] + 60, y = n.pos[1] - 15;
  return [r.left + (x + ds.offset[0]) * ds.scale, r.top + (y + ds.offset[1]) * ds.scale]; }"""


def show_list(page, shot):
    """Lay the graph out readably, click the cloud loader's combo, and keep a screenshot of the open list."""
    page.evaluate("""() => { const g = app.graph, at = (id, x, y, size) => { const n = g.getNodeById(id);
        if (n) { n.pos = [x, y]; if (size) n.size = size; } };
      at(4, 40, 120, [300, 100]); at(6, 380, 40, [300, 130]); at(7, 380, 220, [300, 130]); at(5, 380, 400);
      at(3, 720, 40); at(8, 1060, 40); at(10, 1060, 150); at(12, 1380, 150); at(20, 40, 600, [300, 100]);
      at(21, 40, 760); at(22, 380, 680); at(23, 720, 680); at(24, 1060, 680);
      app.canvas.ds.scale = 0.8; app.canvas.ds.offset = [90, 70]; g.setDirtyCanvas(true, true); }""")
    time.sleep(1)
    x, y = page.evaluate(OPEN_COMBO_JS)
    page.mouse.click(x, y)
    time.sleep(1)
    opened = page.evaluate("() => document.body.innerText")
    if shot:
        page.screenshot(path=str(shot))
    page.keyboard.press("Escape")
    return opened


def shots_dir(stack):
    d = Path(os.environ.get("GPUGEEK_SCREENSHOTS", stack["tmp"] / "shots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module", params=["bundled", "new"])
def editor(request, stack):
    if request.param == "new" and (not FRONTEND_NEW or not Path(FRONTEND_NEW, "index.html").exists()):
        pytest.skip("COMFYUI_FRONTEND_NEW does not name a frontend's static folder")
    user = stack["tmp"] / f"user-{request.param}"
    user.mkdir(exist_ok=True)
    proc, url = local_comfyui(stack, f"local-{request.param}", user, FRONTEND_NEW if request.param == "new" else None)
    yield {"url": url, "tag": request.param}
    stop(proc)


def test_a_servers_checkpoint_is_in_the_cloud_loaders_list_without_a_run(stack, editor):
    pw = pytest.importorskip("playwright.sync_api")
    with pw.sync_playwright() as p:
        b = launch(p)
        page = open_editor(b, editor["url"])
        version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || 'unknown'")
        page.evaluate("(wf) => app.loadApiJson(wf, 'cloud lists')", workflow(target=stack["cloud"]))
        page.wait_for_function("() => window.__gpugeekMarking.roles['4'] === 'cloud'", timeout=60000)
        page.wait_for_function("() => window.__gpugeekCloudLists.applied['4']", timeout=60000)
        cloud = page.evaluate(VALUES_JS, 4)
        here = page.evaluate(VALUES_JS, 20)
        menu = page.evaluate(ADD_BY_HAND_JS)
        page.wait_for_function("() => (window.__gpugeekCloudLists.applied['4']?.ckpt_name || [])"
                               ".includes('handmade_b.safetensors')", timeout=30000)
        added = page.evaluate(VALUES_JS, 4)
        opened = show_list(page, shots_dir(stack) / f"cloud_list_server_{editor['tag']}.png")
        x, y = page.evaluate(TITLE_JS)
        page.mouse.click(x, y, button="right")   # the menu a user opens on the node
        time.sleep(1)
        right_click = page.evaluate("() => document.body.innerText")
        page.keyboard.press("Escape")
        # the loader leaves the cloud (its outputs now feed nothing there): this machine's list comes back
        page.evaluate("() => { const g = app.graph; for (const [n, i] of [[3, 0], [6, 0], [7, 0], [8, 1]])"
                      " g.getNodeById(n).disconnectInput(i); }")
        page.wait_for_function("() => window.__gpugeekMarking.roles['4'] !== 'cloud'", timeout=30000)
        page.wait_for_function("() => !window.__gpugeekCloudLists.applied['4']", timeout=30000)
        back = page.evaluate(VALUES_JS, 4)
        b.close()
    print(f"\n[cloud lists] frontend {version}: cloud loader offers {cloud['values']}; local loader {here['values']}")
    assert CLOUD_CKPT in cloud["values"], cloud
    assert cloud["value"] == "does_not_exist_here.safetensors" and cloud["value"] in cloud["values"]   # kept
    assert cloud["line"] and "the server's" in cloud["line"], cloud
    assert CLOUD_CKPT not in here["values"] and here["line"] is None, here   # runs here: this machine's list
    assert CLOUD_CKPT in opened   # the open list shows it
    assert CLOUD_CKPT not in back["values"] and back["line"] is None, back
    # the cloud node's menu adds names by hand (a node that runs here has no such entry)
    assert "Add cloud model names to" in right_click and "Read the cloud's model lists again" in right_click
    assert menu == {"cloud": True, "here": 0}, menu
    assert added["values"][-2:] == ["handmade_a.safetensors", "handmade_b.safetensors"], added
    assert "added by you" in added["line"], added


def test_a_gpugeek_refusal_teaches_the_list_which_survives_a_restart(stack):
    """Queued from the bundled editor: GPUGeek's ComfyUI refuses the checkpoint and names the one it has; the
    loader's list offers it at once, and again after the local ComfyUI restarts (on the newest editor if
    COMFYUI_FRONTEND_NEW is set)."""
    pw = pytest.importorskip("playwright.sync_api")
    user = stack["tmp"] / "user-restart"
    user.mkdir(exist_ok=True)
    proc, url = local_comfyui(stack, "local-gpugeek", user)   # the bundled editor
    try:
        with pw.sync_playwright() as p:
            b = launch(p)
            page = open_editor(b, url)
            page.evaluate("(wf) => app.loadApiJson(wf, 'refused')", workflow(local=False))
            page.wait_for_function("() => window.__gpugeekMarking.roles['4'] === 'cloud'", timeout=60000)
            time.sleep(2)
            before = page.evaluate(VALUES_JS, 4)
            page.evaluate("app.queuePrompt(0, 1)")
            page.wait_for_function("() => window.__gpugeekCloudErrors.has('4')", timeout=90000)
            sentence = page.evaluate("() => window.__gpugeekCloudErrors.get('4').text")
            page.wait_for_function(f"() => (window.__gpugeekCloudLists.applied['4']?.ckpt_name || []).includes('{CLOUD_CKPT}')",
                                   timeout=30000)
            taught = page.evaluate(VALUES_JS, 4)
            b.close()
    finally:
        stop(proc)
    new = bool(FRONTEND_NEW and Path(FRONTEND_NEW, "index.html").exists())
    proc, url = local_comfyui(stack, "local-gpugeek-again", user, FRONTEND_NEW if new else None)
    try:
        with pw.sync_playwright() as p:
            b = launch(p)
            page = open_editor(b, url)
            page.evaluate("(wf) => app.loadApiJson(wf, 'after restart')", workflow())
            page.wait_for_function(f"() => (window.__gpugeekCloudLists.applied['4']?.ckpt_name || []).includes('{CLOUD_CKPT}')",
                                   timeout=60000)
            again = page.evaluate(VALUES_JS, 4)
            here = page.evaluate(VALUES_JS, 20)
            opened = show_list(page, shots_dir(stack) / f"cloud_list_learned_{'new' if new else 'bundled'}.png")
            b.close()
    finally:
        stop(proc)
    assert before["line"] is None and CLOUD_CKPT not in (before["values"] or []), before   # nothing known yet
    assert f"it has: {CLOUD_CKPT}" in sentence, sentence
    assert CLOUD_CKPT in taught["values"] and "refusal" in taught["line"], taught
    assert CLOUD_CKPT in again["values"] and "refusal" in again["line"], again
    assert CLOUD_CKPT not in here["values"], here
    assert CLOUD_CKPT in opened
