"""The journal: durable, readable after a crash cut a line, compacted, and the source of spend and history."""
import json
import os
import time

from conftest import core

J = core("journal")


def test_records_merge_and_survive_a_new_process(tmp_path):
    path = tmp_path / "journal.jsonl"
    j = J.Journal(path)
    key = j.begin(plan_hash="h1", workflow_id="1", gateway="g")
    j.update(key, prompt_id="42", status=J.QUEUED)
    j.update(key, status=J.SUCCEEDED, price=0.5, run_ms=1000)
    again = J.Journal(path)   # a new process reads the file
    rec = again.by_prompt_id("42")
    assert rec["status"] == "succeeded" and rec["price"] == 0.5 and rec["plan_hash"] == "h1"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_a_line_cut_mid_write_is_skipped_and_writing_goes_on(tmp_path):
    path = tmp_path / "journal.jsonl"
    j = J.Journal(path)
    key = j.begin(plan_hash="h", workflow_id="1")
    j.update(key, prompt_id="7", status=J.RUNNING)
    with open(path, "ab") as f:
        f.write(b'{"key": "' + key.encode() + b'", "status": "succ')   # the crash
    j2 = J.Journal(path)
    assert j2.by_prompt_id("7")["status"] == "running"
    j2.update(key, status=J.SUCCEEDED)
    assert J.Journal(path).by_prompt_id("7")["status"] == "succeeded"
    lines = path.read_bytes().splitlines()
    assert all(json.loads(x) for x in lines if not x.endswith(b'"succ'))


def test_compaction_keeps_every_record(tmp_path, monkeypatch):
    monkeypatch.setattr(J, "COMPACT_SLACK", 10)
    path = tmp_path / "journal.jsonl"
    j = J.Journal(path)
    keys = [j.begin(plan_hash="h", workflow_id="1") for _ in range(5)]
    for i in range(30):
        j.update(keys[i % 5], status=J.RUNNING, run_ms=i)
    assert len(path.read_bytes().splitlines()) < 30
    assert {r["key"] for r in J.Journal(path).tasks()} == set(keys)


def test_spent_today_and_history_median(tmp_path):
    j = J.Journal(tmp_path / "j.jsonl")
    for price, ms in ((0.2, 1000), (0.4, 3000), (0.3, 2000)):
        k = j.begin(plan_hash="same")
        j.update(k, status=J.SUCCEEDED, price=price, run_ms=ms, queue_ms=10)
    k = j.begin(plan_hash="same")
    j.update(k, status=J.FAILED, price=0.1)
    h = j.history("same")
    assert h["runs"] == 3 and h["price"] == 0.3 and h["run_ms"] == 2000 and h["run_ms_spread"] > 0
    assert abs(j.spent_today() - 1.0) < 1e-9
    assert j.spent_today(time.time() + 3 * 86400) == 0


def test_upload_cache_expiry(tmp_path):
    c = J.UploadCache(tmp_path / "u.jsonl")
    c.put("d1", "https://x/a.png", "2099-01-01 00:00:00")
    c.put("d2", "https://x/b.png", time.time() + 60)   # expires within the safety margin
    assert c.get("d1") == "https://x/a.png" and c.get("d2") is None
    assert J.UploadCache(tmp_path / "u.jsonl").get("d1") == "https://x/a.png"
    assert J.parse_expiry("1999999999000") == 1999999999.0 and J.parse_expiry("garbage") is None


def test_two_writers_lose_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(J, "COMPACT_SLACK", 5)
    path = tmp_path / "journal.jsonl"
    a, b = J.Journal(path), J.Journal(path)     # ComfyUI and the command line
    ka = a.begin(plan_hash="a")
    time.sleep(0.01)
    kb = b.begin(plan_hash="b")
    for i in range(20):                           # enough for a to compact
        a.update(ka, run_ms=i)
    assert {r["key"] for r in J.Journal(path).tasks()} == {ka, kb}


