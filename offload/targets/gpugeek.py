"""GPUGeek's open API as a target: pre-signed upload, submit, status, cancel, fetch, and a ping that says in
one sentence whether the key and address work (GPUGEEK_API.md)."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from .. import errors
from .. import texts
from ..wire import TaskDetail
from .gpugeek_api import GPUGeekClient


def strip_query(url: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, p.path, "", ""))


class GPUGeekTarget:
    def __init__(self, client: GPUGeekClient):
        self.client = client
        # names the uploads cache scope and the journal's target: one per platform address
        self.name = "gpugeek@" + urlsplit(client.base_url).netloc

    async def upload(self, data, file_name: str, folder: str | None = None):
        """Pre-signed URL, PUT the bytes or a LocalFile, streamed (any file: an image, a video, a 3D model); the
        object's address is the signed URL without its query, which the cloud's loaders read (``folder`` is a ComfyUI
        server's matter)."""
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

    async def fetch(self, url: str, max_bytes: int | None = None, budget=None) -> bytes:
        return await self.client.download(url, max_bytes=max_bytes, budget=budget)

    async def ping(self, lang: str = "en") -> tuple[bool, str]:
        """Do the key and URL work, in one sentence? A task id that cannot exist answers "not found" in
        GPUGeek's envelope once the key is accepted, without creating or paying anything. Only an answer in
        that envelope counts: an HTML page or a 404 from something else names a wrong address."""
        url = self.client.base_url
        try:
            await self.client.task("0")
        except errors.AuthError as e:
            if e.enveloped or e.status == 401:
                return False, texts.text("ping_key_refused", lang, url=url, message=e.message)
            return False, texts.text("ping_not_gpugeek", lang, url=url, status=e.status, snippet="")
        except errors.GPUGeekError as e:
            if e.enveloped and isinstance(e, (errors.NotFoundError, errors.BadRequestError)):
                return True, texts.text("ping_ok", lang, url=url)
            if isinstance(e, errors.TransportError):
                key = {"tls": "ping_tls", "dns": "ping_dns", "connect": "ping_connect"}.get(e.cause or "", "ping_other")
                return False, texts.text(key, lang, url=url, cause=e.message, text=str(e))
            if e.enveloped:
                return False, texts.text("ping_other", lang, text=str(e))
            snippet = e.message.split(":", 1)[1].strip() if ":" in e.message else ""
            return False, texts.text("ping_not_gpugeek", lang, url=url, status=e.status,
                                     snippet=f": {snippet}" if snippet else "")
        return True, texts.text("ping_ok", lang, url=url)
