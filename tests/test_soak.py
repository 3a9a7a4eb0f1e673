"""A reduced soak (the full one: python bench/soak.py --prompts 200): every result right, no duplicate
submission, nothing lost, and no growth in file handles, sockets or threads."""
import os
import sys

from conftest import comfy_env, SECRET_KEY, load_pack

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))


def test_soak_reduced(fake, monkeypatch, tmp_path):
    pack = load_pack()
    from soak import soak
    monkeypatch.setenv("GPUGEEK_API_KEY", SECRET_KEY)
    monkeypatch.setenv("GPUGEEK_BASE_URL", fake.base_url)
    classes = comfy_env(tmp_path)
    r = soak(30, fake=fake, classes=classes, pack=pack)
    assert r["prompts"] == 30 and r["tasks"] == 60 and r["submits"] == 60 and r["lost"] == 0
    assert r["journal_tasks"] == 60
    assert r["after"]["fds"] <= r["before"]["fds"] + 2
    assert r["after"]["sockets"] <= r["before"]["sockets"] + 1
    assert r["after"]["threads"] <= r["before"]["threads"] + 1
