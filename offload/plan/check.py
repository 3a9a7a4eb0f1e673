"""Queue-time checks of a cloud part against the node classes installed here, before anything is paid for.

A cloud node whose class this ComfyUI knows is checked by ComfyUI's own rules (execution.py
``validate_inputs``): its required inputs (dynamic inputs read as ComfyUI reads them, through the class's
``finalize``), numbers converted as ComfyUI converts them and kept in their range, a choice among its list. What
ComfyUI itself lets a class judge (an input its VALIDATE_INPUTS takes) is not judged here.

The check refuses only what the cloud would refuse and this machine can know. A list is the cloud's: a cloud
node's choices are the cloud's (DESIGN.md), and a value this machine's list lacks came from another machine or
another ComfyUI, where it was valid (this editor only offers its own list's values). So a value of a list is judged
by the cloud's own list where the pack knows it (``cloud_choices``: a ComfyUI server's definitions, what its
refusals taught, names the user added) and is sent otherwise: the cloud's refusal then comes back as the pack's
sentence and teaches the list, and the next queue is refused here, before paying. Lists filled from this machine's
folders (models, the input folder: ``ClassInfo.machine``), uploads and file-like lists are never judged here: a
cloud's list of files changes as files are added there. Numbers are judged as ComfyUI judges them, unless the
cloud's list holds the value (an input that became a list in a newer ComfyUI). A word where this ComfyUI takes a number
(Create Video's bit_depth "auto" in ComfyUI's LTX-2.3 templates, made on a ComfyUI where it is a list) came from
another ComfyUI too (this editor's number widget cannot make it): the cloud's to judge, like a list's value, unless the
cloud's list for that input is known and lacks it. A number out of its range is judged here."""
from __future__ import annotations

import re
from typing import Callable

from ..specs import combo_values
from .graph import ClassTable, is_link
from .model import Refusal

# A choice list whose values look like files (a model, an image) is the cloud's business, not ours.
_FILE_LIKE = re.compile(r"\.[A-Za-z0-9]{2,12}$")
# Options of a combo that say its values are files of this machine (ComfyUI's upload widgets, remote lists).
_UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "upload", "remote", "image_folder")
# What ``ClassInfo.validated`` holds when the class's VALIDATE_INPUTS takes ``**kwargs``: it judges every input.
ALL_INPUTS = "*"

CloudChoices = Callable[[str, str], "set | None"]   # (class, input) -> the values the cloud's lists hold


def check_node(nid: str, node: dict, classes: ClassTable, label: str,
               cloud_choices: CloudChoices | None = None) -> list:
    """Refusals for one cloud node's own values (empty where its class is not installed here)."""
    info = classes.get(node.get("class_type"))
    inputs = node.get("inputs") or {}
    spec = _spec(info, inputs)
    if spec is None:
        return []
    judged = frozenset(getattr(info, "validated", None) or ())
    found = []
    for name in (spec.get("required") or {}):
        if name not in inputs or inputs[name] is None:
            found.append(Refusal("refuse_cloud_missing_input", {"node": label, "input": _shown(name)}))
    if ALL_INPUTS in judged:
        return found
    for category in ("required", "optional"):
        for name, entry in (spec.get(category) or {}).items():
            value = inputs.get(name)
            if value is None or is_link(value) or name in judged:
                continue
            known = _cloud_list(cloud_choices, node.get("class_type"), name)
            if combo_values(entry) is not None:
                problem = _choice_problem(name, value, known, entry, info, label)
            elif known and _held(value, known):
                problem = None
            else:
                problem = _value_problem(name, value, entry, label, known)
            if problem is not None:
                found.append(problem)
    return found


def _spec(info, inputs: dict) -> dict | None:
    """The class's inputs as ComfyUI validates them for these ``inputs`` (dynamic inputs expanded)."""
    read = getattr(info, "spec", None) if info is not None else None
    if read is None:
        return None
    try:
        spec = read()
        finalize = getattr(info, "finalize", None)
        if finalize is not None and isinstance(spec, dict):
            spec = finalize(spec, inputs)
    except Exception:  # a class that cannot list its inputs here is not checked
        return None
    return spec if isinstance(spec, dict) else None


def _cloud_list(cloud_choices, class_type, name: str) -> list | None:
    if cloud_choices is None:
        return None
    try:
        known = cloud_choices(class_type, name)
    except Exception:   # no list of the cloud to consult
        return None
    return sorted(known, key=str) if known else None


def _machine_list(info, name: str) -> bool:
    machine = getattr(info, "machine", None)
    if machine is None:
        return False
    try:
        return name in machine()
    except Exception:  # what this machine cannot tell, the cloud judges
        return True


def _choice_problem(name: str, value, known, entry, info, label: str):
    """A value of a list: judged by the cloud's own list where the pack knows it, never by this machine's."""
    opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
    if not known or any(opts.get(k) for k in _UPLOAD_OPTIONS) or _machine_list(info, name):
        return None
    local = combo_values(entry) or []
    if any(isinstance(c, str) and _FILE_LIKE.search(c) for c in local + list(known)):
        return None
    if isinstance(value, dict) and "__value__" in value:
        value = value["__value__"]
    wrong = [v for v in value if not _held(v, known)] if opts.get("multiselect") and isinstance(value, list) else (
        [] if _held(value, known) else [value])
    if not wrong:
        return None
    return Refusal("refuse_cloud_choice", {"node": label, "input": _shown(name), "value": _short(wrong[0]),
                                           "choices": ", ".join(_short(c) for c in known[:8])})


def _held(value, known) -> bool:
    """True when ``value`` (or each of a multiselect's values) is among ``known``."""
    try:
        return all(v in known for v in (value if isinstance(value, list) else [value]))
    except TypeError:
        return False


def _value_problem(name: str, value, entry, label: str, known=None):
    """ComfyUI's conversions and range checks of a number: None where it would pass there, or where a word stands for
    a number and the cloud's list for the input is not known (``known``: a newer ComfyUI's list)."""
    if not isinstance(entry, (tuple, list)) or not entry:
        return None
    kind, opts = entry[0], (entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {})
    if isinstance(value, dict) and "__value__" in value:  # a list value, wrapped as ComfyUI unwraps it
        value = value["__value__"]
    if kind in ("INT", "FLOAT"):
        try:
            number = int(value) if kind == "INT" else float(value)
        except (TypeError, ValueError, OverflowError):
            if isinstance(value, str) and not known:   # a newer ComfyUI's choice: the cloud judges it
                return None
            return Refusal("refuse_cloud_number", {"node": label, "input": _shown(name), "value": _short(value)})
        low, high = opts.get("min"), opts.get("max")
        try:
            outside = (low is not None and number < low) or (high is not None and number > high)
        except TypeError:  # a bound that is not a number: ComfyUI's own check would fail on it too, not ours
            outside = False
        if outside:
            return Refusal("refuse_cloud_range", {"node": label, "input": _shown(name), "value": _short(value),
                                                  "low": _short(low), "high": _short(high)})
    return None


def _shown(name: str) -> str:
    """An input's name as the user sees it: a dynamic input's last part (``values.a`` -> ``a``)."""
    return name.rsplit(".", 1)[-1]


def _short(v) -> str:
    text = str(v)
    return text if len(text) <= 60 else text[:57] + "..."
