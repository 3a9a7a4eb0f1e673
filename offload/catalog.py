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
written atomically, each distinct list once; a damaged file is set aside (the newest few kept) and said so, until
a good read or write. Everything is bounded: a name's length, values and bytes per list, lists and bytes per place
(so what is written can always be read back), what an answer holds. A server's node definitions (tens of MB in a
big install) are parsed and learned off the event loop: read a class at a time (json_pieces.py), in a child
process when big; a place's file is JSON lines, none longer than a list. No ComfyUI import.
"""
from __future__ import annotations

import asyncio
import bisect
import hashlib
import itertools
import json
import math
import os
import re
import sys
import threading
import time
from array import array
from pathlib import Path
from urllib.parse import urlsplit

from . import config, json_pieces, texts
from .redact import get_logger
from .specs import combo_values

log = get_logger("gpugeek.catalog")

SERVER, REFUSED, RAN, USER = "server", "refused", "ran", "user"
SOURCES = (SERVER, REFUSED, RAN, USER)   # best first
# Bounds. A name (a value, a class, an input) longer than this is not a model's (a path with its folders fits):
# left out when learned, refused with a sentence when typed. A list keeps at most MAX_VALUES values and
# MAX_LIST_BYTES bytes (as written); a place at most MAX_LISTS lists and MAX_PLACE_BYTES bytes in all (the lists
# it had first are kept), and a file larger than that is not read (set aside as damaged).
MAX_NAME = 1024
MAX_VALUES = 5000
MAX_LIST_BYTES = 1 << 20
MAX_LISTS = 20000
MAX_PLACE_BYTES = 32 << 20
# No line of a place's file is longer than this (a list, its names escaped at worst, and a little more).
MAX_LINE_BYTES = MAX_LIST_BYTES + (64 << 10)
# A ComfyUI server's /object_info larger than this is refused (a big install is a few MB).
MAX_OBJECT_INFO_BYTES = 64 * 1024 * 1024
# An answer holds at most this many (class, input) lists.
MAX_WANTED = 2000
# Damaged files of one place set aside and kept (the newest).
DAMAGED_KEPT = 3
FOLDER = "cloud_lists"
# Values learned from a successful run: files and models only (never a prompt's text).
_LEARNABLE = re.compile(r"\.(safetensors|sft|ckpt|pt|pt2|pth|bin|pkl|gguf|onnx|engine|yaml|png|jpe?g|webp|gif|"
                        r"bmp|tiff?|mp4|webm|mov|mkv|avi|wav|mp3|flac|ogg|m4a|obj|glb|gltf|npz|npy)$", re.I)
# Inputs whose values are the user's own text, never learned.
_TEXT_INPUTS = {"text", "prompt", "positive", "negative", "string", "text_g", "text_l", "filename_prefix"}
# Printable ASCII but the quote and the backslash: a name of these alone is written as it is.
_PLAIN = re.compile(r'[ !#-\[\]-~]*')


def gpugeek_key(base_url: str, workflow_id) -> str:
    return f"gpugeek@{urlsplit(base_url).netloc}/{str(workflow_id or '').strip()}"


def keys_for(cfg: config.Config, where: str | None, workflow_id=None) -> list[str]:
    """The target keys of a gateway's target (its own, else the settings'): one, or each server of a pool.
    A URL that is not acceptable (or too long to name a place) raises ConfigError (the editor shows it)."""
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
    long = too_long(out)
    if long is not None:
        raise config.ConfigError(key=long.key, values=long.values)
    return out


def key_of_target(target, workflow_id) -> str:
    """The key of an open target (ComfyUI server and v2 targets have a ``url``; GPUGeek its workflow id)."""
    url = getattr(target, "url", None)
    if url:
        return str(url)
    client = getattr(target, "client", None)
    base = getattr(client, "base_url", None) or config.DEFAULT_BASE_URL
    return gpugeek_key(base, workflow_id)


def fits(name) -> bool:
    """A name a list can hold: a string of 1 to MAX_NAME characters."""
    return isinstance(name, str) and 0 < len(name) <= MAX_NAME


def too_long(names) -> texts.Said | None:
    """The sentence that refuses the first of ``names`` longer than MAX_NAME (None where none is)."""
    for name in names:
        if isinstance(name, str) and len(name) > MAX_NAME:
            return texts.Said("lists_too_long", {"n": len(name), "max": MAX_NAME, "start": name[:40]})
    return None


def _cost(name: str) -> int:
    """The most bytes ``name`` takes in a file or an answer, its quotes and a comma included (escaped, a character
    takes up to 12 bytes: an emoji as two ``\\uXXXX``)."""
    return len(name) + 3 if _PLAIN.fullmatch(name) else len(json.dumps(name)) + 1


def _clean(values) -> list[str]:
    """Names only (no line breaks), no duplicates, order kept; at most MAX_VALUES of them and MAX_LIST_BYTES."""
    out, seen, size = [], set(), 2
    for v in values if isinstance(values, (list, tuple)) else []:
        if fits(v) and "\n" not in v and v not in seen:
            size += _cost(v)
            if size > MAX_LIST_BYTES:
                break
            seen.add(v)
            out.append(v)
            if len(out) >= MAX_VALUES:
                break
    return out


def lists_of_object_info(info) -> dict:
    """``{class: {input: [values]}}`` from a ComfyUI server's ``/object_info`` (its bytes as it answered, read in
    pieces, one class at a time; or the parsed document); raises ValueError when the answer is not node
    definitions at all. Run it on a worker thread: 64 MiB take a few seconds."""
    out: dict = {}
    counts = {"lists": 0, "defs": 0}
    same: dict = {}   # a list's content -> its one cleaned copy (the classes of a model folder share one)

    def one(cls, d) -> None:
        if not isinstance(d, dict) or not isinstance(d.get("input"), dict):
            return
        counts["defs"] += 1
        for section in (d["input"].get("required"), d["input"].get("optional")):
            for name, spec in (section.items() if isinstance(section, dict) else ()):
                values = combo_values(spec)
                if values is None or counts["lists"] >= MAX_LISTS or not (fits(cls) and fits(name)):
                    continue
                out.setdefault(cls, {})[name] = _shared(values, same)
                counts["lists"] += 1
    if isinstance(info, dict):
        for cls, d in info.items():
            one(cls, d)
    elif isinstance(info, (bytes, str)):
        json_pieces.each_member(json_pieces.decode(info) if isinstance(info, bytes) else info, one)
    if not counts["defs"]:
        raise ValueError("not node definitions")
    return out


def _shared(values: list, same: dict) -> list:
    """``values`` cleaned, the same list object for the same content (``same``: content -> list)."""
    try:
        content = tuple(values)
        if content not in same:
            same[content] = _clean(values)
        return same[content]
    except TypeError:   # a value that is not a name (a list, an object) in the list: no name kept from it
        return _clean(values)


def learnable(name: str, value) -> bool:
    return (fits(value) and "\n" not in value and "://" not in value and name not in _TEXT_INPUTS
            and bool(_LEARNABLE.search(value)))


class Catalog:
    """The lists of every place, one file each under ``folder``. Safe across threads; a file written by
    another process (a restarted ComfyUI, the command line, a child reading a server's definitions) is read again
    when it changed. Reading and learning take a while for a big place: call them on a worker thread."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._lock = threading.Lock()      # the cache and the files
        self.writing = threading.Lock()    # one learner at a time (read, merge, write)
        self._cache: dict[str, tuple] = {}   # key -> (mtime, lists)
        self.problems: dict[str, texts.Said] = {}   # key -> what went wrong reading its file, until a good one

    def _path(self, key: str) -> Path:
        return self.folder / (hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:24] + ".json")

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
            if st.st_size > MAX_PLACE_BYTES:
                raise ValueError(f"{st.st_size} bytes")
            with open(path, "rb") as f:
                lists = _load(f, key)
        except (OSError, ValueError, RecursionError) as e:
            self._set_aside(key, path, e)
            return {}
        self._cache[key] = (st.st_mtime_ns, lists)
        self.problems.pop(key, None)
        return lists

    def _set_aside(self, key: str, path: Path, why: Exception) -> None:
        """A damaged file is renamed (never read again, never overwritten) and said; the newest few are kept."""
        aside = path.with_name(f"{path.name}.damaged-{time.time_ns()}")
        try:
            os.replace(path, aside)
        except OSError:
            aside = path
        else:
            _keep_newest(path.name + ".damaged-", self.folder)
        log.warning("The cloud's lists for %s were unreadable (%s): set aside as %s", key, str(why)[:200], aside.name)
        self.problems[key] = texts.Said("lists_damaged", {"where": key, "file": str(aside)})
        self._cache.pop(key, None)

    def learn(self, key: str, source: str, found: dict, *, replace: bool, at: float | None = None) -> int:
        """Record ``found`` = ``{class: {input: [values]}}`` from ``source`` for the place ``key``: the list
        replaced (a server's definitions, a refusal's whole list) or added to (values that ran, the user's
        names). A server's definitions replace every list of that source. Names too long for a list are left out;
        the lists past a place's bounds too (those it had first stay). Values added that the list has already
        change nothing (the file is not written again: a run that succeeds costs no write). Returns how many values
        are new."""
        if not fits(key):
            raise ValueError(f"a place's name of {len(key)} characters")
        at = time.time() if at is None else at
        with self.writing:
            with self._lock:
                had = self._read(key)
            if not replace and _known(had, source, found):
                return 0
            lists = {c: {i: {s: got for s, got in e.items() if not (source == SERVER and replace and s == SERVER)}
                         for i, e in ins.items()} for c, ins in had.items()}
            new = _add(lists, source, found, replace, at)
            kept, pieces = _encode(key, {c: {i: e for i, e in ins.items() if e} for c, ins in lists.items()})
            with self._lock:
                path = self._path(key)
                config.write_private(path, pieces)
                self._cache[key] = (os.stat(path).st_mtime_ns, kept)
                self.problems.pop(key, None)
        return new

    def lists(self, key: str) -> dict:
        with self._lock:
            return self._read(key)

    def whole_list(self, keys: list[str], cls: str, name: str) -> list | None:
        """The whole list of ``cls``'s input ``name`` where the cloud told it (its node definitions, a refusal
        naming every value it takes): the class's own, never another class's, and never names added or learned
        one by one (they say what the cloud has, not what it lacks); for a pool, what every server has (in time
        linear in the names: a set per element took 391 ms per input on two 5,000-name lists). None where a place
        does not know it. The queue-time check judges a value by it (offload/plan/check.py)."""
        got = None
        for k in keys:
            entry = (self.lists(k).get(cls) or {}).get(name) or {}
            values = [v for s in (SERVER, REFUSED) for v in ((entry.get(s) or {}).get("values") or [])]
            if not values:
                return None
            if got is None:
                got = values
            else:   # one set of each server's list, each name of the others looked up once: linear in the names
                keep = set(values)
                got = [v for v in got if v in keep]
        return got

    def problem(self, key: str) -> texts.Said | None:
        return self.problems.get(key)

    def view(self, keys: list[str], wanted) -> dict:
        """What the editor shows for ``wanted`` = ``{class: [input names]}`` (the combos of its cloud nodes, as
        the editor sent them: at most MAX_WANTED lists are answered) whose target has ``keys`` (one, or a pool):
        ``{class: {input: {"values": [...], "sources": [{"source", "at", "count"}]}}}``, equal lists being one
        object. Sources merge best first; a pool offers what every server that has the list has. A class with no
        list of its own for an input takes the list another class has for the same input name (the loaders of
        one model folder share it: ``ckpt_name``, ``lora_name``...)."""
        places = [(lists, _by_input(lists)) for lists in (self.lists(k) for k in keys)]
        merged: dict = {}   # id of an entry or of two lists -> what they give (each computed once)
        out: dict = {}
        for cls, name in _pairs(wanted):
            got = None
            for lists, shared in places:
                entry = (lists.get(cls) or {}).get(name) or shared.get(name)
                if not entry:
                    continue
                if id(entry) not in merged:
                    merged[id(entry)] = _merge(entry)
                values, sources = merged[id(entry)]
                if got is not None:   # a pool: what every server has
                    both = (id(got[0]), id(values))
                    if both not in merged:
                        keep = set(values)
                        merged[both] = [v for v in got[0] if v in keep]
                    values, sources = merged[both], got[1] + sources
                got = (values, sources)
            if got is not None:
                out.setdefault(cls, {})[name] = {"values": got[0], "sources": got[1]}
        return out


