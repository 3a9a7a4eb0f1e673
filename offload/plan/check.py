"""Queue-time checks of a cloud part against the node classes installed here: a cloud node whose class this
ComfyUI knows is checked as ComfyUI would check it (required inputs, number ranges, choices), before anything
is paid for. Lists of files and models are left alone: only the cloud knows what it has."""
from __future__ import annotations

import re

from .graph import ClassTable, is_link
from .model import Refusal

# A choice list whose values look like files (a model, an image) is the cloud's business, not ours.
_FILE_LIKE = re.compile(r"\.[A-Za-z0-9]{2,12}$")


def check_node(nid: str, node: dict, classes: ClassTable, label: str) -> list:
    """Refusals for one cloud node's own values (empty where its class is not installed here)."""
    info = classes.get(node.get("class_type"))
    spec = _spec(info)
    if spec is None:
        return []
    inputs = node.get("inputs") or {}
    found = []
    for name, entry in (spec.get("required") or {}).items():
        if name not in inputs or inputs[name] is None:
            found.append(Refusal("refuse_cloud_missing_input", {"node": label, "input": name}))
    for category in ("required", "optional"):
        for name, entry in (spec.get(category) or {}).items():
            value = inputs.get(name)
            if value is None or is_link(value):
                continue
            problem = _value_problem(name, value, entry, label)
            if problem is not None:
                found.append(problem)
    return found


def _spec(info) -> dict | None:
    read = getattr(info, "spec", None) if info is not None else None
    if read is None:
        return None
    try:
        spec = read()
    except Exception:  # a class that cannot list its inputs here is not checked
        return None
    return spec if isinstance(spec, dict) else None


def _value_problem(name: str, value, entry, label: str):
    if not isinstance(entry, (tuple, list)) or not entry:
        return None
    kind, opts = entry[0], (entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {})
    choices = kind if isinstance(kind, (list, tuple)) else (opts.get("options") if kind == "COMBO" else None)
    if choices is not None:
        choices = list(choices)
        if not choices or any(isinstance(c, str) and _FILE_LIKE.search(c) for c in choices):
            return None
        if value not in choices:
            return Refusal("refuse_cloud_choice", {"node": label, "input": name, "value": _short(value),
                                                   "choices": ", ".join(_short(c) for c in choices[:8])})
        return None
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return Refusal("refuse_cloud_number", {"node": label, "input": name, "value": _short(value)})
        low, high = opts.get("min"), opts.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            return Refusal("refuse_cloud_range", {"node": label, "input": name, "value": _short(value),
                                                  "low": _short(low), "high": _short(high)})
    return None


def _short(v) -> str:
    text = str(v)
    return text if len(text) <= 60 else text[:57] + "..."
