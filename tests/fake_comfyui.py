"""A small fake of ComfyUI's own HTTP and websocket API (the second target), on a real socket on 127.0.0.1:
/prompt (node_errors for unknown classes), /queue (list, delete), /interrupt (by prompt id), /history/{id},
/view, /upload/image, /system_stats and /ws with execution_start / executing / progress / executed /
execution_success / execution_error / execution_interrupted, run one prompt at a time like ComfyUI. Also what
comfy-api-proxy calls upstream: the newer ComfyUI's /api/jobs/{id}/cancel (that prompt only: dequeued while
pending, interrupted while running), the /ws feature_flags handshake, and one socket per client id (a second
connection with the same id takes the events, as in ComfyUI)."""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import struct
import threading
import time
import uuid

from aiohttp import WSMsgType, web

from fake_gpugeek import animated_webp, close_server_loop, photo_png
from PIL import Image

# ComfyUI's bound on one request (its --max-upload-size, 100 MB by default): an upload above it is refused (413)
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
MODELS = ["v1-5-pruned-emaonly.safetensors"]
KNOWN = {"LoadImage", "LoadImageMask", "ImageInvert", "ImageScale", "ImageScaleBy", "SaveImage", "PreviewImage",
         "EmptyImage", "VAEEncode", "VAEDecode", "KSampler", "CheckpointLoaderSimple", "CLIPTextEncode",
         "EmptyLatentImage", "MaskToImage", "ImageBatch", "VAEEncodeForInpaint", "SaveAnimatedWEBP",
         "RebatchImages", "LoraLoader"}
# What the fake's model folders list (folder kind -> its first folder), when models are received: as ComfyUI's
# get_filename_list, every file under the folder (subfolders too), by its relative name with "/"
MODEL_KINDS = ("loras", "checkpoints")
MODEL_ROUTES = (("POST", "/gpugeek/models/has"), ("PUT", "/gpugeek/models/upload"), ("POST", "/gpugeek/models/fetch"))