def _pairs(wanted):
    """The (class, input) pairs of a request, names that fit only, at most MAX_WANTED."""
    n = 0
    for cls, names in (wanted.items() if isinstance(wanted, dict) else ()):
        if not fits(cls) or not isinstance(names, list):
            continue
        for name in dict.fromkeys(x for x in names[:MAX_WANTED] if fits(x)):
            if n >= MAX_WANTED:
                return
            n += 1
            yield cls, name


def _add(lists: dict, source: str, found, replace: bool, at: float) -> int:
    """Merge ``found`` from ``source`` into ``lists``; how many values are new."""
    new, cleaned = 0, {}   # id of a list found -> cleaned once (found's lists are often one list, shared)
    count = sum(len(ins) for ins in lists.values())
    for cls, ins in (found.items() if isinstance(found, dict) else ()):
        for name, values in (ins.items() if isinstance(ins, dict) and fits(cls) else ()):
            if id(values) not in cleaned:
                cleaned[id(values)] = (values, _clean(values))   # (the list kept alive: its id stays its own)
            values = cleaned[id(values)][1]
            entry = lists.get(cls, {}).get(name)
            if entry is None:
                if count >= MAX_LISTS or not values or not fits(name):
                    continue
                count += 1
                entry = lists.setdefault(cls, {}).setdefault(name, {})
            old = (entry.get(source) or {}).get("values") or []
            merged = values if replace else _clean(old + values)
            new += len(set(merged) - set(old))
            entry[source] = {"values": merged, "at": at}
    return new


