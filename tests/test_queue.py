"""A queue of prompts runs in the cloud at once (issue 39): ComfyUI's queue (tests/mini_comfy.py ``Queue``: prompts run
one after the other, with ComfyUI's cache across them) and the GPUGeek fake, which runs tasks side by side. Cues instead
of clocks: a task ends when the test saw what must come before (conftest ``when``)."""
import json

import pytest

import mini_comfy
from conftest import core, load_pack, until, when
from test_nodes import t2i

pack = load_pack()
from server import PromptServer  # noqa: E402

WF = "123456789012345"
LONG_S = 120.0   # a task the fake runs until the test ends it (``finish``)


def prompt(seed: int, prefix: str = "") -> dict:
    """A text-to-image workflow with a gateway (node ``prefix``10), its sampler's seed ``seed``."""
    p = _prompt(seed)
    text = json.dumps(p)
    for nid in p:
        text = text.replace(f'"{nid}"', f'"{prefix}{nid}"')
    return json.loads(text)


def _prompt(seed: int) -> dict:
    """The node tests' text to image (tests/test_nodes.py ``t2i``) with a longer timeout and its own seed."""
    p = t2i(timeout_s=600)
    p["3"]["inputs"]["seed"] = seed
    return p


@pytest.fixture
def queue(env):
    ahead_nodes = pack.nodes.ahead
    core("run.ahead").reset()
    q = mini_comfy.Queue(env, PromptServer.instance)
    yield q
    ahead_nodes.stop_watcher()
    for t in list(core("run.ahead").ahead().entries.values()):
        core("run.ahead").ahead().cancel(t, "the test ended")
    q.close()
    core("run.ahead").reset()


def seed_of(task) -> int:
    return next(n["inputs"]["seed"] for n in task.prompt.values() if n["class_type"] == "KSampler")


def seeds_of(fake) -> list:
    return [seed_of(t) for t in fake.tasks.values()]


def sent_ahead(queue, pid) -> bool:
    """Whether the prompt went into ComfyUI's queue marked as having parts sent ahead."""
    running, waiting = queue.prompt_queue.get_current_queue()
    item = next(i for i in running + waiting if i[1] == pid)
    return "gpugeek_ahead" in item[3]


def finish_all(fake):
    fake.task_opts["run_s"] = 0.05   # tasks submitted from now end at once
    for t in list(fake.tasks.values()):
        fake.finish(t)


def journal():
    j = pack.nodes.cloud.journal()
    j.store.refresh()
    return j


def test_four_prompts_queued_back_to_back_run_their_tasks_side_by_side(queue, fake):
    fake.task_opts["run_s"] = LONG_S
    # each task is held by the fake until all four exist: one after the other, the second would never come
    cue = when(lambda: len(fake.tasks) == 4, lambda: finish_all(fake), limit=8)
    pids = [queue.post(prompt(seed)) for seed in (1, 2, 3, 4)]
    assert until(lambda: all(queue.done(p) for p in pids), 60)
    assert cue["met"], f"the tasks did not run side by side: {len(fake.tasks)} existed at once"
    assert sorted(seeds_of(fake)) == [1, 2, 3, 4] and len(fake.tasks) == 4   # each paid once
    for seed, pid in zip((1, 2, 3, 4), pids):
        results, _ui = queue.results[pid]
        task = next(t for t in fake.tasks.values() if seed_of(t) == seed)
        assert results["10"][6] == task.prompt_id   # each prompt took its own task
    recs = [r for r in journal().store.all() if r.get("prompt_id")]
    assert sum(1 for r in recs if r.get("sent_ahead")) == 3   # the first ran at once: ComfyUI was idle
    assert all(r["status"] == "succeeded" for r in recs)
    assert not list(core("run.ahead").ahead().entries)
    assert not list((core("config").data_dir() / "ahead").glob("*/*"))   # the files held on disk were taken


