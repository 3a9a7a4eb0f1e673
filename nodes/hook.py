"""Queue time: ComfyUI's on_prompt handler rewrites the API prompt before validation (editor and scripts
alike). ComfyUI swallows a handler's exceptions, so every problem travels as data: a refusal in the
gateway's hidden plan input, which its VALIDATE_INPUTS turns into ComfyUI's normal node error.

The editor's language rides on each gateway as the input ``gpugeek_lang`` (web/gpugeek_lang.js); it is
taken out here and carried in the plan, so refusals and progress speak the language of whoever queued.

A prompt with no gateway runs here, unless the whole-workflow switch is on: the prompt's ``extra_data`` key
``gpugeek_whole_workflow`` (true/false, the editor's "Run in the cloud" sends it) wins, else
``GPUGEEK_WHOLE_WORKFLOW`` or the saved setting. Then the graph is planned as one cloud part, whose gateway
gets its required values here; without a key or a target the switch is refused on the output nodes."""
from __future__ import annotations

import json

import logging

from ..offload import catalog, config, errors, plan, run, texts
from ..offload.targets.pool import split_targets
from . import ahead, comfy

log = logging.getLogger("gpugeek.hook")
LANG_INPUT = "gpugeek_lang"
WHOLE_KEY = "gpugeek_whole_workflow"   # extra_data: run a graph with no gateway in the cloud (true/false)
LANG_KEY = "gpugeek_lang"              # extra_data: the editor's language, for a graph with no gateway
RUNS_KEY = "gpugeek_runs"              # extra_data: a whole workflow's variations at once (its gateway's runs)


def plan_prompt(prompt: dict, lang: str = "en", whole: bool = False, targets: list | None = None,
                runs: int = 1) -> plan.PlanResult:
    """``targets``: the output nodes queued (POST /prompt's ``partial_execution_targets``), None for all;
    ``runs``: a whole workflow's tasks at once (its variations, seeds offset by the run's index)."""
    unavailable = whole_unavailable() if whole and not _has_gateway(prompt) else []
    res = plan.make_plan(prompt, comfy.CLASSES, file_exists=lambda name: comfy.input_file(name) is not None,
                         lang=lang, whole=whole, unavailable=unavailable, cloud_choices=CloudChoices(prompt),
                         targets=targets)
    gateway = res.local_prompt.get(plan.WHOLE)
    if gateway is not None:  # the whole workflow's gateway: the values its required widgets would have
        gateway["inputs"].setdefault("timeout_s", run.DEFAULT_TIMEOUT_S)
        gateway["inputs"]["runs"] = runs
        gateway["inputs"].update(_where_it_runs())
    return res


class CloudChoices:
    """``(gateway, class, input)`` -> the whole list the cloud told for that class's input at that gateway's target
    (offload/catalog.py ``whole_list``), or None: what the queue-time check judges a value of a list by."""

    def __init__(self, prompt: dict):
        self._prompt, self._keys = prompt, {}
        self._sets: dict = {}   # (keys, class, input) -> its set: ten loaders of one class merge the lists once

    def __call__(self, gateway: str, cls: str, name: str):
        keys = self._keys.get(gateway)
        if keys is None:
            inputs = (self._prompt.get(gateway) or {}).get("inputs") or {}
            try:
                keys = catalog.keys_for(config.load_config(), _plain(inputs.get("target")),
                                        _plain(inputs.get("workflow_id")))
            except Exception:  # no usable target: no cloud list to consult
                keys = []
            self._keys[gateway] = keys
        if not keys:
            return None
        at = (tuple(keys), cls, name)
        if at not in self._sets:
            got = catalog.catalog().whole_list(keys, cls, name)
            self._sets[at] = set(got) if got else None
        return self._sets[at]


