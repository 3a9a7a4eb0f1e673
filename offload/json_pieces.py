"""JSON read in pieces: a big document (a ComfyUI server's node definitions) read on a worker thread never holds
Python's GIL, and so the event loop, for long, and its members are read one at a time (never all in memory at
once). Python's own parser reads a whole document in one C call (~1 s for 64 MiB here, and no other thread runs
meanwhile); here one call reads at most WINDOWS[-1] characters: a value that fits is parsed at once, a bigger
container is walked member by member. Values come out as json.loads makes them, except a string longer than
LONG_STRING, read as None (and an object's member whose key is one, left out): nothing the pack reads is nearly
that long. No project imports.
"""
from __future__ import annotations

import codecs
import json
import re
from json.decoder import scanstring

# A container is tried whole in windows of these lengths (cheap for a small one, bounded for a big one); one that
# does not end within the last is walked member by member.
WINDOWS = (4 << 10, 32 << 10, 256 << 10)
# A number or a literal is at most this long (a longer one is refused as not JSON).
MAX_SCALAR = 64
# Nesting deeper than this is refused (Python's parser raises RecursionError instead).
MAX_DEPTH = 64
# UTF-8 is decoded in pieces this long.
DECODE_PIECE = 1 << 20
LONG_STRING = 1 << 20

_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")


def decode(data: bytes) -> str:
    """UTF-8 ``data`` as text, a piece at a time (strict: raises UnicodeDecodeError, a ValueError)."""
    dec = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    parts = [dec.decode(view[i:i + DECODE_PIECE]) for i in range(0, len(view), DECODE_PIECE)]
    parts.append(dec.decode(b"", final=True))
    return "".join(parts)


def each_member(text: str, put) -> None:
    """``put(key, value)`` for each member of the object the document ``text`` holds, in order, one at a time:
    the next member is read only once ``put`` returned, so a big document's members never all exist at once."""
    pos = _skip(text, 0)
    if text[pos:pos + 1] != "{":
        raise ValueError("not a JSON object")
    end = _skip(text, _members(text, pos, 0, put))
    if end != len(text):
        raise ValueError(f"extra data at {end}")


def value_at(text: str, pos: int, depth: int = 0) -> tuple:
    """(the value that starts at ``text[pos]``, the index after it)."""
    ch = text[pos:pos + 1]
    if ch == '"':
        return _string(text, pos)
    if ch not in ("{", "["):
        value, n = _DECODER.raw_decode(text[pos:pos + MAX_SCALAR])
        return value, pos + n
    for size in WINDOWS:
        piece = text[pos:pos + size]
        try:
            value, n = _DECODER.raw_decode(piece)
            return value, pos + n
        except (ValueError, RecursionError):
            if len(piece) < size:   # it all was there: not JSON (the walk says where)
                break
    if depth >= MAX_DEPTH:
        raise ValueError(f"JSON nested more than {MAX_DEPTH} deep at {pos}")
    if ch == "{":
        out: dict | list = {}
        end = _members(text, pos, depth + 1, out.__setitem__)
    else:
        out = []
        end = _members(text, pos, depth + 1, lambda _key, value: out.append(value))
    return out, end


def _members(text: str, pos: int, depth: int, put) -> int:
    """Walk the object or array at ``text[pos]``, ``put(key, value)`` for each member (key None in an array);
    the index after it."""
    close = "}" if text[pos] == "{" else "]"
    pos = _skip(text, pos + 1)
    if text[pos:pos + 1] == close:
        return pos + 1
    while True:
        key = None
        if close == "}":
            if text[pos:pos + 1] != '"':
                raise ValueError(f"expected a name at {pos}")
            key, pos = _string(text, pos)
            pos = _skip(text, pos)
            if text[pos:pos + 1] != ":":
                raise ValueError(f"expected ':' at {pos}")
            pos = _skip(text, pos + 1)
        value, pos = value_at(text, pos, depth)
        if key is not None or close == "]":
            put(key, value)
        pos = _skip(text, pos)
        ch = text[pos:pos + 1]
        if ch == close:
            return pos + 1
        if ch != ",":
            raise ValueError(f"expected ',' or '{close}' at {pos}")
        pos = _skip(text, pos + 1)


def _string(text: str, pos: int) -> tuple:
    """(the string at ``text[pos]``, or None past LONG_STRING; the index after it). Its end is found first (a fast
    search), so a string of any length is never decoded in one long call."""
    end = pos
    while True:
        end = text.find('"', end + 1)
        if end < 0:
            raise ValueError(f"unterminated string at {pos}")
        before = end - 1
        while text[before] == "\\":
            before -= 1
        if (end - 1 - before) % 2 == 0:   # not escaped
            break
    if end - pos > LONG_STRING:
        return None, end + 1
    return scanstring(text, pos + 1)


def _skip(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()