def _known(lists: dict, source: str, found) -> bool:
    """Has every list of ``lists`` every value ``found`` adds to it from ``source``?"""
    for cls, ins in (found.items() if isinstance(found, dict) else ()):
        for name, values in (ins.items() if isinstance(ins, dict) else ()):
            has = (((lists.get(cls) or {}).get(name) or {}).get(source) or {}).get("values") or []
            if not set(_clean(values)) <= set(has):
                return False
    return True


def _by_input(lists: dict) -> dict:
    """Input name -> the list some class has for it (the best source first): what a class without one takes."""
    best: dict = {}
    for ins in lists.values():
        for name, entry in ins.items():
            if entry and (name not in best or _rank(entry) < _rank(best[name])):
                best[name] = entry
    return best


def _rank(entry: dict) -> int:
    return min((SOURCES.index(s) for s in entry if s in SOURCES), default=len(SOURCES))


def _merge(entry: dict) -> tuple[list, list]:
    values, sources = [], []
    for s in SOURCES:
        got = entry.get(s)
        if not got:
            continue
        values.append(got.get("values") or [])
        sources.append({"source": s, "at": got.get("at"), "count": len(got.get("values") or [])})
    # one source: its own list (the same object wherever it is offered, so an answer sends it once)
    return (values[0] if len(values) == 1 else _clean([v for vs in values for v in vs])), sources


class _Table:
    """Each distinct list once, as a JSON piece: a list's place by its identity, else by its content (every list
    looked up stays alive while the table is used, so an identity is never another list's)."""

    def __init__(self):
        self.pieces: list[bytes] = []
        self.values: list[list] = []   # the first object of each distinct list
        self._places: dict = {}        # id(list) or its content -> its place
        self._added: list = []         # the keys of _places, in the order they came

    def index(self, values: list) -> int:
        n = self._places.get(id(values))
        if n is None:
            content = tuple(values)
            n = self._places.get(content)
            if n is None:
                n = len(self.pieces)
                self.pieces.append(config.json_bytes(values))
                self.values.append(values)
                self._remember(content, n)
            self._remember(id(values), n)
        return n

    def _remember(self, key, n: int) -> None:
        self._places[key] = n
        self._added.append(key)

    def mark(self) -> tuple:
        return len(self.pieces), len(self._added)

    def undo(self, mark: tuple) -> None:
        """Forget every list added since ``mark``."""
        pieces, added = mark
        for key in self._added[added:]:
            del self._places[key]
        del self._added[added:], self.pieces[pieces:], self.values[pieces:]

    def json(self) -> bytes:
        return b"[" + b",".join(self.pieces) + b"]"


_LIST_HEAD, _LIST_TAIL = b'{"values":', b"}\n"   # a distinct list's line


def _encode(key: str, lists: dict) -> tuple[dict, list]:
    """A place's file, in JSON lines: ``{"key", "version": 2}``, then each distinct list once (``{"values":
    [...]}``, numbered in order), then each list's class, input and where it came from (``{"class", "input",
    "from": {source: [list, at]}}``). A line is at most a list long (MAX_LIST_BYTES), so reading one never takes
    long; the lists that would take the file past MAX_PLACE_BYTES are left out (those it had first stay).
    Returns (the lists kept, the file's lines)."""
    table, rows, kept, left_out = _Table(), [], {}, 0
    head = config.json_bytes({"key": key, "version": 2}) + b"\n"
    size = len(head)
    for cls, ins in lists.items():
        for name, entry in ins.items():
            mark = table.mark()
            places = {s: table.index(got["values"]) for s, got in entry.items()}
            row = config.json_bytes({"class": cls, "input": name,
                                     "from": {s: [places[s], got["at"]] for s, got in entry.items()}}) + b"\n"
            grown = len(row) + sum(len(_LIST_HEAD) + len(p) + len(_LIST_TAIL) for p in table.pieces[mark[0]:])
            if size + grown > MAX_PLACE_BYTES:
                table.undo(mark)
                left_out += 1
                continue
            size += grown
            rows.append(row)
            kept.setdefault(cls, {})[name] = {s: {"values": table.values[places[s]], "at": got["at"]}
                                              for s, got in entry.items()}
    if left_out:
        log.warning("The cloud's lists for %s pass %d MB: %d lists learned last are left out", key,
                    MAX_PLACE_BYTES >> 20, left_out)
    return kept, [head, *(_LIST_HEAD + p + _LIST_TAIL for p in table.pieces), *rows]