def refuse_missing_models(res: plan.PlanResult, extra: dict, lang: str) -> None:
    """On GPUGeek and v2 (no model uploads), at queue time: a cloud part naming a model of this machine or of its
    template that the cloud's known list lacks is refused on its gateways, the sentence naming the node, where the
    model comes from and what to do (offload/run/models.py ``missing_models``); the nodes are marked as a wrong
    value's are."""
    from ..offload.run.models import missing_models, template_models
    from .models import model_source
    cfg = None
    info = extra.get("extra_pnginfo")
    workflow = info.get("workflow") if isinstance(info, dict) else None
    source = None
    for g, p in list(res.plans.items()):
        if not p.leads or not p.prompt:
            continue
        inputs = (res.local_prompt.get(g) or {}).get("inputs") or {}
        cfg = cfg or config.load_config()
        where = split_targets(_plain(inputs.get("target")) or cfg.target)[0]
        if config.is_comfy_target(where) and not config.is_v2_target(where):   # a server receives them, or says
            continue
        keys = catalog.keys_for(cfg, _plain(inputs.get("target")), _plain(inputs.get("workflow_id")))
        source = source or model_source(template_models(workflow))
        if config.is_v2_target(where):
            place = texts.Said("where_server", {"url": where})
        else:
            try:
                wf = cfg.resolve_workflow_id(_plain(inputs.get("workflow_id")))
            except errors.GPUGeekError:
                wf = ""
            place = texts.Said("where_workflow", {"workflow": wf})
        lines = missing_models(p.prompt, source, keys, place)
        if not lines:
            continue
        said = " ".join([texts.text("err_models_missing", lang)] + [line.text(lang) for line in lines])
        for m in p.members or [g]:
            refused = plan.refused_plan(m, [said], lang, res.plans[m].nodes)
            res.plans[m] = refused
            res.refusals[m] = [said]
            res.local_prompt[m]["inputs"][plan.PLAN_INPUT] = refused.to_json()
        res.flagged = sorted(set(res.flagged) | {str(line.values["id"]) for line in lines})


def _plain(v):
    return v if isinstance(v, str) else None


def _where_it_runs() -> dict:
    """The whole workflow's target and workflow id from the settings at queue time, as its gateway's inputs: the
    same run, and part of what ComfyUI caches the gateway on (another target in Settings runs it again there,
    rather than serving the task of the one before)."""
    try:
        cfg = config.load_config()
    except errors.GPUGeekError:   # said on the output nodes by whole_unavailable
        return {}
    return {"target": cfg.target, "workflow_id": str(cfg.workflow_id or "")}


def runs_of(extra: dict) -> int:
    """``extra_data.gpugeek_runs``: how many variations of a whole workflow run at once (1 to run.MAX_RUNS)."""
    said = extra.get(RUNS_KEY) if isinstance(extra, dict) else None
    try:
        n = int(said) if said is not None and not isinstance(said, bool) else 1
    except (TypeError, ValueError):
        n = 1
    return max(1, min(run.MAX_RUNS, n))


def whole_switch(json_data) -> bool:
    """The prompt's ``extra_data.gpugeek_whole_workflow`` where it says, else the default."""
    extra = json_data.get("extra_data") if isinstance(json_data, dict) else None
    said = extra.get(WHOLE_KEY) if isinstance(extra, dict) else None
    if said is None:
        return config.whole_workflow_default()
    if isinstance(said, str):
        return said.strip().lower() in ("1", "true", "yes", "on")
    return bool(said)


def whole_unavailable() -> list:
    """Why the whole workflow cannot go where it is configured to (no key, no workflow id), as refusals."""
    try:
        cfg = config.load_config()
    except errors.GPUGeekError as e:
        return [plan.Refusal("whole_config_problem", {"problem": str(e)})]
    if config.is_comfy_target(split_targets(cfg.target)[0]):
        return []
    if cfg.api_key is None:
        return [plan.Refusal("whole_no_key", {})]
    if cfg.workflow_id is None:
        return [plan.Refusal("whole_no_workflow", {})]
    return []