def test_a_part_comfyui_serves_from_its_cache_is_not_sent_ahead(queue, fake):
    pid = queue.post(prompt(1))   # ComfyUI idle: it runs at once, and ComfyUI's cache holds its gateway
    assert until(lambda: queue.done(pid))
    assert len(fake.tasks) == 1
    fake.task_opts["run_s"] = LONG_S
    other = queue.post(prompt(9, prefix="b"))   # another workflow keeps ComfyUI busy; its task is held
    assert until(lambda: len(fake.tasks) == 2)
    again = queue.post(prompt(1))   # what ran last on its gateway: ComfyUI's cache will serve it
    twice = [queue.post(prompt(8)), queue.post(prompt(8))]   # back to back: the second is the cache's too
    assert [sent_ahead(queue, p) for p in (again, *twice)] == [False, True, False]
    assert until(lambda: len(fake.tasks) == 3)
    finish_all(fake)
    assert until(lambda: all(queue.done(p) for p in [other, again, *twice]), 60)
    assert sorted(seeds_of(fake)) == [1, 8, 9], "a part ComfyUI served from its cache was paid for"
    assert queue.cache.ran[2] == [] and queue.cache.ran[4] == []   # served from the cache, as expected
    assert all(not isinstance(queue.results[p], BaseException) for p in [other, again, *twice])


def test_a_deleted_prompt_cancels_its_task_sent_ahead_and_the_journal_says_cancelled(queue, fake):
    fake.task_opts["run_s"] = LONG_S
    first = queue.post(prompt(1))
    assert until(lambda: len(fake.tasks) == 1)   # the first prompt runs; its task is held
    second = queue.post(prompt(2))
    third = queue.post(prompt(3))
    assert until(lambda: len(fake.tasks) == 3)   # sent ahead
    by_seed = {seed_of(t): t for t in fake.tasks.values()}
    assert queue.prompt_queue.delete_queue_item(lambda item: item[1] == second)
    assert until(lambda: fake.status_of(by_seed[2])[0] == 5, 5), "the deleted prompt's task still runs"
    assert fake.status_of(by_seed[3])[0] in (1, 2)   # the prompt still queued keeps its task
    queue.prompt_queue.wipe_queue()   # the queue cleared: the third goes too
    assert until(lambda: fake.status_of(by_seed[3])[0] == 5, 5)
    finish_all(fake)
    assert until(lambda: queue.done(first))
    assert until(lambda: not pack.nodes.cloud.owner().active())
    j = journal()
    for seed in (2, 3):
        assert j.by_prompt_id(by_seed[seed].prompt_id)["status"] == "cancelled"
    assert j.by_prompt_id(by_seed[1].prompt_id)["status"] == "succeeded"
    assert fake.running_tasks() == []
    assert second not in queue.prompt_queue.history and third not in queue.prompt_queue.history
    # queued again while ComfyUI is busy, a part whose task was cancelled goes ahead again
    fake.task_opts["run_s"] = LONG_S
    busy = queue.post(prompt(4))
    assert until(lambda: len(fake.tasks) == 4)
    again = queue.post(prompt(2))
    assert until(lambda: len(fake.tasks) == 5) and sent_ahead(queue, again)
    finish_all(fake)
    assert until(lambda: queue.done(busy) and queue.done(again))
    results, _ui = queue.results[again]
    assert results["10"][6] == max(fake.tasks, key=lambda pid: fake.tasks[pid].created)


def test_the_daily_limit_counts_the_tasks_sent_ahead(queue, fake, monkeypatch):
    pid = queue.post(prompt(0))   # a price for the part (0.25 a task)
    assert until(lambda: queue.done(pid))
    monkeypatch.setenv("GPUGEEK_DAILY_LIMIT", "0.75")   # 0.25 spent: room for two more tasks
    fake.task_opts["run_s"] = LONG_S
    pids = [queue.post(prompt(1))]
    assert until(lambda: len(fake.tasks) == 2)
    pids += [queue.post(prompt(seed)) for seed in (2, 3, 4)]
    # the second task goes ahead while the first prompt runs; the limit leaves the others out
    cue = when(lambda: len(fake.tasks) == 3, lambda: finish_all(fake), limit=8)
    assert until(lambda: all(queue.done(p) for p in pids), 60)
    assert cue["met"], "no task was sent ahead"
    assert len(fake.tasks) == 3 and sorted(seeds_of(fake)) == [0, 1, 2]
    assert all(not isinstance(queue.results[p], BaseException) for p in pids[:2])
    E = core("errors")
    for p in pids[2:]:
        assert isinstance(queue.results[p], E.SpendLimitError)


