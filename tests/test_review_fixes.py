"""Ways a paid task could be left running, a secret could travel, or a file could leak: each closed."""
import asyncio
import os

import pytest

from conftest import SECRET_KEY, comfy_env, core, load_pack
from fake_comfyui import FakeComfyUI

pack = load_pack()
E = core("errors")
C = core("config")
T = core("targets")
J = core("journal")
run = core("run")
client_mod = core("targets.gpugeek_api")


def test_token_never_goes_to_a_url_a_workflow_names():
    mine = FakeComfyUI(token="tok-mine-12345").start()
    other = FakeComfyUI().start()
    seen = []
    try:
        cfg = C.Config(api_key=None, target=mine.url, target_token="tok-mine-12345")

        async def headers_sent(url):
            async with T.open_target(cfg, url) as t:
                seen.append(dict(t._headers))
        asyncio.run(headers_sent(mine.url))
        asyncio.run(headers_sent(other.url))
        assert seen[0].get("Authorization") == "Bearer tok-mine-12345" and "Authorization" not in seen[1]
    finally:
        mine.stop()
        other.stop()


def test_input_file_never_escapes_comfyui_folders(tmp_path):
    comfy_env(tmp_path)
    import folder_paths
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    rel = os.path.relpath(secret, folder_paths.get_output_directory())
    assert pack.nodes.comfy.input_file(f"{rel} [output]") is None
    assert pack.nodes.comfy.input_file("../secret.txt") is None
    ok = os.path.join(folder_paths.get_output_directory(), "a.png")
    open(ok, "wb").write(b"1")
    assert pack.nodes.comfy.input_file("a.png [output]") == os.path.realpath(ok)


def test_changing_the_base_url_forgets_the_saved_key():
    from aiohttp.test_utils import make_mocked_request
    C.save_api_key(SECRET_KEY)

    async def post(body):
        req = make_mocked_request("POST", "/gpugeek/config")
        async def js():
            return body
        req.json = js
        return await pack.nodes.routes.post_config(req)
    asyncio.run(post({"base_url": "https://evil.example.com"}))
    assert C.load_config().api_key is None
    asyncio.run(post({"base_url": "https://other.example.com", "api_key": "sk-new-key-9876"}))
    cfg = C.load_config()
    assert cfg.api_key.reveal() == "sk-new-key-9876" and cfg.base_url == "https://other.example.com"


async def _waiting(fake, **kw):
    journal = J.Journal()
    async with client_mod.GPUGeekClient.open(fake.base_url, C.ApiKey(SECRET_KEY)) as c:
        t = T.GPUGeekTarget(c)
        pid = await c.submit(123, {"1": {"class_type": "SaveImage", "inputs": {}}})
        key = journal.begin(prompt_id=pid)
        journal.update(key, prompt_id=pid)
        return await run.wait_task(pid, target=t, journal=journal, key=key, interrupted=lambda: False,
                                   on_event=lambda *a, **k: None, **kw)


def test_a_cancelled_wait_cancels_the_remote_task(fake):
    fake.task_opts.update(run_s=30)

    async def go():
        task = asyncio.ensure_future(_waiting(fake, timeout_s=60))
        while not fake.tasks or next(iter(fake.tasks.values())).polls < 1:
            await asyncio.sleep(0.01)
        task.cancel()   # another node failed: ComfyUI cancels the pending async nodes
        await asyncio.gather(task, return_exceptions=True)
    asyncio.run(go())
    assert fake.count("cancel") == 1 and fake.running_tasks() == []
    assert J.Journal().tasks()[0]["status"] == "cancelled"


def test_a_status_call_that_cannot_succeed_cancels_the_task(fake):
    fake.task_opts.update(run_s=30)
    fake.fault("task", "http401")
    with pytest.raises(E.AuthError):
        asyncio.run(_waiting(fake, timeout_s=60))
    assert fake.count("cancel") == 1 and fake.running_tasks() == []


def test_a_failed_cancel_is_journaled_as_unknown(fake):
    fake.task_opts.update(run_s=30)
    fake.fault("cancel", *["http500"] * 100)
    with pytest.raises(E.TaskTimeoutError) as ei:
        asyncio.run(_waiting(fake, timeout_s=0.3))
    assert "may still run" in str(ei.value)
    assert J.Journal().tasks()[0]["status"] == "unknown"
    for t in fake.tasks.values():
        t.cancelled_at = 1.0


def test_a_reader_never_cancels(fake):
    fake.task_opts.update(run_s=30)
    with pytest.raises(E.TaskTimeoutError):
        asyncio.run(_waiting(fake, timeout_s=0.3, cancel_on_exit=False))
    assert fake.count("cancel") == 0
    for t in fake.tasks.values():
        t.cancelled_at = 1.0


@pytest.mark.parametrize("bad", ["../../x", "1/2", "a b", ""])
def test_task_ids_are_safe(bad):
    with pytest.raises(ValueError):
        core("wire").prompt_id_str(bad)


@pytest.mark.parametrize("url,name", [
    ("http://h/view?filename=..%2F..%2Fa.png&subfolder=x&type=output", "a.png"),
    ("http://h/files/1/..%2F..%2Fevil.png", "evil.png"),
    ("http://h/x/ComfyUI_0001_.png?sig=1", "ComfyUI_0001_.png"),
    ("http://h/view?filename=a%5C..%5Cb.png", "b.png"),
    ("http://h/run.sh", "run.bin"),
])
def test_result_file_names_are_safe(url, name):
    assert core("transfer").safe_file_name(url, "f") == name
