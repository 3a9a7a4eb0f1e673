"""The API key never leaves: every log record, exception, repr and file the suite produced is searched.

This file runs last (pytest collects files in name order), so it sees what all other tests produced.
"""
import asyncio
import json
import os
from pathlib import Path

import pytest
from conftest import comfy_env, PRODUCED, SECRET_KEY, KeyWatch, load_pack

pack = load_pack()


def test_no_log_record_or_produced_text_holds_the_key():
    assert KeyWatch.records, "the log watch saw nothing: it is not wired"
    hits = [r for r in KeyWatch.records + PRODUCED if SECRET_KEY in r]
    assert hits == []


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
