"""Every fault of the fake server injected at every step of a gateway run (pre-signed URL, upload, submit,
status, cancel, download): safe calls retry, the rest end with a sentence that names the gateway and the
step; a submit is never sent twice; nothing is left running that we could cancel; the journal is right."""
import asyncio
import io
import json
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

import mini_comfy
from conftest import comfy_env, SECRET_KEY, core, load_pack, produced, said
from fake_gpugeek import photo_png, webp_bomb

pack = load_pack()
import folder_paths  # noqa: E402
import comfy.model_management as mm  # noqa: E402
from server import PromptServer  # noqa: E402

E = core("errors")
client_mod = core("targets.gpugeek_api")
TRANSIENT = ["http429", "http500", "http502html", "reset", "slow:0.3"]
STEPS = {"presign": "pre-signed URL", "put": "upload", "submit": "submit", "task": "task status", "file": "download"}


@pytest.fixture
def env(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("GPUGEEK_API_KEY", SECRET_KEY)
    monkeypatch.setenv("GPUGEEK_BASE_URL", fake.base_url)
    monkeypatch.setattr(client_mod.RetryPolicy, "base_s", 0.01)
    classes = comfy_env(tmp_path)
    Image.open(io.BytesIO(photo_png(32, 32, seed=4))).save(Path(folder_paths.get_input_directory(), "here.png"))
    mm.interrupt_flag = False
    fake.task_opts.update(run_s=0.2)
    return classes


PROMPT = {"20": {"class_type": "LoadImage", "inputs": {"image": "here.png"}},
          "21": {"class_type": "ImageInvert", "inputs": {"image": ["20", 0]}},
          "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "123456789012345", "run_on": "cloud",
                                                                 "timeout_s": 30, "image_1": ["21", 0]}}}


def owner():
    return core("owner").owner()


def execute(classes, **gateway):
    prompt = json.loads(json.dumps(PROMPT))
    prompt["10"]["inputs"].update(gateway)
    return asyncio.run(mini_comfy.execute(prompt, classes, PromptServer.instance))


def journal():
    return pack.nodes.cloud.journal().tasks()


@pytest.mark.parametrize("step", ["presign", "put", "task", "file"])
@pytest.mark.parametrize("fault", TRANSIENT)
def test_safe_steps_retry_transient_faults(env, fake, step, fault):
    fake.fault(step, fault, fault)
    results, _, _ = execute(env)
    assert results["10"][0].shape[0] == 1
    assert fake.count("submit") == 1 and fake.running_tasks() == []
    assert journal()[0]["status"] == "succeeded"


def test_truncated_download_retried(env, fake):
    fake.fault("file", "truncate", "truncate")
    results, _, _ = execute(env)
    assert results["10"][0].shape[0] == 1 and fake.count("file") == 3


@pytest.mark.parametrize("step", ["presign", "put", "task", "file"])
def test_persistent_fault_ends_with_the_gateway_and_step_named(env, fake, step):
    fake.fault(step, *["http502html"] * 10)
    if step in ("task",):
        # status failures are waited out (the task runs on remotely) until the gateway's timeout
        p = json.loads(json.dumps(PROMPT))
        p["10"]["inputs"]["timeout_s"] = 1
        with pytest.raises(E.TaskTimeoutError) as ei:
            asyncio.run(mini_comfy.execute(p, env, PromptServer.instance))
        assert fake.count("cancel") == 1 and fake.running_tasks() == []
    else:
        with pytest.raises(E.GPUGeekError) as ei:
            execute(env)
        assert f"call: {STEPS[step]}" in str(ei.value)
    text = str(ei.value)
    produced(text)
    assert "GPUGeek Cloud Execute #10" in text and fake.count("submit") <= 1
    if step in ("presign", "put"):
        assert fake.count("submit") == 0 and journal() == []


@pytest.mark.parametrize("fault", ["http500", "http502html", "reset", "lost"])
def test_submit_faults_never_resubmit(env, fake, fault):
    fake.fault("submit", fault)
    with pytest.raises(E.SubmitUnknownError) as ei:
        execute(env)
    assert fake.count("submit") == 1
    assert "paid task may exist" in str(ei.value) and "GPUGeek Cloud Execute #10" in str(ei.value)
    assert journal()[0]["status"] == "unknown"


@pytest.mark.parametrize("fault,cls", [(("http429",) * 4, E.BusyError), (("http401",), E.AuthError),
                                       (("code_error",), E.BadRequestError)])
def test_submit_refused_is_clear_and_not_unknown(env, fake, fault, cls):
    fake.fault("submit", *fault)
    with pytest.raises(cls) as ei:
        execute(env)
    assert not isinstance(ei.value, E.SubmitUnknownError) and fake.count("submit") == len(fault)
    assert journal()[0]["status"] == "failed" and fake.tasks == {}


@pytest.mark.parametrize("step", ["presign", "task", "file"])
def test_401_anywhere_says_fix_the_key(env, fake, step):
    fake.fault(step, "http401")
    with pytest.raises(E.AuthError) as ei:
        execute(env)
    assert "Settings > GPUGeek" in str(ei.value)


