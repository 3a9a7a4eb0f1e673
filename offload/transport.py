"""The one HTTP policy (DESIGN.md, "Transport"): every byte the pack moves goes through :class:`Transport`.

- **Retries** only where repeating is safe: a call marked ``safe`` is retried on 429, 5xx, dropped
  connections and cut-short bodies; any call, the submit included, is retried when the connection never
  opened (nothing was sent) and on 429 (the server refused it, so nothing was created). Nothing else is
  retried after a body that is not safe to repeat was sent: :class:`~offload.errors.SubmitUnknownError`.
- **Caps** on the bytes *after* decompression (a gzip bomb is refused, not inflated), and on the inflation
  ratio of a compressed answer; beside them a task's :class:`ByteBudget`, the memory all its result files may
  take, charged as each body arrives, and the number of files a task may name (``MAX_RESULT_FILES``).
- **Redirects** followed only to the same origin (scheme, host, port).
- **Credentials** attached per destination: each credential belongs to one origin and never reaches
  another host, whatever URL a server or a workflow names.
- **Proxies** from the environment (HTTP_PROXY, HTTPS_PROXY, WS_PROXY, NO_PROXY) carry requests to the outside
  world only: a host on this machine or its own network (:func:`is_private`) is always reached directly, and a
  request in clear (http, ws) to an origin that holds a credential never takes a proxy, which would read it
  (https crosses one in a tunnel the proxy cannot read). ~/.netrc is read for a proxy's own password only.
"""
from __future__ import annotations

import asyncio
import ipaddress
import random
import re
import socket
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import aiohttp

from . import errors as errors_mod

# Time budgets. Connect: a healthy endpoint answers a TCP handshake in well under a second; 10 s covers a
# slow mobile link without leaving the user staring at a dead host. Read: API calls answer in a few
# hundred ms; 30 s between bytes means the far side is gone. Uploads and downloads move megabytes, so
# they get 60 s between bytes and no total limit (a 4K video may take minutes on a slow line).
CONNECT_TIMEOUT_S = 10.0
API_READ_TIMEOUT_S = 30.0
TRANSFER_READ_TIMEOUT_S = 60.0
# Redirects followed on one request, same origin only.
MAX_REDIRECTS = 3
# Largest API answer accepted (a task detail is a few KB; a ComfyUI history with many outputs, a few MB).
MAX_API_BYTES = 16 * 1024 * 1024
# Largest result file accepted (a 4K 16-bit PNG is ~100 MB; a long video more): above this is hostile.
MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024
# A compressed answer may inflate at most this much (JSON compresses ~10x, images not at all; a gzip
# bomb inflates ~1000x), and answers below the floor are never refused for their ratio.
MAX_INFLATE_RATIO = 50
INFLATE_FLOOR_BYTES = 8 * 1024 * 1024
# Longest Retry-After honoured before the next attempt (a longer one is cut to this).
MAX_RETRY_AFTER_S = 10.0
# Read size while streaming a body.
CHUNK_BYTES = 1 << 16
# All result files of one task held in memory at once (its ByteBudget): above this the task is refused (a 512 MB
# file is the limit on one; a task of many such files would exhaust a home machine).
MAX_TASK_BYTES = 2 * 1024**3
# Result files one task may name: far above any workflow's (a clip's 81 frames, a fan-out of 8 such runs; ComfyUI's
# Save Image writes one file an image), far below what a hostile answer within MAX_API_BYTES names (a 16 MB history:
# 310k files, each a download, a journal line and a preview). Above it nothing is downloaded.
MAX_RESULT_FILES = 10_000

# aiohttp >= 3.10 tells a connect timeout (nothing sent) from a read timeout (the body may have arrived)
_ConnectTimeout = getattr(aiohttp, "ConnectionTimeoutError", aiohttp.ClientConnectorError)
_NOT_SENT = (aiohttp.ClientConnectorError, _ConnectTimeout)
_TAG = re.compile(r"<[^>]+>")


def page_snippet(text: str) -> str:
    """A short readable line from an error page (tags stripped)."""
    return " ".join(_TAG.sub(" ", text or "").split())[:120]


def origin(url: str) -> str:
    """scheme://host:port, lower case, the port made explicit: what a credential is bound to."""
    p = urlsplit(url)
    port = p.port or (443 if p.scheme == "https" else 80)
    return f"{p.scheme.lower()}://{(p.hostname or '').lower()}:{port}"


