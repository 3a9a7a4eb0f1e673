"""Where a cloud part runs, behind one small interface (DESIGN.md): upload, submit, status, cancel, fetch.

:class:`GPUGeekTarget` speaks GPUGeek's open API through :class:`~offload.client.GPUGeekClient`. The plan,
the nodes, the journal and the command line only see this interface, so a second target (a plain ComfyUI
server) can stand beside it.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from . import config as C
from . import errors as E
from . import texts
from .client import GPUGeekClient
from .transport import new_session
from .wire import TaskDetail


class Target(Protocol):
    name: str

    async def upload(self, data: bytes, file_name: str) -> tuple[str, object]: ...
    async def submit(self, prompt: dict, workflow_id: int | None) -> str: ...
    async def status(self, task_id: str) -> TaskDetail: ...
    async def cancel(self, task_id: str) -> None: ...
    async def fetch(self, url: str, max_bytes: int | None = None) -> bytes: ...
    async def ping(self, lang: str = "en") -> tuple[bool, str]: ...


def strip_query(url: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, p.path, "", ""))


class GPUGeekTarget:
    def __init__(self, client: GPUGeekClient):
        self.client = client
        # names the uploads cache scope and the journal's target: one per platform address
        self.name = "gpugeek@" + urlsplit(client.base_url).netloc

    async def upload(self, data: bytes, file_name: str):
        """Pre-signed URL, PUT the bytes; the object's address is the signed URL without its query."""
        signed, expires = await self.client.presigned_url(file_name)
        await self.client.put(signed, data)
        return strip_query(signed), expires

    async def register(self, url: str) -> str:
        """Call 2, for addresses that are not the platform's own storage."""
        return await self.client.commit(url)

    async def submit(self, prompt: dict, workflow_id: int | None) -> str:
        return await self.client.submit(workflow_id, prompt)

    async def status(self, task_id: str) -> TaskDetail:
        return await self.client.task(task_id)

    async def cancel(self, task_id: str) -> None:
        await self.client.cancel(task_id)

    async def fetch(self, url: str, max_bytes: int | None = None) -> bytes:
        return await self.client.download(url, max_bytes=max_bytes)

    async def ping(self, lang: str = "en") -> tuple[bool, str]:
        """Do the key and URL work, in one sentence? A task id that cannot exist answers "not found" in
        GPUGeek's envelope once the key is accepted, without creating or paying anything. Only an answer in
        that envelope counts: an HTML page or a 404 from something else names a wrong address."""
        url = self.client.base_url
        try:
            await self.client.task("0")
        except E.AuthError as e:
            if e.enveloped or e.status == 401:
                return False, texts.text("ping_key_refused", lang, url=url, message=e.message)
            return False, texts.text("ping_not_gpugeek", lang, url=url, status=e.status, snippet="")
        except E.GPUGeekError as e:
            if e.enveloped and isinstance(e, (E.NotFoundError, E.BadRequestError)):
                return True, texts.text("ping_ok", lang, url=url)
            if isinstance(e, E.TransportError):
                key = {"tls": "ping_tls", "dns": "ping_dns", "connect": "ping_connect"}.get(e.cause or "", "ping_other")
                return False, texts.text(key, lang, url=url, cause=e.message, text=str(e))
            if e.enveloped:
                return False, texts.text("ping_other", lang, text=str(e))
            snippet = e.message.split(":", 1)[1].strip() if ":" in e.message else ""
            return False, texts.text("ping_not_gpugeek", lang, url=url, status=e.status,
                                     snippet=f": {snippet}" if snippet else "")
        return True, texts.text("ping_ok", lang, url=url)


def target_of(cfg: C.Config, override: str | None = None) -> str:
    """A gateway's own target (its ``target`` input, or ``--target``) or the configured one."""
    t = (override or "").strip()
    return t.rstrip("/") if t else cfg.target


@asynccontextmanager
async def open_target(cfg: C.Config, override: str | None = None):
    """GPUGeek (needs the API key) or a ComfyUI server (no key), on a session created for this run."""
    where = target_of(cfg, override)
    if C.is_comfy_target(where):
        from .comfy_target import ComfyUITarget
        async with new_session() as session:
            # the token belongs to the configured server only: a URL named by a workflow never receives it
            token = cfg.target_token if where == cfg.target else None
            target = ComfyUITarget(session, where, token=token, allow_lan_http=cfg.allow_lan_http)
            try:
                yield target
            finally:
                await target.close()
        return
    async with GPUGeekClient.open(cfg.base_url, cfg.require_key()) as client:
        yield GPUGeekTarget(client)