def test_expired_signed_url_is_clear(env, fake):
    fake.fault("put", "expired")
    with pytest.raises(E.AuthError) as ei:
        execute(env)
    assert "expired" in str(ei.value) and fake.count("submit") == 0


def stop_once_polled(fake):
    """Press stop (ComfyUI's interrupt flag) once the task exists and the gateway has polled it."""
    def stop():
        while not fake.tasks or next(iter(fake.tasks.values())).polls < 1:
            time.sleep(0.01)
        mm.interrupt_flag = True
    threading.Thread(target=stop, daemon=True).start()


@pytest.mark.parametrize("fault", ["http500", "reset"])
def test_cancel_fault_is_retried_and_never_hides_the_interrupt(env, fake, fault):
    fake.task_opts.update(run_s=30)
    fake.fault("cancel", fault)
    stop_once_polled(fake)
    with pytest.raises(mm.InterruptProcessingException):
        execute(env)
    assert owner().drain(10)  # the prompt ended at once; the owner finishes the cancel
    assert fake.count("cancel") == 2 and fake.running_tasks() == []
    assert journal()[0]["status"] == "cancelled"


def test_cancel_that_keeps_failing_still_ends_as_interrupted(env, fake):
    fake.task_opts.update(run_s=30)
    fake.fault("cancel", *["http500"] * 100)
    stop_once_polled(fake)
    with pytest.raises(mm.InterruptProcessingException):
        execute(env)
    assert owner().drain(10)
    # bounded: the transport's retries in each of the owner's rounds, then given up and journaled unknown
    assert fake.count("cancel") == 4 * core("run").CANCEL_ROUNDS
    assert journal()[0]["status"] == "unknown" and "may still run" in journal()[0]["error"]
    for t in fake.running_tasks():
        t.cancelled_at = time.monotonic()  # tidy the fake


@pytest.mark.parametrize("override,words", [
    ({"gpugeek_out_0": ["file:///etc/passwd"]}, "not http"),
    ({"gpugeek_out_0": ["ftp://example.org/x.png"]}, "not http"),
    ({}, "no file for image_1"),
])
def test_hostile_result_urls(env, fake, override, words):
    fake.task_opts["result_override"] = override
    with pytest.raises(E.ResultError) as ei:
        execute(env)
    assert words in str(ei.value)