def test_estimate_by_exact_part_then_shape_then_workflow():
    """A new seed or prompt text every run (ComfyUI's default "randomize") still finds a price and time."""
    graph = core("plan")
    a = {"3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "model": ["4", 0]}},
         "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
         "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}}}
    b = json.loads(json.dumps(a))
    b["3"]["inputs"]["seed"], b["6"]["inputs"]["text"] = 987654, "a dog at dusk"
    c = json.loads(json.dumps(a))
    c["3"]["inputs"]["steps"] = 40  # a different cost: another shape
    assert graph.shape_hash(a) == graph.shape_hash(b) != graph.shape_hash(c)
    assert graph.plan_hash(a) != graph.plan_hash(b)
    j = J.Journal()
    for price, run_ms in ((0.2, 3000), (0.3, 3400), (0.25, 3200)):
        k = j.begin(plan_hash=graph.plan_hash(a), shape_hash=graph.shape_hash(a), workflow_id="7")
        j.update(k, status="succeeded", price=price, run_ms=run_ms)
    exact = j.estimate(graph.plan_hash(a), graph.shape_hash(a), "7")
    assert exact["basis"] == "exact" and exact["runs"] == 3 and exact["price"] == 0.25
    shape = j.estimate(graph.plan_hash(b), graph.shape_hash(b), "7")
    assert shape["basis"] == "shape" and shape["run_ms"] == 3200
    other = j.estimate(graph.plan_hash(c), graph.shape_hash(c), "7")
    assert other["basis"] == "workflow"
    assert j.estimate(graph.plan_hash(c), graph.shape_hash(c), "8") is None


def test_another_size_or_step_count_scales_the_estimate():
    """The same graph at twice the steps (or pixels) is expected to take about twice as long and cost twice
    as much; a part that names no literal size or steps is not scaled (no estimate rather than a guess)."""
    graph = core("plan")
    a = {"3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "model": ["4", 0],
                                                    "latent_image": ["5", 0]}},
         "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
         "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}}}
    j = J.Journal()
    for price, run_ms in ((0.2, 3000), (0.2, 3000), (0.4, 3400)):
        k = j.begin(plan_hash=graph.plan_hash(a), shape_hash=graph.shape_hash(a), form_hash=graph.form_hash(a),
                    work=graph.work_units(a), workflow_id="7")
        j.update(k, status="succeeded", price=price, run_ms=run_ms)
    b = json.loads(json.dumps(a))
    b["3"]["inputs"]["steps"], b["5"]["inputs"]["width"] = 40, 1024   # 2 x steps, 2 x pixels
    assert graph.form_hash(b) == graph.form_hash(a) and graph.shape_hash(b) != graph.shape_hash(a)
    est = j.estimate(graph.plan_hash(b), graph.shape_hash(b), "7", form_hash=graph.form_hash(b),
                     work=graph.work_units(b))
    assert est["basis"] == "scaled" and est["runs"] == 3
    assert est["run_ms"] == 4 * 3000 and abs(est["price"] - 4 * 0.2) < 1e-9
    c = json.loads(json.dumps(b))
    c["5"]["inputs"]["width"] = ["9", 0]  # a size computed elsewhere: the work cannot be named
    assert graph.work_units(c) is None
    assert j.estimate(graph.plan_hash(c), graph.shape_hash(c), "7", form_hash=graph.form_hash(c),
                      work=graph.work_units(c))["basis"] == "workflow"


# Names as a cloud or a disk gives them: a file name that is not UTF-8 (Linux lists it with surrogates), emoji,
# Chinese, a quote and a control character.
ODD_NAMES = ["caf\udce9.safetensors", "\ud800lone.pt", "😀 smile.safetensors", "模型/风格.safetensors",
             'a "quoted"\tname.ckpt']


def test_any_name_a_cloud_or_a_disk_gives_is_journaled_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(J, "COMPACT_SLACK", 3)
    path = tmp_path / "journal.jsonl"
    j = J.Journal(path)
    key = j.begin(plan_hash="h", gateway=ODD_NAMES[2])
    j.update(key, status=J.FAILED, error=f"ckpt_name: '{ODD_NAMES[0]}' not in the list", names=ODD_NAMES)
    again = J.Journal(path).get(key)
    assert again["names"] == ODD_NAMES and again["gateway"] == ODD_NAMES[2] and ODD_NAMES[0] in again["error"]
    assert "😀" in path.read_text("utf-8")   # a line that can be UTF-8 is written as it reads
    for i in range(6):   # compaction writes every record again
        j.update(key, run_ms=i)
    assert J.Journal(path).get(key)["names"] == ODD_NAMES and len(path.read_bytes().splitlines()) < 8