def test_the_expected_price_counts_the_tasks_sent_ahead(queue, fake, monkeypatch):
    """The editor's estimate (POST /gpugeek/plan) says what the queue's prompts already sent ahead are expected to cost,
    and what is left of the daily limit after today's spending, the tasks under way and those sent ahead."""
    from test_nodes import _route
    pid = queue.post(prompt(0))   # a price for the part (0.25 a task)
    assert until(lambda: queue.done(pid))
    plan = lambda: _route(pack.nodes.routes.post_plan, "POST", "/gpugeek/plan", {"prompt": prompt(7)})  # noqa: E731
    assert plan()["ahead"] == {"tasks": 0, "price": 0, "unpriced": 0, "left": None}   # nothing ahead, no limit
    monkeypatch.setenv("GPUGEEK_SEND_AHEAD", "1")   # one slot: the third prompt's part waits for it
    monkeypatch.setenv("GPUGEEK_DAILY_LIMIT", "2")
    fake.task_opts["run_s"] = LONG_S
    first = queue.post(prompt(1))
    assert until(lambda: len(fake.tasks) == 2)   # ComfyUI runs the first prompt; its task is held
    second, third = queue.post(prompt(2)), queue.post(prompt(3))
    assert until(lambda: len(fake.tasks) == 3)
    registry = core("run.ahead").ahead()
    assert until(lambda: len(registry.entries) == 2)
    answer = plan()
    # 0.25 spent; the first prompt's task and the second's (ahead) run; the third's waits for a slot, not yet leased
    assert answer["ahead"] == {"tasks": 2, "price": 0.5, "unpriced": 0, "left": 2 - 0.25 - 0.25 - 0.25 - 0.25}
    assert answer["expected"]["10"]["price"] == 0.25   # the part's own price is still its own
    finish_all(fake)
    assert until(lambda: all(queue.done(p) for p in (first, second, third)), 60)
    assert plan()["ahead"]["tasks"] == 0


def test_off_with_the_environment_variable(queue, fake, monkeypatch):
    monkeypatch.setenv("GPUGEEK_SEND_AHEAD", "0")
    fake.task_opts["run_s"] = LONG_S
    first = queue.post(prompt(1))
    assert until(lambda: len(fake.tasks) == 1)
    second = queue.post(prompt(2))
    assert core("run.ahead").ahead().entries == {}
    assert "gpugeek_ahead" not in json.dumps(queue.prompt_queue.get_current_queue()[1], default=str)
    assert len(fake.tasks) == 1
    finish_all(fake)
    assert until(lambda: queue.done(first) and queue.done(second))
    assert sorted(seeds_of(fake)) == [1, 2]
    assert core("config").send_ahead_slots({"GPUGEEK_SEND_AHEAD": "off"}) == 0
    assert core("config").send_ahead_slots({"GPUGEEK_SEND_AHEAD": "2"}) == 2
    assert core("config").send_ahead_slots({}) == core("config").SEND_AHEAD_DEFAULT


def test_at_most_the_setting_s_tasks_ahead_the_rest_wait_their_turn(queue, fake, monkeypatch):
    monkeypatch.setenv("GPUGEEK_SEND_AHEAD", "2")
    fake.task_opts["run_s"] = LONG_S
    pids = [queue.post(prompt(1))]
    assert until(lambda: len(fake.tasks) == 1)   # ComfyUI runs the first; its task is held
    pids += [queue.post(prompt(seed)) for seed in (2, 3, 4, 5)]
    registry = core("run.ahead").ahead()
    assert until(lambda: len(fake.tasks) == 3)
    states = sorted(e.state for e in registry.entries.values())
    assert states == ["running", "running", "waiting", "waiting"] and len(fake.tasks) == 3
    by_seed = {seed_of(t): t for t in fake.tasks.values()}
    fake.finish(by_seed[2])   # a slot frees: the next waiting part goes
    assert until(lambda: len(fake.tasks) == 4)
    assert sorted(seeds_of(fake)) == [1, 2, 3, 4]
    finish_all(fake)
    assert until(lambda: all(queue.done(p) for p in pids), 60)
    assert sorted(seeds_of(fake)) == [1, 2, 3, 4, 5]   # the last went at run time (or ahead once a slot freed)
    assert all(not isinstance(queue.results[p], BaseException) for p in pids)



