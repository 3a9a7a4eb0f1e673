"""Every user-facing text of the Python side lives in ``locales/<lang>/server.json`` (the editor's in
``editor.json`` beside it): read here, never written inline, so every language's words have one home."""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

LOCALES = Path(__file__).resolve().parents[1] / "locales"
LANGS = ("en", "zh")


@functools.lru_cache(maxsize=None)
def table(lang: str, name: str = "server") -> dict:
    try:
        return json.loads((LOCALES / lang / f"{name}.json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def lang_of(value) -> str:
    return "zh" if str(value or "").lower().startswith("zh") else "en"


def default_lang() -> str:
    """The language where no editor says one (the command line, a script's prompt): GPUGEEK_LANG, else English."""
    return lang_of(os.environ.get("GPUGEEK_LANG"))


def lookup(key: str, lang: str = "en", raw: bool = False):
    """The entry ``key`` in ``lang``, else in English, else None (``raw``: only that language's own)."""
    found = table(lang_of(lang)).get(key)
    if found is None and not raw:
        found = table("en").get(key)
    return found


def text(key: str, lang: str = "en", **values) -> str:
    """The sentence ``key`` in ``lang`` (English where that language lacks it), filled with ``values``."""
    template = lookup(key, lang) or key
    values = {k: (v.text(lang) if isinstance(v, Said) else v) for k, v in values.items()}
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError):
        return template


@dataclass(frozen=True)
class Said:
    """A sentence kept as its text key and values, so it can be told in any language later (a refusal, one
    node's error from the cloud)."""
    key: str
    values: dict = field(default_factory=dict)

    def text(self, lang: str = "en") -> str:
        return text(self.key, lang, **self.values)

    def to_dict(self) -> dict:
        return {"key": self.key, "values": {k: (v.to_dict() if isinstance(v, Said) else v)
                                            for k, v in self.values.items()}}

    @classmethod
    def from_dict(cls, raw: dict) -> "Said":
        values = {k: (cls.from_dict(v) if isinstance(v, dict) and "key" in v else v)
                  for k, v in (raw.get("values") or {}).items()}
        return cls(str(raw.get("key")), values)
