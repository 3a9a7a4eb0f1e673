"""Fan-out and pools (issue 17): one cloud part as ``runs`` tasks at once, on GPUGeek or over several ComfyUI
servers, run as ComfyUI runs a prompt (tests/mini_comfy.py)."""
import asyncio
import threading
import time

import pytest

import mini_comfy
from conftest import core, load_pack
from fake_comfyui import FakeComfyUI

pack = load_pack()
import comfy.model_management as mm  # noqa: E402
from server import PromptServer  # noqa: E402

E = core("errors")
J = core("journal")
WF = "123456789012345"




def seeded(runs=4, seed=100, **gw):
    L = lambda n, s=0: [n, s]  # noqa: E731
    return {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "cloud_only.safetensors"}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": L("4", 1)}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "3": {"class_type": "KSampler", "inputs": {"seed": seed, "model": L("4"), "positive": L("6"),
                                                       "negative": L("6"), "latent_image": L("5")}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": L("3"), "vae": L("4", 2)}},
            "10": {"class_type": "GPUGeekCloudExecute",
                   "inputs": {"workflow_id": WF, "run_on": "cloud", "timeout_s": 60, "image_1": L("8"), "runs": runs,
                              **gw}}}


def execute(prompt, classes):
    return asyncio.run(mini_comfy.execute(prompt, classes, PromptServer.instance))


def test_four_runs_four_seeds_one_batch_every_id_kept(env, fake):
    fake.task_opts.update(run_s=0.3)
    results, ui, _ = execute(seeded(runs=4, seed=100), env)
    seeds = sorted(t.prompt["3"]["inputs"]["seed"] for t in fake.tasks.values())
    assert fake.count("submit") == 4 and seeds == [100, 101, 102, 103]
    out = results["10"]
    assert out[0].shape[0] == 4                               # the four runs' images, one batch
    ids = out[6].split(",")
    assert len(ids) == 4 and set(ids) == set(fake.tasks)
    order = [fake.tasks[i].prompt["3"]["inputs"]["seed"] for i in ids]
    assert order == [100, 101, 102, 103]                      # in run order
    recs = [pack.nodes.cloud.journal().by_prompt_id(i) for i in ids]
    assert {r["status"] for r in recs} == {"succeeded"} and len({r["group"] for r in recs}) == 1
    assert sorted(r["run"] for r in recs) == [0, 1, 2, 3]
    texts = [t for t, _ in PromptServer.instance.progress_texts]
    assert texts[-1].startswith("4/4 done: the longest ran") and "price 1 in all" in texts[-1]


def test_the_daily_limit_counts_every_run_before_any_is_submitted(env, fake, monkeypatch):
    fake.task_opts.update(run_s=0.05, price=0.25)
    execute(seeded(runs=1), env)                               # history: 0.25 per run
    monkeypatch.setenv("GPUGEEK_DAILY_LIMIT", "0.9")
    before = fake.count("submit")
    with pytest.raises(E.SpendLimitError) as ei:
        execute(seeded(runs=4, seed=7), env)                   # 4 x 0.25 would pass 0.9 - 0.25 spent
    assert fake.count("submit") == before and "1" in str(ei.value)


def test_one_failing_run_cancels_the_others_and_is_named(env, fake):
    fake.task_opts.update(run_s=5, fail_seed=102)
    with pytest.raises(E.TaskFailedError) as ei:
        execute(seeded(runs=4, seed=100), env)
    assert "run 3 of 4" in str(ei.value) and "seed 102" in str(ei.value)
    assert core("owner").owner().drain(10)
    assert fake.running_tasks() == [] and fake.count("cancel") >= 1
    statuses = sorted(r["status"] for r in pack.nodes.cloud.journal().tasks())
    assert statuses.count("failed") == 1 and statuses.count("cancelled") >= 1


