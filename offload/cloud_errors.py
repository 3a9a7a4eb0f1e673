"""The cloud's refusal of a prompt, told as one sentence per node: which node, what the cloud said, what to
do. A ComfyUI server answers ``/prompt`` with ``node_errors``; GPUGeek's hosted ComfyUI puts the same JSON in
a failed task's ``error_msg`` (sometimes after a line of text). Anything else is left as it came."""
from __future__ import annotations

import json

from .texts import Said

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
    return Said(key, {"id": nid, "node": label, "input": name, "value": str(value)[:120], "where": where,
                      "details": str(e.get("details") or "")[:200],
                      "message": f"{e.get('message') or ''}: {e.get('details') or ''}".strip(": ")[:300]})