@pytest.mark.parametrize("payload,words", [
    (b"<html>hello</html>", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (100000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00" + b"\x00" * 20,
     "megapixel"),
])
def test_hostile_result_files(env, fake, payload, words):
    fake.runner = lambda prompt, task: {n: [("x.png", payload)] for n, v in prompt.items()
                                        if v["class_type"] == "SaveImage"}
    with pytest.raises(E.ResultError) as ei:
        execute(env)
    assert words in str(ei.value)


def test_result_file_name_cannot_escape_the_output_folder(env, fake):
    fake.runner = lambda prompt, task: {n: [("../../evil.png", photo_png(8, 8))] for n, v in prompt.items()
                                        if v["class_type"] == "SaveImage"}
    execute(env)
    out = Path(folder_paths.get_output_directory()).resolve()
    files = [p for p in Path(folder_paths.base).rglob("*.png") if "input" not in p.parts]
    assert files and all(out in p.resolve().parents for p in files)


def test_huge_download_refused_with_bounded_memory(env, fake, monkeypatch):
    monkeypatch.setattr(core("transport"), "MAX_DOWNLOAD_BYTES", 10_000)
    fake.runner = lambda prompt, task: {n: [("big.png", photo_png(256, 256))] for n, v in prompt.items()
                                        if v["class_type"] == "SaveImage"}
    with pytest.raises(E.ResultError) as ei:
        execute(env)
    assert "limit" in str(ei.value)


def test_a_task_whose_files_pass_the_memory_budget_is_refused(env, fake, monkeypatch):
    monkeypatch.setattr(core("transport"), "MAX_TASK_BYTES", 20_000)
    fake.runner = lambda prompt, task: {n: [(f"f{i}.png", photo_png(64, 64, seed=i)) for i in range(4)]
                                        for n, v in prompt.items() if v["class_type"] == "SaveImage"}
    with pytest.raises(E.ResultError) as ei:
        execute(env)
    assert "in all" in str(ei.value)


def test_a_task_that_names_more_files_than_a_task_may_bring_back_is_refused_its_addresses_kept(env, fake, monkeypatch):
    """Issue 38: the number of files a task may name was uncapped (a 16 MiB history names 310k). Under the cap every
    file comes back; above it nothing is downloaded, the refusal says so in a sentence, and the task, which
    succeeded and is paid, stays journaled as succeeded with every result address (Load Result can reach them)."""
    fake.runner = saved_by_the_gateway([(f"f{i}.png", photo_png(8, 8, seed=i % 4)) for i in range(400)])
    results, _, _ = execute(env)
    assert results["10"][0].shape[0] == 400 and fake.count("file") == 400
    monkeypatch.setattr(core("transport"), "MAX_RESULT_FILES", 399, raising=False)
    with pytest.raises(E.ResultError) as ei:
        execute(env)
    assert fake.count("file") == 400   # nothing more was fetched
    rec = journal()[0]
    pid = rec["prompt_id"]
    assert str(ei.value).startswith("GPUGeek Cloud Execute #10: " + said("err_too_many_results", "en", task=pid,
                                                                          count=400, limit=399))
    assert core("texts").lookup("err_too_many_results", "zh", raw=True)
    assert rec["status"] == "succeeded" and sum(len(v) for v in rec["result_url"].values()) == 400


def test_a_fan_outs_files_fetched_again_from_the_journal_share_one_budget(env, fake, monkeypatch):
    """An output node that fetches a fan-out's files again from the journal (gateway.files_of): one budget across the
    runs, as for the gateway that led them (each run had a budget of its own: runs times the memory)."""
    from types import SimpleNamespace
    gateway, config = core("run.gateway"), core("config")
    one = photo_png(64, 64, seed=1)
    monkeypatch.setattr(core("transport"), "MAX_TASK_BYTES", 3 * len(one))   # two runs' files pass it, one's not
    fake.runner = lambda prompt, task: {"2": [(f"f{i}.png", photo_png(64, 64, seed=1)) for i in range(2)]}
    client = core("targets").GPUGeekClient
    j = pack.nodes.cloud.journal()

    async def go():
        async with client.open(fake.base_url, config.ApiKey(SECRET_KEY)) as c:
            pids = [await c.submit(123, {"1": {"class_type": "SaveImage", "inputs": {}}}) for _ in range(2)]
            for pid in pids:
                while not (d := await c.task(pid)).final:
                    await asyncio.sleep(0.02)
                j.update(j.begin(plan_hash="p"), prompt_id=pid, status="succeeded", result_url=d.result_url)
        job = SimpleNamespace(owner=SimpleNamespace(take=lambda *a: None), guard=lambda aw: aw)
        return await gateway.files_of(job, cfg=config.load_config(), task_id=",".join(pids), nodes={"2"}, member="2",
                                      journal=j)
    with pytest.raises(E.ResultError) as ei:
        asyncio.run(go())
    assert ei.value.key == "err_task_bytes"


def decoded_files(monkeypatch) -> list:
    codec = core("codec")
    decoded, real = [], codec.decode_frames
    monkeypatch.setattr(codec, "decode_frames", lambda *a, **k: decoded.append(1) or real(*a, **k))
    return decoded


def saved_by_the_gateway(files):
    return lambda prompt, task: {n: files for n in prompt if n.startswith("gpugeek_out_")}


@pytest.mark.parametrize("transfer", ["lossless", "compact"])
def test_animated_results_are_refused_from_their_headers_before_any_frame_is_decoded(env, fake, monkeypatch, transfer):
    """The review's bomb at a gateway: 8 files of 16 frames at 2048x2048, under 7 KB in all. The gateway's
    savers write one image a file in either transfer (compact: RebatchImages + SaveAnimatedWEBP), so the first
    file's header refuses it. Before: every frame of every file was decoded and held (1.5 GB) before the
    batch's total was compared with the limit."""
    fake.runner = saved_by_the_gateway([(f"bomb_{i}.webp", webp_bomb(2048, 2048, 16)) for i in range(8)])
    decoded = decoded_files(monkeypatch)
    with pytest.raises(E.ResultError) as ei:
        execute(env, transfer=transfer)
    text = str(ei.value)
    produced(text)
    assert decoded == []
    assert text.startswith("GPUGeek Cloud Execute #10: " + said("err_result_frames", "en", frames=16))


def test_result_images_past_the_batch_limit_are_refused_as_they_arrive(env, fake, monkeypatch):
    codec = core("codec")
    monkeypatch.setattr(codec, "MAX_BATCH_BYTES", codec.batch_bytes(5, 64, 64))
    fake.runner = saved_by_the_gateway([(f"f{i}.png", photo_png(64, 64, seed=i)) for i in range(6)])
    decoded = decoded_files(monkeypatch)
    with pytest.raises(E.ResultError) as ei:
        execute(env)
    assert len(decoded) < 6
    assert str(ei.value).startswith("GPUGeek Cloud Execute #10: " + said("err_results_too_big", "en", frames=6))


def test_downloads_that_never_started_when_one_failed_are_closed():
    """The first error cancels the rest (transfer.gather_bounded); a coroutine that never started is closed, not
    left for the garbage collector to warn about ("coroutine ... was never awaited" in ComfyUI's log)."""
    import gc
    import warnings
    started = []

    async def one(i):
        started.append(i)
        await asyncio.sleep(0)
        if i == 0:
            raise E.ResultError("refused")
        await asyncio.sleep(5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(E.ResultError):
            asyncio.run(pack.offload.transfer.gather_bounded([one(i) for i in range(8)], limit=2))
        gc.collect()
    assert len(started) < 8
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []
