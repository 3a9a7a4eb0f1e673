"""Where a cloud part runs, behind one small interface (DESIGN.md): upload, submit, status, cancel, fetch.

Side by side: ``gpugeek.py`` (GPUGeek's open API, through ``gpugeek_api.py``) and ``comfyui.py`` (any ComfyUI
server). The run, the nodes, the journal and the command line only see this interface and :func:`open_target`.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Protocol

from .. import config
from ..transport import new_session
from ..wire import TaskDetail
from .comfyui import ComfyUITarget
from .gpugeek import GPUGeekTarget, strip_query  # noqa: F401
from .gpugeek_api import GPUGeekClient


class Target(Protocol):
    name: str

    async def upload(self, data: bytes, file_name: str) -> tuple[str, object]: ...
    async def submit(self, prompt: dict, workflow_id: int | None) -> str: ...
    async def status(self, task_id: str) -> TaskDetail: ...
    async def cancel(self, task_id: str) -> None: ...
    async def fetch(self, url: str, max_bytes: int | None = None) -> bytes: ...
    async def ping(self, lang: str = "en") -> tuple[bool, str]: ...


def target_of(cfg: config.Config, override: str | None = None) -> str:
    """A gateway's own target (its ``target`` input, or ``--target``) or the configured one."""
    t = (override or "").strip()
    return t.rstrip("/") if t else cfg.target


@asynccontextmanager
async def open_target(cfg: config.Config, override: str | None = None):
    """GPUGeek (needs the API key) or a ComfyUI server (no key), on a session created for this run."""
    where = target_of(cfg, override)
    if config.is_comfy_target(where):
        async with new_session() as session:
            # the token belongs to the configured server only: a URL named by a workflow never receives it
            # (in a pool of servers set in the settings, to each of them)
            token = cfg.target_token if where in [t.rstrip("/") for t in cfg.target.split(",")] else None
            target = ComfyUITarget(session, where, token=token, allow_lan_http=cfg.allow_lan_http)
            try:
                yield target
            finally:
                await target.close()
        return
    async with GPUGeekClient.open(cfg.base_url, cfg.require_key()) as client:
        yield GPUGeekTarget(client)
