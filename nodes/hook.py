"""Queue time: ComfyUI's on_prompt handler rewrites the API prompt before validation (editor and scripts
alike). ComfyUI swallows a handler's exceptions, so every problem travels as data: a refusal in the
gateway's hidden plan input, which its VALIDATE_INPUTS turns into ComfyUI's normal node error."""
from __future__ import annotations

import json
import logging

from ..offload import plan as P
from . import comfy

log = logging.getLogger("gpugeek.hook")


def plan_prompt(prompt: dict):
    return P.make_plan(prompt, comfy.CLASSES, file_exists=lambda name: comfy.input_file(name) is not None)


def on_prompt(json_data):
    try:
        prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
        if not isinstance(prompt, dict) or not any(
                isinstance(v, dict) and v.get("class_type") == P.GATEWAY for v in prompt.values()):
            return json_data  # no gateway: untouched
        try:
            res = plan_prompt(prompt)
        except Exception as e:  # a bug of ours must not run anything unplanned: refuse on every gateway
            log.exception("GPUGeek: planning failed")
            refused = json.dumps({"mode": "refused", "refusals": [
                f"The GPUGeek pack could not plan this graph ({type(e).__name__}: {e}); please report it."]})
            for v in prompt.values():
                if isinstance(v, dict) and v.get("class_type") == P.GATEWAY:
                    v.setdefault("inputs", {})[P.PLAN_INPUT] = refused
            return json_data
        json_data["prompt"] = res.local_prompt
        return json_data
    except Exception:
        log.exception("GPUGeek: on_prompt handler failed")
        return json_data


def install(server) -> None:
    if server is None or getattr(server, "_gpugeek_hooked", False):
        return
    server.add_on_prompt_handler(on_prompt)
    server._gpugeek_hooked = True
