"""End to end, a queue of prompts (issue 39) in a real ComfyUI with the pack, against the GPUGeek fake (its own process)
whose tasks run on a second real ComfyUI, each held there first (the fake's ``hold_s``: a cloud task of a few seconds).
Four prompts queued back to back are all on the platform before the first of their tasks ends (sent ahead), and one
after the other with sending ahead off (the contrast: the first fails without the change); the same prompt queued again
is paid once; a prompt deleted from the queue, Stop, a queue cleared then Stop, ComfyUI killed and started again while a
finished part waits, ComfyUI shut down (Ctrl+C, SIGTERM): nothing left running, nothing paid twice, nothing finished
lost. The money-and-files invariants (tests/invariants.py) are checked after each test (tests/conftest.py). Skipped
unless COMFYUI_DIR is set (see tests/test_e2e_comfyui.py). GPUGEEK_SEND_AHEAD in the environment wins over the pack's
setting: set to 0, every test but the contrast fails (what the queue does without the change)."""
from __future__ import annotations

import io
import itertools
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import requests
from PIL import Image

import real_comfyui
from real_comfyui import COMFY, PY, ROOT, comfyui_command, stop, unwatch, watch
from test_e2e_comfyui import KEY, WF, free_port, wait_http

pytestmark = pytest.mark.skipif(not COMFY, reason="COMFYUI_DIR is not set")

# How long the fake holds each task before running it on the cloud ComfyUI: long enough that four prompts queued back
# to back are all posted (and their parts sent ahead) while the first one's task still runs, on a busy 2-core machine.
HOLD_S = 4.0
# A task that must still be running when the test acts on it (deleted, cleared, stopped, killed): well past the few
# seconds a queue of four takes to post and send ahead here.
LONG_HOLD_S = 15.0
# A task sent ahead that must have finished while the prompt before it still runs.
SHORT_HOLD_S = 0.5
# How long a test waits for a state the pack reaches by itself (a cancel after a delete: the pack's bar is a second,
# its queue watcher looks every 0.25 s; a journal write; ComfyUI reaching a prompt). Only the end state is asserted.
SETTLE_S = 10.0
# How long a queue of prompts may take to end here (CPU-only ComfyUI on a shared machine).
QUEUE_END_S = 180.0
# How long ComfyUI may take to end after Ctrl+C or SIGTERM (the pack gives its cancels 5 s: nodes/ahead.py).
SHUTDOWN_S = 30.0
_seeds = itertools.count(int(time.time()) % 100000 * 100)   # fresh seeds: a cloud prompt never seen in this stack


@pytest.fixture(scope="module")
def qstack(tmp_path_factory):
    """A local ComfyUI with the pack -> the GPUGeek fake -> a real ComfyUI as the cloud; the local one can be killed and
    started again (``restart``) with the same user folder (the journal) and output folder."""
    tmp = tmp_path_factory.mktemp("e2e-queue")
    cloud_port, fake_port = free_port(), free_port()
    procs: dict = {}

    def start(name, args, env=None, cwd=None):
        # never the pack's folder of a test (tests/conftest.py sets GPUGEEK_HOME for each): its journal is under ``home``
        base = {k: v for k, v in os.environ.items() if k != "GPUGEEK_HOME"}
        procs[name] = subprocess.Popen(args, stdout=open(tmp / f"{name}.log", "a"), stderr=subprocess.STDOUT, cwd=cwd,
                                       env={**base, **(env or {})})
    home = tmp / "user"
    home.mkdir()
    st = {"fake": f"http://127.0.0.1:{fake_port}", "cloud": f"http://127.0.0.1:{cloud_port}", "tmp": tmp,
          "home": home}

    def start_local():
        port = free_port()
        start("local", comfyui_command(tmp, "local", port, "--output-directory", str(tmp / "out"),
                                       "--user-directory", str(home)),
              env={"GPUGEEK_API_KEY": KEY, "GPUGEEK_BASE_URL": st["fake"]}, cwd=COMFY)
        st["local"] = f"http://127.0.0.1:{port}"
        wait_http(st["local"] + "/object_info/GPUGeekCloudExecute", timeout=180)

    def restart(how=signal.SIGKILL):
        """ComfyUI ended by a signal (SIGKILL: killed, no shutdown of its own; SIGINT: Ctrl+C; SIGTERM: a service manager,
        a container stopped), then started again."""
        procs["local"].send_signal(how)
        try:
            procs["local"].wait(SHUTDOWN_S)
        except subprocess.TimeoutExpired:
            procs["local"].kill()
            procs["local"].wait(20)
        start_local()
    st["restart"] = restart
    start("cloud", comfyui_command(tmp, "cloud", cloud_port, "--output-directory", str(tmp / "cloud-out"),
                                   pack=False), cwd=COMFY)
    start("fake", [PY, str(ROOT / "tests" / "fake_gpugeek.py"), "--port", str(fake_port), "--key", KEY,
                   "--comfy", st["cloud"]], cwd=str(ROOT / "tests"))
    try:
        wait_http(st["cloud"] + "/object_info/SaveImage")
        start_local()
        watched = watch(st["fake"], [home], [tmp / "out"])
        yield st
    finally:
        if "watched" in locals():
            unwatch(watched)
        stop(list(procs.values()))


