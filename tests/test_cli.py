"""The command line on the same core: run, status, cancel, results, tasks; GPUGeek and a ComfyUI server."""
import json

import pytest

from conftest import SECRET_KEY, core, command_line
from fake_comfyui import FakeComfyUI
from fake_gpugeek import photo_png

cli = command_line()
J = core("journal")
WF = {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
      "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}


@pytest.fixture
def workflow(tmp_path):
    (tmp_path / "in.png").write_bytes(photo_png(16, 16, seed=1))
    p = tmp_path / "wf_api.json"
    p.write_text(json.dumps(WF))
    return p


def test_run_uploads_local_files_waits_and_saves(fake, workflow, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GPUGEEK_API_KEY", SECRET_KEY)
    monkeypatch.setenv("GPUGEEK_BASE_URL", fake.base_url)
    out = tmp_path / "out"
    assert cli.main(["run", str(workflow), "--workflow-id", "123456789012345", "--out", str(out)]) == 0
    files = list(out.glob("*.png"))
    assert len(files) == 1 and files[0].read_bytes() == (workflow.parent / "in.png").read_bytes()
    assert "price 0.25" in capsys.readouterr().out
    pid = next(iter(fake.tasks))
    assert cli.main(["status"]) == 0 and json.loads(capsys.readouterr().out)["task_id"] == pid
    assert cli.main(["results", pid, "--out", str(tmp_path / "again")]) == 0
    assert len(list((tmp_path / "again").glob("*.png"))) == 1
    assert cli.main(["tasks"]) == 0 and pid in capsys.readouterr().out
    assert cli.main(["cancel", pid]) == 0 and fake.count("cancel") == 1
    # the task had finished: a cancel after its end leaves it succeeded, its result addresses kept (before: cancelled)
    rec = core("journal").Journal().by_prompt_id(pid)
    assert rec["status"] == "succeeded" and rec["result_url"]


def test_run_without_key_or_with_gateway_nodes_says_what_to_do(fake, workflow, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GPUGEEK_BASE_URL", fake.base_url)
    assert cli.main(["run", str(workflow), "--workflow-id", "1"]) == 2
    assert "No GPUGeek API key" in capsys.readouterr().err and fake.calls == []
    p = tmp_path / "ui.json"
    p.write_text(json.dumps({"nodes": [], "links": []}))
    monkeypatch.setenv("GPUGEEK_API_KEY", SECRET_KEY)
    assert cli.main(["run", str(p), "--workflow-id", "1"]) == 2
    assert "Export (API)" in capsys.readouterr().err


def test_run_on_a_comfyui_server_needs_no_account(workflow, tmp_path, capsys):
    srv = FakeComfyUI().start()
    try:
        out = tmp_path / "out"
        assert cli.main(["run", str(workflow), "--target", srv.url, "--out", str(out)]) == 0
        files = list(out.glob("*.png"))
        assert len(files) == 1 and files[0].read_bytes() == (workflow.parent / "in.png").read_bytes()
        assert srv.calls.count("upload") == 1
    finally:
        srv.stop()


def test_run_with_models_dir_sends_a_model_the_server_lacks_once(workflow, tmp_path, capsys):
    """Issue 40 from the command line: ``--models-dir`` names a ComfyUI-style models folder; the LoRA the workflow
    names goes up once to a server that receives models, and the prompt names the server's copy."""
    from test_models import safetensors
    models = tmp_path / "models"
    (models / "loras" / "sub").mkdir(parents=True)
    (models / "loras" / "sub" / "mine.safetensors").write_bytes(safetensors(64, seed=3))
    (models / "checkpoints").mkdir()
    wf = dict(WF, **{"5": {"class_type": "LoraLoader", "inputs": {"lora_name": "sub/mine.safetensors",
                                                                  "strength_model": 1.0, "strength_clip": 1.0}}})
    workflow.write_text(json.dumps(wf))
    srv = FakeComfyUI().start()
    try:
        srv.receive_models(tmp_path / "server")
        for out in ("out1", "out2"):
            assert cli.main(["run", str(workflow), "--target", srv.url, "--out", str(tmp_path / out),
                             "--models-dir", str(tmp_path / "nowhere"), "--models-dir", str(models)]) == 0
        assert srv.calls.count("model_upload") == 1   # the second run asked by hash and sent nothing
        held = srv.model_list("loras")
        assert len(held) == 1 and held[0].startswith("gpugeek/")
        assert (tmp_path / "server" / "loras" / held[0]).read_bytes() == (models / "loras" / "sub" / "mine.safetensors").read_bytes()
        # both runs succeeded: the fake validates lora_name against its loras list, as ComfyUI does, so the prompts
        # named the server's copy
    finally:
        srv.stop()


def test_models_dir_never_reaches_outside_a_kinds_folder(tmp_path):
    models_mod = core("run.models")
    (tmp_path / "m" / "loras").mkdir(parents=True)
    (tmp_path / "m" / "secret.safetensors").write_bytes(b"x")
    (tmp_path / "m" / "loras" / "a.safetensors").write_bytes(b"x")
    (tmp_path / "m" / "loras" / "notes.txt").write_bytes(b"x")
    src = models_mod.folder_source([tmp_path / "m"])
    assert src.find("a.safetensors", "LoraLoader", "lora_name") == ("loras", str(tmp_path / "m" / "loras" / "a.safetensors"))
    assert src.find("../secret.safetensors") is None and src.find("notes.txt") is None
    assert src.find("/etc/passwd") is None
