"""GPUGeek's wire models: the envelope and the task detail, parsed tolerantly (GPUGEEK_API.md).

The doc contradicts itself in places; every parser here accepts both sides: camelCase or snake_case
upload fields, integer or string prompt ids, string or list ``result_url`` values.
"""
from __future__ import annotations

from dataclasses import dataclass, field

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = 1, 2, 3, 4, 5
STATUS_NAMES = {QUEUED: "queued", RUNNING: "running", SUCCEEDED: "succeeded", FAILED: "failed",
                CANCELLED: "cancelled"}
FINAL = (SUCCEEDED, FAILED, CANCELLED)


def prompt_id_str(value) -> str:
    """Prompt ids are opaque strings of digits (integers in the tables, strings in the sample answer)."""
    if isinstance(value, bool) or value is None:
        raise ValueError("missing prompt id")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("prompt id is not an integer")
        value = int(value)
    text = str(value).strip()
    if not text or len(text) > 64 or not all(c.isalnum() or c in "-_" for c in text):
        raise ValueError(f"not a usable prompt id: {text[:40]!r}")
    return text


def task_id_int(prompt_id):
    """Where a body field is declared integer (``task_id``), send an integer if the id is all digits."""
    text = str(prompt_id).strip()
    return int(text) if text.isdigit() else text


def first(d: dict, *names, default=None):
    for n in names:
        if n in d and d[n] is not None:
            return d[n]
    return default


def _int(v, default=0):
    try:
        return int(v)
    except (TypeError, ValueError):
        try:
            return int(float(v))
        except (TypeError, ValueError):
            return default


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def result_urls(value) -> dict[str, list[str]]:
    """``result_url``: output node id -> list of URLs; each value may be a string or a list of strings."""
    out: dict[str, list[str]] = {}
    if isinstance(value, str):
        value = {"": value}
    if isinstance(value, list):
        value = {"": value}
    if not isinstance(value, dict):
        return out
    for node, urls in value.items():
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list):
            continue
        out[str(node)] = [u for u in urls if isinstance(u, str) and u]
    return out


@dataclass
class TaskDetail:
    prompt_id: str
    status: int
    workflow_id: int | None = None
    env_id: str | None = None
    queue_duration_ms: int = 0
    run_duration_ms: int = 0
    result_url: dict = field(default_factory=dict)
    error_msg: str = ""
    queue_size: int = 0
    current_position: int = 0
    origin_price: float | None = None
    created_at: str | None = None
    # live progress where the target reports it (a ComfyUI server's websocket): the cloud node that runs
    # and its step progress
    node: str | None = None
    node_value: int = 0
    node_max: int = 0
    # the newest sampler preview the target sent: (cloud node id, mime type, image bytes, sequence number)
    preview: tuple | None = None
    # a fan-out's results seen as one task (run/fanout.py ``combined``): which task made each file
    sources: dict = field(default_factory=dict)

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, f"status {self.status}")

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def all_urls(self) -> list[tuple[str, str]]:
        return [(node, u) for node, urls in self.result_url.items() for u in urls]

    @classmethod
    def parse(cls, data: dict, fallback_id: str = "") -> "TaskDetail":
        data = data or {}
        wf = first(data, "workflow_id", "workflowId")
        pid = first(data, "prompt_id", "promptId", "task_id", "id", default=fallback_id)
        return cls(
            prompt_id=prompt_id_str(pid),
            status=_int(first(data, "status"), 0),
            workflow_id=_int(wf, None) if wf is not None else None,
            env_id=str(first(data, "env_id", "envId", default="")) or None,
            queue_duration_ms=_int(first(data, "queue_duration", "queueDuration"), 0),
            run_duration_ms=_int(first(data, "run_duration", "runDuration"), 0),
            result_url=result_urls(first(data, "result_url", "resultUrl", default={})),
            error_msg=str(first(data, "error_msg", "errorMsg", default="") or ""),
            queue_size=_int(first(data, "queue_size", "queueSize"), 0),
            current_position=_int(first(data, "current_position", "currentPosition"), 0),
            origin_price=_float(first(data, "origin_price", "originPrice")),
            created_at=first(data, "created_at", "createdAt"),
        )