class FakeComfyUI:
    def __init__(self, token: str | None = None, step_s: float = 0.01, steps: int = 5, size: int = 32,
                 files: int = 1, run_s: float = 0.0):
        self.token = token
        self.size, self.files, self.run_s = size, files, run_s
        self.finished_at: dict = {}     # prompt id -> time.monotonic() when it finished
        self.started_at: dict = {}
        self.step_s, self.steps = step_s, steps
        self.previews_for, self.previews_sent = set(), 0   # prompts that asked for previews (extra_data)
        self.preview_all = False   # previews for every prompt, as a server started with --preview-method auto
        self.job_cancels: list = []   # ids given to /api/jobs/{id}/cancel
        self.cancel_route = True      # False: a ComfyUI without /api/jobs/{id}/cancel (0.3.x): 404
        self.pending: list = []          # [number, prompt_id, prompt, client_id]
        self.running: list | None = None
        self.history: dict = {}
        self.inputs: dict = {}           # "sub/name" -> bytes (unless keep_input_bytes is False)
        self.input_digests: dict = {}    # "sub/name" -> (size, sha256) of every upload
        self.keep_input_bytes = True     # False: a test that measures the client's memory in this process
        self.outputs: dict = {}          # filename -> bytes
        self.sockets: dict = {}          # client_id -> [ws]
        self.calls: list = []
        self.interrupts: list = []
        self.deleted: list = []
        self.fail_class: str | None = None
        # how a saver names its files ({n}: the server's count of outputs); a test may ask for names a real
        # server can answer with: not UTF-8 (Linux lets caf\xe9_00001_.png exist: its history says "caf\udce9"),
        # NUL, very long
        self.output_name = "ComfyUI_{n:05d}_"
        self.ui_text: str | None = None   # a text each saver's ui shows too, as Preview Any's (any str JSON carries)
        self.object_info: object = None   # what /object_info answers (None: definitions of KNOWN, as ComfyUI)
        self._n = 0
        self._interrupt = False
        self.receiver = None              # the pack's own receiver (offload/receive.py) once models are received
        self.models_dir = None
        self.model_bytes_in = 0           # the bytes of models the server read, every upload's
        self.break_upload_after = None    # the next model upload's connection drops after this many bytes
        self.up_mbit = None               # a link for models' bytes (bench/models.py --link): read at this rate,
        self.latency_ms = 0.0             # each model call answered this much later

    def receive_models(self, folder, token=None, **kw):
        """Receiving on, as a ComfyUI with the pack and GPUGEEK_RECEIVE_MODELS=1: the pack's own receiver and
        routes, over model folders under ``folder``; LoraLoader's list is then what the loras folder holds."""
        from conftest import core
        import os
        receive = core("receive")
        self.models_dir = str(folder)
        for kind in MODEL_KINDS:
            os.makedirs(os.path.join(folder, kind), exist_ok=True)
        self.receiver = receive.Receiver(lambda kind: [os.path.join(folder, kind)] if kind in MODEL_KINDS else [],
                                         token=token, index_path=os.path.join(folder, "index.json"), **kw)
        self._receive = receive
        self.model_handlers = receive.handlers(lambda: self.receiver, pieces=self._pieces)
        return self.receiver

    def model_list(self, kind):
        import os
        if self.models_dir is None:
            return []
        base = os.path.join(self.models_dir, kind)
        return sorted(os.path.relpath(os.path.join(d, f), base).replace(os.sep, "/")
                      for d, _, fs in os.walk(base, followlinks=True) for f in fs
                      if f.endswith((".safetensors", ".sft", ".gguf", ".ckpt", ".pt")))

    def _auth(self, request):
        if self.token and request.headers.get("Authorization") not in (f"Bearer {self.token}",):
            raise web.HTTPUnauthorized(text="unauthorized")

    async def _send_preview(self, client_id, pid, nid, step):
        """A sampler preview as ComfyUI sends it: binary, event 1 (format + JPEG) on even steps, event 4 (JSON
        header with node and prompt, then the image) on odd ones."""
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (step * 40 % 256, 0, 0)).save(buf, format="JPEG")
        if step % 2 == 0:
            frame = struct.pack(">I", 1) + struct.pack(">I", 1) + buf.getvalue()
        else:
            meta = json.dumps({"node_id": nid, "display_node_id": nid, "prompt_id": pid,
                               "image_type": "image/jpeg"}).encode()
            frame = struct.pack(">I", 4) + struct.pack(">I", len(meta)) + meta + buf.getvalue()
        self.previews_sent += 1
        for ws in list(self.sockets.get(client_id, [])):
            try:
                await ws.send_bytes(frame)
            except Exception:
                pass

    async def _send(self, client_id, kind, data):
        for ws in list(self.sockets.get(client_id, [])):
            try:
                await ws.send_str(json.dumps({"type": kind, "data": data}))
            except Exception:
                pass

    async def h_prompt(self, request):
        self._auth(request)
        self.calls.append("prompt")
        body = await request.json()
        prompt = body.get("prompt") or {}
        # as ComfyUI's validate_prompt answers: an unknown class ends validation at once (top-level error, no
        # node_errors); a value not among a node's choices is a node error with the input and the value
        missing = [(nid, node.get("class_type")) for nid, node in prompt.items() if node.get("class_type") not in KNOWN]
        if missing:
            nid, cls = missing[0]
            return web.json_response({"error": {"type": "invalid_prompt", "message": f"Cannot execute because node "
                                                f"{cls} does not exist.", "details": f"Node ID '#{nid}'",
                                                "extra_info": {}}, "node_errors": {}}, status=400)
        errors = {nid: {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                    "details": f"ckpt_name: '{node['inputs']['ckpt_name']}' not in {MODELS}",
                                    # as ComfyUI: the input's spec when its list has at most 20 values
                                    "extra_info": {"input_name": "ckpt_name", "input_config": [MODELS, {}],
                                                   "received_value": node["inputs"]["ckpt_name"]}}],
                        "dependent_outputs": [], "class_type": node["class_type"]}
                  for nid, node in prompt.items() if node.get("class_type") == "CheckpointLoaderSimple"
                  and node.get("inputs", {}).get("ckpt_name") not in MODELS}
        for nid, node in prompt.items():   # a LoRA the server's folder lacks, as ComfyUI refuses it
            lora = node.get("inputs", {}).get("lora_name")
            if node.get("class_type") == "LoraLoader" and lora not in self.model_list("loras"):
                errors[nid] = {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                           "details": f"lora_name: '{node['inputs']['lora_name']}' not in list",
                                           "extra_info": {"input_name": "lora_name",
                                                          "received_value": node["inputs"]["lora_name"]}}],
                               "dependent_outputs": [], "class_type": "LoraLoader"}
        if errors:
            return web.json_response({"error": {"type": "prompt_outputs_failed_validation", "message":
                                                "Prompt outputs failed validation", "details": ""},
                                      "node_errors": errors}, status=400)
        pid = body.get("prompt_id") or str(uuid.uuid4())
        if ((body.get("extra_data") or {}).get("preview_method") or "none") != "none":
            self.previews_for.add(pid)
        self._n += 1
        self.pending.append([self._n, pid, prompt, body.get("client_id")])
        return web.json_response({"prompt_id": pid, "number": self._n, "node_errors": {}})

    async def worker(self):
        while True:
            if not self.pending:
                await asyncio.sleep(0.005)
                continue
            item = self.pending.pop(0)
            self.running = item
            _, pid, prompt, cid = item
            start = time.time() * 1000
            self.started_at[pid] = time.monotonic()
            msgs = [["execution_start", {"prompt_id": pid, "timestamp": start}]]
            await self._send(cid, "execution_start", {"prompt_id": pid, "timestamp": start})
            outputs, status = {}, "success"
            self._interrupt = False
            for nid in sorted(prompt):
                node = prompt[nid]
                await self._send(cid, "executing", {"node": nid, "display_node": nid, "prompt_id": pid})
                if node["class_type"] == "KSampler" or node["class_type"] == "ImageInvert":
                    for s in range(self.steps):
                        await asyncio.sleep(self.step_s)
                        if self._interrupt:
                            break
                        await self._send(cid, "progress", {"value": s + 1, "max": self.steps, "node": nid, "prompt_id": pid})
                        if pid in self.previews_for or self.preview_all:
                            await self._send_preview(cid, pid, nid, s)
                if self._interrupt:
                    status = "interrupted"
                    break
                if node["class_type"] == self.fail_class:
                    status = "error"
                    err = {"prompt_id": pid, "node_id": nid, "node_type": node["class_type"],
                           "exception_message": "CUDA out of memory", "exception_type": "RuntimeError",
                           "timestamp": time.time() * 1000}
                    msgs.append(["execution_error", err])
                    await self._send(cid, "execution_error", err)
                    break
                if node["class_type"] in ("SaveImage", "PreviewImage", "SaveAnimatedWEBP"):
                    src = prompt.get(str(node["inputs"]["images"][0]), {})
                    split = src.get("class_type") == "RebatchImages"   # a list of single images: a call each
                    if split:
                        src = prompt.get(str(src["inputs"]["images"][0]), {})
                    data = None
                    if src.get("class_type") == "LoadImage":
                        data = self.inputs.get(src["inputs"]["image"])
                    outputs[nid] = {"images": []}
                    imgs = [data or photo_png(self.size, self.size if self.size != 32 else 24, seed=len(self.outputs) + k)
                            for k in range(self.files)]
                    if node["class_type"] == "SaveAnimatedWEBP":   # one file per call, as ComfyUI writes it
                        imgs = [animated_webp([i], node["inputs"]) for i in imgs] if split else [animated_webp(imgs, node["inputs"])]
                        outputs[nid]["animated"] = [True] * len(imgs)
                    for img in imgs:
                        fname = self.output_name.format(n=len(self.outputs)) + \
                            f".{'webp' if img[:4] == b'RIFF' else 'png'}"
                        self.outputs[fname] = img
                        outputs[nid]["images"].append({"filename": fname, "subfolder": "", "type": "output"})
                    if self.ui_text is not None:
                        outputs[nid]["text"] = [self.ui_text]
                    await self._send(cid, "executed", {"node": nid, "output": outputs[nid], "prompt_id": pid})
            if self.run_s:
                await asyncio.sleep(max(0.0, self.run_s - (time.monotonic() - self.started_at[pid])))
            end = time.time() * 1000
            if status == "interrupted":
                msgs.append(["execution_interrupted", {"prompt_id": pid, "timestamp": end}])
                await self._send(cid, "execution_interrupted", {"prompt_id": pid})
            elif status == "success":
                msgs.append(["execution_success", {"prompt_id": pid, "timestamp": end}])
                await self._send(cid, "execution_success", {"prompt_id": pid, "timestamp": end})
            self.history[pid] = {"prompt": item, "outputs": outputs, "status": {
                "status_str": "success" if status == "success" else "error", "completed": status == "success",
                "messages": msgs}}
            self.finished_at[pid] = time.monotonic()
            self.running = None
            await self._send(cid, "executing", {"node": None, "prompt_id": pid})

    async def h_queue(self, request):
        self._auth(request)
        if request.method == "POST":
            body = await request.json()
            for pid in body.get("delete", []):
                self.deleted.append(pid)
                self.pending = [p for p in self.pending if p[1] != pid]
            return web.Response(status=200)
        return web.json_response({"queue_running": [self.running[:3]] if self.running else [],
                                  "queue_pending": [p[:3] for p in self.pending]})

    async def h_interrupt(self, request):
        self._auth(request)
        body = await request.json()
        self.interrupts.append(body.get("prompt_id"))
        if self.running and (not body.get("prompt_id") or body.get("prompt_id") == self.running[1]):
            self._interrupt = True
        return web.Response(status=200)

    async def h_job_cancel(self, request):
        """The newer ComfyUI's cancel of exactly one prompt: dequeued while pending, interrupted while running."""
        self._auth(request)
        if not self.cancel_route:
            raise web.HTTPNotFound()
        pid = request.match_info["pid"]
        self.job_cancels.append(pid)
        # as ComfyUI 0.33's server.py answers: 200 and whether it fired; a finished or unknown id is no error
        if any(p[1] == pid for p in self.pending):
            self.pending = [p for p in self.pending if p[1] != pid]
            return web.json_response({"cancelled": True})
        if self.running and self.running[1] == pid:
            self._interrupt = True
            return web.json_response({"cancelled": True})
        return web.json_response({"cancelled": False})

    async def h_history(self, request):
        self._auth(request)
        pid = request.match_info["pid"]
        return web.json_response({pid: self.history[pid]} if pid in self.history else {})

    async def h_view(self, request):
        self._auth(request)
        name = request.query.get("filename", "")
        data = self.outputs.get(name)
        return web.Response(body=data, content_type="image/png") if data else web.Response(status=404)

    async def h_upload(self, request):
        self._auth(request)
        self.calls.append("upload")
        form = await request.post()
        f = form["image"]
        sub = form.get("subfolder", "")
        key = f"{sub}/{f.filename}" if sub else f.filename
        digest, size = hashlib.sha256(), 0
        kept = []
        for chunk in iter(lambda: f.file.read(1 << 16), b""):   # aiohttp put the part in a temporary file
            digest.update(chunk)
            size += len(chunk)
            if self.keep_input_bytes:
                kept.append(chunk)
        self.input_digests[key] = (size, digest.hexdigest())
        if self.keep_input_bytes:
            self.inputs[key] = b"".join(kept)
        return web.json_response({"name": f.filename, "subfolder": sub, "type": "input"})

    async def h_object_info(self, request):
        self._auth(request)
        self.calls.append("object_info")
        if isinstance(self.object_info, (bytes, str)):
            return web.Response(body=self.object_info, content_type="application/json")
        info = self.object_info if self.object_info is not None else {
            cls: {"input": {"required": {"ckpt_name": [MODELS, {}]} if cls == "CheckpointLoaderSimple" else {}},
                  "output": [], "name": cls} for cls in sorted(KNOWN)}
        return web.json_response(info)

    async def h_stats(self, request):
        self._auth(request)
        return web.json_response({"system": {"comfyui_version": "0.3.64-fake"}})

    async def h_ws(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        cid = request.query.get("clientId", "")
        self.sockets[cid] = [ws]   # as ComfyUI: a reconnect with the same id replaces the earlier socket
        await ws.send_str(json.dumps({"type": "status", "data": {"sid": cid}}))
        first = True
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
            if first and msg.type == WSMsgType.TEXT and '"feature_flags"' in msg.data:
                await ws.send_str(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
            first = False
        if ws in self.sockets.get(cid, []):
            self.sockets[cid].remove(ws)
        return ws

    def _counted(self, path):
        """The pack's own handler of a model route (once models are received: the pack is loaded only then), its
        calls counted; 404 before, as a ComfyUI without the pack."""
        async def counted(request):
            self.calls.append("model_" + path.rsplit("/", 1)[-1])
            if self.receiver is None:
                raise web.HTTPNotFound()
            if self.latency_ms:
                await asyncio.sleep(self.latency_ms / 1000)
            return await self.model_handlers[(request.method, path)](request)
        return counted

    def _pieces(self, request):
        """An upload's bytes as the receiver reads them, counted; the connection dropped mid-way where a test asks
        (``break_upload_after``)."""
        async def pieces():
            seen, start = 0, time.monotonic()
            async for piece in self._receive.body_pieces(request):   # as the pack's route reads them
                self.model_bytes_in += len(piece)
                seen += len(piece)
                if self.up_mbit:   # no faster than the link
                    await asyncio.sleep(max(0.0, start + seen * 8 / (self.up_mbit * 1e6) - time.monotonic()))
                yield piece
                if self.break_upload_after is not None and seen >= self.break_upload_after:
                    self.break_upload_after = None
                    request.transport.close()
                    raise ConnectionResetError("Connection lost")   # what aiohttp's reader raises then
        return pieces()

    def start(self):
        ready = threading.Event()

        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            # ComfyUI's own bound on a request (--max-upload-size, 100 MB by default)
            app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
            app.router.add_post("/prompt", self.h_prompt)
            app.router.add_get("/queue", self.h_queue)
            app.router.add_post("/queue", self.h_queue)
            app.router.add_post("/interrupt", self.h_interrupt)
            app.router.add_post("/api/jobs/{pid}/cancel", self.h_job_cancel)
            app.router.add_get("/history/{pid}", self.h_history)
            app.router.add_get("/view", self.h_view)
            app.router.add_post("/upload/image", self.h_upload)
            app.router.add_get("/system_stats", self.h_stats)
            app.router.add_get("/object_info", self.h_object_info)
            app.router.add_get("/ws", self.h_ws)
            for method, path in MODEL_ROUTES:
                app.router.add_route(method, path, self._counted(path))
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
            self.loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
            self.loop.create_task(self.worker())
            ready.set()
            self.loop.run_forever()
            close_server_loop(self.loop, runner)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self):
        if self.loop.is_closed():   # stopped already
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