def _load(f, key: str) -> dict:
    """The lists of a place's file (anything else in it is dropped, not trusted); ValueError where it is not one.
    A file of the first version (one document, each list written out where it is used: ``{"key", "lists":
    {class: {input: {source: {values, at}}}}}``) reads too."""
    head = _line(f)
    if not isinstance(head, dict) or head.get("key") != key:
        raise ValueError("not a list file")
    if isinstance(head.get("lists"), dict):
        rows = ((c, i, e) for c, ins in head["lists"].items() if isinstance(ins, dict) for i, e in ins.items())
        return _valid(rows, [])
    table: list = []

    def rows():
        while (line := _line(f)) is not None:
            if isinstance(line, dict) and isinstance(line.get("values"), list):
                table.append(_clean(line["values"]))
            elif isinstance(line, dict):
                yield line.get("class"), line.get("input"), line.get("from")
    return _valid(rows(), table)


def _line(f):
    """The next line of a file as JSON (None at the end); a line longer than any the catalog writes is refused."""
    while raw := f.readline(MAX_LINE_BYTES + 1):
        if len(raw) > MAX_LINE_BYTES:
            raise ValueError("a line longer than any list")
        if raw.strip():
            return json.loads(raw)
    return None


def _valid(rows, table: list) -> dict:
    """``{class: {input: {source: {values, at}}}}`` from a file's rows ``(class, input, {source: [list, at] or
    {values, at}})``: names that fit, values cleaned, times that are times."""
    out: dict = {}
    for cls, name, entry in rows:
        if not (fits(cls) and fits(name) and isinstance(entry, dict)):
            continue
        for s in SOURCES:
            got = entry.get(s)
            if isinstance(got, dict) and isinstance(got.get("values"), list):
                values, at = _clean(got["values"]), got.get("at")
            elif isinstance(got, list) and len(got) == 2 and type(got[0]) is int and 0 <= got[0] < len(table):
                values, at = table[got[0]], got[1]
            else:
                continue
            out.setdefault(cls, {}).setdefault(name, {})[s] = {"values": values, "at": _time(at)}
    return out


def _time(at) -> float | None:
    """A time as written, or None: not a number, or not a finite one (NaN passes Python's JSON, not the editor's)."""
    return float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) and math.isfinite(at) else None


def _keep_newest(prefix: str, folder: Path) -> None:
    """Remove all but the newest DAMAGED_KEPT files of ``folder`` named ``prefix`` and a number."""
    try:
        found = [(int(p.name[len(prefix):]), p) for p in folder.iterdir()
                 if p.name.startswith(prefix) and p.name[len(prefix):].isdigit()]
    except OSError:
        return
    for _, old in sorted(found)[:-DAMAGED_KEPT]:
        try:
            old.unlink()
        except OSError:
            pass


