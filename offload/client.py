"""GPUGeek's five calls over aiohttp, plus the signed PUT and result downloads.

One :class:`GPUGeekClient` per run, on a session created for that run (ComfyUI gives each prompt its own
event loop, so nothing here outlives a run). Retries only for calls that are safe to repeat; the submit is
sent at most once once its body may have reached the server (GPUGEEK_API.md: no idempotency key).
"""
from __future__ import annotations

import asyncio
import json
import random
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp

from . import errors as E
from .config import ApiKey, check_base_url
from .redact import get_logger
from .wire import TaskDetail, first, prompt_id_str, task_id_int

log = get_logger("gpugeek.client")

# Time budgets. Connect: a healthy endpoint answers a TCP handshake in well under a second; 10 s covers a
# slow mobile link without leaving the user staring at a dead host. Read: API calls answer in a few
# hundred ms; 30 s between bytes means the far side is gone. Downloads and uploads move megabytes, so
# they get 60 s between bytes, and no total limit (a 4K video may take minutes on a slow line).
CONNECT_TIMEOUT_S = 10.0
API_READ_TIMEOUT_S = 30.0
TRANSFER_READ_TIMEOUT_S = 60.0
# Redirects followed on a download, same host only (a redirect elsewhere is refused).
MAX_REDIRECTS = 3
# Largest result file accepted (a 4K 16-bit PNG is ~100 MB; a long video more): above this is hostile.
MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024
# Longest Retry-After honoured before the next attempt of a safe call.
MAX_RETRY_AFTER_S = 10.0

API_PREFIX = "/api/v1"
# aiohttp >= 3.10 tells a connect timeout (nothing sent) from a read timeout (the body may have arrived)
_ConnectTimeout = getattr(aiohttp, "ConnectionTimeoutError", aiohttp.ClientConnectorError)


@dataclass
class RetryPolicy:
    """Jittered exponential backoff for safe calls: attempt n waits uniform(0, min(cap, base*2**n))."""

    attempts: int = 4
    base_s: float = 0.3
    cap_s: float = 4.0

    def delay(self, attempt: int) -> float:
        return random.uniform(self.base_s / 2, min(self.cap_s, self.base_s * (2 ** attempt)))


def _retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


_TAG = re.compile(r"<[^>]+>")


def _page_snippet(text: str) -> str:
    text = _TAG.sub(" ", text or "")
    text = " ".join(text.split())
    return text[:120]


class GPUGeekClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: ApiKey, *,
                 retry: RetryPolicy | None = None):
        self.session = session
        self.base_url = check_base_url(base_url)
        self._key = api_key
        self.retry = retry or RetryPolicy()
        self._api_host = urlsplit(self.base_url).netloc
        self.calls: list[str] = []  # call names in order; tests and the fault suite read it

    @classmethod
    @asynccontextmanager
    async def open(cls, base_url: str, api_key: ApiKey, *, retry: RetryPolicy | None = None,
                   limit: int = 8):
        async with new_session(limit=limit) as session:
            yield cls(session, base_url, api_key, retry=retry)

    # ---- envelope ---------------------------------------------------------------------------------
    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self._key.reveal()}", "Accept": "application/json"}

    async def _once(self, method: str, path: str, call: str, *, params=None, body=None):
        url = self.base_url + API_PREFIX + path
        self.calls.append(call)
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S,
                                        sock_read=API_READ_TIMEOUT_S)
        async with self.session.request(method, url, params=params, json=body, headers=self._headers(),
                                        timeout=timeout, allow_redirects=False) as resp:
            raw = await resp.read()
            return resp.status, resp.headers, raw

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
            snippet = _page_snippet(text)
            msg = f"GPUGeek answered with a non-JSON page (HTTP {status})"
            if snippet:
                msg += f": {snippet}"
            raise E.from_http(status if status >= 400 else 502, message=msg, call=call)
        code = env.get("code", 0)
        message = str(env.get("message") or env.get("msg") or "")
        traceid = first(env, "traceid", "traceId", "trace_id")
        try:
            code_num = int(code)
        except (TypeError, ValueError):
            code_num = -1
        if status >= 400:
            raise E.from_http(status, message=message or f"HTTP {status}", code=code, traceid=traceid, call=call)
        if code_num != 0:
            raise E.from_envelope(status, code, message, traceid, call)
        return env.get("data")

    async def _call(self, method: str, path: str, call: str, *, params=None, body=None, safe: bool):
        """One API call. ``safe`` calls are retried on 429/5xx/transport errors with jittered backoff; an
        unsafe call (the submit) is retried only when the connection could not even be opened."""
        last: Exception | None = None
        for attempt in range(self.retry.attempts):
            if attempt:
                await asyncio.sleep(self._retry_after(last) or self.retry.delay(attempt - 1))
            try:
                status, headers, raw = await self._once(method, path, call, params=params, body=body)
            except (aiohttp.ClientConnectorError, _ConnectTimeout) as e:
                # Not connected: the request never left, so even the submit may go again.
                last = E.TransportError(f"Cannot connect to GPUGeek at {self.base_url} ({type(e).__name__})",
                                        call=call)
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                if not safe:
                    raise E.SubmitUnknownError(
                        f"The connection dropped after the request was sent ({type(e).__name__})", call=call) from None
                last = E.TransportError(f"The connection to GPUGeek failed ({type(e).__name__})", call=call)
                continue
            try:
                return self._parse(status, raw, call)
            except E.GPUGeekError as e:
                e.retry_after = headers.get("Retry-After")
                if safe and e.status is not None and _retryable_status(e.status):
                    last = e
                    continue
                if not safe and e.status is not None and e.status >= 500:
                    raise E.SubmitUnknownError(e.message, code=e.code, traceid=e.traceid, status=e.status,
                                               call=call) from None
                raise
        assert last is not None
        raise last

    def _retry_after(self, err) -> float | None:
        val = getattr(err, "retry_after", None)
        try:
            return min(MAX_RETRY_AFTER_S, max(0.0, float(val))) if val else None
        except ValueError:
            return None

    # ---- the five calls ----------------------------------------------------------------------------
    async def presigned_url(self, file_name: str) -> tuple[str, str | None]:
        """Call 1: GET with ``file_name``; the sample code's POST with ``fileName`` on 404/405."""
        try:
            data = await self._call("GET", "/file/upload/pre-signed-url", "pre-signed URL",
                                    params={"file_name": file_name}, safe=True)
        except (E.NotFoundError, E.BadRequestError) as e:
            if e.status not in (404, 405):
                raise
            data = await self._call("POST", "/file/upload/pre-signed-url", "pre-signed URL",
                                    body={"fileName": file_name, "file_name": file_name}, safe=True)
        data = data or {}
        url = first(data, "signed_url", "signedUrl", "url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise E.BusyError("GPUGeek gave no usable pre-signed upload URL", call="pre-signed URL",
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
            raise E.SubmitUnknownError("GPUGeek accepted the submission but returned no prompt id",
                                       call="submit") from None

    async def cancel(self, prompt_id) -> None:
        """Call 4 (safe to repeat)."""
        await self._call("POST", "/task/cancel", "cancel", body={"task_id": task_id_int(prompt_id)}, safe=True)

    async def task(self, prompt_id) -> TaskDetail:
        """Call 5."""
        pid = prompt_id_str(prompt_id)
        data = await self._call("GET", f"/task/{pid}", "task status", safe=True)
        if not isinstance(data, dict):
            raise E.NotFoundError(f"GPUGeek returned no detail for task {pid}", call="task status", task_id=pid)
        return TaskDetail.parse(data, fallback_id=pid)

    # ---- bytes -------------------------------------------------------------------------------------
    async def put(self, signed_url: str, payload: bytes) -> None:
        """PUT the bytes to a pre-signed URL (safe: the same bytes again). No API key goes to storage."""
        call = "upload"
        last = None
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S, sock_read=TRANSFER_READ_TIMEOUT_S)
        for attempt in range(self.retry.attempts):
            if attempt:
                await asyncio.sleep(self.retry.delay(attempt - 1))
            self.calls.append(call)
            try:
                async with self.session.put(signed_url, data=payload, timeout=timeout, allow_redirects=False,
                                            headers={"Content-Type": "application/octet-stream"}) as resp:
                    raw = await resp.read()
                    if resp.status < 300:
                        return
                    msg = _page_snippet(raw.decode("utf-8", "replace")) or f"HTTP {resp.status}"
                    if resp.status == 403:
                        raise E.AuthError(f"The storage refused the upload ({msg}); the signed URL may have expired",
                                          status=403, call=call, hint="Run again: a fresh upload URL is requested.")
                    err = E.from_http(resp.status, message=f"The upload failed: {msg}", call=call)
                    if not _retryable_status(resp.status):
                        raise err
                    last = err
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                last = E.TransportError(f"The upload connection failed ({type(e).__name__})", call=call)
        raise last

    async def download(self, url: str, *, max_bytes: int | None = None) -> bytes:
        """GET a result file: http(s) only, same-host redirects only, size bounded, length verified."""
        return await download(self.session, url, max_bytes=max_bytes, retry=self.retry, log_calls=self.calls)


