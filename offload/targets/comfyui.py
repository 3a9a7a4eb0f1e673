"""The second target: any ComfyUI server (a GPU box on the LAN, a rented instance), through ComfyUI's own
HTTP and websocket API, with nothing to install on the remote side.

Inputs go up through ``/upload/image``, which takes any file (content-hash names, so a file the server has is
not sent again; into the subfolder where the loader looks, offload/plan/kinds.py), the cloud part is queued on
``/prompt`` with the pack's own client id, progress comes from ``/ws`` (which node runs, its steps), results
from ``/history/{id}`` and ``/view``: every file a node's ui names, and the text it shows (Preview Any's), which
comes back as a ``data:`` address holding it. A stop cancels exactly that prompt:
deleted from the queue while pending, ``/interrupt`` with its id while running, never another user's.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import mimetypes
import struct
import time
import uuid
from urllib.parse import quote, urlencode, urlsplit

import aiohttp

from .. import cloud_errors, errors, receive, texts
from ..config import check_base_url
from ..plan import kinds
from ..redact import get_logger, register_secret
from ..transfer import cut_utf8, exact_bytes, upload_body
from ..transport import RetryPolicy, Transport, download, page_snippet
from ..wire import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, TaskDetail

# ComfyUI's binary websocket events (server.py BinaryEventTypes): a preview image, and one with its node
PREVIEW_IMAGE, PREVIEW_WITH_METADATA = 1, 4
# A preview larger than this is not a preview: ignored.
MAX_PREVIEW_BYTES = 4 * 1024 * 1024
log = get_logger("gpugeek.comfy_target")
# Where uploads go in the server's input folder (one place, easy to clean).
UPLOAD_SUBFOLDER = "gpugeek"
# A prompt the server no longer lists (neither queued, running nor in history) this many times in a row
# is reported as lost (the server restarted or its history was cleared).
MISSING_LIMIT = 5
# How long to wait for the websocket to connect before relying on HTTP polling alone.
WS_CONNECT_TIMEOUT_S = 5.0
# A node's text (Preview Any's) comes back as an address holding it, kept in the journal with the task: a text
# longer than this is cut there (and says so with a closing ellipsis).
MAX_TEXT_BYTES = 64 * 1024
TEXT_PREFIX = "data:text/plain;charset=utf-8;base64,"
_ELLIPSIS = "\u2026".encode("utf-8")
# A model's upload, and the question whether the server has it: the server may hash a whole file of the same name
# before it answers (once: a 24 GB model, about a minute on a slow disk).
MODEL_READ_TIMEOUT_S = 600.0
# While the server downloads a template's model, it is asked how far it is this often (the node shows it).
MODEL_FETCH_POLL_S = 1.0


def text_url(text: str) -> str:
    """The address a node's text comes back as (read again by :func:`text_of`): its exact bytes, whatever the
    text holds (surrogates, NUL: transfer.exact_bytes), at most MAX_TEXT_BYTES (cut at a character's start)."""
    raw = exact_bytes(text)
    if len(raw) > MAX_TEXT_BYTES:   # the ellipsis within the limit too
        raw = cut_utf8(raw, MAX_TEXT_BYTES - len(_ELLIPSIS)) + _ELLIPSIS
    return TEXT_PREFIX + base64.b64encode(raw).decode("ascii")


def text_of(url: str) -> bytes:
    try:
        return base64.b64decode(url[len(TEXT_PREFIX):], validate=True)
    except ValueError:
        raise errors.ResultError("A text result could not be read", call="download") from None


class ComfyUITarget:
    def __init__(self, session: aiohttp.ClientSession, url: str, *, token: str | None = None,
                 allow_lan_http: bool = False, retry: RetryPolicy | None = None, client_id: str | None = None):
        self.session = session
        self.url = check_base_url(url, allow_lan_http=allow_lan_http)
        self._host = urlsplit(self.url).netloc
        self.name = "comfyui@" + self._host
        self.client_id = client_id or f"gpugeek-{uuid.uuid4().hex[:12]}"
        self.transport = Transport(session, retry or RetryPolicy())
        self._headers = {}
        if token:
            register_secret(token)
            if ":" in token and not token.lower().startswith("bearer "):
                register_secret(base64.b64encode(token.encode()).decode())
                self._headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
            else:
                self._headers["Authorization"] = "Bearer " + token.removeprefix("Bearer ").strip()
            self.transport.bind(self.url, self._headers)  # the token goes to this server and nowhere else
        self._state: dict[str, dict] = {}
        self._ws_task: asyncio.Task | None = None
        self._ws_ok = False
        self._jobs_api: bool | None = None   # whether the server has /api/jobs/{id}/cancel (ComfyUI 0.33): unknown
        self._missing: dict[str, int] = {}

    # ---- plumbing ----------------------------------------------------------------------------------
    async def _request(self, method: str, path: str, call: str, *, safe: bool, raw: bool = False, **kw):
        """The server's JSON answer (its text where it is not JSON; with ``raw``, its bytes as they came, for a
        big answer parsed elsewhere than on the event loop); an error for any status of 300 and above."""
        try:
            resp = await self.transport.request(method, self.url + path, call=call, safe=safe,
                                                source="the ComfyUI server", **kw)
        except errors.SubmitUnknownError as e:
            e.hint = "The prompt may be queued there: check its queue before running again."
            raise
        except errors.TransportError as e:
            if e.message.startswith("Cannot connect"):
                e.hint = ("Check that the server runs and the address in the gateway's target (or Settings > "
                          "GPUGeek) is right.")
            raise
        if resp.status < 300 and raw:
            return resp.body
        text = resp.text
        if resp.status < 300:
            try:
                return json.loads(text) if text.strip() else None
            except ValueError:
                return text
        if resp.status in (401, 403):
            raise errors.AuthError(f"The ComfyUI server refused access (HTTP {resp.status})", status=resp.status, call=call,
                              hint="Set the server's token (user:password for basic auth) in Settings > GPUGeek "
                                   "or GPUGEEK_TARGET_TOKEN.")
        err = errors.from_http(resp.status, message=f"The ComfyUI server answered HTTP {resp.status}: "
                                               f"{page_snippet(text)}", call=call)
        err.body = text
        if not safe and resp.status >= 500:
            raise errors.SubmitUnknownError(err.message, status=resp.status, call=call,
                                       hint="The prompt may be queued there: check its queue before running again.")
        raise err

    async def _ensure_ws(self) -> None:
        if self._ws_task is not None:
            return
        ready = asyncio.Event()
        self._ws_task = asyncio.ensure_future(self._listen(ready))
        try:
            await asyncio.wait_for(ready.wait(), WS_CONNECT_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("No websocket from %s: progress is polled over HTTP", self.url)

    async def _listen(self, ready: asyncio.Event) -> None:
        ws_url = self.url.replace("http", "ws", 1) + "/ws?" + urlencode({"clientId": self.client_id})
        try:
            proxy, proxy_auth = self.transport.proxy_for(ws_url)
            async with self.session.ws_connect(ws_url, headers=self._headers, heartbeat=30, proxy=proxy,
                                               proxy_auth=proxy_auth) as ws:
                self._ws_ok = True
                ready.set()
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        try:
                            self._on_message(json.loads(msg.data))
                        except (ValueError, TypeError, KeyError):
                            continue
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        self._on_preview(msg.data)
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            log.info("Websocket to %s ended: %s", self.url, type(e).__name__)
        finally:
            self._ws_ok = False
            ready.set()
            for st in self._state.values():   # waits go back to asking over HTTP at once
                self._touch(st)

    def _on_preview(self, data: bytes) -> None:
        """A sampler preview (ComfyUI's binary frames: event 1, an image with its format; event 4, with the
        node and prompt in a JSON header), kept as the newest of the prompt that runs, for its cloud node."""
        if len(data) < 8 or len(data) > MAX_PREVIEW_BYTES:
            return
        event = struct.unpack(">I", data[:4])[0]
        if event == PREVIEW_IMAGE:
            kind, image, meta = struct.unpack(">I", data[4:8])[0], data[8:], {}
            mime = "image/png" if kind == 2 else "image/jpeg"
        elif event == PREVIEW_WITH_METADATA:
            size = struct.unpack(">I", data[4:8])[0]
            try:
                meta = json.loads(data[8:8 + size])
            except ValueError:
                return
            image, mime = data[8 + size:], str(meta.get("image_type") or "image/jpeg")
        else:
            return
        pid = meta.get("prompt_id") or next((p for p, st in self._state.items()
                                             if st.get("started") and not st.get("done")), None)
        st = self._state.get(pid) if pid else None
        if st is None or not image:
            return
        node = str(meta.get("display_node_id") or meta.get("node_id") or st.get("node") or "")
        st["preview"] = (node, mime, bytes(image), (st.get("preview") or (0, 0, 0, 0))[3] + 1)
        self._touch(st)

    def _on_message(self, m: dict) -> None:
        kind, data = m.get("type"), m.get("data") or {}
        pid = data.get("prompt_id")
        if pid is None or pid not in self._state:
            return
        st = self._state[pid]
        self._touch(st)
        if kind == "execution_start":
            st["started"] = time.monotonic()
        elif kind == "executing":
            st.setdefault("started", time.monotonic())
            st["node"] = data.get("node")
            st["value"] = st["max"] = 0
            if data.get("node") is None:
                st["done"] = True
        elif kind == "progress":
            st["node"], st["value"], st["max"] = data.get("node"), int(data.get("value", 0)), int(data.get("max", 0))
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            st["done"] = True
            if kind == "execution_error":
                st["error"] = f"{data.get('node_type', '')} #{data.get('node_id', '?')}: {data.get('exception_message', '')}".strip()

    @property
    def live(self) -> bool:
        """True while the websocket follows the server: status() then reads local state only."""
        return self._ws_ok

    def changed(self, task_id: str) -> asyncio.Event:
        """Set on each websocket message of the task (and when the websocket ends): the wait reads its status
        then, instead of looking every few milliseconds."""
        st = self._state.setdefault(task_id, {})
        if "changed" not in st:
            st["changed"] = asyncio.Event()
        return st["changed"]

    def _touch(self, st: dict) -> None:
        ev = st.get("changed")
        if ev is not None:
            ev.set()

    # ---- the target interface ----------------------------------------------------------------------
    async def upload(self, data, file_name: str, folder: str | None = None):
        """Any file (bytes, or a LocalFile streamed from the file) into the server's input folder, in ``gpugeek/``, or
        where the loader's list looks (``folder``, offload/plan/kinds.py): under ``3d/gpugeek/`` for Load 3D's list
        of every file under input/3d, at the top for a list of the top files; named by the server's answer as its
        loaders name files."""
        mime = mimetypes.guess_type(file_name)[0] or "application/octet-stream"
        sub = UPLOAD_SUBFOLDER if folder is None else f"{folder}/{UPLOAD_SUBFOLDER}" if folder else ""
        with upload_body(data) as body:
            def form():
                f = aiohttp.FormData()
                f.add_field("image", body() if callable(body) else body, filename=file_name, content_type=mime)
                f.add_field("subfolder", sub)
                f.add_field("type", "input")
                f.add_field("overwrite", "true")
                return f
            res = await self._request("POST", "/upload/image", "upload", safe=True, data=form)
        name = (res or {}).get("name") or file_name
        sub = (res or {}).get("subfolder") or ""
        return (f"{sub}/{name}" if sub else name), time.time() + 30 * 86400

    async def submit(self, prompt: dict, workflow_id=None) -> str:
        await self._ensure_ws()
        pid = str(uuid.uuid4())
        self._state[pid] = {"queued": time.monotonic()}
        try:
            res = await self._request("POST", "/prompt", "submit", safe=False,
                                      json={"prompt": prompt, "client_id": self.client_id, "prompt_id": pid,
                                            # sampler previews for this prompt, where the server can make them
                                            "extra_data": {"preview_method": "auto"}})
        except errors.BadRequestError as e:
            lines = cloud_errors.explain(getattr(e, "body", ""), prompt, texts.Said("where_server", {"url": self.url}))
            if not lines:
                raise
            refused = errors.BadRequestError(key="err_server_rejected", lines=lines, status=e.status, call="submit",
                                             hint="")
            refused.body = getattr(e, "body", "")   # the server's own answer: what it accepts is learned from it
            raise refused from None
        got = (res or {}).get("prompt_id") if isinstance(res, dict) else None
        if got and got != pid:
            self._state[got] = self._state.pop(pid)
            pid = got
        return pid

    async def status(self, task_id: str) -> TaskDetail:
        st = self._state.setdefault(task_id, {})
        started = st.get("started")
        if self._ws_ok and not st.get("done"):
            return self._detail(task_id, RUNNING if started else QUEUED, st)
        hist = await self._request("GET", f"/history/{task_id}", "task status", safe=True)
        if isinstance(hist, dict) and task_id in hist:
            self._missing.pop(task_id, None)
            return self._from_history(task_id, hist[task_id], st)
        queue = await self._request("GET", "/queue", "task status", safe=True) or {}
        running = [q[1] for q in queue.get("queue_running", []) if len(q) > 1]
        pending = sorted((q for q in queue.get("queue_pending", []) if len(q) > 1), key=lambda q: q[0])
        if task_id in running:
            st.setdefault("started", time.monotonic())
            return self._detail(task_id, RUNNING, st)
        ids = [q[1] for q in pending]
        if task_id in ids:
            d = self._detail(task_id, QUEUED, st)
            d.current_position, d.queue_size = ids.index(task_id) + 1 + len(running), len(ids) + len(running)
            return d
        self._missing[task_id] = self._missing.get(task_id, 0) + 1
        if self._missing[task_id] >= MISSING_LIMIT:
            raise errors.NotFoundError(f"The ComfyUI server at {self.url} no longer knows prompt {task_id}",
                                  call="task status", task_id=task_id,
                                  hint="It may have restarted; run the workflow again.")
        return self._detail(task_id, RUNNING if started else QUEUED, st)

    def _detail(self, pid: str, status: int, st: dict) -> TaskDetail:
        now = time.monotonic()
        started = st.get("started")
        return TaskDetail(prompt_id=pid, status=status, run_duration_ms=int((now - started) * 1000) if started else 0,
                          queue_duration_ms=int(((started or now) - st.get("queued", now)) * 1000),
                          node=st.get("node"), node_value=st.get("value", 0), node_max=st.get("max", 0),
                          error_msg=st.get("error", ""), preview=st.get("preview"))

    def _from_history(self, pid: str, entry: dict, st: dict) -> TaskDetail:
        status = entry.get("status") or {}
        msgs = status.get("messages") or []
        d = self._detail(pid, SUCCEEDED, st)
        if status.get("status_str") == "error":
            interrupted = any(m[0] == "execution_interrupted" for m in msgs if isinstance(m, list) and m)
            d.status = CANCELLED if interrupted else FAILED
            for m in msgs:
                if isinstance(m, list) and len(m) > 1 and m[0] == "execution_error":
                    e = m[1]
                    d.error_msg = f"{e.get('node_type', '')} #{e.get('node_id', '?')}: {e.get('exception_message', '')}"
            d.error_msg = d.error_msg or st.get("error", "") or "the cloud part failed"
        starts = [m[1].get("timestamp") for m in msgs if isinstance(m, list) and len(m) > 1 and m[0] == "execution_start"]
        ends = [m[1].get("timestamp") for m in msgs if isinstance(m, list) and len(m) > 1 and m[0] in
                ("execution_success", "execution_error", "execution_interrupted")]
        if starts and ends and starts[0] and ends[-1]:
            d.run_duration_ms = int(ends[-1] - starts[0])
        d.result_url = self._results(entry)
        return d

    def _results(self, entry: dict) -> dict:
        """Every file each node's ui names (as /view addresses) and each text it shows (as ``data:`` addresses),
        read by the one table of kinds with the class each node had in the prompt."""
        sent = entry.get("prompt")
        prompt = sent[2] if isinstance(sent, list) and len(sent) > 2 and isinstance(sent[2], dict) else {}
        urls: dict = {}
        for node, out in (entry.get("outputs") or {}).items():
            if not isinstance(out, dict):
                continue
            for found in kinds.ui_files((prompt.get(str(node)) or {}).get("class_type"), out):
                if found[0] == "text":
                    urls.setdefault(str(node), []).append(text_url(found[1]))
                    continue
                _, name, sub, kind = found
                # the exact names the server gave, percent-encoded whatever they hold (not UTF-8, NUL, long)
                q = urlencode({"filename": exact_bytes(name), "subfolder": exact_bytes(sub), "type": exact_bytes(kind)})
                urls.setdefault(str(node), []).append(f"{self.url}/view?{q}")
        return urls

    async def queue_load(self) -> int:
        """How busy the server is: prompts running and waiting in its queue (a pool sends to the least busy)."""
        queue = await self._request("GET", "/queue", "queue", safe=True) or {}
        return len(queue.get("queue_running") or []) + len(queue.get("queue_pending") or [])

    async def cancel(self, task_id: str) -> None:
        """Exactly this prompt: in one atomic call where the server has ComfyUI 0.33's jobs API, else read from
        its queue, then deleted while pending or interrupted by id while running."""
        if self._jobs_api is not False:
            try:
                await self._request("POST", f"/api/jobs/{quote(task_id, safe='')}/cancel", "cancel", safe=True)
                self._jobs_api = True
                return
            except (errors.NotFoundError, errors.BadRequestError) as e:
                if self._jobs_api or e.status not in (404, 405):
                    raise
                self._jobs_api = False   # ComfyUI 0.3.x: no such route
        queue = await self._request("GET", "/queue", "cancel", safe=True) or {}
        if any(len(q) > 1 and q[1] == task_id for q in queue.get("queue_pending", [])):
            await self._request("POST", "/queue", "cancel", safe=True, json={"delete": [task_id]})
        elif any(len(q) > 1 and q[1] == task_id for q in queue.get("queue_running", [])):
            await self._request("POST", "/interrupt", "cancel", safe=True, json={"prompt_id": task_id})

    @property
    def calls(self) -> list[str]:
        return self.transport.calls

    async def fetch(self, url: str, max_bytes: int | None = None, budget=None) -> bytes:
        if url.startswith(TEXT_PREFIX):   # a node's text, held in the address itself
            data = text_of(url)
            if budget is not None:
                budget.take(len(data))
            return data
        return await download(self.transport, url, max_bytes=max_bytes, budget=budget)

    async def ping(self, lang: str = "en") -> tuple[bool, str]:
        try:
            info = await self._request("GET", "/system_stats", "test", safe=True) or {}
        except errors.GPUGeekError as e:
            return False, str(e)
        version = ((info.get("system") or {}).get("comfyui_version")) if isinstance(info, dict) else None
        if not version:
            return False, f"{self.url} answered, but not as a ComfyUI server (no /system_stats): check the address."
        return True, f"Connected to the ComfyUI server at {self.url} (ComfyUI {version})."

    async def node_definitions(self, max_bytes: int) -> bytes:
        """The server's ``/object_info``, its bytes as they came (at most ``max_bytes``): a big install's are tens
        of MB, parsed in pieces on a worker thread (offload/catalog.py), never here on the event loop."""
        return await self._request("GET", "/object_info", "node definitions", safe=True, max_bytes=max_bytes,
                                   raw=True)

    # ---- models (offload/receive.py on the server; offload/run/models.py here) -------------------------------------
    async def _model_call(self, method: str, path: str, call: str, **kw):
        """A call to the server's receiving routes: its answer, None where it does not receive models (404), the
        server's sentence as ``refused`` (a texts.Said) on an error it explains."""
        try:
            return await self._request(method, path, call, safe=True, **kw)
        except errors.NotFoundError:
            return None
        except errors.GPUGeekError as e:
            try:
                said = json.loads(getattr(e, "body", "") or "")
            except ValueError:
                said = None
            if isinstance(said, dict) and said.get("key") == "receive_offset":
                return {"offset": int((said.get("values") or {}).get("offset") or 0)}
            if isinstance(said, dict) and isinstance(said.get("key"), str) and said["key"].startswith("receive_"):
                e.refused = texts.Said(said["key"], said.get("values") or {})
            raise

    async def model_has(self, kind: str, name: str, size: int, sha256: str, upload: str | None = None) -> dict | None:
        """``{"name": ...}`` where the server holds this content, else ``{"offset": n}``; None: it does not receive.
        With ``upload`` (the id of an upload sent before its hash was known): its hash told, the upload finished."""
        said = {"kind": kind, "name": name, "size": size, "sha256": sha256}
        if upload is not None:
            said["upload"] = upload
        return await self._model_call("POST", receive.HAS, "model", read_timeout=MODEL_READ_TIMEOUT_S, json=said)

    async def model_ask(self, kind: str, name: str, size: int, file_key: str, marks: dict | None = None) -> dict | None:
        """Asked before this machine hashed the file (receive.Receiver.ask): ``{"upload": id, "offset": n}`` (send
        it by that id), ``{"hash_first": True}`` (the server holds something of its size: ask by hash), None: it
        does not receive. A receiver before this refuses an ask without a hash: that is ``hash_first`` too.
        ``marks``: the file's ends (receive.file_marks), which let the server rule out files of its size."""
        try:
            return await self._model_call("POST", receive.HAS, "model", read_timeout=MODEL_READ_TIMEOUT_S,
                                          json={"kind": kind, "name": name, "size": size, "file": file_key,
                                                **(marks or {})})
        except errors.GPUGeekError as e:
            refused = getattr(e, "refused", None)
            if refused is not None and refused.key == "receive_bad_hash":
                return {"hash_first": True}
            raise

    async def model_upload(self, kind: str, name: str, size: int, sha256: str | None, path: str, offset: int,
                           progress=None, upload: str | None = None, hasher=None) -> dict:
        """Bytes ``offset``.. of the file at ``path``, streamed a piece at a time (``progress(bytes sent)``); by
        ``upload`` id where its hash is not known yet, ``hasher`` (a hashlib object) then fed each piece read."""
        length = size - offset

        def read(f, left: int) -> bytes:
            piece = f.read(min(receive.CHUNK, left))
            if left and not piece:   # the file became shorter than said: nothing more to send, ended here
                raise OSError(f"{name} became shorter while it was sent")
            if hasher is not None:
                hasher.update(piece)   # on the reading thread, while the piece before is sent
            return piece

        def body():
            async def pieces():
                # the next piece read on a thread of its own while this one is sent
                done, loop = offset, asyncio.get_running_loop()
                reader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpugeek-model")
                f = await loop.run_in_executor(reader, open, path, "rb")
                try:
                    f.seek(offset)
                    left = length
                    ahead = loop.run_in_executor(reader, read, f, left)
                    while True:
                        piece = await ahead
                        if not piece:
                            break
                        left -= len(piece)
                        ahead = loop.run_in_executor(reader, read, f, left)
                        yield piece
                        done += len(piece)
                        if progress is not None:
                            progress(done)
                finally:
                    await asyncio.gather(ahead, return_exceptions=True)
                    f.close()
                    reader.shutdown(wait=False)
            return pieces()
        params = {"kind": kind, "name": name, "size": str(size), "offset": str(offset)}
        params.update({"upload": upload} if upload is not None else {"sha256": sha256})
        got = await self._model_call("PUT", receive.UPLOAD, "model upload", data=body,
                                     read_timeout=MODEL_READ_TIMEOUT_S, params=params,
                                     # its length said: not sent in chunks (aiohttp would copy each one whole
                                     # to frame it), each piece handed to the socket as it was read
                                     headers={"Content-Type": "application/octet-stream",
                                              "Content-Length": str(length)})
        return got or {}

    async def model_fetch(self, kind: str, name: str, url: str, sha256: str | None, progress=None) -> dict | None:
        """The server downloads a template's model from its address itself: asked until it is there
        (``progress(done, total)`` on each answer), ``{"name": ...}``; None where the server does not receive."""
        while True:
            got = await self._model_call("POST", receive.FETCH, "model fetch",
                                         json={"kind": kind, "name": name, "url": url, "sha256": sha256})
            if got is None or got.get("name"):
                return got
            if progress is not None:
                progress(int(got.get("done") or 0), got.get("total"))
            await asyncio.sleep(MODEL_FETCH_POLL_S)

    async def close(self) -> None:
        if self._ws_task is not None:
            self._ws_task.cancel()
            await asyncio.gather(self._ws_task, return_exceptions=True)
