"""Queued prompts' cloud parts sent ahead, on ComfyUI's side (the core: offload/run/ahead.py).

At queue time (the on_prompt handler, after planning: :func:`offer`), when ComfyUI's queue is busy (the prompt will
wait: :func:`busy`), each leading gateway whose part depends on nothing local still to run (its plan has no crossings
in: it reads files and widgets only; a whole workflow) is sent ahead, unless ComfyUI will serve it from its cache. The
handler does not know the prompt's id (ComfyUI gives it after), so the prompt is marked in its ``extra_data``
(``gpugeek_ahead``: a token; extra_data is not part of what ComfyUI caches on), and ``PromptQueue.put`` is wrapped to
learn its id and number the moment it is queued (:func:`watch_puts`).

A watcher thread reads ComfyUI's queue (``PromptServer.instance.prompt_queue.get_current_queue_volatile``, in
ComfyUI 0.3.64 and 0.33.0 alike) every WATCH_EVERY_S: a part whose prompt is neither queued nor running any more
(deleted, the queue cleared, Stop or a failure ended it before its gateway took the task, or ComfyUI served the gateway
from its cache) is cancelled. A prompt that ComfyUI refused after the handler ran (its validation failed) cancels its
parts when POST /prompt answers (:func:`cancel_if_refused`); ComfyUI's shutdown cancels them all (atexit for Ctrl+C and
a normal exit; SIGTERM, which runs no atexit, through :func:`catch_sigterm`)."""
from __future__ import annotations

import atexit
import contextvars
import logging
import os
import shutil
import signal
import threading
import time
import uuid

from ..offload import config, errors
from ..offload.plan import GATEWAY, PLAN_INPUT, GatewayPlan
from ..offload.run import ahead as core
from ..offload.run import gateway as run_gateway
from . import cloud, comfy

log = logging.getLogger("gpugeek.ahead")
TOKEN_KEY = "gpugeek_ahead"   # extra_data: the mark of a prompt with parts sent ahead
# How often ComfyUI's queue is read: a deleted prompt's task is cancelled within this (the bar: within a second).
WATCH_EVERY_S = 0.25
# At ComfyUI's shutdown, how long the owner is given to cancel the tasks sent ahead (each cancel is one call).
SHUTDOWN_CANCEL_S = 5.0
# The gateway's inputs that must be values (not links to local nodes) for its part to go ahead.
WIDGETS = ("workflow_id", "run_on", "timeout_s", "target", "runs", "transfer")
PROMPT_PATHS = ("/prompt", "/api/prompt")

_request_tokens: contextvars.ContextVar = contextvars.ContextVar("gpugeek_ahead_tokens", default=None)
_watcher: list = []
_watch_lock = threading.Lock()


