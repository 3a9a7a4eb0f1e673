"""A tiny stand-in for ComfyUI's prompt execution, no gentler than execution.py: the on_prompt handlers,
VALIDATE_INPUTS (refusals become node errors), then every node as soon as its inputs are ready, with link
inputs resolved (undeclared link inputs passed as keyword arguments, as ComfyUI does), async nodes running
concurrently. The first failure ends the prompt at once; the caller runs it inside ``asyncio.run``, which
then cancels every coroutine still alive, shielded ones included, as ComfyUI does at the end of a prompt."""
from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path

import numpy as np
import torch

FIX = Path(__file__).parent / "fixtures"


def stub_classes():
    """Core ComfyUI node classes with the right RETURN_TYPES; a few do something simple locally."""
    raw = json.loads((FIX / "classes.json").read_text())
    out = {}
    for name, spec in raw.items():
        if name.startswith("GPUGeek"):
            continue
        # widgets as ComfyUI declares them (ranges, choices), optional here so older test prompts stay valid
        out[name] = stub_class(name, {k: (t,) for k, t in spec.get("inputs", {}).items()}, spec.get("outputs", ()),
                               spec.get("output_node"), {k: tuple(v) for k, v in spec.get("widgets", {}).items()})
    return out


def stub_class(name: str, inputs: dict, outputs=(), output_node=False, widgets: dict | None = None):
    """One core class as ComfyUI declares it (``inputs`` required, ``widgets`` optional); run here, it does what
    _runner says (most refuse: a class a cloud part holds never runs locally)."""
    return type(name, (), {"RETURN_TYPES": tuple(outputs), "OUTPUT_NODE": bool(output_node), "FUNCTION": "run",
                           "INPUT_TYPES": classmethod(lambda cls, ins=inputs, w=widgets or {}: {"required": ins,
                                                                                                 "optional": w}),
                           "run": _runner(name)})


def _runner(name):
    def run(self, **kw):
        if name == "LoadImage":
            import folder_paths
            from PIL import Image
            im = Image.open(Path(folder_paths.get_input_directory()) / kw["image"]).convert("RGB")
            t = torch.from_numpy(np.asarray(im).astype(np.float32) / 255.0)[None]
            return (t, torch.zeros((1, 64, 64)))
        if name == "ImageInvert":
            return (1.0 - kw["image"],)
        if name in ("SaveImage", "PreviewImage"):
            SAVED.append(kw["images"])
            return {"ui": {"images": []}}
        if name == "PrimitiveString":
            return (kw.get("value", ""),)
        raise RuntimeError(f"stub {name} cannot run locally")
    return run


SAVED: list = []
# every file an output node showed (node, ui entry, sha256 of the file then): tests/invariants.py files()
SHOWN: list = []


def record_shown(nid, ui) -> None:
    import hashlib
    import os
    import folder_paths
    dirs = {"output": folder_paths.get_output_directory(), "temp": folder_paths.get_temp_directory(),
            "input": folder_paths.get_input_directory()}
    for entries in (ui or {}).values() if isinstance(ui, dict) else []:
        for e in entries if isinstance(entries, list) else []:
            if not (isinstance(e, dict) and e.get("filename") and e.get("type") in dirs):
                continue
            path = os.path.join(dirs[e["type"]], e.get("subfolder") or "", e["filename"])
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    SHOWN.append((nid, dict(e), hashlib.sha256(f.read()).hexdigest()))


class ValidationError(Exception):
    def __init__(self, node_errors):
        super().__init__(json.dumps(node_errors))
        self.node_errors = node_errors


def is_link(v):
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


