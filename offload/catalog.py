"""What the cloud has: for each place a cloud part runs, the choices of each (node class, input), so the combos
of a node that runs in the cloud offer the cloud's models, not this machine's (DESIGN.md, "A cloud node's lists
are the cloud's").

A place is a *target key*: a ComfyUI server's URL, ``v2:<URL>``, or ``gpugeek@<host>/<workflow id>`` (each
GPUGeek workflow is its own environment). Its lists come from, best first:
- ``server``: a ComfyUI server's own node definitions (``/object_info``), read once and refreshed on demand;
- ``refused``: the cloud's refusal of a value names the values it accepts (ComfyUI's ``value_not_in_list``);
- ``ran``: every file-like value that ran successfully there;
- ``user``: names the user typed in the editor for that place.
Each list keeps its source and when. One file per place under the pack's data folder (``cloud_lists/``),
written atomically; a damaged file is set aside (never deleted) and said so. Everything is bounded: names,
values per list, lists per place, the file's size. No ComfyUI import.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from . import config, texts
from .redact import get_logger

log = get_logger("gpugeek.catalog")

SERVER, REFUSED, RAN, USER = "server", "refused", "ran", "user"
SOURCES = (SERVER, REFUSED, RAN, USER)   # best first
# Bounds: a name longer than this is not a model name; a list longer than this is cut; a place with more
# lists than this keeps the first; a file larger than this is not read (set aside as damaged).
MAX_NAME = 255
MAX_VALUES = 5000
MAX_LISTS = 20000
MAX_FILE_BYTES = 64 * 1024 * 1024
# A ComfyUI server's /object_info larger than this is refused (a big install is a few MB).
MAX_OBJECT_INFO_BYTES = 64 * 1024 * 1024
FOLDER = "cloud_lists"
# Values learned from a successful run: files and models only (never a prompt's text).
_LEARNABLE = re.compile(r"\.(safetensors|sft|ckpt|pt|pt2|pth|bin|pkl|gguf|onnx|engine|yaml|png|jpe?g|webp|gif|"
                        r"bmp|tiff?|mp4|webm|mov|mkv|avi|wav|mp3|flac|ogg|m4a|obj|glb|gltf|npz|npy)$", re.I)
# Inputs whose values are the user's own text, never learned.
_TEXT_INPUTS = {"text", "prompt", "positive", "negative", "string", "text_g", "text_l", "filename_prefix"}


def gpugeek_key(base_url: str, workflow_id) -> str:
    return f"gpugeek@{urlsplit(base_url).netloc}/{str(workflow_id or '').strip()}"


def keys_for(cfg: config.Config, where: str | None, workflow_id=None) -> list[str]:
    """The target keys of a gateway's target (its own, else the settings'): one, or each server of a pool.
    A URL that is not acceptable raises ConfigError (the editor shows it)."""
    from .targets.pool import split_targets
    target = (where or "").strip().rstrip("/") or cfg.target
    out = []
    for part in split_targets(target):
        if not config.is_comfy_target(part):
            try:   # the workflow id a run would use (the gateway's, else the settings'), as the run records it
                wf = str(cfg.resolve_workflow_id(workflow_id))
            except config.ConfigError:
                wf = ""
            out.append(gpugeek_key(cfg.base_url, wf))
        else:
            out.append(config.check_target_url(part, allow_lan_http=cfg.allow_lan_http))
    return out


def key_of_target(target, workflow_id) -> str:
    """The key of an open target (ComfyUI server and v2 targets have a ``url``; GPUGeek its workflow id)."""
    url = getattr(target, "url", None)
    if url:
        return str(url)
    client = getattr(target, "client", None)
    base = getattr(client, "base_url", None) or config.DEFAULT_BASE_URL
    return gpugeek_key(base, workflow_id)


def _clean(values) -> list[str]:
    """Strings only, each at most MAX_NAME, no duplicates, at most MAX_VALUES, order kept."""
    out, seen = [], set()
    for v in values if isinstance(values, (list, tuple)) else []:
        if isinstance(v, str) and v and len(v) <= MAX_NAME and "\n" not in v and v not in seen:
            seen.add(v)
            out.append(v)
            if len(out) >= MAX_VALUES:
                break
    return out


def combo_values(spec) -> list | None:
    """The choices of one input spec of ComfyUI's node definitions: ``[[a, b], {...}]`` or
    ``["COMBO", {"options": [a, b]}]``; None for any other input."""
    if not isinstance(spec, (list, tuple)) or not spec:
        return None
    kind = spec[0]
    if isinstance(kind, (list, tuple)):
        return list(kind)
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if kind == "COMBO" and isinstance(opts.get("options"), (list, tuple)):
        return list(opts["options"])
    return None


def lists_of_object_info(info) -> dict:
    """``{class: {input: [values]}}`` from a ComfyUI server's ``/object_info``; raises ValueError when the
    answer is not node definitions at all."""
    if not isinstance(info, dict) or not info:
        raise ValueError("not node definitions")
    out, count, defs = {}, 0, 0
    for cls, d in info.items():
        if not isinstance(d, dict) or not isinstance(d.get("input"), dict):
            continue
        defs += 1
        for cat in ("required", "optional"):
            section = d["input"].get(cat)
            for name, spec in (section.items() if isinstance(section, dict) else ()):
                values = combo_values(spec)
                if values is None or count >= MAX_LISTS:
                    continue
                out.setdefault(str(cls)[:MAX_NAME], {})[str(name)[:MAX_NAME]] = _clean(values)
                count += 1
    if not defs:
        raise ValueError("not node definitions")
    return out


def learnable(name: str, value) -> bool:
    return (isinstance(value, str) and 0 < len(value) <= MAX_NAME and "\n" not in value and "://" not in value
            and name not in _TEXT_INPUTS and bool(_LEARNABLE.search(value)))


class Catalog:
    """The lists of every place, one file each under ``folder``. Safe across threads; a file written by
    another process (a restarted ComfyUI, the command line) is read again when it changed."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple] = {}   # key -> (mtime, lists)
        self.problems: dict[str, texts.Said] = {}   # key -> what went wrong reading its file

    def _path(self, key: str) -> Path:
        return self.folder / (hashlib.sha256(key.encode("utf-8")).hexdigest()[:24] + ".json")

    def _read(self, key: str) -> dict:
        path = self._path(key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return {}
        hit = self._cache.get(key)
        if hit and hit[0] == st.st_mtime_ns:
            return hit[1]
        try:
            if st.st_size > MAX_FILE_BYTES:
                raise ValueError(f"{st.st_size} bytes")
            data = json.loads(path.read_text("utf-8"))
            if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("lists"), dict):
                raise ValueError("not a list file")
            lists = _valid(data["lists"])
        except (OSError, ValueError, UnicodeDecodeError) as e:
            aside = path.with_name(path.name + f".damaged-{int(time.time())}")
            try:
                os.replace(path, aside)
            except OSError:
                aside = path
            log.warning("The cloud's lists for %s were unreadable (%s): set aside as %s", key, e, aside.name)
            self.problems[key] = texts.Said("lists_damaged", {"where": key, "file": str(aside)})
            self._cache.pop(key, None)
            return {}
        self._cache[key] = (st.st_mtime_ns, lists)
        return lists

    def _write(self, key: str, lists: dict) -> None:
        path = self._path(key)
        config.write_private(path, json.dumps({"key": key, "lists": lists}, ensure_ascii=False, separators=(",", ":")))
        self._cache[key] = (os.stat(path).st_mtime_ns, lists)

    def learn(self, key: str, source: str, found: dict, *, replace: bool, at: float | None = None) -> int:
        """Record ``found`` = ``{class: {input: [values]}}`` from ``source`` for the place ``key``: the list
        replaced (a server's definitions, a refusal's whole list) or added to (values that ran, the user's
        names). A server's definitions replace every list of that source. Returns how many values are new."""
        at = time.time() if at is None else at
        new = 0
        with self._lock:
            lists = {c: {i: dict(v) for i, v in ins.items()} for c, ins in self._read(key).items()}
            if source == SERVER and replace:
                for ins in lists.values():
                    for entry in ins.values():
                        entry.pop(SERVER, None)
            count = sum(len(ins) for ins in lists.values())
            for cls, ins in (found or {}).items():
                for name, values in (ins or {}).items():
                    values = _clean(values)
                    entry = lists.get(cls, {}).get(name)
                    if entry is None:
                        if count >= MAX_LISTS or not values:
                            continue
                        count += 1
                        entry = lists.setdefault(cls, {}).setdefault(name, {})
                    old = (entry.get(source) or {}).get("values") or []
                    merged = values if replace else _clean(old + values)
                    new += len(set(merged) - set(old))
                    entry[source] = {"values": merged, "at": at}
            lists = {c: {i: e for i, e in ins.items() if e} for c, ins in lists.items()}
            self._write(key, {c: ins for c, ins in lists.items() if ins})
        return new

    def lists(self, key: str) -> dict:
        with self._lock:
            return self._read(key)

    def problem(self, key: str) -> texts.Said | None:
        return self.problems.get(key)

    def view(self, keys: list[str], wanted: dict) -> dict:
        """What the editor shows for ``wanted`` = ``{class: [input names]}`` (the combos of its cloud nodes)
        whose target has ``keys`` (one, or a pool): ``{class: {input: {"values": [...], "sources":
        [{"source", "at", "count"}]}}}``. Sources merge best first; a pool offers what every server that has the
        list has. A class with no list of its own for an input takes the list another class has for the same
        input name (the loaders of one model folder share it: ``ckpt_name``, ``lora_name``...)."""
        per_key = [self.lists(k) for k in keys]
        out: dict = {}
        for cls, names in (wanted or {}).items():
            for name in names or []:
                got = None
                for lists in per_key:
                    entry = (lists.get(cls) or {}).get(name) or _elsewhere(lists, name)
                    if not entry:
                        continue
                    values, sources = _merge(entry)
                    if got is None:
                        got = {"values": values, "sources": sources}
                    else:  # a pool: what every server has
                        keep = set(values)
                        got = {"values": [v for v in got["values"] if v in keep], "sources": got["sources"] + sources}
                if got is not None:
                    out.setdefault(cls, {})[name] = got
        return out