def check_result_url(url: str) -> str:
    if not isinstance(url, str):
        raise E.ResultError("A result address is not text", call="download")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise E.ResultError(f"Refused a result address that is not http(s): {url[:80]!r}", call="download")
    return url.strip()


async def download(session: aiohttp.ClientSession, url: str, *, max_bytes: int | None = None,
                   retry: RetryPolicy | None = None, log_calls: list | None = None, headers=None) -> bytes:
    retry = retry or RetryPolicy()
    max_bytes = max_bytes or MAX_DOWNLOAD_BYTES
    url = check_result_url(url)
    host = urlsplit(url).netloc
    call = "download"
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S, sock_read=TRANSFER_READ_TIMEOUT_S)
    last = None
    for attempt in range(retry.attempts):
        if attempt:
            await asyncio.sleep(retry.delay(attempt - 1))
        target = url
        if log_calls is not None:
            log_calls.append(call)
        try:
            for _hop in range(MAX_REDIRECTS + 1):
                async with session.get(target, timeout=timeout, allow_redirects=False, headers=headers) as resp:
                    if resp.status in (301, 302, 303, 307, 308):
                        nxt = urljoin(target, resp.headers.get("Location", ""))
                        if urlsplit(nxt).netloc != host or urlsplit(nxt).scheme not in ("http", "https"):
                            raise E.ResultError("Refused a result download that redirects to another host",
                                                status=resp.status, call=call)
                        target = nxt
                        continue
                    if resp.status >= 400:
                        err = E.from_http(resp.status, message=f"Downloading a result failed (HTTP {resp.status})",
                                          call=call)
                        if resp.status == 403:
                            err.hint = "The result link has expired; results older than the link's lifetime cannot load."
                        if not _retryable_status(resp.status):
                            raise err
                        last = err
                        break
                    expected = resp.content_length
                    if expected is not None and expected > max_bytes:
                        raise E.ResultError(f"A result file is {expected // 1048576} MB, above the "
                                            f"{max_bytes // 1048576} MB limit", call=call)
                    if expected is not None:
                        buf = await resp.read()  # size known and within the limit: one buffer, no loop
                    else:
                        buf = bytearray()
                        async for chunk in resp.content.iter_chunked(1 << 16):
                            buf += chunk
                            if len(buf) > max_bytes:
                                raise E.ResultError(f"A result file is larger than the {max_bytes // 1048576} MB "
                                                    "limit", call=call)
                    if expected is not None and len(buf) != expected:
                        last = E.TransportError(f"A result download was cut short ({len(buf)} of {expected} bytes)",
                                                call=call)
                        break
                    return bytes(buf)
            else:
                raise E.ResultError("Too many redirects on a result download", call=call)
        except aiohttp.ClientPayloadError:
            last = E.TransportError("A result download was cut short", call=call)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            last = E.TransportError(f"A result download failed ({type(e).__name__})", call=call)
    raise last


def new_session(limit: int = 8) -> aiohttp.ClientSession:
    """A session for one run: bounded connections, no cookie jar (nothing to remember between calls)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, limit_per_host=limit),
                                 cookie_jar=aiohttp.DummyCookieJar(), trust_env=True)