class Cache:
    """ComfyUI's output cache across the prompts of one server (execution.py's classic cache): a node whose
    signature (its class, its literal inputs, what its IS_CHANGED says, and the signatures of the nodes it reads)
    is the same as in an earlier prompt is not run again: its outputs and ui are reused. A node that failed is not
    kept; IS_CHANGED's NaN never equals itself, so such a node always runs. A new Cache is a restarted ComfyUI."""

    def __init__(self):
        self.kept: dict = {}     # node id -> (signature, result, ui), as ComfyUI keeps one entry per node
        self.ran: list = []      # node ids run (not served from the cache), per prompt: [[ids], ...]

    def signature(self, prompt: dict, classes: dict, nid: str, memo: dict):
        if nid in memo:
            return memo[nid]
        node = prompt[nid]
        cls = classes[node["class_type"]]
        ins = []
        for k, v in sorted(node["inputs"].items()):
            ins.append((k, ("link", self.signature(prompt, classes, v[0], memo), v[1]) if is_link(v)
                        else json.dumps(v, sort_keys=True, default=str)))
        changed = None
        is_changed = getattr(cls, "IS_CHANGED", None)
        if is_changed is not None:
            names = inspect.signature(is_changed).parameters
            args = {k: v for k, v in node["inputs"].items() if not is_link(v)
                    and (k in names or any(p.kind == p.VAR_KEYWORD for p in names.values()))}
            changed = is_changed(**args)
            if isinstance(changed, float) and changed != changed:   # NaN: never the same
                changed = object()
        memo[nid] = (node["class_type"], tuple(ins), changed)
        return memo[nid]


async def execute(prompt: dict, classes: dict, server=None, outputs_cache=None, extra_data=None,
                  cache: Cache | None = None):
    """Run the prompt the way ComfyUI would; returns {node id: result tuple} and ui per node. ``extra_data``
    goes with the prompt to the on_prompt handlers, as POST /prompt's body carries it. ``cache``: ComfyUI's
    output cache kept across prompts (nodes whose signature did not change are not run again)."""
    extra_data = dict(extra_data or {})
    if server is not None:
        prompt = server.trigger_on_prompt({"prompt": prompt, "client_id": "test", "extra_data": extra_data})["prompt"]
    errors = {}
    for nid, node in prompt.items():
        cls = classes[node["class_type"]]
        v = getattr(cls, "VALIDATE_INPUTS", None)
        if v is None:
            continue
        names = inspect.signature(v).parameters
        args = {k: node["inputs"][k] for k in names if k in node["inputs"] and not is_link(node["inputs"][k])}
        if not args:
            continue
        r = v(**args)
        if r is not True:
            errors[nid] = {"errors": [{"type": "custom_validation_failed", "details": f"{list(args)[0]} - {r}"}],
                           "class_type": node["class_type"]}
    if errors:
        raise ValidationError(errors)
    results, ui = {}, {}
    pending = dict(prompt)
    sigs: dict = {}
    if cache is not None:
        cache.ran.append([])
        memo: dict = {}
        for nid in prompt:
            sigs[nid] = cache.signature(prompt, classes, nid, memo)

    async def run_one(nid):
        if cache is not None:
            kept = cache.kept.get(nid)
            if kept is not None and kept[0] == sigs[nid]:
                if kept[2] is not None:
                    ui[nid] = kept[2]
                return kept[1]
            cache.ran[-1].append(nid)
        out = await run_fresh(nid)
        if cache is not None:
            cache.kept[nid] = (sigs[nid], out, ui.get(nid))
        return out

    async def run_fresh(nid):
        node = prompt[nid]
        cls = classes[node["class_type"]]
        kw = {k: (results[v[0]][v[1]] if is_link(v) else v) for k, v in node["inputs"].items()}
        spec = cls.INPUT_TYPES()
        for k, t in spec.get("hidden", {}).items():
            if t == "UNIQUE_ID":
                kw[k] = nid
            elif t == "PROMPT":
                kw[k] = prompt
            elif t == "EXTRA_PNGINFO":
                kw[k] = extra_data.get("extra_pnginfo")
        fn = getattr(cls(), cls.FUNCTION)
        out = fn(**kw)
        if inspect.isawaitable(out):
            out = await out
        if isinstance(out, dict):
            ui[nid] = out.get("ui")
            record_shown(nid, ui[nid])
            out = out.get("result", ())
        return out

    running: dict = {}
    while pending or running:
        ready = [n for n, node in pending.items()
                 if all(not is_link(v) or v[0] in results for v in node["inputs"].values())]
        for nid in ready:
            running[asyncio.ensure_future(run_one(nid))] = nid
            pending.pop(nid)
        if not running:
            raise RuntimeError("stuck: " + ", ".join(pending))
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        failed = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]   # each read
        for task in done:
            nid = running.pop(task)
            if not failed:
                results[nid] = task.result()
        if failed:  # the first failure ends the prompt; asyncio.run cancels the rest
            raise failed[0]
    return results, ui, prompt


