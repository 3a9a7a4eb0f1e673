"""Keep secrets out of every text the pack produces.

Secrets are registered once (the config does it when it reads a key); :func:`redact` replaces each one,
and any ``Bearer ...`` token, wherever it appears. :class:`RedactingFilter` does the same for log records.
"""
from __future__ import annotations

import logging
import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{4,}")
MASK = "***"


def register_secret(value: str | None) -> None:
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text):
    if text is None:
        return None
    if not isinstance(text, str):
        text = str(text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, MASK)
    return _BEARER.sub(r"\1" + MASK, text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
            clean = redact(msg)
        except Exception:  # a broken format string (the caller's bug), or the interpreter shutting down
            return True
        if clean != msg or record.args:
            record.msg, record.args = clean, None
        return True


def get_logger(name: str = "gpugeek") -> logging.Logger:
    log = logging.getLogger(name)
    if not any(isinstance(f, RedactingFilter) for f in log.filters):
        log.addFilter(RedactingFilter())
    return log