def answer(view: dict, lang: str = "en", problems=(), **fields) -> bytes:
    """The answer of POST /gpugeek/lists as JSON, at most MAX_ANSWER_BYTES: ``fields``, ``problems`` (sentences,
    texts.Said, said in ``lang``), ``values``: each distinct list of ``view`` once, and ``lists``: ``{class: {input:
    {"list": its place in values, "sources": [...]}}}``, with ``"cut": the whole list's length`` where the list was
    too long to send whole and ``values`` holds its first names. Made in pieces, none longer than a list, in time
    linear in the names (run it on a worker thread)."""
    places, distinct, entries, left_out = {}, [], [], 0   # id(list) or its content -> place; the lists; the inputs
    size = 0
    for cls, ins in view.items():
        for name, e in ins.items():
            values = e["values"]
            n = places.get(id(values))
            if n is None:
                n = places.get(content := tuple(values), len(distinct))
            # what naming it takes at most (its place only becomes smaller when cut lists become one)
            grown = (len(config.json_bytes(cls)) + len(config.json_bytes(name)) + _ENTRY_FRAME
                     + len(config.json_bytes({"list": n, "sources": e["sources"]})))
            if left_out or size + grown > ANSWER_NAMING_BYTES:
                left_out += 1
                continue
            size += grown
            if n == len(distinct):
                distinct.append(values)
                places[content] = n
            places[id(values)] = n
            entries.append((cls, name, n, e["sources"]))
    if left_out:
        log.warning("The lists answer names %d inputs; %d more asked are left out (%d MB at most)",
                    len(entries), left_out, MAX_ANSWER_BYTES >> 20)
        problems = [*problems, texts.Said("lists_answer_cut", {"n": left_out, "total": len(entries) + left_out,
                                                               "mb": MAX_ANSWER_BYTES >> 20})]
    head = _answer_head(fields, [p.text(lang) for p in problems])
    sent, cut = _fit_lists(distinct, MAX_ANSWER_BYTES - len(head) - size - _ANSWER_FRAME)
    # lists that differed only past where they were cut are one list now: sent once
    again, firsts, moved = {}, [], []   # content -> its new place; the first list of each; each list's new place
    for i, values in enumerate(sent):
        key = tuple(values) if cut else i
        if key not in again:
            again[key] = len(firsts)
            firsts.append(values)
        moved.append(again[key])
    classes: dict = {}
    for cls, name, n, sources in entries:
        e = {"list": moved[n], "sources": sources}
        if n in cut:   # the list's whole length, where it was cut: the editor says so
            e["cut"] = len(distinct[n])
        classes.setdefault(cls, []).append(config.json_bytes(name) + b":" + config.json_bytes(e))
    return (head + b'"values":[' + b",".join(config.json_bytes(v) for v in firsts) + b'],"lists":{'
            + b",".join(config.json_bytes(cls) + b":{" + b",".join(ins) + b"}" for cls, ins in classes.items())
            + b"}}")


# The most bytes an answer of POST /gpugeek/lists holds, whatever the servers sent and the editor asked. Each
# distinct list is sent once, but lists that differ by one name are distinct: on a pool, a name the user added to
# each of 100 LoRA loaders made 100 lists of up to MAX_LIST_BYTES, a 100 MiB answer (191 MiB seen), built in memory
# here and parsed on the editor's main thread. 8 MiB is eight lists at their largest, more than a workflow's loaders
# offer (checkpoints, LoRAs, VAEs, text encoders...), and parses in about 0.1 s. Past it, the longest lists are cut
# to their first names, an equal share each (shorter lists stay whole), and the answer says so (``cut``).
MAX_ANSWER_BYTES = 8 << 20
# Of it, what names the lists (each input asked, with its sources) takes at most: 2,000 inputs (MAX_WANTED) of a
# common pool take a few hundred KB; the inputs past it are left out, and said. The lists always have the most room.
ANSWER_NAMING_BYTES = MAX_ANSWER_BYTES // 4
# The answer's head (where, the problems) takes at most this; each problem said at most PROBLEM_CHARS characters,
# at most PROBLEMS_SENT of them (one or two per server of a pool).
ANSWER_HEAD_BYTES = MAX_ANSWER_BYTES // 8
PROBLEM_CHARS, PROBLEMS_SENT = 2000, 32
# The bytes around an input's piece at most (its class's ':{', '}' and comma, its name's colon and comma, and
# ',"cut":N'), and around the whole answer ('"values":[', '],"lists":{', '}}').
_ENTRY_FRAME = 6 + len(',"cut":') + 20
_ANSWER_FRAME = 32


