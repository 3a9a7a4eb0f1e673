"""The cloud's refusal of a prompt, told as one sentence per node: which node, what the cloud said, what to
do. A ComfyUI server answers ``/prompt`` with ``node_errors``; GPUGeek's hosted ComfyUI puts the same JSON in
a failed task's ``error_msg`` (sometimes after a line of text). Anything else is left as it came."""
from __future__ import annotations

import ast
import json
import re

from .specs import combo_values
from .texts import Said

# How many of the values the cloud accepts a refusal's sentence names ("...; it has: a, b and 12 more").
NAMES_SHOWN = 3
# ComfyUI's details of a list it did not send: "ckpt_name: 'x' not in (list of length 57)"
# A details text longer than this is not read for its list (ComfyUI sends at most 20 values).
MAX_DETAILS = 64 * 1024
_LENGTH = re.compile(r"\(list of length (\d+)\)\s*$")

# ComfyUI's validation error types (execution.py) -> the sentence that says what to do about each
_KEYS = {
    "value_not_in_list": "cloud_value_not_in_list",
    "required_input_missing": "cloud_required_input_missing",
    "invalid_input_type": "cloud_bad_type",
    "return_type_mismatch": "cloud_bad_type",
    "bad_linked_input": "cloud_bad_type",
    "value_smaller_than_min": "cloud_out_of_range",
    "value_bigger_than_max": "cloud_out_of_range",
}


def parse(raw) -> dict | None:
    """The cloud's answer as ``{"node_errors": {...}, "error": {...}}``, or None where it is not one."""
    data = raw
    if isinstance(raw, (bytes, str)):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        start = text.find("{")
        if start < 0:
            return None
        try:
            data = json.loads(text[start:])
        except ValueError:
            return None
    if not isinstance(data, dict):
        return None
    if "node_errors" in data or "error" in data:
        out = {"node_errors": data.get("node_errors") or {}, "error": data.get("error")}
    elif data and all(isinstance(v, dict) and "errors" in v for v in data.values()):
        out = {"node_errors": data, "error": None}  # node_errors alone
    else:
        return None
    return out if out["node_errors"] or isinstance(out["error"], dict) else None


def explain(raw, prompt: dict, where: str) -> list[Said]:
    """One sentence per problem the cloud named (empty when ``raw`` is not a ComfyUI refusal). ``prompt`` is
    the cloud part (it keeps the user's node ids); ``where`` names what provides models ("workflow 1234...")."""
    data = parse(raw)
    if data is None:
        return []
    said = []
    for nid, err in sorted(data["node_errors"].items()):
        if not isinstance(err, dict):
            continue
        label = f"#{nid} {err.get('class_type') or (prompt.get(nid) or {}).get('class_type') or '?'}"
        for e in err.get("errors") or []:
            said.append(_one(str(nid), label, e if isinstance(e, dict) else {}, where))
    top = data["error"]
    if not said and isinstance(top, dict):
        message = str(top.get("message") or "")
        missing = message.startswith("Cannot execute because node ") and message.endswith(" does not exist.")
        if missing:
            cls = message[len("Cannot execute because node "):-len(" does not exist.")]
            node = str(top.get("details") or "").replace("Node ID ", "").strip("'\"")
            said.append(Said("cloud_node_type_missing", {"class_type": cls, "where": where, "node": node,
                                                         "id": node.lstrip("#")}))
        else:
            said.append(Said("cloud_other", {"node": "", "message": f"{message} {top.get('details') or ''}".strip()}))
    return said


def _one(nid: str, label: str, e: dict, where: str) -> Said:
    extra = e.get("extra_info") if isinstance(e.get("extra_info"), dict) else {}
    name = extra.get("input_name") or str(e.get("details") or "").split(":")[0]
    key = _KEYS.get(e.get("type"), "cloud_other")
    value = extra.get("received_value", "")
    values = {"id": nid, "node": label, "input": name, "value": str(value)[:120], "where": where,
              "details": str(e.get("details") or "")[:200],
              "message": f"{e.get('message') or ''}: {e.get('details') or ''}".strip(": ")[:300]}
    if e.get("type") == "value_not_in_list":
        has = choices_of(e)
        if has:
            key, values["has"] = "cloud_value_not_in_list_has", some_of(has)
        else:
            m = _LENGTH.search(str(e.get("details") or ""))
            if m:
                key, values["count"] = "cloud_value_not_in_list_count", int(m.group(1))
    return Said(key, values)


def some_of(names: list) -> Said:
    """A few names, and how many more: "a, b, c and 12 more" in the language it is told in."""
    shown = ", ".join(str(n) for n in names[:NAMES_SHOWN])
    more = len(names) - NAMES_SHOWN
    return Said("names_and_more", {"names": shown, "more": more}) if more > 0 else Said("names_only", {"names": shown})


def choices_of(e: dict) -> list:
    """The values a ``value_not_in_list`` error says the input accepts: its ``extra_info.input_config`` (the
    input's spec: ``[[a, b], {...}]`` or ``["COMBO", {"options": [...]}]``), else the list in its details text
    (ComfyUI sends neither past 20 values)."""
    extra = e.get("extra_info") if isinstance(e.get("extra_info"), dict) else {}
    found = combo_values(extra.get("input_config"))
    if found is None:
        details = str(e.get("details") or "")
        at = details.rfind(" not in [")
        if 0 <= at and len(details) < MAX_DETAILS:
            try:
                parsed = ast.literal_eval(details[at + len(" not in "):])
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                parsed = None
            found = parsed if isinstance(parsed, list) else None
    return [v for v in found or [] if isinstance(v, (str, int, float)) and not isinstance(v, bool)]


def accepted(raw, prompt: dict) -> list[tuple]:
    """``[(class_type, input, [values])]``: what each refusal of a value says the cloud has (to be learned)."""
    data = parse(raw)
    if data is None:
        return []
    out = []
    for nid, err in data["node_errors"].items():
        if not isinstance(err, dict):
            continue
        cls = err.get("class_type") or (prompt.get(str(nid)) or {}).get("class_type")
        for e in err.get("errors") or []:
            if not isinstance(e, dict) or e.get("type") != "value_not_in_list" or not isinstance(cls, str):
                continue
            extra = e.get("extra_info") if isinstance(e.get("extra_info"), dict) else {}
            name = extra.get("input_name") or str(e.get("details") or "").split(":")[0]
            values = [v for v in choices_of(e) if isinstance(v, str)]
            if name and values:
                out.append((cls, str(name), values))
    return out