def _elsewhere(lists: dict, name: str) -> dict | None:
    """A list another class has for input ``name`` (the first, best source first)."""
    best = None
    for ins in lists.values():
        entry = ins.get(name)
        if entry and (best is None or _rank(entry) < _rank(best)):
            best = entry
    return best


def _rank(entry: dict) -> int:
    return min((SOURCES.index(s) for s in entry if s in SOURCES), default=len(SOURCES))


def _merge(entry: dict) -> tuple[list, list]:
    values, sources = [], []
    for s in SOURCES:
        got = entry.get(s)
        if not got:
            continue
        values.extend(got.get("values") or [])
        sources.append({"source": s, "at": got.get("at"), "count": len(got.get("values") or [])})
    return _clean(values), sources


def _valid(lists) -> dict:
    """The lists of a file as written (anything else in it is dropped, not trusted)."""
    if not isinstance(lists, dict):
        raise ValueError("not a list file")
    out = {}
    for cls, ins in lists.items():
        if not isinstance(ins, dict):
            continue
        for name, entry in ins.items():
            if not isinstance(entry, dict):
                continue
            for s in SOURCES:
                got = entry.get(s)
                if isinstance(got, dict) and isinstance(got.get("values"), list):
                    at = got.get("at") if isinstance(got.get("at"), (int, float)) else None
                    out.setdefault(str(cls), {}).setdefault(str(name), {})[s] = {"values": _clean(got["values"]),
                                                                                  "at": at}
    return out