def validate(prompt: dict, classes: dict) -> None:
    """ComfyUI's VALIDATE_INPUTS pass (execute runs it too): a refusal raises ValidationError."""
    errors = {}
    for nid, node in prompt.items():
        v = getattr(classes[node["class_type"]], "VALIDATE_INPUTS", None)
        if v is None:
            continue
        names = inspect.signature(v).parameters
        args = {k: node["inputs"][k] for k in names if k in node["inputs"] and not is_link(node["inputs"][k])}
        if args and v(**args) is not True:
            errors[nid] = {"errors": [{"type": "custom_validation_failed"}], "class_type": node["class_type"]}
    if errors:
        raise ValidationError(errors)


class PromptQueue:
    """ComfyUI's execution.PromptQueue as 0.3.64 and 0.33.0 have it: a heap of items (number, prompt id, prompt,
    extra_data, outputs), the items running, the history; get_current_queue(_volatile), get_tasks_remaining,
    delete_queue_item and wipe_queue as the server's routes call them."""

    def __init__(self):
        import threading
        self.mutex = threading.RLock()
        self.not_empty = threading.Condition(self.mutex)
        self.queue: list = []
        self.currently_running: dict = {}
        self.history: dict = {}
        self.task_counter = 0

    def put(self, item):
        import heapq
        with self.mutex:
            heapq.heappush(self.queue, item)
            self.not_empty.notify()

    def get(self, timeout=None):
        import copy
        import heapq
        with self.not_empty:
            while not self.queue:
                self.not_empty.wait(timeout=timeout)
                if timeout is not None and not self.queue:
                    return None
            item = heapq.heappop(self.queue)
            i = self.task_counter
            self.currently_running[i] = copy.deepcopy(item)
            self.task_counter += 1
            return item, i

    def task_done(self, item_id, result: dict):
        with self.mutex:
            item = self.currently_running.pop(item_id)
            self.history[item[1]] = {"prompt": item, **result}

    def get_current_queue(self):
        import copy
        with self.mutex:
            return list(self.currently_running.values()), copy.deepcopy(self.queue)

    def get_current_queue_volatile(self):
        with self.mutex:
            return list(self.currently_running.values()), list(self.queue)

    def get_tasks_remaining(self):
        with self.mutex:
            return len(self.queue) + len(self.currently_running)

    def wipe_queue(self):
        with self.mutex:
            self.queue = []

    def delete_queue_item(self, function):
        import heapq
        with self.mutex:
            for x in range(len(self.queue)):
                if function(self.queue[x]):
                    self.queue.pop(x)
                    heapq.heapify(self.queue)
                    return True
        return False


class Queue:
    """ComfyUI's queue of prompts: ``post`` is POST /prompt (the on_prompt handlers, validation, then the queue; the
    answer is the prompt id), a worker thread runs the prompts one after the other in their own ``asyncio.run``, with
    ComfyUI's cache kept across them, as main.py's prompt_worker does. ``server.prompt_queue`` is this queue."""

    def __init__(self, classes: dict, server, cache: Cache | None = None):
        import itertools
        import threading
        self.classes, self.server = classes, server
        self.cache = cache if cache is not None else Cache()
        self.prompt_queue = PromptQueue()
        server.prompt_queue = self.prompt_queue
        self.number = itertools.count()
        self.results: dict = {}     # prompt id -> (results, ui) or the exception that ended it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="mini-comfy-worker", daemon=True)
        self._thread.start()

    def post(self, prompt: dict, extra_data: dict | None = None) -> str:
        import uuid
        body = {"prompt": json.loads(json.dumps(prompt)), "client_id": "test", "extra_data": dict(extra_data or {})}
        body = self.server.trigger_on_prompt(body)
        validate(body["prompt"], self.classes)
        pid = uuid.uuid4().hex
        self.prompt_queue.put((next(self.number), pid, body["prompt"], body.get("extra_data") or {}, []))
        return pid

    def _work(self):
        while not self._stop.is_set():
            got = self.prompt_queue.get(timeout=0.05)
            if got is None:
                continue
            item, i = got
            try:
                self.results[item[1]] = asyncio.run(execute(item[2], self.classes, None, extra_data=item[3],
                                                            cache=self.cache))[:2]
                status = "success"
            except BaseException as e:   # noqa: BLE001 - the prompt's end, as ComfyUI records it
                self.results[item[1]] = e
                status = "error"
            self.prompt_queue.task_done(i, {"status": status})

    def done(self, pid: str) -> bool:
        return pid in self.prompt_queue.history

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.server.prompt_queue = None