@dataclass
class RetryPolicy:
    """Jittered exponential backoff: attempt n waits uniform(base/2, min(cap, base*2**n))."""

    attempts: int = 4
    base_s: float = 0.3
    cap_s: float = 4.0

    def delay(self, attempt: int) -> float:
        return random.uniform(self.base_s / 2, min(self.cap_s, self.base_s * (2 ** attempt)))


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes
    url: str

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Transport:
    """One session's HTTP policy. ``credentials`` maps a scope (an origin, see :func:`origin`, and a path
    prefix) to the headers that may be sent there; ``calls`` records each attempt's call name (tests and the
    fault suite read it)."""

    session: aiohttp.ClientSession
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    credentials: dict = field(default_factory=dict)
    calls: list = field(default_factory=list)
    proxies: dict = field(default_factory=dict)   # origin -> env_proxy's answer, read once per session
    downloads: asyncio.Semaphore | None = None      # the session's PARALLEL_DOWNLOADS (made on its loop)

    def bind(self, url: str, headers: dict) -> None:
        """Attach ``headers`` to requests under ``url`` (same origin, path below ``url``'s path), and to
        nothing else: an API key bound to ``https://host/api/v1`` never reaches ``https://host/oss/...``."""
        self.credentials[(origin(url), urlsplit(url).path.rstrip("/"))] = dict(headers)
        self.proxies.clear()   # an origin that now holds a credential may no longer take a proxy in clear

    def _headers_for(self, url: str, extra: dict | None, auth: bool) -> dict:
        h: dict = {}
        if auth:
            o, path = origin(url), urlsplit(url).path
            for (scope_origin, prefix), creds in self.credentials.items():
                if scope_origin == o and (path == prefix or path.startswith(prefix + "/")):
                    h.update(creds)
        h.update(extra or {})
        return h

    def proxy_for(self, url: str) -> tuple:
        """The proxy a request to ``url`` takes, read once per origin in this session: the environment's
        (``env_proxy``), except that a request in clear (http, ws) to an origin that holds a credential goes
        direct, to the host the user configured, never through a proxy that would read it."""
        key = origin(url)
        if key not in self.proxies:
            self.proxies[key] = (None, None) if self._credential_in_clear(url) else env_proxy(url)
        return self.proxies[key]

    def _credential_in_clear(self, url: str) -> bool:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "ws"):
            return False
        held = origin("http" + url[len(scheme):])   # a websocket shares its server's credential
        return any(scope_origin == held for scope_origin, _prefix in self.credentials)

    async def request(self, method: str, url: str, *, call: str, safe: bool, params=None, json=None, data=None,
                      headers: dict | None = None, auth: bool = True, max_bytes: int = MAX_API_BYTES,
                      read_timeout: float | None = None, source: str = "the server",
                      budget: ByteBudget | None = None) -> Response:
        """One exchange under the policy; returns the last answer (any status) or raises the pack's error.
        ``read_timeout``: seconds between bytes, API_READ_TIMEOUT_S unless given. ``budget``: a task's
        (:class:`ByteBudget`), charged as the answer's body arrives; an answer tried again is given back."""
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S,
                                        sock_read=read_timeout or API_READ_TIMEOUT_S)
        last: Exception | None = None
        resp: Response | None = None
        for attempt in range(self.retry.attempts):
            if attempt:
                # the server's Retry-After on a 429/5xx answer, else the policy's backoff
                await asyncio.sleep(_retry_after(resp) or self.retry.delay(attempt - 1))
            self.calls.append(call)
            last, resp = None, None
            try:
                resp = await self._once(method, url, call=call, params=params, json=json, data=data,
                                        headers=headers, auth=auth, max_bytes=max_bytes, timeout=timeout,
                                        budget=budget)
            except _NOT_SENT as e:  # the request never left: any call may go again
                last = errors_mod.TransportError(f"Cannot connect to {source} at {_host(url)} ({type(e).__name__})",
                                                 call=call)
                last.cause = _connect_cause(e)
                continue
            except _CutShort as e:
                if not safe:
                    raise _unknown(call, f"the answer was cut short ({e})") from None
                last = errors_mod.TransportError(f"The answer from {source} was cut short ({e})", call=call)
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                if not safe:
                    raise _unknown(call, f"the connection dropped after the request was sent ({type(e).__name__})") \
                        from None
                last = errors_mod.TransportError(f"The connection to {source} failed ({type(e).__name__})", call=call)
                continue
            if resp.status == 429 or (safe and resp.status >= 500):
                if budget is not None:
                    budget.give(len(resp.body))   # that answer is dropped
                continue  # refused (429: nothing was created) or a safe call: try again after a pause
            return resp
        if last is not None:
            raise last
        return resp

    async def _once(self, method, url, *, call, params, json, data, headers, auth, max_bytes, timeout,
                    budget=None) -> Response:
        start = url
        for _hop in range(MAX_REDIRECTS + 1):
            body = data() if callable(data) else data  # a form is made afresh for each attempt
            proxy, proxy_auth = self.proxy_for(url)
            async with self.session.request(method, url, params=params, json=json, data=body, timeout=timeout,
                                            headers=self._headers_for(url, headers, auth), proxy=proxy,
                                            proxy_auth=proxy_auth, allow_redirects=False) as r:
                if r.status in (301, 302, 303, 307, 308) and r.headers.get("Location"):
                    nxt = urljoin(url, r.headers["Location"])
                    if origin(nxt) != origin(start):
                        raise errors_mod.ResultError(
                            f"Refused a redirect from {_host(start)} to another host ({_host(nxt)})",
                            status=r.status, call=call, hint="The server sent the request elsewhere; nothing was "
                            "followed and no credential left this machine for that host.")
                    url = nxt
                    continue
                body = await _read_capped(r, max_bytes, call, budget)
                return Response(r.status, dict(r.headers), body, url)
        raise errors_mod.ResultError(f"Too many redirects from {_host(start)}", call=call)