def _answer_head(fields: dict, problems: list) -> bytes:
    """``{fields..., "problems": [...],`` (open, for what follows) within ANSWER_HEAD_BYTES: problems shortened, a
    long list of a field (a pool's ``where``) cut from its end."""
    fields = {**fields, "problems": [p[:PROBLEM_CHARS] for p in problems[:PROBLEMS_SENT]]}
    while True:
        head = config.json_bytes(fields)[:-1] + b","
        longest = max((k for k, v in fields.items() if isinstance(v, list) and v),
                      key=lambda k: len(config.json_bytes(fields[k])), default=None)
        if len(head) <= ANSWER_HEAD_BYTES or longest is None:
            return head
        fields[longest] = fields[longest][:len(fields[longest]) // 2]


def _fit_lists(lists: list, room: int) -> tuple[list, set]:
    """``lists`` within ``room`` bytes as JSON (their commas included), each cut list the first names of the whole
    and the same cut lists sent once: the most names that fit, each list cut at the same size (a cap), those under
    it whole. The cap is found by halving (a prefix known by its length and a hash of its names, so that lists that
    differ past the cap count once); an equal share of the room for each (water filling) fits whatever the
    hashes say, and is where the search starts. Linear in the names (and their log). Returns (the lists to send,
    the places of those cut)."""
    cums = [array("q", itertools.accumulate(_costs(values), initial=3)) for values in lists]
    if sum(c[-1] for c in cums) <= room:   # the bytes of each list's first k names as JSON (brackets, a comma)
        return lists, set()
    marks = []   # per list: a hash of its first k names
    for values in lists:
        h, mark = 0, array("q", [0])
        for v in values:
            h = hash((h, v))
            mark.append(h)
        marks.append(mark)

    def lengths(cap: int) -> list:
        return [max(bisect.bisect_right(c, cap) - 1, 0) for c in cums]

    def size(ns: list) -> int:
        seen: dict = {}
        for c, mark, n in zip(cums, marks, ns):
            seen.setdefault((n, mark[n]), c[n])
        return sum(seen.values())
    lo, hi = _equal_share(sorted(c[-1] for c in cums), room), max(c[-1] for c in cums)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if size(lengths(mid)) <= room else (lo, mid - 1)
    ns = lengths(lo)
    if size(ns) > room:   # never: two prefixes' hashes alike (the equal share fits without any two counted once)
        ns = lengths(_equal_share(sorted(c[-1] for c in cums), room))
    out = [values if n == len(values) else values[:n] for values, n in zip(lists, ns)]
    return out, {i for i, (values, n) in enumerate(zip(lists, ns)) if n < len(values)}


def _costs(values: list):
    """``_cost`` of each name of ``values``: where every name is written as it is (the common case), counted
    without a step per name in Python."""
    if all(map(str.isascii, values)) and _PLAIN.fullmatch("".join(values)):
        return map((3).__add__, map(len, values))
    return map(_cost, values)


def _equal_share(sizes: list, room: int) -> int:
    """The largest cap such that the ``sizes`` (ascending) each cut to it fit ``room``: the shorter ones whole, the
    rest an equal share of what is left."""
    left = max(room, 0)
    for k, s in enumerate(sizes):
        if s > left // (len(sizes) - k):
            return left // (len(sizes) - k)
        left -= s
    return sizes[-1] if sizes else 0


_catalogs: dict[str, Catalog] = {}
_catalogs_lock = threading.Lock()


def catalog() -> Catalog:
    """The catalog of the pack's data folder (ComfyUI's user directory), one per folder per process."""
    folder = str(config.data_dir() / FOLDER)
    with _catalogs_lock:
        if folder not in _catalogs:
            _catalogs[folder] = Catalog(Path(folder))
        return _catalogs[folder]


async def learn_refusal(key: str, refusal, prompt: dict | None) -> int:
    """The values the cloud's refusal (its answer, as it came) names as accepted, kept for ``key``."""
    def found() -> dict:
        from .cloud_errors import accepted
        out: dict = {}
        for cls, name, values in accepted(refusal, prompt or {}):
            out.setdefault(cls, {})[name] = values
        return out
    return await _learn_aside(key, REFUSED, found, replace=True)


async def learn_ran(key: str, prompt: dict | None) -> int:
    """Every file-like value of a cloud prompt that ran successfully at ``key``."""
    def found() -> dict:
        from .targets.comfyui import UPLOAD_SUBFOLDER
        uploaded = UPLOAD_SUBFOLDER + "/"   # this run's own uploads to a ComfyUI server are not the server's files
        out: dict = {}
        for node in (prompt or {}).values():
            if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
                continue
            for name, value in (node.get("inputs") or {}).items():
                if learnable(name, value) and not value.startswith(uploaded):
                    out.setdefault(node["class_type"], {}).setdefault(name, []).append(value)
        return out
    return await _learn_aside(key, RAN, found, replace=False)


async def _learn_aside(key: str, source: str, found, *, replace: bool) -> int:
    """What a run taught (``found()``), learned on a worker thread; a failure is logged, never the run's concern
    (the run's own outcome, journaled before, is what the user must see)."""
    def learn() -> int:
        got = found()
        return catalog().learn(key, source, got, replace=replace) if got else 0
    try:
        return await asyncio.to_thread(learn)
    except Exception as e:  # noqa: BLE001 - learning is a side task of a run that already ended
        log.warning("Keeping the cloud's list (%s) for %s failed: %s: %s", source, key, type(e).__name__, e)
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
    problems = []
    for key in keys:
        if not is_server_key(key):
            continue
        if key not in _server_state or force:
            _server_state[key] = await _read_server(cfg, key)
        if _server_state[key] is not None:
            problems.append(_server_state[key])
    return problems


async def _read_server(cfg: config.Config, key: str) -> texts.Said | None:
    """Read one server's node definitions: downloaded on the loop, parsed and learned on a worker thread (64 MiB
    take seconds there; parsed at once on the loop, they stalled the whole ComfyUI for as long). None when read,
    else why not."""
    from . import errors
    from .targets import open_target
    why = None
    try:
        async with open_target(cfg, key) as target:
            body = await asyncio.wait_for(target.node_definitions(MAX_OBJECT_INFO_BYTES), SERVER_READ_TIMEOUT_S)
        await _learn_definitions(key, body)
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
    return why


# Node definitions larger than this are parsed and learned by a child process: a worker thread of this one would
# hold Python's GIL for seconds of parsing (64 MiB: ~4 s), and ComfyUI's event loop waits for the GIL each time it
# wakes (on a busy machine, hundreds of ms at a time); the child's memory (a few times their size) goes when it ends.
IN_PROCESS_BYTES = 2 << 20
# How long the child may take (64 MiB: a few seconds).
CHILD_TIMEOUT_S = 120.0
PIPE_PIECE = 1 << 20   # the body goes to the child in pieces this long
_NOT_DEFINITIONS = 3   # the child's exit code for an answer that is not node definitions
# The child loads the pack's folder as a package without its ComfyUI entry (as cli.py does).
_CHILD = ("import importlib, sys, types\n"
          "pack = types.ModuleType('gpugeek_lists_child')\n"
          "pack.__path__ = [sys.argv[1]]\n"
          "sys.modules['gpugeek_lists_child'] = pack\n"
          "importlib.import_module('gpugeek_lists_child.offload.catalog').child_main(sys.argv[2], sys.argv[3])\n")


async def _learn_definitions(key: str, body: bytes) -> None:
    """Parse a server's node definitions and learn their lists, off the event loop: on a worker thread when they
    are small, else in a child process (on a worker thread where no child can start). Raises ValueError when they
    are not node definitions."""
    cat = catalog()
    if len(body) > IN_PROCESS_BYTES and sys.executable and not getattr(sys, "frozen", False):
        while not cat.writing.acquire(blocking=False):   # no learner of this process writes the place meanwhile
            await asyncio.sleep(0.05)
        try:
            code, err = await _run_child(cat.folder, key, body)
        except OSError as e:
            log.warning("No child process to read the node definitions of %s (%s): read here", key, e)
            code = None
        finally:
            cat.writing.release()
        if code == 0:
            return
        if code == _NOT_DEFINITIONS:
            raise ValueError("not node definitions")
        if code is not None:
            raise OSError(f"reading them stopped (exit code {code}): {err[-300:]}")
    await asyncio.to_thread(lambda: cat.learn(key, SERVER, lists_of_object_info(body), replace=True))


async def _run_child(folder: Path, key: str, body: bytes) -> tuple[int, str]:
    """Run the child that learns ``body`` into ``folder``; (its exit code, the end of what it wrote to stderr). The
    body goes down the pipe a piece at a time (one write of it all would copy it whole on the event loop)."""
    pack = str(Path(__file__).resolve().parents[1])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, pack, str(folder), json.dumps(key), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)

    async def feed() -> None:
        view = memoryview(body)
        try:
            for at in range(0, len(view), PIPE_PIECE):
                proc.stdin.write(view[at:at + PIPE_PIECE])
                await proc.stdin.drain()
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):   # the child ended early: its exit code says why
            pass
    try:
        _, err, code = await asyncio.wait_for(asyncio.gather(feed(), proc.stderr.read(), proc.wait()),
                                              CHILD_TIMEOUT_S)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return code, err.decode("utf-8", "replace")


def child_main(folder: str, key: str) -> None:
    """The child process of _learn_definitions: the node definitions on stdin, learned into ``folder``. It runs at
    a low priority: a list read in the background gives way to ComfyUI and to everything else on the machine."""
    if hasattr(os, "nice"):
        os.nice(10)
    body = sys.stdin.buffer.read()
    try:
        found = lists_of_object_info(body)
    except ValueError:
        sys.exit(_NOT_DEFINITIONS)
    del body
    Catalog(Path(folder)).learn(json.loads(key), SERVER, found, replace=True)
