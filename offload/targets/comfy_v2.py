"""The third target: the Comfy API v2 (Comfy Cloud, a serverless deployment, any ComfyUI behind comfy-api-proxy),
named ``v2:<base URL>``, through comfy-sdk's async client.

Inputs go up as v2 assets (comfy-sdk's ``AsyncAsset``): hashed with blake3, probed by hash (``HEAD``) and minted
from the hash when the server has the bytes, uploaded only on a miss; the cloud prompt names them as
``core/ASSET`` references. A job is created once: its Idempotency-Key makes a resend after a lost answer safe
(the server refuses a key it has seen, so a second job can never exist). The job's events (SSE) give live
progress on the cloud nodes and previews; ``GET /jobs/{id}`` is the status that counts. Stop cancels exactly that
job and waits until the server shows it ended. Result files come down through the pack's transport (caps,
same-origin redirects, the key bound to this origin); a content URL that redirects to signed storage on another
host is resolved without following it and fetched there without the key.

comfy-sdk's ``AsyncComfy`` itself takes its address from ``COMFY_BASE_URL`` alone (one per process), while every
gateway may name its own: the target builds the same SDK layers on an explicit address instead
(``comfy_low.AsyncComfyLow``: the contract's calls and error envelope; ``AsyncAsset``; the SSE decoder and typed
events), on an httpx client that keeps the pack's rules (no redirects, identity encoding, byte caps).
"""
from __future__ import annotations

import asyncio
import functools
import json
import mimetypes
import re
import time
import uuid
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import aiohttp
import httpx
from comfy_low.transport import AsyncComfyLow
from comfy_sdk import AsyncAssetFactory, ComfyError, IdempotencyKeyReuse
from comfy_sdk.events import Preview, Progress, StatusChange, event_from_raw
from comfy_sdk.exceptions import translating

from .. import cloud_errors, errors, texts
from ..config import V2_PREFIX, check_base_url
from ..redact import get_logger, register_secret
from ..transfer import LocalFile, exact_bytes
from ..transport import (API_READ_TIMEOUT_S, CONNECT_TIMEOUT_S, MAX_API_BYTES, MAX_RETRY_AFTER_S,
                         TRANSFER_READ_TIMEOUT_S, RetryPolicy, Transport, download, origin)
from ..wire import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, TaskDetail

log = get_logger("gpugeek.v2_target")
# How an uploaded asset travels in the cloud prompt until the submit writes it as a core/ASSET reference.
ASSET_TOKEN = "core/ASSET:"
TERMINAL = ("succeeded", "failed", "canceled", "expired")
# While the job's event stream follows it, GET /jobs/{id} (the status that counts) is still asked after this
# share of the job's age, between the floor and the cap: the stream carries no replay, so an event it missed
# (comfy-api-proxy opens ComfyUI's websocket only after its first snapshot) costs at most that long.
AUTHORITY_SHARE, AUTHORITY_FLOOR_S, AUTHORITY_S = 0.1, 0.25, 5.0
# A cancel is done when the server shows the job ended: asked this often, for at most this long per round
# (a running job stops at its next step; a server that ignores the cancel is reported, not trusted).
CANCEL_POLL_S = 0.2
CANCEL_SETTLE_S = 10.0
# A submit is sent at most this many times, always under one Idempotency-Key.
SUBMIT_ATTEMPTS = 3
# The event stream is opened again this many times when it drops before the job ends.
STREAM_ATTEMPTS = 3
# "expired" is believed only when GET /jobs/{id} says it this many times in a row, this far apart:
# comfy-api-proxy reads ComfyUI's history, then its queue, and a job that ends between the two reads shows as
# expired for a moment.
EXPIRED_READS, EXPIRED_PAUSE_S = 3, 0.05
# A preview larger than this is not a preview: ignored.
MAX_PREVIEW_BYTES = 4 * 1024 * 1024
_CONTENT = re.compile(r"/assets/([^/?#]+)/content$")
_CONNECT = (httpx.ConnectError, httpx.ConnectTimeout)


