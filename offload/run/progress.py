"""What a running gateway tells its user, in the prompt's language (texts in ``locales/<lang>/server.json``):
one line of text per event, how far the bar is, and the status record the editor draws."""
from __future__ import annotations

import base64

from .. import texts
from ..wire import CANCELLED as S_CANCELLED
from ..wire import FAILED as S_FAILED
from ..wire import QUEUED as S_QUEUED
from ..wire import RUNNING as S_RUNNING
from ..wire import SUCCEEDED as S_SUCCEEDED
from ..wire import TaskDetail


def failure_text(d: TaskDetail, failure, lang: str) -> str:
    """Why a task failed, as the error the user sees says it: the cloud's sentences node by node where it named
    nodes (the same ones the loader node and the tasks tab show), else the platform's own text."""
    lines = getattr(failure, "lines", None) or []
    return " ".join(line.text(lang) for line in lines) or d.error_msg or ""


def status_text(d: TaskDetail, expected: dict | None = None, lang: str = "en", failure=None) -> str:
    """One line for the node: queued (position N of M), running (elapsed), done (time, price), failed (why)."""
    if d.status == S_QUEUED:
        if d.current_position:
            return texts.text("status_queued_at", lang, pos=d.current_position, size=d.queue_size)
        return texts.text("status_queued", lang)
    if d.status == S_SUCCEEDED:
        key = "status_done_price" if d.origin_price is not None else "status_done"
        return texts.text(key, lang, s=f"{d.run_duration_ms / 1000:.1f}", price=f"{d.origin_price or 0:g}")
    if d.status == S_FAILED:
        return texts.text("status_failed", lang, msg=failure_text(d, failure, lang))
    if d.status == S_CANCELLED:
        return texts.text("status_cancelled", lang)
    run = f"{d.run_duration_ms / 1000:.1f}"
    if expected and expected.get("run_ms"):
        return texts.text("status_running_of", lang, s=run, expected=f"{expected['run_ms'] / 1000:.0f}")
    return texts.text("status_running", lang, s=run)


def event_text(kind: str, lang: str, detail: TaskDetail | None = None, expected=None, **info) -> str | None:
    """The node's progress line for one event of the run (None: nothing to say)."""
    if kind == "uploading":
        return texts.text("progress_uploading", lang)
    if kind == "submitted":
        return texts.text("progress_submitted", lang, task=info.get("prompt_id"))
    if kind == "shared":
        return texts.text("progress_shared", lang, task=info.get("task_id"))
    if kind == "cancelling":
        return texts.text("progress_cancelling", lang)
    if kind == "paid_before":
        return texts.text("progress_paid_before", lang, task=info.get("prompt_id"))
    if kind == "left_running":
        return texts.text("progress_left_running", lang, task=info.get("prompt_id"))
    if kind == "price_wait":
        return texts.text("progress_price_wait", lang)
    if kind == "limit_left_out":
        return texts.text("progress_limit_left_out", lang, left=info.get("left"), runs=info.get("asked"))
    if kind == "model_uploading":
        return texts.text("model_uploading", lang, name=info.get("name"), url=info.get("url"),
                          done=size_text(info.get("done") or 0), total=size_text(info.get("total") or 0))
    if kind == "model_fetching":
        done, total = info.get("done") or 0, info.get("total")
        far = (f"{size_text(done)} / {size_text(total)}" if total else size_text(done)) if done else ""
        line = texts.text("model_fetching", lang, name=info.get("name"), url=info.get("url"))
        return f"{line}: {far}" if far else line
    if kind == "status_error":
        return texts.text("progress_status_error", lang, error=info.get("error"))
    if kind == "status" and detail is not None:
        line = status_text(detail, expected, lang, info.get("failure"))
        if detail.node and detail.status == S_RUNNING:
            line += f" · #{detail.node}" + (f" {detail.node_value}/{detail.node_max}" if detail.node_max else "")
        return line
    return None


def size_text(n: int) -> str:
    """A byte count as people read it (one decimal in MB, whole KB below), as the editor writes it."""
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{round(n / 1e3)} KB"


def closing_text(d: TaskDetail, *, runs: int, bytes_down: int, transfer: str, lang: str) -> str:
    """The node's last line once its images are here: the run's time and price (a fan-out's: every run), the
    bytes brought back and how (the gateway's transfer)."""
    if runs > 1:
        line = texts.text("progress_runs_done", lang, runs=runs, s=f"{d.run_duration_ms / 1000:.1f}",
                          price=f"{d.origin_price or 0:g}")
    else:
        line = status_text(d, None, lang)
    return texts.text("progress_back", lang, line=line, down=size_text(bytes_down),
                      how=texts.text(f"transfer_{transfer}", lang))


def bar_percent(detail: TaskDetail, expected: dict | None) -> float | None:
    """How far the node's bar is while the task runs: against the expected run time where known."""
    if detail.status != S_RUNNING:
        return None
    if expected and expected.get("run_ms"):
        return 95 * min(1.0, detail.run_duration_ms / expected["run_ms"])
    return min(90, 10 + detail.run_duration_ms / 1000)


def status_record(node, detail: TaskDetail, expected: dict | None, lang: str = "en", failure=None) -> dict:
    """What the editor's status box and marking draw for a gateway (its ``gpugeek.status`` message)."""
    return {"node": str(node), "task_id": detail.prompt_id, "status": detail.status,
            "position": detail.current_position, "queue_size": detail.queue_size, "run_ms": detail.run_duration_ms,
            "price": detail.origin_price, "error": failure_text(detail, failure, lang), "expected": expected,
            "cloud_node": detail.node, "cloud_value": detail.node_value, "cloud_max": detail.node_max}


def preview_record(gateway, detail: TaskDetail) -> dict | None:
    """A sampler preview for the editor to draw on the cloud node that made it (``gpugeek.preview``)."""
    if not detail.preview:
        return None
    node, mime, image, _seq = detail.preview
    return {"gateway": str(gateway), "node": str(node), "task_id": detail.prompt_id,
            "image": f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"}


def cloud_errors_record(gateway, error, lang: str) -> dict | None:
    """The cloud's errors node by node (``gpugeek.cloud_errors``): the editor outlines those nodes and shows
    each sentence on its node."""
    lines = getattr(error, "lines", None) or []
    nodes = [{"id": str(line.values.get("id", "")), "text": line.text(lang)} for line in lines]
    if not nodes:
        return None
    return {"gateway": str(gateway), "task_id": getattr(error, "task_id", None), "errors": nodes}


class RunsBoard:
    """Where each run of a fan-out stands, for the gateway's one status line ("3/8 done") and the editor."""

    def __init__(self):
        self.states: dict = {}   # run -> platform status code

    def update(self, run: int, status: int) -> None:
        self.states[run] = status

    def done(self) -> int:
        return sum(1 for s in self.states.values() if s == S_SUCCEEDED)

    def line(self, lang: str, runs: int, run: int, text: str) -> str:
        return texts.text("progress_runs", lang, done=self.done(), runs=runs, run=run + 1, text=text)

    def record(self, runs: int) -> dict:
        return {"runs": runs, "runs_done": self.done(),
                "run_states": [self.states.get(i, 0) for i in range(runs)]}