def _is_link(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


def offer(json_data: dict, local_prompt: dict) -> int:
    """Send ahead the parts of a queued prompt that can go; how many went (or wait for a slot)."""
    slots = config.send_ahead_slots()
    if slots <= 0 or not busy():   # idle: the prompt runs now (and its gateway's run is remembered then)
        return 0
    from .gateway import GPUGeekCloudExecute, files_digest, signature
    registry = core.ahead()
    registry.tell = tell
    token = uuid.uuid4().hex[:16]
    sent = 0
    for nid, node in local_prompt.items():
        if not isinstance(node, dict) or node.get("class_type") != GATEWAY:
            continue
        inputs = node.get("inputs") or {}
        raw = inputs.get(PLAN_INPUT)
        if not isinstance(raw, str) or any(_is_link(inputs.get(k)) for k in WIDGETS):
            continue
        try:
            plan = GatewayPlan.from_json(raw)
        except (TypeError, ValueError):
            continue
        if not plan.leads or plan.crossings or GPUGeekCloudExecute.VALIDATE_INPUTS(raw) is not True:
            continue
        sig = signature(raw, **{k: inputs[k] for k in WIDGETS if k in inputs})
        if registry.cached(nid, sig):   # ComfyUI will serve it from its cache: nothing to pay for
            continue
        label = cloud.node_label("GPUGeek Cloud Execute", nid)
        try:
            if run_gateway.send_ahead(cloud.owner(), plan, inputs=inputs, place=cloud.place(),
                                      files_digest=files_digest(plan), token=token, slots=slots, label=label,
                                      node=str(nid), data_dir=config.data_dir(), workflow=_workflow(json_data)):
                sent += 1
        except errors.GPUGeekError as e:   # no workflow id, no target: the gateway says so when ComfyUI reaches it
            log.info("GPUGeek: %s not sent ahead: %s", label, e)
        except Exception:   # noqa: BLE001 - not sent ahead: the gateway runs it when ComfyUI reaches it, as before
            log.warning("GPUGeek: %s could not be sent ahead", label, exc_info=True)
    if sent:
        watch_puts(getattr(comfy.server(), "prompt_queue", None))
        if not isinstance(json_data.get("extra_data"), dict):
            json_data["extra_data"] = {}
        json_data["extra_data"][TOKEN_KEY] = token
        mine = _request_tokens.get()
        if mine is not None:
            mine.append(token)
        ensure_watcher()
    return sent


def _workflow(json_data: dict):
    """The editor's workflow the prompt carries (its templates name their models' addresses: offload/run/models.py)."""
    extra = json_data.get("extra_data") if isinstance(json_data, dict) else None
    info = extra.get("extra_pnginfo") if isinstance(extra, dict) else None
    return info.get("workflow") if isinstance(info, dict) else None


def watch_puts(prompt_queue) -> None:
    """ComfyUI's ``PromptQueue.put`` (the same in 0.3.64 and 0.33.0: one item, (number, prompt id, prompt, extra_data,
    outputs, ...)) wrapped once, so a prompt with parts sent ahead is known queued (with its id) the moment it is,
    rather than at the watcher's next look (a prompt deleted before that look would otherwise wait out the grace)."""
    if prompt_queue is None or getattr(prompt_queue, "_gpugeek_puts", False):
        return
    put = prompt_queue.put

    def put_and_tell(item, *args, **kwargs):
        out = put(item, *args, **kwargs)
        try:
            extra = item[3] if len(item) > 3 else None
            token = extra.get(TOKEN_KEY) if isinstance(extra, dict) else None
            if token:
                core.ahead().queued(token, str(item[1]), item[0])
        except Exception:   # noqa: BLE001 - the watcher's next look finds it
            log.debug("GPUGeek: could not read a queued prompt", exc_info=True)
        return out
    prompt_queue.put = put_and_tell
    prompt_queue._gpugeek_puts = True


def busy() -> bool:
    """Whether ComfyUI's queue holds a prompt (running or waiting): a prompt queued now waits for it, and its cloud part
    gains by going ahead. A prompt queued on an idle ComfyUI starts at once: its gateway submits as it always did."""
    prompt_queue = getattr(comfy.server(), "prompt_queue", None)
    try:
        return prompt_queue is not None and prompt_queue.get_tasks_remaining() > 0
    except Exception:   # noqa: BLE001 - a queue we cannot read: nothing goes ahead
        return False


def tell(record: dict) -> None:
    """The editor's message of a part sent ahead (web/gpugeek_ahead.js), to every editor watching this ComfyUI."""
    s = comfy.server()
    if s is not None:
        try:
            s.send_sync("gpugeek.ahead", record, None)
        except Exception:   # noqa: BLE001
            pass


def queued_now(prompt_queue) -> dict:
    """token -> (prompt id, number) of every prompt ComfyUI's queue holds, running or waiting."""
    read = getattr(prompt_queue, "get_current_queue_volatile", None) or prompt_queue.get_current_queue
    running, waiting = read()
    out = {}
    for item in list(running) + list(waiting):
        extra = item[3] if len(item) > 3 else None
        token = extra.get(TOKEN_KEY) if isinstance(extra, dict) else None
        if token:
            out[token] = (str(item[1]), item[0])
    return out


def poll_once(prompt_queue=None) -> int:
    """One look at ComfyUI's queue: the parts of prompts that left it without taking them are cancelled; waiting parts
    go when a slot is free. How many were cancelled."""
    registry = core.ahead()
    if not registry.entries:
        return 0
    if prompt_queue is None:
        prompt_queue = getattr(comfy.server(), "prompt_queue", None)
        if prompt_queue is None:
            return 0
    gone = registry.seen(queued_now(prompt_queue))
    for entry in gone:
        registry.cancel(entry, "its prompt left ComfyUI's queue without running it")
    registry.pump(config.send_ahead_slots())
    return len(gone)


def _watch(stop: threading.Event) -> None:
    while not stop.wait(WATCH_EVERY_S):
        try:
            poll_once()
        except Exception:   # noqa: BLE001 - the next look tries again
            log.debug("GPUGeek: reading ComfyUI's queue failed", exc_info=True)


def ensure_watcher() -> None:
    with _watch_lock:
        if _watcher and _watcher[0].is_alive():
            return
        stop = threading.Event()
        t = threading.Thread(target=_watch, args=(stop,), name="gpugeek-ahead-watch", daemon=True)
        t.stop = stop
        t.start()
        _watcher[:] = [t]


def stop_watcher() -> None:
    """Tests: the watcher of this process ends."""
    with _watch_lock:
        for t in _watcher:
            t.stop.set()
        _watcher.clear()


async def cancel_if_refused(request, handler):
    """POST /prompt: the parts its on_prompt handler sent ahead are cancelled when ComfyUI does not queue the prompt (its
    validation refused it), at once rather than after NOT_QUEUED_GRACE_S."""
    if request.method != "POST" or request.path not in PROMPT_PATHS:
        return await handler(request)
    tokens: list = []
    reset = _request_tokens.set(tokens)
    refused = True
    try:
        resp = await handler(request)
        refused = getattr(resp, "status", 200) != 200
        return resp
    finally:
        _request_tokens.reset(reset)
        if refused:
            for token in tokens:
                for entry in core.ahead().of_token(token):
                    core.ahead().cancel(entry, "ComfyUI did not queue its prompt")


def shutdown() -> None:
    """ComfyUI is shutting down: every part sent ahead that no gateway took is cancelled (the owner is given
    SHUTDOWN_CANCEL_S to say so to the platform; what it could not is journaled as the owner left it)."""
    jobs = [e.job for e in core.ahead().cancel_all("ComfyUI shut down") if e.job is not None]
    end = time.monotonic() + SHUTDOWN_CANCEL_S
    while any(not j.done for j in jobs) and time.monotonic() < end:
        time.sleep(0.05)


def catch_sigterm() -> None:
    """SIGTERM (a service manager, a container's stop, a desktop app ending its server) ends Python without atexit, so
    the tasks sent ahead ran on, paid, for prompts that will never run. This handler cancels them (:func:`shutdown`),
    then hands the signal on as it was handled before: to the handler there was, or (the default) the signal is sent
    again with the default restored, and the process ends as it would have. A SIGTERM ignored, or handled outside
    Python, is left alone. Only the main thread may set a handler: elsewhere (a pack loaded late) nothing changes."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (AttributeError, ValueError):
        return
    if previous is None or previous == signal.SIG_IGN or getattr(previous, "_gpugeek", False):
        return

    def on_sigterm(signum, frame):
        try:
            shutdown()
        except Exception:   # noqa: BLE001 - ending goes on whatever the cancels did
            log.warning("GPUGeek: cancelling the tasks sent ahead at SIGTERM failed", exc_info=True)
        if callable(previous):
            return previous(signum, frame)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    on_sigterm._gpugeek = True
    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except (ValueError, OSError, RuntimeError):   # not the main thread
        log.debug("GPUGeek: could not watch SIGTERM", exc_info=True)


# Files of parts sent ahead older than this were left by an earlier process (killed before its prompts ran): nothing can
# take them any more (the journal holds their addresses). A day, so that another ComfyUI sharing this user folder keeps
# the files of its own queue.
OLD_FILES_S = 24 * 3600


def forget_old_files() -> None:
    folder = config.data_dir() / run_gateway.AHEAD_FOLDER
    now = time.time()
    for sub in folder.glob("*") if folder.is_dir() else []:
        try:
            if now - sub.stat().st_mtime > OLD_FILES_S:
                shutil.rmtree(sub, ignore_errors=True)
        except OSError:
            pass


def install(server) -> None:
    forget_old_files()
    atexit.register(shutdown)
    catch_sigterm()
    app = getattr(server, "app", None)
    if app is not None:
        from aiohttp import web
        try:
            app.middlewares.append(web.middleware(cancel_if_refused))
        except RuntimeError:
            log.warning("GPUGeek: could not watch /prompt's answers (the server already started)")
