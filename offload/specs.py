"""ComfyUI's input specs, as its node definitions (``/object_info``) and its refusals (``input_config``) write
them: which inputs are lists, and their choices. Below the catalog and the cloud's errors, which both read them."""
from __future__ import annotations


def combo_values(spec) -> list | None:
    """The choices of one input spec: ``[[a, b], {...}]`` or ``["COMBO", {"options": [a, b]}]``; None for any
    other input."""
    if not isinstance(spec, (list, tuple)) or not spec:
        return None
    kind = spec[0]
    if isinstance(kind, (list, tuple)):
        return list(kind)
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if kind == "COMBO" and isinstance(opts.get("options"), (list, tuple)):
        return list(opts["options"])
    return None