def two_queued(queue, fake):
    """Two prompts queued one after the other, each a long task: the first runs, the second goes ahead. Returns their
    ids and the tasks by seed."""
    fake.task_opts["run_s"] = LONG_S
    first = queue.post(prompt(1))
    assert until(lambda: len(fake.tasks) == 1)
    second = queue.post(prompt(2))
    assert until(lambda: len(fake.tasks) == 2)
    return first, second, {seed_of(t): t for t in fake.tasks.values()}

def test_stop_while_the_gateway_waits_for_its_task_sent_ahead_cancels_it(queue, fake):
    import comfy.model_management as mm
    first, second, by_seed = two_queued(queue, fake)
    fake.finish(by_seed[1])
    assert until(lambda: queue.done(first))
    registry = core("run.ahead").ahead()
    assert until(lambda: not registry.entries)   # the second prompt's gateway took its task, which still runs
    assert fake.status_of(by_seed[2])[0] in (1, 2)
    mm.interrupt_flag = True   # Stop
    try:
        assert until(lambda: queue.done(second))
        assert until(lambda: fake.status_of(by_seed[2])[0] == 5, 5), "Stop left the task sent ahead running"
    finally:
        mm.interrupt_flag = False
    assert isinstance(queue.results[second], mm.InterruptProcessingException)
    assert until(lambda: not pack.nodes.cloud.owner().active())
    assert journal().by_prompt_id(by_seed[2].prompt_id)["status"] == "cancelled"
    assert len(fake.tasks) == 2


def test_a_finished_task_sent_ahead_is_never_lost(queue, fake):
    """Its prompt deleted after its task ended (or ComfyUI restarted): the journal has it whole, and the same prompt
    queued again, in a new ComfyUI, takes its results without paying again."""
    first, second, by_seed = two_queued(queue, fake)
    fake.finish(by_seed[2])
    registry = core("run.ahead").ahead()
    assert until(lambda: all(e.state == "ready" for e in registry.entries.values()))
    assert queue.prompt_queue.delete_queue_item(lambda item: item[1] == second)
    assert until(lambda: not registry.entries)
    rec = journal().by_prompt_id(by_seed[2].prompt_id)
    assert rec["status"] == "succeeded" and rec["result_url"]
    finish_all(fake)
    assert until(lambda: queue.done(first))
    core("run.ahead").reset()   # a new ComfyUI process, its cache empty
    queue.cache = mini_comfy.Cache()
    again = queue.post(prompt(2))
    assert until(lambda: queue.done(again))
    results, _ui = queue.results[again]
    assert results["10"][6] == by_seed[2].prompt_id and len(fake.tasks) == 2


def _one_running_one_ahead(queue, fake):
    """Prompt 1 running (a long cloud task), prompt 2 queued with its part sent ahead: prompt 1's id, tasks by seed."""
    fake.task_opts["run_s"] = LONG_S
    first = queue.post(prompt(1))
    assert until(lambda: len(fake.tasks) == 1)
    queue.post(prompt(2))
    assert until(lambda: len(fake.tasks) == 2)
    return first, {seed_of(t): t for t in fake.tasks.values()}


def test_comfyui_shutting_down_cancels_the_tasks_sent_ahead(queue, fake):
    first, by_seed = _one_running_one_ahead(queue, fake)
    pack.nodes.ahead.shutdown()   # what atexit runs
    assert fake.status_of(by_seed[2])[0] == 5
    assert journal().by_prompt_id(by_seed[2].prompt_id)["status"] == "cancelled"
    queue.prompt_queue.wipe_queue()
    finish_all(fake)
    assert until(lambda: queue.done(first))


