"""Where a cloud part runs, behind one small interface (DESIGN.md): upload, submit, status, cancel, fetch.

Side by side: ``gpugeek.py`` (GPUGeek's open API, through ``gpugeek_api.py``), ``comfyui.py`` (any ComfyUI
server) and ``comfy_v2.py`` (the Comfy API v2: Comfy Cloud, serverless, comfy-api-proxy; ``v2:<base URL>``).
The run, the nodes, the journal and the command line only see this interface and :func:`open_target`.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Protocol

from .. import config, errors
from ..transport import new_session
from ..wire import TaskDetail
from .comfyui import ComfyUITarget
from .gpugeek import GPUGeekTarget, strip_query  # noqa: F401
from .gpugeek_api import GPUGeekClient


class Target(Protocol):
    name: str

    async def upload(self, data: bytes, file_name: str, folder: str | None = None) -> tuple[str, object]: ...
    async def submit(self, prompt: dict, workflow_id: int | None) -> str: ...
    async def status(self, task_id: str) -> TaskDetail: ...
    async def cancel(self, task_id: str) -> None: ...
    async def fetch(self, url: str, max_bytes: int | None = None, budget=None) -> bytes: ...
    async def ping(self, lang: str = "en") -> tuple[bool, str]: ...


def target_of(cfg: config.Config, override: str | None = None) -> str:
    """A gateway's own target (its ``target`` input, or ``--target``) or the configured one."""
    t = (override or "").strip()
    return t.rstrip("/") if t else cfg.target


@asynccontextmanager
async def open_target(cfg: config.Config, override: str | None = None):
    """GPUGeek (needs the API key), a Comfy API v2 address (``v2:<url>``, the Comfy API key where one is set for
    it) or a ComfyUI server (no key), on a session created for this run."""
    where = target_of(cfg, override)
    if config.is_v2_target(where):
        try:
            from .comfy_v2 import ComfyV2Target  # comfy-sdk is loaded only where a v2 target is used
        except ImportError as e:
            raise errors.ConfigError(key="err_v2_no_sdk", values={"module": e.name or "comfy_sdk"}, hint="") from None
        base = config.check_target_url(where, allow_lan_http=cfg.allow_lan_http)[len(config.V2_PREFIX):]
        key = cfg.comfy_key_for(base)   # the Comfy API key goes to the v2 address it was set for, no other
        async with new_session() as session:
            target = ComfyV2Target(session, base, api_key=key.reveal() if key else None,
                                   allow_lan_http=cfg.allow_lan_http)
            try:
                yield target
            finally:
                await target.close()
        return
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