class _CutShort(Exception):
    pass


class ByteBudget:
    """The memory one task's result files may take (``MAX_TASK_BYTES`` unless given), across every download of the
    task: its runs, the servers of its pool, its outputs. Charged as the bytes arrive (:func:`_read_capped`, beside
    the cap on one answer: a stated length before the body is read, else each piece), so the task is refused when
    the budget is passed, whatever is in flight; what a download that failed or is tried again took is given back."""

    def __init__(self, limit: int | None = None):
        self.limit = limit or MAX_TASK_BYTES
        self.used = 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise errors_mod.ResultError(key="err_task_bytes", values={"limit": f"{self.limit >> 20} MB"},
                                         call="download", hint="")

    def give(self, n: int) -> None:
        self.used = max(0, self.used - n)


def check_result_count(count: int, task_id: str | None = None) -> None:
    """A task that names more result files than ``MAX_RESULT_FILES`` is refused before any is fetched (its
    addresses stay in the journal, which the wait wrote when the task ended)."""
    if count > MAX_RESULT_FILES:
        raise errors_mod.ResultError(key="err_too_many_results", values={"task": task_id or "?", "count": count,
                                     "limit": MAX_RESULT_FILES}, call="results", task_id=task_id, hint="")


async def _read_capped(r: aiohttp.ClientResponse, max_bytes: int, call: str, budget: ByteBudget | None = None) -> bytes:
    """The body, decompressed, refused past ``max_bytes`` (or past the inflation ratio of a compressed body)
    without ever holding more than a chunk beyond the cap; charged to ``budget`` (a task's) as it arrives, and given
    back where it is not returned."""
    if budget is None:
        return await _read_body(r, max_bytes, call, None)
    held = 0

    def charge(n: int) -> None:   # n < 0: a moment's memory given back
        nonlocal held
        held += n
        budget.take(n) if n > 0 else budget.give(-n)
    try:
        return await _read_body(r, max_bytes, call, charge)
    except BaseException:
        budget.give(held)
        raise


async def _read_body(r: aiohttp.ClientResponse, max_bytes: int, call: str, charge) -> bytes:
    encoded = bool(r.headers.get("Content-Encoding", "").strip() not in ("", "identity"))
    declared = r.content_length
    if declared is not None and not encoded and declared > max_bytes:
        raise errors_mod.ResultError(f"An answer of {declared >> 20} MB is above the {max_bytes >> 20} MB limit",
                                     call=call)
    cap = max_bytes
    if encoded and declared is not None:
        cap = min(max_bytes, max(INFLATE_FLOOR_BYTES, declared * MAX_INFLATE_RATIO))
    if declared is not None and not encoded:   # its length is known and within the cap: one read, one copy
        if charge is not None:
            charge(declared)   # charged before it is read: refused before it arrives
        try:
            return await r.content.readexactly(declared)
        except asyncio.IncompleteReadError as e:
            raise _CutShort(f"{len(e.partial)} of {declared} bytes") from None
        except aiohttp.ClientPayloadError as e:
            raise _CutShort(type(e).__name__) from None
    buf = bytearray()
    try:
        async for chunk in r.content.iter_chunked(CHUNK_BYTES):
            if charge is not None:
                charge(len(chunk))
            buf += chunk
            if len(buf) > cap:
                raise errors_mod.ResultError(
                    f"An answer inflated past {cap >> 20} MB" + (" (a compressed answer that expands without "
                                                                  "bound)" if encoded else ""), call=call)
    except aiohttp.ClientPayloadError as e:
        raise _CutShort(type(e).__name__) from None
    if declared is not None and not encoded and len(buf) != declared:
        raise _CutShort(f"{len(buf)} of {declared} bytes")
    if charge is None:
        return bytes(buf)
    n = len(buf)
    charge(n)   # the copy below holds the body twice for a moment: counted while it does (a task's budget is memory)
    out = bytes(buf)
    del buf
    charge(-n)
    return out


