"""Test setup: the pack is imported the way ComfyUI imports it, from a folder whose name has a hyphen.

ComfyUI loads a custom node folder as a package named after the folder (``comfyui-gpugeek``), so every
import inside the pack must be relative. The tests do the same: ``pack`` below is that package, and the
core is ``pack.offload``. The pack folder itself is never put on ``sys.path``.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
PACK_NAME = "comfyui-gpugeek"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

# A distinctive key: every test that can produce output searches it for this string (tests/test_secrets.py).
SECRET_KEY = "sk-gg-SECRET-7f3a9c2e1d5b4a60"


def load_pack():
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    import comfy_stubs
    comfy_stubs.install()
    spec = importlib.util.spec_from_file_location(PACK_NAME, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = mod
    spec.loader.exec_module(mod)
    return mod


def core(name: str):
    """A core module, e.g. ``core("plan")`` -> ``comfyui-gpugeek.offload.plan``."""
    load_pack()
    return importlib.import_module(f"{PACK_NAME}.offload.{name}")


def said(key: str, lang: str = "zh", **values) -> str:
    """A sentence of ``locales/<lang>/server.json`` as the pack says it; with values left out, the part
    before the first of them (for "contains" checks). Tests hold no text of their own in another language."""
    texts = core("texts")
    template = texts.lookup(key, lang) or ""
    head = template
    for m in re.finditer(r"{(\w+)}", template):
        if m.group(1) not in values:
            head = template[:m.start()]
            break
    out = texts.text(key, lang, **values) if head == template else head.format(**values)
    assert out.strip(), f"{key}: give the values its sentence starts with"  # an empty part matches anything
    return out


def until(cond, limit: float = 20.0) -> bool:
    """Wait until ``cond()`` holds; ``limit`` seconds is a safety for code that broke, not a bar. Whether it
    holds."""
    import time
    end = time.monotonic() + limit
    while not cond() and time.monotonic() < end:
        time.sleep(0.01)
    return bool(cond())


def when(cond, act, limit: float = 20.0) -> dict:
    """In a thread: once ``cond()`` holds, ``act()``. Instead of racing a clock, a test lets one thing happen
    only after another (a task ends once the test saw what must come before). After ``limit`` seconds, a safety
    for code that broke, ``act`` runs anyway; the answer's ``met`` says whether ``cond`` came first."""
    import threading
    out = {"met": False}

    def watch():
        out["met"] = until(cond, limit)
        act()
    threading.Thread(target=watch, daemon=True).start()
    return out


def command_line():
    """The command line's module (``commandline/main.py``), on the same core as the nodes."""
    load_pack()
    return importlib.import_module(f"{PACK_NAME}.commandline.main")


class KeyWatch(logging.Handler):
    """Collects every log record of the whole suite so test_secrets can search them."""

    records: list[str] = []

    def emit(self, record):
        try:
            KeyWatch.records.append(self.format(record))
        except Exception:
            KeyWatch.records.append(str(record.msg))


_watch = KeyWatch(level=logging.DEBUG)
logging.getLogger().addHandler(_watch)
logging.getLogger().setLevel(logging.DEBUG)
PRODUCED: list[str] = []   # texts tests produce (exception strings, reprs, files) for the key search


def produced(text) -> None:
    PRODUCED.append(str(text))


@pytest.fixture(scope="session", autouse=True)
def _no_key_anywhere():
    """At the end of the session, whatever ran and in whatever order: no log record of the whole suite and no
    text a test handed to :func:`produced` holds the key (a leak fails the run as this fixture's error)."""
    logging.getLogger("gpugeek.tests").debug("the key watch is wired")
    yield
    assert any("the key watch is wired" in r for r in KeyWatch.records), "the log watch is not wired"
    hits = [r[:200] for r in KeyWatch.records + PRODUCED if SECRET_KEY in r]
    assert hits == [], f"the API key appears in {len(hits)} log record(s) or produced text(s)"


@pytest.fixture(scope="session", autouse=True)
def _no_unread_task_error():
    """At the end of the session: no asyncio task failed with an error nobody read. asyncio logs "Task exception
    was never retrieved" whenever the garbage collector frees such a task, in whatever thread and test that is;
    on Python 3.11.7 formatting that traceback inside another parse broke it ("AST constructor recursion depth
    mismatch"): an unrelated test failed, on a loaded machine."""
    yield
    import gc
    gc.collect()
    unread = [r[:300] for r in KeyWatch.records if "exception was never retrieved" in r]
    assert unread == [], f"{len(unread)} asyncio task(s) failed with an error nobody read: {unread}"


