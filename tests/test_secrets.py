"""The API key never leaves: full runs, routes and files searched here; every log record and produced text
of the whole suite is searched at the session's end (tests/conftest.py, ``_no_key_anywhere``), whatever
order the files run in."""
import asyncio
import json
import os
from pathlib import Path

import pytest
from conftest import comfy_env, PRODUCED, SECRET_KEY, KeyWatch, load_pack

pack = load_pack()


def test_a_full_run_leaks_nothing(fake, monkeypatch, tmp_path):
    import folder_paths
    import mini_comfy
    from server import PromptServer
    monkeypatch.setenv("GPUGEEK_API_KEY", SECRET_KEY)
    monkeypatch.setenv("GPUGEEK_BASE_URL", fake.base_url)
    classes = comfy_env(tmp_path)
    p = {"1": {"class_type": "LoadImage", "inputs": {"image": "absent.png"}},
         "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
         "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "123456789012345", "run_on": "cloud",
                                                                "timeout_s": 60, "image_1": ["2", 0]}}}
    texts = []
    results, ui, local = asyncio.run(mini_comfy.execute(json.loads(json.dumps(p)), classes, PromptServer.instance))
    texts += [json.dumps(local), json.dumps(ui, default=str), repr(results)]
    fake.task_opts.update(fail="boom " + "x")
    p["2"]["class_type"] = "ImageScale"   # another cloud part (the same one is served from the task before)
    with pytest.raises(Exception) as ei:
        asyncio.run(mini_comfy.execute(json.loads(json.dumps(p)), classes, PromptServer.instance))
    texts += [str(ei.value), repr(ei.value)]
    monkeypatch.setenv("GPUGEEK_API_KEY", SECRET_KEY + "-wrong")
    with pytest.raises(Exception) as ei:
        asyncio.run(mini_comfy.execute(json.loads(json.dumps(p)), classes, PromptServer.instance))
    texts += [str(ei.value), repr(ei.value)]
    texts += [repr(PromptServer.instance.sent), repr(PromptServer.instance.progress_texts)]
    # every file the pack wrote: journal, uploads cache, settings, outputs (PNG metadata included)
    for root in (os.environ["GPUGEEK_HOME"], folder_paths.base):
        for path in Path(root).rglob("*"):
            if path.is_file() and path.name != "api_key":
                texts.append(path.read_bytes().decode("latin-1"))
    texts += KeyWatch.records
    assert len(texts) > 5
    assert [t for t in texts if SECRET_KEY in t] == []


def test_routes_never_send_the_key(monkeypatch):
    monkeypatch.setenv("GPUGEEK_API_KEY", SECRET_KEY)
    from aiohttp.test_utils import make_mocked_request
    res = asyncio.run(pack.nodes.routes.get_config(make_mocked_request("GET", "/gpugeek/config")))
    body = res.body.decode()
    assert SECRET_KEY not in body and json.loads(body)["key_last4"] == SECRET_KEY[-4:]


def test_the_session_end_check_fails_a_run_that_logged_the_key(tmp_path):
    """Whatever file logs the key, and wherever it sorts, the run fails at its end."""
    import subprocess
    import sys
    tests = Path(__file__).resolve().parent
    (tmp_path / "test_a_leak.py").write_text(
        "import logging\nfrom conftest import SECRET_KEY\n\n\ndef test_leaks():\n"
        "    logging.getLogger('x').warning('key %s', SECRET_KEY)\n")
    env = dict(os.environ, PYTHONPATH=str(tests))
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                          str(tmp_path / "test_a_leak.py")], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120)
    assert res.returncode != 0 and "the API key appears in 1 log record" in res.stdout, res.stdout[-2000:]