def _has_gateway(prompt: dict) -> bool:
    return any(isinstance(v, dict) and v.get("class_type") == plan.GATEWAY for v in prompt.values())


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
        if not isinstance(prompt, dict):
            return json_data
        whole = not _has_gateway(prompt) and whole_switch(json_data)
        if not whole and not _has_gateway(prompt):
            return json_data  # no gateway, the switch off: untouched
        extra = json_data.get("extra_data") if isinstance(json_data.get("extra_data"), dict) else {}
        lang = texts.lang_of(extra[LANG_KEY]) if whole and extra.get(LANG_KEY) else take_lang(prompt)
        try:
            targets = json_data.get("partial_execution_targets")
            res = plan_prompt(prompt, lang, whole, targets if isinstance(targets, list) else None,
                              runs_of(extra) if whole else 1)
        except Exception as e:  # a bug of ours must not run anything unplanned: refuse on every gateway
            log.exception("GPUGeek: planning failed")
            why = texts.text("plan_failed", lang, error=f"{type(e).__name__}: {e}")
            for g, v in prompt.items():
                if isinstance(v, dict) and v.get("class_type") == plan.GATEWAY:
                    v.setdefault("inputs", {})[plan.PLAN_INPUT] = plan.refused_plan(g, [why], lang).to_json()
            if whole:  # nothing unplanned runs here or there: the gateway says why
                json_data["prompt"] = {plan.WHOLE: {"class_type": plan.GATEWAY, "inputs": {
                    "workflow_id": "", "run_on": "cloud", "timeout_s": run.DEFAULT_TIMEOUT_S,
                    plan.PLAN_INPUT: plan.refused_plan(plan.WHOLE, [why], lang).to_json()}}}
            return json_data
        try:
            refuse_missing_models(res, extra, lang)
        except Exception:  # the run's own check (offload/run/models.py) still stops it before paying
            log.exception("GPUGeek: the models check failed")
        json_data["prompt"] = res.local_prompt
        try:   # the parts that depend on nothing local still to run start now (nodes/ahead.py)
            ahead.offer(json_data, res.local_prompt)
        except Exception:   # noqa: BLE001 - not sent ahead: each runs when ComfyUI reaches it, as before
            log.exception("GPUGeek: sending ahead failed")
        return json_data
    except Exception:
        log.exception("GPUGeek: on_prompt handler failed")
        return json_data


# ComfyUI's queue (the editor posts /api/prompt; older editors and scripts /prompt)
PROMPT_PATHS = ("/prompt", "/api/prompt")


def goes_to_the_cloud(json_data) -> bool:
    """Whether a queued prompt would send anything to the cloud (a gateway, or no gateway and the switch on)."""
    prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
    return isinstance(prompt, dict) and (_has_gateway(prompt) or whole_switch(json_data))


async def cloud_prompts_json_only(request, handler):
    """ComfyUI's own POST /prompt reads any body as JSON text, so a page on another site can queue a prompt with a
    CORS "simple" request (text/plain, no preflight) where ComfyUI's origin check does not apply (--enable-cors-header,
    older releases, a LAN host). A prompt that would go to the cloud (money) is taken only as application/json, which
    the editor and every HTTP library's json= send and another site cannot without asking first: refused here with
    one sentence, before ComfyUI queues it. Anything else passes as ComfyUI would take it."""
    if request.method == "POST" and request.path in PROMPT_PATHS and request.content_type != "application/json":
        try:
            body = json.loads(await request.text())
        except (ValueError, UnicodeDecodeError):
            body = None
        if goes_to_the_cloud(body):
            from aiohttp import web
            said = texts.text("prompt_json_only", texts.lang_of(request.headers.get("Accept-Language")))
            log.warning("GPUGeek: refused a prompt for the cloud sent as %s", request.content_type or "no type")
            return web.json_response({"error": {"type": "gpugeek_json_only", "message": said, "details": said,
                                                "extra_info": {}}, "node_errors": {}}, status=415)
    return await handler(request)


def install(server) -> None:
    if server is None or getattr(server, "_gpugeek_hooked", False):
        return
    server.add_on_prompt_handler(on_prompt)
    app = getattr(server, "app", None)
    if app is not None:   # the app is not frozen yet while ComfyUI loads custom nodes
        from aiohttp import web
        try:
            app.middlewares.append(web.middleware(cloud_prompts_json_only))
        except RuntimeError:   # frozen (a pack loaded late): the queue-time cap on runs and the limit still hold
            log.warning("GPUGeek: could not guard /prompt against cross-site posts (the server already started)")
    ahead.install(server)
    server._gpugeek_hooked = True