class _Capped(httpx.AsyncByteStream):
    """A body read under the pack's cap: an API answer, or one line of an event stream, of MAX_API_BYTES."""

    def __init__(self, inner, lines: bool):
        self.inner, self.lines = inner, lines

    async def __aiter__(self):
        n = 0
        async for chunk in self.inner:
            cut = chunk.rfind(b"\n") if self.lines else -1
            n = len(chunk) - cut - 1 if cut >= 0 else n + len(chunk)
            if n > MAX_API_BYTES:
                raise errors.ResultError(f"An answer passed the {MAX_API_BYTES >> 20} MB limit", call="v2")
            yield chunk

    async def aclose(self):
        await self.inner.aclose()


async def _cap(response: httpx.Response) -> None:
    enc = response.headers.get("content-encoding", "").strip().lower()
    if enc not in ("", "identity"):  # asked for identity: a compressed answer could inflate without bound
        raise errors.ResultError(f"The server answered compressed ({enc[:20]}) although asked not to", call="v2")
    response.stream = _Capped(response.stream, "text/event-stream" in response.headers.get("content-type", ""))


@functools.lru_cache(maxsize=1)
def _tls():
    """httpx's own TLS context, made once (it costs ~25 ms, and a target is opened for every run)."""
    return httpx.create_ssl_context()


def _proxy(url, auth) -> httpx.Proxy | None:
    """``Transport.proxy_for``'s answer as httpx takes it."""
    if url is None:
        return None
    return httpx.Proxy(str(url), auth=(auth.login, auth.password) if auth is not None else None)