@pytest.fixture(autouse=True)
def _sending_ahead_on_and_nothing_left(qstack):
    """Each test starts with sending ahead at its default, an empty queue and nothing running on the platform."""
    setting(qstack, send_ahead=4)
    yield
    hold(qstack, 0)
    setting(qstack, send_ahead=4)
    requests.post(qstack["local"] + "/queue", json={"clear": True}, timeout=10)
    requests.post(qstack["local"] + "/interrupt", timeout=10)
    until(lambda: not running(qstack) and queue_empty(qstack), QUEUE_END_S)


# ---- helpers ------------------------------------------------------------------------------------------------------
def setting(st, **kw):
    r = requests.post(st["local"] + "/gpugeek/config", json=kw, timeout=10)
    assert r.status_code == 200, r.text


def hold(st, seconds: float):
    """Tasks submitted from now on are held this long on the platform before they run."""
    requests.post(st["fake"] + "/_fake/opts", json={"hold_s": seconds}, timeout=10).raise_for_status()


def seeded(seed: int) -> dict:
    """A gateway whose cloud part reads widgets only (it goes ahead), its result saved here."""
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 48, "height": 32, "batch_size": 1, "color": 0x808080}},
            "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": seed, "strength": 0.5}},
            "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": WF, "run_on": "cloud",
                                                                   "timeout_s": 120, "image_1": ["2", 0]}},
            "11": {"class_type": "SaveImage", "inputs": {"filename_prefix": f"queue_{seed}", "images": ["10", 0]}}}