def _connect_cause(e: Exception) -> str:
    """Why a connection could not open: ``tls``, ``dns`` or ``connect`` (refused, unreachable, timed out)."""
    if isinstance(e, (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError)):
        return "tls"
    dns = getattr(aiohttp, "ClientConnectorDNSError", None)
    if (dns is not None and isinstance(e, dns)) or isinstance(getattr(e, "os_error", None), socket.gaierror):
        return "dns"
    return "connect"


def _retry_after(resp: Response | None) -> float | None:
    headers = resp.headers if resp is not None else {}
    val = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(val))) if val not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _unknown(call: str, why: str):
    return errors_mod.SubmitUnknownError(f"The {call} was sent but {why}", call=call)


def _host(url: str) -> str:
    return urlsplit(url).netloc or url[:60]


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address: this machine."""
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_private(host: str) -> bool:
    """This machine or its own network: a loopback, private or link-local address, a single-label name
    (``gpu-box``, ``localhost``) or a ``.local`` one."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_private
    except ValueError:
        return host.endswith(".local") or "." not in host


def check_result_url(url) -> str:
    """A result address the pack will fetch: http(s) with a host, nothing else."""
    if not isinstance(url, str):
        raise errors_mod.ResultError("A result address is not text", call="download")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors_mod.ResultError(f"Refused a result address that is not http(s): {url[:80]!r}", call="download")
    return url.strip()


# Result files in flight in one run's session, however many outputs and runs download at once: results are often
# many small files on storage (a clip's 81 frames, compact), each costing the link's round trip; 8 hid a 30 ms link
# (the clip: 1.23 s net with 4, 0.72 s with 8; 16 gave nothing more: then the bytes and the decoding are left).
# A browser opens 6 per host. At most this many bodies are held while they arrive.
PARALLEL_DOWNLOADS = 8
# Connections a run's session keeps to one host: the downloads and as many again for the API's calls, which never
# wait behind them (a fan-out's other runs still ask for their status while one run's files come down; waiting for
# a connection would count against the call's connect timeout).
SESSION_CONNECTIONS = 2 * PARALLEL_DOWNLOADS


def new_session(limit: int = SESSION_CONNECTIONS) -> aiohttp.ClientSession:
    """A session for one run: bounded connections, no cookie jar (nothing to remember between calls). Proxies
    come from the environment through ``env_proxy``, once per host (``Transport.proxies``), not through
    aiohttp's trust_env: that reads them again through two threads on every request, which slowed each of a
    clip's 81 downloads, and puts credentials from ~/.netrc on any request to a host it names."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, limit_per_host=limit),
                                 cookie_jar=aiohttp.DummyCookieJar())


def env_proxy(url: str) -> tuple:
    """The proxy the environment names for ``url`` (HTTP_PROXY, HTTPS_PROXY, WS_PROXY, NO_PROXY and their
    lower-case forms; a proxy's own password may come from .netrc), as aiohttp's trust_env reads it:
    (proxy URL, its BasicAuth or None), or (None, None) for a direct connection. A host on this machine or its
    own network (:func:`is_private`) is never proxied, whatever NO_PROXY says, as browsers and Windows' "bypass
    the proxy for local addresses" do: a proxy is for the outside world (a remote one cannot reach the user's
    loopback at all), and a LAN server's plain-http token must not cross a hop the user did not choose."""
    if is_private(urlsplit(url).hostname or ""):
        return None, None
    try:
        from aiohttp.helpers import get_env_proxy_for_url
        from yarl import URL
        return get_env_proxy_for_url(URL(url))
    except (LookupError, ImportError, ValueError):
        return None, None


async def download(transport: Transport, url: str, *, max_bytes: int | None = None,
                   budget: ByteBudget | None = None) -> bytes:
    """GET a result file: http(s) only, same-origin redirects only, decompressed size bounded, length
    verified, charged to the task's ``budget`` as it arrives; credentials only where the transport has one bound
    to that origin."""
    url = check_result_url(url)
    if transport.downloads is None:
        transport.downloads = asyncio.Semaphore(PARALLEL_DOWNLOADS)
    async with transport.downloads:
        resp = await transport.request("GET", url, call="download", safe=True,
                                       max_bytes=max_bytes or MAX_DOWNLOAD_BYTES, read_timeout=TRANSFER_READ_TIMEOUT_S,
                                       source="the result host", budget=budget)
    if resp.status >= 400:
        if budget is not None:
            budget.give(len(resp.body))   # an error page, not a result: dropped
        err = errors_mod.from_http(resp.status, message=f"Downloading a result failed (HTTP {resp.status})", call="download")
        if resp.status == 403:
            err.hint = "The result link has expired; results older than the link's lifetime cannot load."
        raise err
    return resp.body