_catalogs: dict[str, Catalog] = {}
_catalogs_lock = threading.Lock()


def catalog() -> Catalog:
    """The catalog of the pack's data folder (ComfyUI's user directory), one per folder per process."""
    folder = str(config.data_dir() / FOLDER)
    with _catalogs_lock:
        if folder not in _catalogs:
            _catalogs[folder] = Catalog(Path(folder))
        return _catalogs[folder]


def learn_refusal(key: str, taught) -> int:
    """The values a refusal named as accepted (``cloud_errors.accepted``), kept for ``key``."""
    found: dict = {}
    for cls, name, values in taught or []:
        found.setdefault(cls, {})[name] = values
    if not found:
        return 0
    try:
        return catalog().learn(key, REFUSED, found, replace=True)
    except OSError as e:   # the run's own error is what the user must see
        log.warning("Keeping the cloud's list failed: %s", e)
        return 0


def learn_ran(key: str, prompt: dict) -> int:
    """Every file-like value of a cloud prompt that ran successfully at ``key``."""
    from .targets.comfyui import UPLOAD_SUBFOLDER
    uploaded = UPLOAD_SUBFOLDER + "/"   # this run's own uploads to a ComfyUI server are not the server's files
    found: dict = {}
    for node in (prompt or {}).values():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            continue
        for name, value in (node.get("inputs") or {}).items():
            if learnable(name, value) and not value.startswith(uploaded):
                found.setdefault(node["class_type"], {}).setdefault(name, []).append(value)
    if not found:
        return 0
    try:
        return catalog().learn(key, RAN, found, replace=False)
    except OSError as e:
        log.warning("Keeping the values that ran failed: %s", e)
        return 0


