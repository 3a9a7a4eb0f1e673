"""Per-run wiring shared by the three nodes: configuration, a target on a fresh session, the stores,
and turning the core's errors into what ComfyUI shows."""
from __future__ import annotations

import os

from ..offload import config as C
from ..offload import errors as E
from ..offload import target as T
from ..offload.journal import Journal, UploadCache
from ..offload.owner import Interrupted, Owner
from ..offload.owner import owner as _owner
from . import comfy

_stores: dict = {}


def data_dir_setup() -> None:
    """Keep the pack's data in ComfyUI's user directory (never the pack folder, which updates replace)."""
    try:
        C.set_data_dir(os.path.join(comfy.user_dir(), "gpugeek"))
    except Exception:
        pass


def journal() -> Journal:
    path = str(C.data_dir())
    if ("journal", path) not in _stores:
        j = _stores[("journal", path)] = Journal()
        # entries a killed ComfyUI left mid-submit or mid-cancel: shown as unknown, with what to check
        j.settle_orphans()
    return _stores[("journal", path)]


def owner() -> Owner:
    """The process's task owner: every remote task lives there, apart from the prompts' event loops."""
    return _owner()


def uploads() -> UploadCache:
    path = str(C.data_dir())
    if ("uploads", path) not in _stores:
        _stores[("uploads", path)] = UploadCache()
    return _stores[("uploads", path)]


def target_of(cfg: C.Config, override: str | None = None) -> str:
    return T.target_of(cfg, override)


def open_target(cfg: C.Config | None = None, override: str | None = None):
    """A target on a session created for this run (ComfyUI gives each prompt its own event loop)."""
    return T.open_target(cfg or C.load_config(), override)


def labelled(err: E.GPUGeekError, label: str) -> E.GPUGeekError:
    """The same error, its message starting with the node it happened on."""
    if err.message.startswith(label):
        return err
    new = type(err)(f"{label}: {err.message}", code=err.code, traceid=err.traceid, status=err.status,
                    call=err.call, task_id=err.task_id)
    new.hint = err.hint
    return new


def reraise(exc: BaseException, label: str):
    """Interruptions become ComfyUI's own; the pack's errors get the node's name in front."""
    if isinstance(exc, Interrupted):
        comfy.raise_interrupt()
    if isinstance(exc, E.GPUGeekError):
        raise labelled(exc, label) from None
    raise exc


def node_label(class_name: str, unique_id) -> str:
    return f"{class_name} #{unique_id}" if unique_id is not None else class_name
