"""Per-run wiring shared by the three nodes: configuration, a target on a fresh session, the stores,
and turning the core's errors into what ComfyUI shows. No state of its own: the stores are the core's."""
from __future__ import annotations

import os

from ..offload import config, errors, targets, texts
from ..offload.journal import Journal, UploadCache, stores_at
from ..offload.owner import Interrupted, Owner
from ..offload.owner import owner as _owner
from ..offload.run import Place
from ..offload.transfer import LocalFile, local_file
from . import comfy


def data_dir_setup() -> None:
    """Keep the pack's data in ComfyUI's user directory (never the pack folder, which updates replace)."""
    try:
        config.set_data_dir(os.path.join(comfy.user_dir(), "gpugeek"))
    except Exception:
        pass


def journal() -> Journal:
    return stores_at(str(config.data_dir()))[0]


def uploads() -> UploadCache:
    return stores_at(str(config.data_dir()))[1]


def owner() -> Owner:
    """The process's task owner: every remote task lives there, apart from the prompts' event loops."""
    return _owner()


def place() -> Place:
    """Where a gateway's run keeps its records and files in this ComfyUI."""
    from .models import model_source
    return Place(journal(), uploads(), read_input_file, comfy.output_dir(), models=model_source)


def read_input_file(name: str) -> LocalFile:
    """A file of ComfyUI's folders that a cloud loader reads, named, not read (its digest is made and its bytes
    sent from the file, a piece at a time); one above the pack's limit is refused unread."""
    path = comfy.input_file(name)
    if not path:
        raise errors.PlanError(key="err_input_gone", values={"name": repr(name)}, hint="")
    return local_file(path)


def open_target(cfg: config.Config | None = None, override: str | None = None):
    """A target on a session created for this run (ComfyUI gives each prompt its own event loop)."""
    return targets.open_target(cfg or config.load_config(), override)


def labelled(err: errors.GPUGeekError, label: str, lang: str = "en") -> errors.GPUGeekError:
    """The same error told in ``lang``, its message starting with the node it happened on."""
    message = err.message_in(lang)
    new = type(err)(message if message.startswith(label) else f"{label}: {message}", code=err.code,
                    traceid=err.traceid, status=err.status, call=err.call, task_id=err.task_id,
                    hint=err.hint_in(lang))
    new.enveloped, new.cause, new.lang = err.enveloped, err.cause, texts.lang_of(lang)
    Exception.__init__(new, str(new))  # its text in that language
    return new


def reraise(exc: BaseException, label: str, lang: str = "en"):
    """Interruptions become ComfyUI's own; the pack's errors get the node's name in front, in ``lang``."""
    if isinstance(exc, Interrupted):
        comfy.raise_interrupt()
    if isinstance(exc, errors.GPUGeekError):
        raise labelled(exc, label, lang) from None
    raise exc


# A whole workflow's failed runs (nodes/gateway.py): the gateway is no node of the editor, so its error is told by
# the output nodes, which are (nodes/output.py). Its task id output is then a token naming the error; ComfyUI
# caches that output like any other, so the gateway's IS_CHANGED says how many runs of its part have failed: a
# failure changes it (the next queue runs again, never the failed run's cached token), a success leaves it as it
# is (the next queue with nothing new is served from the cache: never paid twice).
FAILED_PREFIX = "failed:"
_KEEP_FAILURES = 64
_failures: dict = {}        # token -> the error
_failed_runs: dict = {}     # a part's hash -> how many of its runs failed in this process


def remember_failure(part: str, error: BaseException) -> str:
    import uuid
    token = f"{FAILED_PREFIX}{uuid.uuid4().hex}"
    # kept without its traceback and chain: they hold the failed run's frames and event loop alive
    error.__context__ = error.__cause__ = None
    _failures[token] = error.with_traceback(None)
    _failed_runs[part] = _failed_runs.get(part, 0) + 1
    while len(_failures) > _KEEP_FAILURES:
        _failures.pop(next(iter(_failures)))
    return token


def failure(token) -> BaseException | None:
    return _failures.get(token) if isinstance(token, str) and token.startswith(FAILED_PREFIX) else None


def failed_runs(part: str) -> int:
    """How many runs of a part failed in this process (what the gateway's IS_CHANGED is made of)."""
    return _failed_runs.get(part, 0)


def node_label(class_name: str, unique_id) -> str:
    return f"{class_name} #{unique_id}" if unique_id is not None else class_name
