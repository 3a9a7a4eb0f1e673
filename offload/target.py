"""Where a cloud part runs, behind one small interface (DESIGN.md): upload, submit, status, cancel, fetch.

:class:`GPUGeekTarget` speaks GPUGeek's open API through :class:`~offload.client.GPUGeekClient`. The plan,
the nodes, the journal and the command line only see this interface, so a second target (a plain ComfyUI
server) can stand beside it.
"""
from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from .client import GPUGeekClient
from .wire import TaskDetail


class Target(Protocol):
    name: str

    async def upload(self, data: bytes, file_name: str) -> tuple[str, object]: ...
    async def submit(self, prompt: dict, workflow_id: int | None) -> str: ...
    async def status(self, task_id: str) -> TaskDetail: ...
    async def cancel(self, task_id: str) -> None: ...
    async def fetch(self, url: str, max_bytes: int | None = None) -> bytes: ...


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
