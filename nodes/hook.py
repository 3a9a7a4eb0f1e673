"""Queue time: ComfyUI's on_prompt handler rewrites the API prompt before validation (editor and scripts
alike). ComfyUI swallows a handler's exceptions, so every problem travels as data: a refusal in the
gateway's hidden plan input, which its VALIDATE_INPUTS turns into ComfyUI's normal node error.

The editor's language rides on each gateway as the input ``gpugeek_lang`` (web/gpugeek_lang.js); it is
taken out here and carried in the plan, so refusals and progress speak the language of whoever queued."""
from __future__ import annotations

import logging

from ..offload import plan, texts
from . import comfy

log = logging.getLogger("gpugeek.hook")
LANG_INPUT = "gpugeek_lang"


def plan_prompt(prompt: dict, lang: str = "en") -> plan.PlanResult:
    return plan.make_plan(prompt, comfy.CLASSES, file_exists=lambda name: comfy.input_file(name) is not None,
                          lang=lang)


def take_lang(prompt: dict) -> str:
    """The editor's language from the gateways' ``gpugeek_lang`` inputs (removed), else the default."""
    said = None
    for node in prompt.values():
        if isinstance(node, dict) and node.get("class_type") == plan.GATEWAY:
            said = (node.get("inputs") or {}).pop(LANG_INPUT, None) or said
    return texts.lang_of(said) if said else texts.default_lang()


def on_prompt(json_data):
    try:
        prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
        if not isinstance(prompt, dict) or not any(
                isinstance(v, dict) and v.get("class_type") == plan.GATEWAY for v in prompt.values()):
            return json_data  # no gateway: untouched
        lang = take_lang(prompt)
        try:
            res = plan_prompt(prompt, lang)
        except Exception as e:  # a bug of ours must not run anything unplanned: refuse on every gateway
            log.exception("GPUGeek: planning failed")
            why = texts.text("plan_failed", lang, error=f"{type(e).__name__}: {e}")
            for g, v in prompt.items():
                if isinstance(v, dict) and v.get("class_type") == plan.GATEWAY:
                    v.setdefault("inputs", {})[plan.PLAN_INPUT] = plan.refused_plan(g, [why], lang).to_json()
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