class ComfyV2Target:
    def __init__(self, session: aiohttp.ClientSession, base: str, *, api_key: str | None = None,
                 allow_lan_http: bool = False, retry: RetryPolicy | None = None):
        self.base = check_base_url(base, allow_lan_http=allow_lan_http)
        self.url = V2_PREFIX + self.base   # what the journal records and open_target reads back
        self.name = "v2@" + urlsplit(self.base).netloc
        self.retry = retry or RetryPolicy()
        self.transport = Transport(session, self.retry)   # result files
        self._key = bool(api_key)
        if api_key:
            register_secret(api_key)
            self.transport.bind(self.base, {"Authorization": "Bearer " + api_key})
        # the transport's proxy rule, not httpx's own reading of the environment (trust_env), which sent a server
        # on this machine, and its key in clear, through HTTP_PROXY
        self._http = httpx.AsyncClient(
            verify=_tls(), follow_redirects=False, headers={"Accept-Encoding": "identity"},
            trust_env=False, proxy=_proxy(*self.transport.proxy_for(self.base)), event_hooks={"response": [_cap]},
            timeout=httpx.Timeout(API_READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S, write=TRANSFER_READ_TIMEOUT_S))
        # the key goes to this origin only: comfy-sdk's second origin (Comfy Router) is this one too
        self._low = AsyncComfyLow(self.base, api_key or None, client=self._http, client_info="comfyui-gpugeek",
                                  router_base_url=self.base)
        self._assets = AsyncAssetFactory(self._low)
        self._state: dict[str, dict] = {}
        self._streams: list[asyncio.Task] = []
        self.calls: list[str] = []

    # ---- plumbing ----------------------------------------------------------------------------------
    async def _call(self, fn, call: str):
        """One SDK call that is safe to repeat (every call but the submit), with the pack's retries (429, 5xx, no
        connection); failures become the pack's errors, one sentence each."""
        for attempt in range(self.retry.attempts):
            self.calls.append(call)
            try:
                with translating():
                    return await fn()
            except ComfyError as e:
                err, again = e, e.http_status == 429 or (e.http_status or 0) >= 500
            except httpx.HTTPError as e:
                err, again = e, True
            if not again or attempt == self.retry.attempts - 1:
                raise self._error(err, call) from None
            await asyncio.sleep(min(MAX_RETRY_AFTER_S, getattr(err, "retry_after", None) or self.retry.delay(attempt)))

    def _error(self, e: BaseException, call: str) -> errors.GPUGeekError:
        values = {"url": self.base, "call": call}
        if isinstance(e, httpx.HTTPError):
            cls = errors.TransportError
            key = "err_v2_unreachable" if isinstance(e, _CONNECT) else "err_v2_connection"
            return cls(key=key, values={**values, "what": type(e).__name__}, call=call, hint="")
        status = getattr(e, "http_status", None) or 0
        values.update(status=status, message=(getattr(e, "message", "") or str(e))[:300])
        if status in (401, 403):
            cls, key = errors.AuthError, ("err_v2_auth" if self._key else "err_v2_no_key")
        elif status == 402:
            cls, key = errors.QuotaError, "err_v2_credits"
        elif status == 404:
            cls, key = errors.NotFoundError, "err_v2_not_found"
        elif status == 429 or status >= 500:
            cls, key = errors.BusyError, "err_v2_busy"
        else:
            cls, key = errors.BadRequestError, "err_v2_refused"
        return cls(key=key, values=values, status=status or None, call=call, code=getattr(e, "code", None), hint="")

    # ---- inputs ------------------------------------------------------------------------------------
    async def upload(self, data, file_name: str, folder: str | None = None):
        """A v2 asset of any kind (uploaded only when the server lacks its bytes; ``folder`` is a ComfyUI server's
        matter); the prompt carries it as a token until the submit. Reused across runs until the asset's own
        retention; where the server states none (the self-hosted proxy forgets its index when it restarts) it is
        looked up by hash again on the next run. A LocalFile is hashed and sent from the file (comfy-sdk's own
        file source), under the pack's name for it."""
        if isinstance(data, LocalFile):
            asset = self._assets.from_file(data.path)
            if hasattr(asset, "_file_path"):   # comfy-sdk 0.5 names a file's asset after the file: the pack's name
                asset._file_path = file_name
        else:
            asset = self._assets.from_bytes(data, filename=file_name,
                                            content_type=mimetypes.guess_type(file_name)[0] or "application/octet-stream")
        await asyncio.to_thread(lambda: asset.hash)  # blake3 off the loop
        await self._call(asset.commit, "upload")
        log.info("%s: input %s %s", self.name, file_name, f"uploaded ({len(data)} bytes)" if asset.created_new
                 else "was there already (found by its hash): nothing sent")
        info = (await asset.as_reference())["info"]
        expires = asset.expires_at.timestamp() if asset.expires_at else time.time()
        return ASSET_TOKEN + json.dumps(info, separators=(",", ":"), sort_keys=True), expires

    # ---- the job -----------------------------------------------------------------------------------
    async def submit(self, prompt: dict, workflow_id=None) -> str:
        graph, key = _with_assets(prompt), str(uuid.uuid4())
        for attempt in range(SUBMIT_ATTEMPTS):
            last = attempt == SUBMIT_ATTEMPTS - 1
            self.calls.append("submit")
            try:
                with translating():
                    job = await self._low.post_jobs(graph, idempotency_key=key)
                break
            except IdempotencyKeyReuse:
                raise self._unknown("submit") from None   # an earlier attempt reached the server
            except ComfyError as e:
                refused = e.http_status == 429   # refused: nothing was created
                if (e.http_status or 0) < 500 and not refused:
                    raise self._refusal(e, prompt) from None
                if last:
                    raise (self._error(e, "submit") if refused else self._unknown("submit")) from None
                await asyncio.sleep(min(MAX_RETRY_AFTER_S, e.retry_after or self.retry.delay(attempt)))
            except httpx.HTTPError as e:
                if last:  # no connection: nothing was sent; anything else: the answer was lost
                    raise (self._error(e, "submit") if isinstance(e, _CONNECT) else self._unknown("submit")) from None
                await asyncio.sleep(self.retry.delay(attempt))   # the same key: a resend never makes a second job
        st = self._state.setdefault(job.id, _new_state())
        self._streams.append(asyncio.ensure_future(self._follow(job.id, st)))
        return job.id

    def _unknown(self, call: str) -> errors.SubmitUnknownError:
        return errors.SubmitUnknownError(key="err_v2_submit_unknown", values={"url": self.base}, call=call, hint="")

    def _refusal(self, e: ComfyError, prompt: dict) -> errors.GPUGeekError:
        """The server refused the prompt: its node errors told node by node, on the user's nodes."""
        if e.code == "invalid_workflow":
            answer = _as_comfy(e, prompt)
            lines = cloud_errors.explain(answer, prompt, texts.Said("where_server", {"url": self.base}))
            if lines:
                refused = errors.BadRequestError(key="err_v2_rejected", lines=lines, status=e.http_status,
                                                 call="submit", hint="")
                refused.body = answer   # what the server accepts is learned from it
                return refused
        if e.code == "missing_asset":
            return errors.BadRequestError(key="err_v2_missing_asset", values={"url": self.base},
                                          status=e.http_status, call="submit", hint="")
        return self._error(e, "submit")

    async def _follow(self, job_id: str, st: dict) -> None:
        """Live progress from the job's events; the stream is opened again when it drops before the end."""
        for attempt in range(STREAM_ATTEMPTS):
            st["live"] = True   # from the moment it is opened: status() reads it, and asks GET now and then
            try:
                async for raw in self._low.get_job_events(job_id):
                    self._on_event(st, event_from_raw(raw, lambda model: model))
                    if st["final_hint"]:   # the status that counts, read now: status() hands it over
                        st["read"] = asyncio.ensure_future(self._read(job_id))
                        return
            except Exception as e:  # noqa: BLE001 - live progress is a help; the status that counts is polled
                log.info("The event stream of job %s ended (%s): its status is polled", job_id, type(e).__name__)
                if not isinstance(e, (httpx.HTTPError, errors.GPUGeekError)):
                    return   # refused (no SSE there, too many streams) or unreadable: polling alone
            finally:
                st["live"] = False
            if st["done"] or st["final_hint"]:
                return
            await asyncio.sleep(0.2 * (attempt + 1))

    def _on_event(self, st: dict, ev) -> None:
        if isinstance(ev, StatusChange):
            st["status"] = ev.status
            if ev.status in ("running", "canceling"):
                st["started"] = st["started"] or time.monotonic()
            st["position"] = ev.queue_position or 0
            st["final_hint"] = ev.status in TERMINAL
        elif isinstance(ev, Progress):
            st["started"] = st["started"] or time.monotonic()
            st["node"] = ev.current_node or st["node"]
            st["value"], st["max"] = ((ev.step or 0), (ev.steps or 0)) if ev.steps else (int(ev.value * 100), 100)
        elif isinstance(ev, Preview) and ev.data and len(ev.data) <= MAX_PREVIEW_BYTES:
            seq = (st["preview"] or (0, 0, 0, 0))[3] + 1
            st["preview"] = (str(ev.node_id or st["node"] or ""), ev.content_type or "image/jpeg", ev.data, seq)

    @property
    def live(self) -> bool:
        """True while the event stream follows every job still running here: status() then reads it locally."""
        active = [st for st in self._state.values() if not st["done"]]
        return bool(active) and all(st["live"] for st in active)

    async def status(self, task_id: str) -> TaskDetail:
        st = self._state.setdefault(task_id, _new_state())
        now = time.monotonic()
        every = min(AUTHORITY_S, max(AUTHORITY_FLOOR_S, AUTHORITY_SHARE * (now - st["queued"])))
        if st["live"] and not st["final_hint"] and now - st["asked"] < every:
            return self._detail(task_id, st, RUNNING if st["status"] in ("running", "canceling") else QUEUED)
        read, st["read"] = st["read"], None
        job = await (read if read is not None else self._read(task_id))
        st["asked"] = time.monotonic()
        return self._from_job(job, st)

    async def _read(self, task_id: str, call: str = "task status"):
        """GET /jobs/{id}; "expired" only when it is said again and again."""
        for _ in range(EXPIRED_READS):
            job = await self._call(lambda: self._low.get_job(task_id), call)
            if job.status.value != "expired":
                break
            await asyncio.sleep(EXPIRED_PAUSE_S)
        return job

    def _from_job(self, job, st: dict) -> TaskDetail:
        s = job.status.value
        st["status"], st["done"] = s, s in TERMINAL
        st["final_hint"] = st["final_hint"] and st["done"]
        if s in ("running", "canceling"):
            st["started"] = st["started"] or time.monotonic()
        p = job.progress
        if p is not None and p.steps:
            st["node"], st["value"], st["max"] = p.current_node or st["node"], p.step or 0, p.steps
        code = {"queued": QUEUED, "running": RUNNING, "canceling": RUNNING, "succeeded": SUCCEEDED,
                "canceled": CANCELLED, "failed": FAILED}.get(s, CANCELLED if st["cancel_sent"] else FAILED)
        d = self._detail(job.id, st, code)
        d.current_position = job.queue_position or 0
        run_ms = (job.metrics or {}).get("execution_ms")
        d.run_duration_ms = run_ms if isinstance(run_ms, int) else d.run_duration_ms
        if s == "succeeded":
            for o in job.outputs:
                d.result_url.setdefault(str(o.node_id), []).append(self._content_url(o.id, o.name))
        elif s == "failed":
            e = job.error
            where = f"{e.class_type or ''} #{e.node_id}: " if e is not None and e.node_id else ""
            d.error_msg = f"{where}{(e.message or e.code) if e is not None else ''}".strip() or "the job failed"
        elif code == FAILED:
            d.error_msg = texts.text("v2_job_gone", "en", status=s)
        return d

    def _detail(self, job_id: str, st: dict, status: int) -> TaskDetail:
        now, started = time.monotonic(), st["started"]
        return TaskDetail(prompt_id=job_id, status=status, node=st["node"], node_value=st["value"],
                          node_max=st["max"], preview=st["preview"], current_position=st["position"],
                          run_duration_ms=int((now - started) * 1000) if started else 0,
                          queue_duration_ms=int(((started or now) - st["queued"]) * 1000))

    def _content_url(self, asset_id: str, name: str) -> str:
        """An output's lasting address: the asset's content on this server (the link in the job may be a
        signed URL that expires), named by the file it is (the name rides in the query, for the saved file: the
        exact name, percent-encoded whatever it holds, transfer.exact_bytes)."""
        name = exact_bytes(str(name or ""))
        return f"{self.base}/api/v2/assets/{quote(exact_bytes(str(asset_id)), safe='')}/content?" \
               f"{urlencode({'filename': name})}"

    async def cancel(self, task_id: str) -> None:
        """Exactly this job; done once the server shows it ended (a server that accepts the cancel but runs
        on, as comfy-api-proxy in front of a ComfyUI without /api/jobs/{id}/cancel does, is reported)."""
        st = self._state.setdefault(task_id, _new_state())
        st["cancel_sent"] = True
        try:
            job = await self._call(lambda: self._low.cancel_job(task_id), "cancel")
            if job.status.value == "expired":
                job = await self._read(task_id, "cancel")
            end = time.monotonic() + CANCEL_SETTLE_S
            while job.status.value not in TERMINAL:
                if time.monotonic() > end:
                    raise errors.BusyError(key="err_v2_cancel_ignored", values={"url": self.base, "id": task_id,
                                           "status": job.status.value}, call="cancel", hint="")
                await asyncio.sleep(CANCEL_POLL_S)
                job = await self._read(task_id, "cancel")
        except errors.NotFoundError:
            return   # the server no longer has it: nothing runs

    # ---- results -----------------------------------------------------------------------------------
    async def fetch(self, url: str, max_bytes: int | None = None, budget=None) -> bytes:
        parts = urlsplit(url)
        found = _CONTENT.search(parts.path) if origin(url) == origin(self.base) else None
        if found and set(parse_qs(parts.query)) <= {"filename"}:
            url = url.split("?", 1)[0]   # the name is the pack's own: not sent
        try:
            return await download(self.transport, url, max_bytes=max_bytes, budget=budget)
        except errors.GPUGeekError as e:
            if not found or not e.status or (e.status >= 400 and e.status not in (401, 403, 404, 410)):
                raise
            if e.status >= 400:   # this server's own answer about its result: said in its own words
                values = {"url": self.base, "status": e.status, "call": "download", "message": e.message}
                gone = e.status in (404, 410)
                key = "err_v2_result_gone" if gone else "err_v2_auth" if self._key else "err_v2_no_key"
                cls = errors.NotFoundError if gone else errors.AuthError
                raise cls(key=key, values=values, status=e.status, call="download", hint="") from None
        # this server's content URL answered with signed storage elsewhere: asked for without following it,
        # fetched there without the key
        link, _ = await self._call(lambda: self._low.get_asset_content_url(found.group(1)), "download")
        return await download(self.transport, link, max_bytes=max_bytes, budget=budget)

    async def ping(self, lang: str = "en") -> tuple[bool, str]:
        try:
            await self._call(lambda: self._low.get_job(str(uuid.uuid4())), "test")
        except errors.NotFoundError as e:
            if not str(e.values.get("message", "")).startswith("HTTP "):  # the v2 envelope: no such job
                return True, texts.text("v2_ping_ok", lang, url=self.base)
            return False, texts.text("v2_ping_not_v2", lang, url=self.base)
        except errors.GPUGeekError as e:
            return False, e.text(lang)
        return True, texts.text("v2_ping_ok", lang, url=self.base)

    async def close(self) -> None:
        tasks = self._streams + [st["read"] for st in self._state.values() if st["read"] is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._http.aclose()


def _new_state() -> dict:
    return {"queued": time.monotonic(), "started": None, "status": "queued", "position": 0, "node": None,
            "value": 0, "max": 0, "preview": None, "live": False, "final_hint": False, "done": False, "asked": 0.0,
            "cancel_sent": False, "read": None}


def _with_assets(prompt: dict) -> dict:
    """The prompt with each uploaded input (a token in a node's inputs, or in the dict of one: Load 3D's viewer
    captures) as a core/ASSET reference."""
    def ref(v):
        if isinstance(v, dict):
            return {k: ref(x) for k, x in v.items()}
        if isinstance(v, str) and v.startswith(ASSET_TOKEN):
            try:
                return {"__type": "core/ASSET", "info": json.loads(v[len(ASSET_TOKEN):])}
            except ValueError:
                pass   # not one of ours: the server says what it makes of it
        return v
    return {nid: {**node, "inputs": {k: ref(v) for k, v in (node.get("inputs") or {}).items()}}
            for nid, node in prompt.items()}


# The contract's own node-error reasons, in ComfyUI's words where they mean the same
_REASONS = {"missing_input": "required_input_missing"}


def _as_comfy(e: ComfyError, prompt: dict) -> dict:
    """A refusal in ComfyUI's shape (what cloud_errors reads): the proxy passes ComfyUI's node_errors through;
    the contract's own form is ``{node: [{field, reason}]}``; a missing node type is named by message only."""
    node_errors = {}
    for nid, errs in ((e.details or {}).get("node_errors") or {}).items():
        if isinstance(errs, dict):
            node_errors[str(nid)] = errs
        elif isinstance(errs, list):
            node_errors[str(nid)] = {"class_type": (prompt.get(str(nid)) or {}).get("class_type"), "errors": [
                {"type": _REASONS.get(str(x.get("reason")), str(x.get("reason"))), "message": str(x.get("reason")),
                 "details": str(x.get("field") or ""), "extra_info": {"input_name": x.get("field")}}
                for x in errs if isinstance(x, dict)]}
    message = str(getattr(e, "message", "") or e)
    cls = message[len("Cannot execute because node "):-len(" does not exist.")] \
        if message.startswith("Cannot execute because node ") and message.endswith(" does not exist.") else None
    node = next((nid for nid, n in prompt.items() if cls and n.get("class_type") == cls), "")
    return {"node_errors": node_errors, "error": {"message": message, "details": f"Node ID '#{node}'" if node else ""}}
