"""The Python side's user-facing sentences, read from ``locales/<lang>/server.json`` (the same folder the
editor's texts live in), so every language's words have one home."""
from __future__ import annotations

import functools
import json
from pathlib import Path

LOCALES = Path(__file__).resolve().parents[1] / "locales"
LANGS = ("en", "zh")


@functools.lru_cache(maxsize=None)
def _table(lang: str) -> dict:
    try:
        return json.loads((LOCALES / lang / "server.json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def lang_of(value) -> str:
    return "zh" if str(value or "").lower().startswith("zh") else "en"


def text(key: str, lang: str = "en", **values) -> str:
    """The sentence ``key`` in ``lang`` (English where that language lacks it), filled with ``values``."""
    template = _table(lang_of(lang)).get(key) or _table("en").get(key) or key
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError):
        return template