# How long reading a server's node definitions may take before the editor is told it did not answer.
SERVER_READ_TIMEOUT_S = 20.0
_server_state: dict[str, texts.Said | None] = {}   # server key -> None (read) or why it could not be read


def is_server_key(key: str) -> bool:
    return not key.startswith("gpugeek@") and not config.is_v2_target(key)


async def read_servers(cfg: config.Config, keys: list[str], *, force: bool = False) -> list[texts.Said]:
    """Read the node definitions of each ComfyUI server among ``keys`` (once per process, again with ``force``)
    into the catalog; what could not be read is said (the lists kept from before stay). The server's token goes
    only where open_target sends it: to the configured server(s), never to a URL a workflow names."""
    import asyncio

    from . import errors
    from .targets import open_target
    problems = []
    for key in keys:
        if not is_server_key(key):
            continue
        if key in _server_state and not force:
            if _server_state[key] is not None:
                problems.append(_server_state[key])
            continue
        why = None
        try:
            async with open_target(cfg, key) as target:
                info = await asyncio.wait_for(target.node_definitions(MAX_OBJECT_INFO_BYTES), SERVER_READ_TIMEOUT_S)
            found = lists_of_object_info(info)
            catalog().learn(key, SERVER, found, replace=True)
        except ValueError:
            why = texts.Said("lists_garbage", {"url": key})
        except asyncio.TimeoutError:
            why = texts.Said("lists_silent", {"url": key, "seconds": f"{SERVER_READ_TIMEOUT_S:g}"})
        except errors.ResultError:
            why = texts.Said("lists_too_big", {"url": key, "mb": MAX_OBJECT_INFO_BYTES >> 20})
        except errors.GPUGeekError as e:
            why = texts.Said("lists_unreachable", {"url": key, "error": e.message})
        except OSError as e:
            why = texts.Said("lists_unreachable", {"url": key, "error": f"{type(e).__name__}: {e}"})
        if why is not None:
            log.warning("The node definitions of %s were not read: %s", key, why.text("en"))
        _server_state[key] = why
        if why is not None:
            problems.append(why)
    return problems