@pytest.mark.parametrize("before", ["default", "a handler"])
def test_sigterm_cancels_the_tasks_sent_ahead_then_ends_comfyui_as_it_did(queue, fake, monkeypatch, before):
    """A service manager, a container's stop or a desktop app end ComfyUI with SIGTERM, which (unlike Ctrl+C) runs no
    atexit: the tasks sent ahead ran on, paid, for prompts that will never run (tests/test_e2e_queue.py). The pack's
    handler cancels them, then hands the signal on: to the handler there was, or the default (the process ends)."""
    import os
    import signal
    installed, handed = {}, []
    previous = signal.SIG_DFL if before == "default" else (lambda signum, frame: handed.append(("previous", signum)))
    monkeypatch.setattr(signal, "getsignal", lambda signum: installed.get(signum, previous))
    monkeypatch.setattr(signal, "signal", lambda signum, handler: installed.__setitem__(signum, handler))
    monkeypatch.setattr(os, "kill", lambda pid, signum: handed.append(("kill", pid, signum)))
    pack.nodes.ahead.catch_sigterm()
    handler = installed[signal.SIGTERM]
    assert callable(handler)
    first, by_seed = _one_running_one_ahead(queue, fake)
    handler(signal.SIGTERM, None)
    assert fake.status_of(by_seed[2])[0] == 5
    assert journal().by_prompt_id(by_seed[2].prompt_id)["status"] == "cancelled"
    if before == "default":   # the default again, and the signal sent again: the process ends as it would have
        assert installed[signal.SIGTERM] == signal.SIG_DFL and handed == [("kill", os.getpid(), signal.SIGTERM)]
    else:
        assert handed == [("previous", signal.SIGTERM)]
    queue.prompt_queue.wipe_queue()
    finish_all(fake)
    assert until(lambda: queue.done(first))


def test_sigterm_ignored_or_not_from_python_is_left_alone(monkeypatch):
    import signal
    installed = {}
    for before in (signal.SIG_IGN, None):
        monkeypatch.setattr(signal, "getsignal", lambda signum, b=before: b)
        monkeypatch.setattr(signal, "signal", lambda signum, handler: installed.__setitem__(signum, handler))
        pack.nodes.ahead.catch_sigterm()
        assert installed == {}


def test_the_setting_turns_it_off_and_the_environment_wins(monkeypatch):
    import asyncio
    routes, config = pack.nodes.routes, core("config")

    class Req:
        def __init__(self, body):
            self.body = body

        async def json(self):
            return self.body
    res = asyncio.run(routes.post_config(Req({"send_ahead": "0"})))
    assert res.status == 200 and json.loads(res.body)["send_ahead"] == 0
    assert config.send_ahead_slots() == 0
    asyncio.run(routes.post_config(Req({"send_ahead": "6"})))
    assert config.send_ahead_slots() == 6
    monkeypatch.setenv("GPUGEEK_SEND_AHEAD", "off")
    assert config.send_ahead_slots() == 0 and config.load_config().public()["send_ahead_env"] is True
    asyncio.run(routes.post_config(Req({"send_ahead": str(config.SEND_AHEAD_DEFAULT)})))
    monkeypatch.delenv("GPUGEEK_SEND_AHEAD")
    assert config.send_ahead_slots() == config.SEND_AHEAD_DEFAULT and "send_ahead" not in config.load_settings()


def test_a_whole_workflow_queued_goes_ahead_and_its_output_nodes_show_its_files(queue, fake, monkeypatch):
    monkeypatch.setenv("GPUGEEK_WORKFLOW_ID", WF)
    fake.task_opts["run_s"] = LONG_S
    first = queue.post(prompt(1))
    assert until(lambda: len(fake.tasks) == 1)
    downloaded = {k: v for k, v in prompt(5).items() if k not in ("10", "12")}
    downloaded["9"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "cat", "images": ["8", 0]}}
    cue = when(lambda: len(fake.tasks) == 2, lambda: finish_all(fake), limit=8)
    second = queue.post(downloaded, {"gpugeek_whole_workflow": True})
    assert until(lambda: queue.done(first) and queue.done(second), 60)
    assert cue["met"], "the whole workflow was not sent ahead"
    assert not isinstance(queue.results[second], BaseException), queue.results[second]
    task = next(t for t in fake.tasks.values() if seed_of(t) == 5)
    assert "9" in task.prompt and journal().by_prompt_id(task.prompt_id)["sent_ahead"] is True
    shown = [e for nid, e, _ in mini_comfy.SHOWN if nid == "9"]
    assert shown and shown[0]["filename"].startswith("cat")