def test_finished_runs_stay_loadable_when_a_later_one_fails(env, fake):
    fake.task_opts.update(run_s=0.1, fail_seed=3, fail_seed_s=1.5)
    with pytest.raises(E.TaskFailedError):
        execute(seeded(runs=3, seed=1), env)           # runs 1 and 2 finish, then run 3 fails
    assert core("owner").owner().drain(10)
    done = [r["prompt_id"] for r in pack.nodes.cloud.journal().tasks() if r["status"] == "succeeded"]
    lr = {"1": {"class_type": "GPUGeekLoadResult", "inputs": {"prompt_id": ",".join(done)}}}
    results, _, _ = execute(lr, env)
    assert results["1"][0].shape[0] == len(done) >= 2


def test_stop_cancels_every_run(env, fake):
    fake.task_opts.update(run_s=30)

    def stopper():
        end = time.monotonic() + 20
        while time.monotonic() < end and (len(fake.tasks) < 3 or any(t.polls < 1 for t in fake.tasks.values())):
            time.sleep(0.01)
        mm.interrupt_flag = True
    threading.Thread(target=stopper, daemon=True).start()
    with pytest.raises(mm.InterruptProcessingException):
        execute(seeded(runs=3), env)
    assert core("owner").owner().drain(10)
    assert len(fake.tasks) == 3 and fake.running_tasks() == [] and fake.count("cancel") == 3


@pytest.fixture
def two_servers():
    a, b = FakeComfyUI(token="tok-pool").start(), FakeComfyUI(token="tok-pool").start()
    a.step_s = b.step_s = 0.05
    yield a, b
    a.stop()
    b.stop()


def test_a_pool_of_two_servers_shares_the_runs(env, fake, monkeypatch, two_servers):
    a, b = two_servers
    monkeypatch.setenv("GPUGEEK_TARGET", f"{a.url}, {b.url}")
    monkeypatch.setenv("GPUGEEK_TARGET_TOKEN", "tok-pool")      # the token goes to each configured server
    p = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
         "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0], "seed": 5}},
         "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "", "run_on": "cloud", "timeout_s": 60,
                                                                "image_1": ["2", 0], "runs": 4}}}
    results, _, _ = execute(p, env)
    assert results["10"][0].shape[0] == 4
    assert a.calls.count("prompt") >= 1 and b.calls.count("prompt") >= 1
    assert a.calls.count("prompt") + b.calls.count("prompt") == 4
    recs = pack.nodes.cloud.journal().tasks()
    assert {r["target_url"] for r in recs} == {a.url, b.url}   # each run journaled where it ran


def test_a_silent_server_is_skipped_before_the_submit(env, fake, monkeypatch, two_servers):
    a, b = two_servers
    b.stop()
    monkeypatch.setenv("GPUGEEK_TARGET", f"{a.url},{b.url}")
    monkeypatch.setenv("GPUGEEK_TARGET_TOKEN", "tok-pool")
    p = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
         "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
         "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "", "run_on": "cloud", "timeout_s": 60,
                                                                "image_1": ["2", 0], "runs": 2}}}
    results, _, _ = execute(p, env)
    assert results["10"][0].shape[0] == 2 and a.calls.count("prompt") == 2


def test_a_runs_files_are_fetched_as_soon_as_that_run_ends(env, fake):
    """Runs of a fan-out end at different times: the files of the run that ended first are downloaded while
    the other still runs (before: every file was fetched after the last run ended)."""
    fake.task_opts.update(run_s=0.1, run_s_by_seed={"301": 1.5})
    results, _, _ = execute(seeded(runs=2, seed=300), env)
    assert results["10"][0].shape[0] == 2
    first, last = sorted(fake.tasks.values(), key=lambda t: t.run_s)
    assert last.run_s >= 1.5 * 0.9 and first.run_s <= 0.1 * 1.1   # each moved by the fake's jitter
    assert fake.file_fetched_at(first.prompt_id) and max(fake.file_fetched_at(first.prompt_id)) < last.finished_at
