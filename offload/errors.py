"""One error hierarchy for everything the pack can tell a user.

Every error carries what the platform said (``message``, ``code``, ``traceid``), the HTTP status, which
call failed (``call``) and one sentence of what to do (``hint``). ``str(error)`` is that sentence pair; the
node layer prefixes the gateway's name. No error ever holds the API key: texts that may echo a request are
passed through :func:`offload.redact.redact` before they are stored.
"""
from __future__ import annotations

from .redact import redact


class GPUGeekError(Exception):
    """Base of every error the pack raises on purpose."""

    hint = "Check the message above; if it persists, contact GPUGeek support with the trace id."
    enveloped = False   # True when the platform itself answered in its JSON envelope (not a proxy's page)
    cause = None        # why a connection could not open: "tls", "dns" or "connect" (transport.py)

    def __init__(self, message: str, *, code=None, traceid: str | None = None, status: int | None = None,
                 call: str | None = None, hint: str | None = None, task_id: str | None = None):
        self.message = redact(str(message))
        self.code = code
        self.traceid = redact(traceid) if traceid else None
        self.status = status
        self.call = call
        self.task_id = task_id
        if hint is not None:
            self.hint = redact(hint)
        super().__init__(self.__str__())

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

    def __str__(self) -> str:
        d = self.details()
        text = self.message.rstrip(".") + "."
        if d:
            text += f" ({d})"
        if self.hint:
            text += " " + self.hint
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__str__()!r})"

    def to_dict(self) -> dict:
        """What the editor and the journal may see (never the key: every field is redacted)."""
        return {"kind": type(self).__name__, "message": self.message, "code": self.code,
                "traceid": self.traceid, "status": self.status, "call": self.call,
                "task_id": self.task_id, "hint": self.hint, "text": str(self)}


class ConfigError(GPUGeekError):
    hint = "Open Settings > GPUGeek to fix it, or set the environment variable named above."


class AuthError(GPUGeekError):
    hint = ("GPUGeek rejected the API key: paste a valid key in Settings > GPUGeek "
            "(or set GPUGEEK_API_KEY) and run again.")


class QuotaError(GPUGeekError):
    hint = "Top up your GPUGeek balance or raise the quota, then run again."


class BadRequestError(GPUGeekError):
    hint = "The platform refused the request: check the workflow id and the cloud part of the graph."


class NotFoundError(GPUGeekError):
    hint = "Check the id: it does not exist on GPUGeek for this API key."


class BusyError(GPUGeekError):
    hint = "GPUGeek is busy or unreachable right now; run again in a minute."


class TransportError(GPUGeekError):
    hint = "Check your network connection and the base URL in Settings > GPUGeek, then run again."


class SubmitUnknownError(TransportError):
    """The submit's body may have reached GPUGeek but its answer was lost: a paid task may exist."""

    hint = ("The submission was sent but its answer was lost, so a paid task may exist. It is NOT resent "
            "automatically: check your tasks on the GPUGeek console before running again.")


class TaskFailedError(GPUGeekError):
    hint = "The cloud run failed: fix the cause named above (model, node or input in the cloud part) and run again."


class TaskCancelledError(GPUGeekError):
    hint = "The task was cancelled; run again to start a new one."


class TaskTimeoutError(GPUGeekError):
    hint = "The task took longer than the gateway's timeout and was cancelled; raise timeout_s or try later."


class SpendLimitError(GPUGeekError):
    hint = "Raise the daily limit in Settings > GPUGeek (or GPUGEEK_DAILY_LIMIT) to run more today."


class ResultError(GPUGeekError):
    """A result file that cannot be accepted (too large, not an image, unsafe URL...)."""

    hint = "The result was rejected to protect this machine; load it by hand if you trust it."


class PlanError(GPUGeekError):
    hint = "Change the graph as described and queue it again."


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


_AUTH_WORDS = ("token", "auth", "api key", "apikey", "api_key", "unauthorized", "鉴权", "认证", "令牌", "密钥", "登录")
_QUOTA_WORDS = ("balance", "quota", "insufficient", "余额", "欠费", "额度", "不足")
_NOTFOUND_WORDS = ("not found", "not exist", "不存在", "未找到")
_BUSY_WORDS = ("busy", "rate limit", "too many", "繁忙", "限流", "稍后")


def from_envelope(status: int, code, message: str, traceid, call: str) -> GPUGeekError:
    """An HTTP 200 answer with a non-zero code: the code is opaque, so classify by the status and words."""
    if status and status >= 400:
        return from_http(status, message=message, code=code, traceid=traceid, call=call)
    low = (message or "").lower()
    if any(w in low for w in _AUTH_WORDS):
        cls = AuthError
    elif any(w in low for w in _QUOTA_WORDS):
        cls = QuotaError
    elif any(w in low for w in _NOTFOUND_WORDS):
        cls = NotFoundError
    elif any(w in low for w in _BUSY_WORDS):
        cls = BusyError
    else:
        cls = BadRequestError
    return cls(message or "GPUGeek answered with an error", code=code, traceid=traceid, status=status, call=call)