def post(st, prompt) -> str:
    r = requests.post(st["local"] + "/prompt", json={"prompt": prompt, "client_id": "e2e-queue"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["prompt_id"]


def history(st, pid: str, timeout: float = QUEUE_END_S) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        h = requests.get(f"{st['local']}/history/{pid}", timeout=10).json()
        if pid in h and h[pid].get("status", {}).get("completed") is not None:
            return h[pid]
        time.sleep(0.3)
    raise TimeoutError(pid)


def ran(st, pid: str) -> bool:
    return pid in requests.get(f"{st['local']}/history/{pid}", timeout=10).json()


def queue_empty(st) -> bool:
    q = requests.get(st["local"] + "/queue", timeout=10).json()
    return not q["queue_running"] and not q["queue_pending"]


def tasks(st) -> list:
    return requests.get(st["fake"] + "/_fake/stats", timeout=10).json()["tasks"]


def running(st) -> list:
    return [t for t in tasks(st) if t["status"] in (1, 2)]


def seed_of(task: dict):
    for node in (task.get("prompt") or {}).values():
        if isinstance(node, dict) and node.get("class_type") == "ImageAddNoise":
            return node["inputs"].get("seed")
    return None


def task_of(st, seed: int) -> dict | None:
    found = [t for t in tasks(st) if seed_of(t) == seed]
    assert len(found) <= 1, f"seed {seed} was submitted {len(found)} times"
    return found[0] if found else None


def until(cond, limit: float = SETTLE_S) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return bool(cond())


def journal_of(st, task_id) -> dict:
    recs = [r for r in real_comfyui._journal_records(st["home"]) if str(r.get("prompt_id")) == str(task_id)]
    assert len(recs) == 1, f"task {task_id}: {len(recs)} journal records"
    return recs[0]


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def saved(st, h: dict, node: str = "11") -> np.ndarray:
    (entry,) = h["outputs"][node]["images"]
    return pixels((st["tmp"] / "out" / entry.get("subfolder", "") / entry["filename"]).read_bytes())


def cloud_made(task: dict) -> np.ndarray:
    """The image the platform's task made (its result address)."""
    (urls,) = [u if isinstance(u, list) else [u] for u in (task["result_url"] or {}).values()]
    return pixels(requests.get(urls[0], timeout=30).content)


def queue_of(st, *holds) -> tuple[list, list]:
    """Prompts posted back to back (the first starts at once, the others wait in ComfyUI's queue), each task held
    ``holds[i]`` (the fake's hold is read when a task is submitted: each waits for its task before the next hold is
    set, sent ahead or not). Their seeds and prompt ids."""
    seeds = [next(_seeds) for _ in holds]
    pids = []
    for s, h in zip(seeds, holds):
        hold(st, h)
        pids.append(post(st, seeded(s)))
        assert until(lambda s=s: task_of(st, s) is not None), f"the task of seed {s} was not submitted"
    return seeds, pids


# ---- the tests ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ahead", [True, False], ids=["sent-ahead", "sending-ahead-off"])
def test_four_prompts_queued_back_to_back_run_in_the_cloud_at_once(qstack, ahead):
    """Sent ahead, the four tasks are all on the platform before the first of them ended; with sending ahead off (the
    pack's settings route, as Settings > GPUGeek saves it), each task is submitted only after the one before ended:
    ComfyUI's own one-at-a-time. Either way each prompt delivers its own task's image under names of its own."""
    setting(qstack, send_ahead=4 if ahead else 0)
    seeds = [next(_seeds) for _ in range(4)]
    hold(qstack, HOLD_S)
    pids = [post(qstack, seeded(s)) for s in seeds]
    hs = [history(qstack, p) for p in pids]
    assert [h["status"]["status_str"] for h in hs] == ["success"] * 4, [h["status"] for h in hs]
    # a task's created_ago / finished_ago are seconds before one look at the fake's clock: larger is earlier
    look = {seed_of(t): t for t in tasks(qstack)}
    got = [look.get(s) for s in seeds]
    assert all(t is not None and t["status"] == 3 for t in got)
    if ahead:
        first_end = max(t["finished_ago"] for t in got)
        assert all(t["created_ago"] > first_end for t in got), "a task was submitted only after another had ended"
    else:
        for before, after in zip(got, got[1:]):
            assert after["created_ago"] < before["finished_ago"], "sending ahead off, a task went before its turn"
    # the prompts that waited in ComfyUI's queue sent their parts at queue time (the journal says so), or none did
    assert [bool(journal_of(qstack, t["prompt_id"]).get("sent_ahead")) for t in got[1:]] == [ahead] * 3
    names = [h["outputs"]["11"]["images"][0]["filename"] for h in hs]
    assert len(set(names)) == 4
    images = [cloud_made(t) for t in got]
    for h, own, t in zip(hs, images, got):
        mine = saved(qstack, h)
        assert mine.shape == own.shape and np.abs(mine - own).max() <= 1   # 8-bit PNG, SaveImage truncates: a level
        assert all(np.abs(mine - other).max() > 1 for other in images if other is not own), "another prompt's image"
        assert journal_of(qstack, t["prompt_id"])["status"] == "succeeded"


def test_the_same_prompt_queued_again_is_paid_once(qstack):
    """A, B, B, C, B queued back to back: B's second is served by ComfyUI's cache (not sent ahead), its third by B's task
    (sent ahead once): three tasks for three cloud parts, every prompt delivers, each B the same image."""
    a, b, c = (next(_seeds) for _ in range(3))
    hold(qstack, HOLD_S)
    pids = [post(qstack, seeded(s)) for s in (a, b, b, c, b)]
    hs = [history(qstack, p) for p in pids]
    assert [h["status"]["status_str"] for h in hs] == ["success"] * 5, [h["status"] for h in hs]
    assert sorted(seed_of(t) for t in tasks(qstack) if seed_of(t) in (a, b, c)) == sorted([a, b, c])
    made = cloud_made(task_of(qstack, b))
    for i in (1, 2, 4):
        assert np.abs(saved(qstack, hs[i]) - made).max() <= 1


def test_a_prompt_deleted_from_the_queue_cancels_its_task_sent_ahead(qstack):
    """The third of four prompts deleted from ComfyUI's queue while its part runs ahead: its task is cancelled on the
    platform and journaled so; the other three deliver, nothing is left running. A fifth deleted as soon as it is
    queued leaves nothing running either."""
    seeds, pids = queue_of(qstack, LONG_HOLD_S, LONG_HOLD_S, LONG_HOLD_S, LONG_HOLD_S)
    gone = task_of(qstack, seeds[2])
    assert gone["status"] in (1, 2) and not ran(qstack, pids[2])   # running ahead, its prompt still waiting
    requests.post(qstack["local"] + "/queue", json={"delete": [pids[2]]}, timeout=10).raise_for_status()
    # a fifth deleted the moment it is queued, its part's submit perhaps still on the way: cancelled once it is there
    hasty = next(_seeds)
    requests.post(qstack["local"] + "/queue", json={"delete": [post(qstack, seeded(hasty))]},
                  timeout=10).raise_for_status()
    assert until(lambda: task_of(qstack, seeds[2])["cancelled"]), "the deleted prompt's task still runs"
    assert task_of(qstack, seeds[2])["status"] == 5
    for i in (0, 1, 3):
        h = history(qstack, pids[i])
        assert h["status"]["status_str"] == "success", h["status"]
        assert len(h["outputs"]["11"]["images"]) == 1
    assert not ran(qstack, pids[2])
    assert until(lambda: not running(qstack)), "tasks left running on the platform"
    assert until(lambda: journal_of(qstack, gone["prompt_id"]).get("status") == "cancelled"), \
        journal_of(qstack, gone["prompt_id"])
    assert [task_of(qstack, s)["status"] for s in seeds] == [3, 3, 5, 3]
    assert (task_of(qstack, hasty) or {"status": 5})["status"] == 5   # never sent, or cancelled


def test_stop_of_the_running_prompt_keeps_the_parts_of_the_prompts_after_it(qstack):
    """Stop ends the prompt ComfyUI runs, not the queue: its task is cancelled, the three prompts after it run and take
    the tasks sent ahead for them (no task submitted again)."""
    seeds, pids = queue_of(qstack, LONG_HOLD_S, HOLD_S, HOLD_S, HOLD_S)
    n = len(tasks(qstack))
    requests.post(qstack["local"] + "/interrupt", timeout=10).raise_for_status()
    assert history(qstack, pids[0])["status"]["status_str"] != "success"
    for p in pids[1:]:
        h = history(qstack, p)
        assert h["status"]["status_str"] == "success", h["status"]
        assert len(h["outputs"]["11"]["images"]) == 1
    assert until(lambda: not running(qstack)), "tasks left running on the platform"
    assert [task_of(qstack, s)["status"] for s in seeds] == [5, 3, 3, 3]
    assert len(tasks(qstack)) == n, "a prompt after the stopped one submitted its part again"


def test_a_queue_cleared_then_stop_leaves_nothing_running_and_loses_nothing_finished(qstack):
    """The first prompt runs (its task long); two parts sent ahead finished already, four still run ahead (the most at
    once) and one waits for a slot. The queue cleared, then Stop: the four running ahead and the first prompt's own task
    are cancelled, the one waiting never reaches the platform, nothing is left running; the two that finished stay
    journaled as finished with their results, and queued again they are served from those results without a new
    task."""
    seeds, pids = queue_of(qstack, LONG_HOLD_S, SHORT_HOLD_S, SHORT_HOLD_S, LONG_HOLD_S)
    assert until(lambda: all(task_of(qstack, s)["status"] == 3 for s in seeds[1:3])), "the short tasks did not end"
    more = [next(_seeds) for _ in range(4)]   # three more run ahead (four in all), the last waits for a slot
    pids += [post(qstack, seeded(s)) for s in more]
    seeds += more
    assert until(lambda: all(task_of(qstack, s) is not None for s in seeds[4:7])), "a part was not sent ahead"
    assert all(task_of(qstack, s)["status"] in (1, 2) for s in seeds[3:7]) and task_of(qstack, seeds[7]) is None
    assert not any(ran(qstack, p) for p in pids[1:])
    requests.post(qstack["local"] + "/queue", json={"clear": True}, timeout=10).raise_for_status()
    requests.post(qstack["local"] + "/interrupt", timeout=10).raise_for_status()
    h = history(qstack, pids[0])
    assert h["status"]["status_str"] != "success"
    assert until(lambda: not running(qstack)), "tasks left running on the platform after a clear and Stop"
    ends = [(task_of(qstack, s) or {}).get("status") for s in seeds]
    assert ends == [5, 3, 3, 5, 5, 5, 5, None], ends
    assert not any(ran(qstack, p) for p in pids[1:])
    for s in seeds[3:7]:
        tid = task_of(qstack, s)["prompt_id"]
        assert until(lambda: journal_of(qstack, tid).get("status") == "cancelled"), journal_of(qstack, tid)
    finished = [task_of(qstack, s) for s in seeds[1:3]]
    for t in finished:
        rec = journal_of(qstack, t["prompt_id"])
        assert rec["status"] == "succeeded" and rec.get("result_url"), rec
    # what finished is not lost: queued again, each prompt delivers its task's image with no new task
    hold(qstack, 0)
    n = len(tasks(qstack))
    for s, t in zip(seeds[1:3], finished):
        h = history(qstack, post(qstack, seeded(s)))
        assert h["status"]["status_str"] == "success", h["status"]
        assert np.abs(saved(qstack, h) - cloud_made(t)).max() <= 1
    assert len(tasks(qstack)) == n, "a finished task's prompt queued again paid for a new task"


def test_comfyui_killed_while_a_finished_part_waits_for_its_prompt_loses_nothing(qstack):
    """A part sent ahead finished while the prompt before it still ran; ComfyUI was killed before it reached its prompt
    and started again: Load Result gives that task's image by its id, and the prompt queued again delivers it with no new
    task (one payment per result)."""
    seeds, pids = queue_of(qstack, LONG_HOLD_S, SHORT_HOLD_S)
    assert until(lambda: task_of(qstack, seeds[1])["status"] == 3), "the part sent ahead did not finish"
    done = task_of(qstack, seeds[1])
    assert until(lambda: journal_of(qstack, done["prompt_id"]).get("status") == "succeeded")
    assert not ran(qstack, pids[1])
    qstack["restart"]()
    hold(qstack, 0)
    n = len(tasks(qstack))
    load = {"1": {"class_type": "GPUGeekLoadResult", "inputs": {"prompt_id": str(done["prompt_id"])}},
            "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "queue_loaded", "images": ["1", 0]}}}
    h = history(qstack, post(qstack, load))
    assert h["status"]["status_str"] == "success", h["status"]
    assert np.abs(saved(qstack, h, "2") - cloud_made(done)).max() <= 1
    h = history(qstack, post(qstack, seeded(seeds[1])))
    assert h["status"]["status_str"] == "success", h["status"]
    assert np.abs(saved(qstack, h) - cloud_made(done)).max() <= 1
    assert len(tasks(qstack)) == n, "the finished part's prompt queued again after a restart paid for a new task"
    # the first prompt's task, orphaned by the kill, ends on the platform by itself (the fixture waits for it)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_comfyui_shut_down_cancels_the_tasks_sent_ahead(qstack, how):
    """ComfyUI shut down while two queued prompts' parts run ahead (Ctrl+C in its console; SIGTERM, as a service
    manager, a container's stop or the desktop app end it): those prompts will never run, their tasks are cancelled
    and journaled so. (The prompt that was running keeps its task: its results load after a restart.)"""
    seeds, pids = queue_of(qstack, LONG_HOLD_S, LONG_HOLD_S, LONG_HOLD_S)
    assert all(task_of(qstack, s)["status"] in (1, 2) for s in seeds[1:]) and not ran(qstack, pids[1])
    qstack["restart"](how)
    ahead = [task_of(qstack, s) for s in seeds[1:]]
    assert [t["status"] for t in ahead] == [5, 5], "a task sent ahead ran on after ComfyUI shut down"
    for t in ahead:
        assert journal_of(qstack, t["prompt_id"]).get("status") == "cancelled", journal_of(qstack, t["prompt_id"])