def test_files_of_a_part_ahead_removed_are_fetched_again_never_paid_again(queue, fake):
    import shutil
    first, second, by_seed = two_queued(queue, fake)
    fake.finish(by_seed[2])
    registry = core("run.ahead").ahead()
    assert until(lambda: all(e.state == "ready" for e in registry.entries.values()))
    shutil.rmtree(core("config").data_dir() / "ahead")   # by hand, or another ComfyUI's clean-up
    finish_all(fake)
    assert until(lambda: queue.done(first) and queue.done(second))
    results, _ui = queue.results[second]
    assert results["10"][6] == by_seed[2].prompt_id and len(fake.tasks) == 2
    assert results["10"][0].shape == (1, 64, 64, 3)


def test_a_prompt_comfyui_refuses_after_the_handler_ran_cancels_its_part(queue, fake):
    """ComfyUI validates a prompt after its on_prompt handlers: one it refuses (400) never runs, so its part sent ahead
    is cancelled when POST /prompt answers."""
    import asyncio
    from types import SimpleNamespace
    from aiohttp import web
    fake.task_opts["run_s"] = LONG_S
    first = queue.post(prompt(1))
    assert until(lambda: len(fake.tasks) == 1)

    async def post_prompt(request):   # ComfyUI's handler: the on_prompt handlers, then a validation that refuses
        body = PromptServer.instance.trigger_on_prompt({"prompt": prompt(2), "client_id": "t", "extra_data": {}})
        assert "gpugeek_ahead" in body["extra_data"]
        return web.json_response({"error": "invalid prompt", "node_errors": {}}, status=400)
    res = asyncio.run(pack.nodes.ahead.cancel_if_refused(SimpleNamespace(method="POST", path="/api/prompt"),
                                                         post_prompt))
    assert res.status == 400
    assert core("run.ahead").ahead().entries == {}
    assert until(lambda: len(pack.nodes.cloud.owner().active()) == 1)   # only the running prompt's task is left
    assert [seed_of(t) for t in fake.running_tasks()] == [1]
    finish_all(fake)
    assert until(lambda: queue.done(first))
    assert until(lambda: not pack.nodes.cloud.owner().active())
    for t in fake.tasks.values():
        if seed_of(t) == 2:
            assert fake.status_of(t)[0] == 5 and journal().by_prompt_id(t.prompt_id)["status"] == "cancelled"


def test_a_part_whose_prompt_never_reaches_comfyui_s_queue_is_cancelled(queue, fake, monkeypatch):
    """A prompt planned but never queued (a script calling the handlers, a refusal not seen by the middleware): once
    NOT_QUEUED_GRACE_S passed without ComfyUI's queue showing it, its part is cancelled."""
    monkeypatch.setattr(core("run.ahead"), "NOT_QUEUED_GRACE_S", 0.0)
    fake.task_opts["run_s"] = LONG_S
    first = queue.post(prompt(1))
    assert until(lambda: len(fake.tasks) == 1)
    body = PromptServer.instance.trigger_on_prompt({"prompt": prompt(2), "client_id": "t", "extra_data": {}})
    assert "gpugeek_ahead" in body["extra_data"]   # sent ahead, never put in the queue
    assert until(lambda: core("run.ahead").ahead().entries == {})
    assert until(lambda: len(pack.nodes.cloud.owner().active()) == 1)
    assert [seed_of(t) for t in fake.running_tasks()] == [1]
    finish_all(fake)
    assert until(lambda: queue.done(first))