@pytest.fixture(autouse=True)
def _gpugeek_home(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUGEEK_HOME", str(tmp_path / "gpugeek-home"))
    # the owner's pause between cancel rounds (5 s in use) kept short, so given-up cancels end quickly
    monkeypatch.setattr(core("run.task"), "CANCEL_PAUSE_S", 0.05)
    for var in ("GPUGEEK_API_KEY", "GPUGEEK_BASE_URL", "GPUGEEK_WORKFLOW_ID", "GPUGEEK_DAILY_LIMIT", "GPUGEEK_TARGET",
                "GPUGEEK_TRANSFER", "GPUGEEK_WHOLE_WORKFLOW", "GPUGEEK_SEND_AHEAD"):
        monkeypatch.delenv(var, raising=False)
    yield


@pytest.fixture
def env(fake, monkeypatch, tmp_path):
    """The pack in the ComfyUI stand-in, its key and base URL pointing at the GPUGeek fake, the stand-in's
    interrupt flag and sent messages cleared; returns the node classes (files override it where they need)."""
    import mini_comfy
    from server import PromptServer
    import comfy.model_management as mm
    monkeypatch.setenv("GPUGEEK_API_KEY", SECRET_KEY)
    monkeypatch.setenv("GPUGEEK_BASE_URL", fake.base_url)
    classes = comfy_env(tmp_path)
    mm.interrupt_flag = False
    PromptServer.instance.progress_texts.clear()
    PromptServer.instance.sent.clear()
    mini_comfy.SAVED.clear()
    mini_comfy.SHOWN.clear()
    return classes


@pytest.fixture
def fake(request, monkeypatch):
    """The GPUGeek fake; after the test, the money-and-files invariants (tests/invariants.py) over what it took, the
    journal and the files the output nodes showed (a test that breaks them on purpose says so with the mark
    ``breaks_invariants``)."""
    from fake_gpugeek import FakeGPUGeek
    import mini_comfy
    mini_comfy.SHOWN.clear()
    # as on the platform, each task is picked up a little later than the last and runs a little longer or
    # shorter (seeded: the same draws every run of a test; a test that needs exact times sets them to 0)
    srv = FakeGPUGeek(api_key=SECRET_KEY, queue_jitter_s=0.03, run_jitter=0.10, seed=33).start()
    yield srv
    try:
        if request.node.get_closest_marker("breaks_invariants") is None and srv.tasks:
            check_invariants(srv)
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def _real_invariants():
    """After every end-to-end test in a real ComfyUI: the invariants of each live stack (tests/real_comfyui.py)."""
    yield
    real = sys.modules.get("real_comfyui")
    if real is not None and real.STACKS:
        bad = real.check_stacks()
        assert bad == [], "the money-and-files invariants broke in a real ComfyUI: " + "; ".join(bad)


def check_invariants(fake) -> None:
    """The invariants after a test's prompts (the task owner's jobs ended first: a cancel may still be under way). A
    test that only called the platform's API (the client's tests) wrote no journal: nothing of the pack's ran."""
    import invariants
    import mini_comfy
    owner = core("owner").owner()
    owner.drain(15)
    journal = core("journal").Journal()
    journal.store.refresh()
    if not journal.store.all() and not mini_comfy.SHOWN:
        return
    cfg = core("config").load_config()
    bad = invariants.money(invariants.fake_tasks(fake), journal.store.all(), cfg.daily_limit)
    bad += invariants.files(mini_comfy.SHOWN)
    assert bad == [], "the money-and-files invariants broke: " + "; ".join(bad) + f" (calls: {fake.calls[-12:]})"


@pytest.fixture
def no_env_proxy(monkeypatch):
    """No proxy from the environment (the machine's own cleared); the monkeypatch, to set one."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "WS_PROXY", "WSS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def comfy_env(tmp_path):
    """Point the ComfyUI stand-ins at fresh folders and register the node classes; returns the classes."""
    import os

    load_pack()
    import folder_paths
    import mini_comfy
    import nodes
    folder_paths.base = str(tmp_path / "comfy")
    for d in ("input", "output", "temp", "user"):
        os.makedirs(os.path.join(folder_paths.base, d), exist_ok=True)
    classes = mini_comfy.stub_classes()
    classes.update(sys.modules[PACK_NAME].NODE_CLASS_MAPPINGS)
    nodes.NODE_CLASS_MAPPINGS.clear()
    nodes.NODE_CLASS_MAPPINGS.update(classes)
    return classes


class JsonRequest:
    """A stand-in for aiohttp's request to a route that reads a JSON body."""

    def __init__(self, body):
        self.body = body

    async def json(self):
        return self.body
