"""One error hierarchy for everything the pack can tell a user.

Every error carries what the platform said (``message``, ``code``, ``traceid``), the HTTP status, which
call failed (``call``) and one sentence of what to do (``hint``). ``str(error)`` is that sentence pair; the
node layer prefixes the gateway's name. No error ever holds the API key: texts that may echo a request are
passed through :func:`offload.redact.redact` before they are stored.
"""
from __future__ import annotations

from . import texts
from .redact import redact


class GPUGeekError(Exception):
    """Base of every error the pack raises on purpose. Its hint (what to do) is the class's sentence in
    ``locales/<lang>/server.json`` (``hint_<ClassName>``, else a base class's) unless one is given; a message
    made from a text key (``key``, ``values``) can be told again in another language (:meth:`text`)."""

    enveloped = False   # True when the platform itself answered in its JSON envelope (not a proxy's page)
    lang = "en"         # the language str() tells it in (a node's error: the prompt's language)
    cause = None        # why a connection could not open: "tls", "dns" or "connect" (transport.py)

    def __init__(self, message: str = "", *, code=None, traceid: str | None = None, status: int | None = None,
                 call: str | None = None, hint: str | None = None, task_id: str | None = None,
                 key: str | None = None, values: dict | None = None, lines: list | None = None):
        self.key, self.values = key, dict(values or {})
        self.lines = list(lines or [])   # one texts.Said per problem (the cloud's errors, node by node)
        self._head = str(message)
        self.message = self.message_in("en")
        self.code = code
        self.traceid = redact(traceid) if traceid else None
        self.status = status
        self.call = call
        self.task_id = task_id
        self._hint = redact(hint) if hint is not None else None
        super().__init__(self.__str__())

    @property
    def hint(self) -> str:
        return self._hint if self._hint is not None else self.hint_in("en")

    @hint.setter
    def hint(self, value: str) -> None:
        self._hint = redact(value) if value is not None else None

    def hint_in(self, lang: str) -> str:
        if self._hint is not None:
            return self._hint
        for cls in type(self).__mro__:
            found = texts.lookup(f"hint_{cls.__name__}", lang)
            if found is not None:
                return found
        return ""

    def message_in(self, lang: str) -> str:
        head = texts.text(self.key, lang, **self.values) if self.key else self._head
        return redact(" ".join([head] + [line.text(lang) for line in self.lines]))

    def details(self) -> str:
        parts = []
        if self.call:
            parts.append(f"call: {self.call}")
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code not in (None, 0):
            parts.append(f"code {self.code}")
        if self.traceid:
            parts.append(f"traceid {self.traceid}")
        if self.task_id:
            parts.append(f"task {self.task_id}")
        return ", ".join(parts)

    def text(self, lang: str = "en") -> str:
        """What happened, the platform's ids, what to do: in ``lang`` where the texts have it."""
        out = self.message_in(lang).rstrip(".。") + ("。" if texts.lang_of(lang) == "zh" else ".")
        d = self.details()
        if d:
            out += f" ({d})"
        hint = self.hint_in(lang)
        if hint:
            out += " " + hint
        return out

    def __str__(self) -> str:
        return self.text(self.lang)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__str__()!r})"

    def to_dict(self) -> dict:
        """What the editor and the journal may see (never the key: every field is redacted)."""
        return {"kind": type(self).__name__, "message": self.message, "code": self.code,
                "traceid": self.traceid, "status": self.status, "call": self.call,
                "task_id": self.task_id, "hint": self.hint, "text": str(self)}


class ConfigError(GPUGeekError):
    pass


class AuthError(GPUGeekError):
    pass


class QuotaError(GPUGeekError):
    pass


class BadRequestError(GPUGeekError):
    pass


class NotFoundError(GPUGeekError):
    pass


class BusyError(GPUGeekError):
    pass


class TransportError(GPUGeekError):
    pass


class SubmitUnknownError(TransportError):
    """The submit's body may have reached GPUGeek but its answer was lost: a paid task may exist."""


class TaskFailedError(GPUGeekError):
    pass


class TaskCancelledError(GPUGeekError):
    pass


class TaskTimeoutError(GPUGeekError):
    pass


class SpendLimitError(GPUGeekError):
    pass


class ResultError(GPUGeekError):
    """A result file that cannot be accepted (too large, not an image, unsafe URL...)."""


class PlanError(GPUGeekError):
    pass


def from_http(status: int, *, message: str, code=None, traceid=None, call: str):
    """Map an HTTP status (and platform code) to the right error class."""
    if status in (401,):
        cls = AuthError
    elif status == 402:
        cls = QuotaError
    elif status == 403:
        cls = AuthError
    elif status == 404:
        cls = NotFoundError
    elif status == 429 or status >= 500:
        cls = BusyError
    elif 400 <= status < 500:
        cls = BadRequestError
    else:
        cls = GPUGeekError
    return cls(message, code=code, traceid=traceid, status=status, call=call)


def _words(kind: str) -> tuple:
    """Words of the platform's messages that tell an error's kind, in every language it answers in
    (``locales/<lang>/server.json``, ``words_<kind>``)."""
    return tuple(w for lang in texts.LANGS for w in (texts.lookup(f"words_{kind}", lang, raw=True) or ()))


def from_envelope(status: int, code, message: str, traceid, call: str) -> GPUGeekError:
    """An HTTP 200 answer with a non-zero code: the code is opaque, so classify by the status and words."""
    if status and status >= 400:
        return from_http(status, message=message, code=code, traceid=traceid, call=call)
    low = (message or "").lower()
    if any(w in low for w in _words("auth")):
        cls = AuthError
    elif any(w in low for w in _words("quota")):
        cls = QuotaError
    elif any(w in low for w in _words("not_found")):
        cls = NotFoundError
    elif any(w in low for w in _words("busy")):
        cls = BusyError
    else:
        cls = BadRequestError
    return cls(message or "GPUGeek answered with an error", code=code, traceid=traceid, status=status, call=call)
