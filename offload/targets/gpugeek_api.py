"""GPUGeek's five calls over aiohttp, plus the signed PUT and result downloads.

One :class:`GPUGeekClient` per run, on a session created for that run in the task owner's loop
(offload/owner.py). Every exchange goes through :class:`~offload.transport.Transport`: retries only for calls
that are safe to repeat; the submit is sent at most once once its body may have reached the server
(GPUGEEK_API.md: no idempotency key).
"""
from __future__ import annotations

import json
from contextlib import asynccontextmanager

import aiohttp

from .. import errors
from ..config import ApiKey, check_base_url
from ..redact import get_logger
from ..transfer import upload_body
from ..transport import (SESSION_CONNECTIONS, TRANSFER_READ_TIMEOUT_S, RetryPolicy, Transport, download,
                        new_session, page_snippet)
from ..wire import TaskDetail, first, prompt_id_str, task_id_int

log = get_logger("gpugeek.client")

API_PREFIX = "/api/v1"
__all__ = ["GPUGeekClient", "RetryPolicy", "new_session"]


class GPUGeekClient:
    """The five calls in GPUGeek's envelope. The API key is bound to the base URL it was configured for
    (:meth:`Transport.bind`): storage, result hosts and redirects elsewhere never see it."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: ApiKey, *,
                 retry: RetryPolicy | None = None, transport: Transport | None = None):
        self.base_url = check_base_url(base_url)
        self.transport = transport or Transport(session, retry or RetryPolicy())
        # the key goes to the API's own paths under the configured base URL, nowhere else (not its storage)
        self.transport.bind(self.base_url + API_PREFIX, {"Authorization": f"Bearer {api_key.reveal()}"})

    @property
    def calls(self) -> list[str]:
        return self.transport.calls

    @classmethod
    @asynccontextmanager
    async def open(cls, base_url: str, api_key: ApiKey, *, retry: RetryPolicy | None = None,
                   limit: int = SESSION_CONNECTIONS):
        async with new_session(limit=limit) as session:
            yield cls(session, base_url, api_key, retry=retry)

    # ---- envelope ---------------------------------------------------------------------------------
    @staticmethod
    def _parse(status: int, raw: bytes, call: str):
        text = raw.decode("utf-8", "replace")
        try:
            env = json.loads(text) if text.strip() else None
        except ValueError:
            env = None
        if not isinstance(env, dict) or ("code" not in env and "data" not in env):
            if 200 <= status < 300 and isinstance(env, dict):
                return env  # a bare object: accept it as the data
            snippet = page_snippet(text)
            msg = f"GPUGeek answered with a non-JSON page (HTTP {status})"
            if snippet:
                msg += f": {snippet}"
            raise errors.from_http(status if status >= 400 else 502, message=msg, call=call)
        code = env.get("code", 0)
        message = str(env.get("message") or env.get("msg") or "")
        traceid = first(env, "traceid", "traceId", "trace_id")
        try:
            code_num = int(code)
        except (TypeError, ValueError):
            code_num = -1
        if status >= 400:
            err = errors.from_http(status, message=message or f"HTTP {status}", code=code, traceid=traceid, call=call)
        elif code_num != 0:
            err = errors.from_envelope(status, code, message, traceid, call)
        else:
            return env.get("data")
        err.enveloped = True  # GPUGeek itself answered (not a proxy's page): Test connection relies on it
        raise err

    async def _call(self, method: str, path: str, call: str, *, params=None, body=None, safe: bool):
        """One API call under the transport's policy; an unsafe call (the submit) answered with a 5xx may
        have created the task."""
        resp = await self.transport.request(method, self.base_url + API_PREFIX + path, call=call, safe=safe,
                                            params=params, json=body, source="GPUGeek",
                                            headers={"Accept": "application/json"})
        try:
            return self._parse(resp.status, resp.body, call)
        except errors.GPUGeekError as e:
            if not safe and e.status is not None and e.status >= 500:
                raise errors.SubmitUnknownError(e.message, code=e.code, traceid=e.traceid, status=e.status,
                                           call=call) from None
            raise

    # ---- the five calls ----------------------------------------------------------------------------
    async def presigned_url(self, file_name: str) -> tuple[str, str | None]:
        """Call 1: GET with ``file_name``; on 404/405 the sample code's POST with ``?fileName=``."""
        try:
            data = await self._call("GET", "/file/upload/pre-signed-url", "pre-signed URL",
                                    params={"file_name": file_name}, safe=True)
        except (errors.NotFoundError, errors.BadRequestError) as e:
            if e.status not in (404, 405):
                raise
            # the doc's sample: POST with fileName in the query string, no body
            data = await self._call("POST", "/file/upload/pre-signed-url", "pre-signed URL",
                                    params={"fileName": file_name}, safe=True)
        data = data or {}
        url = first(data, "signed_url", "signedUrl", "url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise errors.BusyError("GPUGeek gave no usable pre-signed upload URL", call="pre-signed URL",
                              hint="Run again; if it keeps happening, the upload service may be down.")
        return url, first(data, "expired_at", "expiredAt")

    async def commit(self, oss_url: str) -> str:
        """Call 2: register an external file address."""
        data = await self._call("POST", "/file/upload/commit", "register file", body={"oss_url": oss_url},
                                safe=True)
        return (first(data or {}, "oss_url", "ossUrl") or oss_url) if isinstance(data, dict) else oss_url

    async def submit(self, workflow_id: int, prompt: dict) -> str:
        """Call 3: sent once. A lost answer raises :class:`SubmitUnknownError`; nothing is resent."""
        data = await self._call("POST", "/prompt", "submit",
                                body={"workflow_id": int(workflow_id), "prompt": prompt, "task_type": 1},
                                safe=False)
        pid = first(data or {}, "prompt_id", "promptId", "task_id", "id") if isinstance(data, dict) else data
        try:
            return prompt_id_str(pid)
        except ValueError:
            raise errors.SubmitUnknownError("GPUGeek accepted the submission but returned no prompt id",
                                       call="submit") from None

    async def cancel(self, prompt_id) -> None:
        """Call 4 (safe to repeat)."""
        await self._call("POST", "/task/cancel", "cancel", body={"task_id": task_id_int(prompt_id)}, safe=True)

    async def task(self, prompt_id) -> TaskDetail:
        """Call 5."""
        pid = prompt_id_str(prompt_id)
        data = await self._call("GET", f"/task/{pid}", "task status", safe=True)
        if not isinstance(data, dict):
            raise errors.NotFoundError(f"GPUGeek returned no detail for task {pid}", call="task status", task_id=pid)
        return TaskDetail.parse(data, fallback_id=pid)

    # ---- bytes -------------------------------------------------------------------------------------
    async def put(self, signed_url: str, payload) -> None:
        """PUT the bytes (or a LocalFile, streamed from the file with its length stated) to a pre-signed URL
        (safe: the same bytes again). No credential goes to storage."""
        with upload_body(payload) as body:
            resp = await self.transport.request("PUT", signed_url, call="upload", safe=True, data=body, auth=False,
                                                headers={"Content-Type": "application/octet-stream"},
                                                read_timeout=TRANSFER_READ_TIMEOUT_S, source="the storage")
        if resp.status < 300:
            return
        msg = page_snippet(resp.text) or f"HTTP {resp.status}"
        if resp.status == 403:
            raise errors.AuthError(f"The storage refused the upload ({msg}); the signed URL may have expired",
                              status=403, call="upload", hint="Run again: a fresh upload URL is requested.")
        raise errors.from_http(resp.status, message=f"The upload failed: {msg}", call="upload")

    async def download(self, url: str, *, max_bytes: int | None = None, budget=None) -> bytes:
        return await download(self.transport, url, max_bytes=max_bytes, budget=budget)
