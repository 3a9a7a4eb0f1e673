"""The pack's HTTP routes for the editor. The API key goes in (write-only) and never comes out: the
browser learns whether a key is set and its last four characters."""
from __future__ import annotations

import asyncio
import functools
import json
import logging

from aiohttp import web

from ..offload import catalog
from ..offload import config
from ..offload import errors
from ..offload import texts
from ..offload.journal import ACTIVE
from ..offload.run import cancel_by_hand, estimate_for
from ..offload.run.ahead import ahead, queue_money
from ..offload.run.fanout import times_runs
from . import cloud, hook

log = logging.getLogger("gpugeek.routes")
# The tasks tab shows at most this many tasks.
TASKS_SHOWN = 200
# A task as the tasks tab gets it holds what the cloud sent, as the journal kept it (its error text, its refusal's
# lines, result addresses): each text at most TASK_TEXT_CHARS characters (a refusal of a big workflow says a few
# thousand; the journal keeps the whole), at most TASK_FILES_SHOWN of its files (the tab shows eight thumbnails) and
# TASK_FILES_SHOWN of its refused nodes.
TASK_TEXT_CHARS = 8000
TASK_FILES_SHOWN = 16
# The most bytes of an answer of GET /gpugeek/tasks: a task is a few KB at most (its texts cut as above, ~50 KB
# escaped at worst), so 200 of them fit in a few hundred KB; past this, the older tasks are left out (the newest
# stay). It is the editor's to parse on its main thread, every time the tab opens.
MAX_TASKS_ANSWER_BYTES = 4 << 20


def _cut(value):
    """A journal's value for the editor: a text at most TASK_TEXT_CHARS, a list at most TASK_FILES_SHOWN items."""
    if isinstance(value, str):
        return value[:TASK_TEXT_CHARS]
    if isinstance(value, list):
        return [_cut(v) for v in value[:TASK_FILES_SHOWN]]
    return value


def _public_task(r: dict, lang: str = "en") -> dict:
    keys = ("key", "created", "updated", "prompt_id", "status", "workflow_id", "gateway", "queue_ms", "run_ms",
            "price", "result_url", "files", "error", "plan_hash", "target", "group", "run", "runs", "bytes_down",
            "bytes_up")
    out = {k: _cut(r.get(k)) for k in keys}
    # the cloud's refusal, node by node, in the editor's language (the raw answer stays in ``error``)
    lines = [texts.Said.from_dict(x) for x in r.get("error_lines") or [] if isinstance(x, dict)]
    out["error_text"] = _cut(" ".join(line.text(lang) for line in lines[:TASK_FILES_SHOWN]) or None)
    out["error_nodes"] = _cut(sorted({str(line.values["id"]) for line in lines if line.values.get("id")}))
    return out


async def get_config(request):
    try:
        return web.json_response(config.load_config().public())
    except errors.GPUGeekError as e:
        return web.json_response({"key_set": False, "problems": [str(e)]})


async def _body(request) -> dict | None:
    """The request's JSON object, or None when it sent anything else (not JSON, a list, a number)."""
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _json_only(handler):
    """``handler`` for a route that changes state (every method but GET): a request not declared as
    ``application/json`` is refused (415) before it acts. A page on another site may send text/plain, a form or no
    body at all without asking (a CORS "simple" request), which ComfyUI's origin check lets through where it is off
    (--enable-cors-header, older versions, a LAN host); a JSON body needs a preflight first."""
    @functools.wraps(handler)
    async def json_only(request):
        if request.content_type != "application/json":
            said = texts.text("route_json_only", texts.lang_of(request.headers.get("Accept-Language")))
            return web.json_response({"ok": False, "error": said, "message": said}, status=415)
        return await handler(request)
    return json_only


def _not_json():
    said = "The request was not a JSON object."
    return web.json_response({"ok": False, "error": said, "message": said}, status=400)


def _json_object(handler):
    """``handler(request, body, lang)`` for a route whose body is a JSON object (``_body``), with the editor's
    language (its ``lang``); anything else is answered here: 400, one sentence."""
    @functools.wraps(handler)
    async def with_body(request):
        body = await _body(request)
        if body is None:
            return _not_json()
        return await handler(request, body, texts.lang_of(body.get("lang")))
    return with_body


@_json_object
async def post_config(request, body: dict, lang: str):
    try:
        cfg = config.load_config()
        changes, notes = {}, []
        if "base_url" in body:
            changes["base_url"] = _new_base_url(body, cfg, lang, notes)
        if "target" in body:
            changes["target"] = _new_target(body, cfg, lang, notes)
        if "api_key" in body:
            config.save_api_key(body.get("api_key") or None)
        if "target_token" in body:
            config.save_target_token(body.get("target_token") or None)
        if "comfy_api_key" in body:
            config.save_comfy_api_key(body.get("comfy_api_key") or None)
        if "allow_lan_http" in body:
            changes["allow_lan_http"] = bool(body["allow_lan_http"]) or None
        if "whole_workflow" in body:
            changes["whole_workflow"] = bool(body["whole_workflow"]) or None
        if "receive_models" in body:   # this ComfyUI takes models from other machines (offload/receive.py)
            changes["receive_models"] = bool(body["receive_models"]) or None
        if "transfer" in body:
            if body["transfer"] not in config.TRANSFERS + ("", None):
                raise ValueError(f"transfer must be one of {', '.join(config.TRANSFERS)}")
            changes["transfer"] = body["transfer"] if body["transfer"] != "lossless" else None
        if "send_ahead" in body:   # off (0) or how many tasks ahead at once; the default forgets the setting
            v = body["send_ahead"]
            n = (config.SEND_AHEAD_DEFAULT if v is True else 0 if v is False
                 else max(0, min(config.SEND_AHEAD_MAX, int(v))))
            changes["send_ahead"] = n if n != config.SEND_AHEAD_DEFAULT else None
        if "workflow_id" in body:
            changes["workflow_id"] = str(config.parse_workflow_id(body["workflow_id"])) if body["workflow_id"] else None
        if "daily_limit" in body:
            v = body["daily_limit"]
            changes["daily_limit"] = float(v) if v not in (None, "", 0, "0") else None
        if changes:
            config.save_settings(**changes)
        _bind_saved_secrets(body)
        # a route that changes where credentials go says so
        return web.json_response({"ok": True, "notes": notes, **config.load_config().public()})
    except (errors.GPUGeekError, ValueError, TypeError) as e:
        return web.json_response({"ok": False, "error": str(e)}, status=400)


def _new_base_url(body: dict, cfg, lang: str, notes: list):
    """A new GPUGeek address; the saved key, bound to the old one, is forgotten (and said so)."""
    new = config.check_base_url(body["base_url"]) if body["base_url"] else None
    if cfg.key_source == "environment" and (new or cfg.env_base_url) != cfg.env_base_url:
        # the environment's key goes only to the environment's address (or the default)
        raise errors.ConfigError(texts.text("env_key_base_url", lang, bound=cfg.env_base_url), hint="")
    if (new or config.DEFAULT_BASE_URL) != cfg.base_url and "api_key" not in body and cfg.key_source == "saved":
        config.save_api_key(None)  # a saved key only ever goes to the address it was saved for
        notes.append(texts.text("forgot_key", lang, url=new or config.DEFAULT_BASE_URL))
    return new


def _new_target(body: dict, cfg, lang: str, notes: list):
    """A new place to run (one server, a pool separated by commas, v2:<url>); the credentials bound to the
    old one are forgotten (and said so)."""
    t = str(body["target"] or "").strip()
    if t and t.lower() != "gpugeek":
        lan = bool(config.load_settings().get("allow_lan_http"))
        t = ",".join(config.check_target_url(u.strip(), allow_lan_http=lan) for u in t.split(",") if u.strip())
    if (t or "gpugeek") != cfg.target:
        if cfg.token_source == "environment":
            raise errors.ConfigError(texts.text("env_token_target", lang, bound=cfg.target), hint="")
        if cfg.target_token and "target_token" not in body:
            config.save_target_token(None)  # a token only ever goes to the server it was saved for
            notes.append(texts.text("forgot_token", lang))
    v2 = config.first_v2_url(t)
    if (cfg.comfy_key_source == "saved" and "comfy_api_key" not in body and v2
            and config.origin(v2) != config.origin(cfg.comfy_key_url)):
        config.save_comfy_api_key(None)  # a Comfy API key only ever goes to the address it was saved for
        notes.append(texts.text("forgot_comfy_key", lang, url=v2))
    return t or None


def _bind_saved_secrets(body: dict) -> None:
    """A secret saved here is bound to where it goes once this change applies, as load_config reads it."""
    if not (body.get("api_key") or body.get("target_token") or body.get("comfy_api_key")):
        return
    now, bound = config.load_config(), {}
    if body.get("api_key"):
        bound["key_base_url"] = now.base_url
    if body.get("target_token"):
        bound["token_target"] = now.target
    if body.get("comfy_api_key"):  # the configured v2 address, else Comfy Cloud
        bound["comfy_key_url"] = config.first_v2_url(now.target) or config.COMFY_CLOUD_URL
    config.save_settings(**bound)


async def post_test(request):
    """One sentence, in the editor's language: do the key and URL work (or: does the ComfyUI server answer)?"""
    body = await _body(request) or {}
    lang = texts.lang_of(body.get("lang"))
    try:
        async with cloud.open_target(config.load_config()) as target:
            ok, message = await target.ping(lang)
        return web.json_response({"ok": ok, "message": message})
    except errors.GPUGeekError as e:
        return web.json_response({"ok": False, "message": str(e)})


async def get_tasks(request):
    lang = texts.lang_of(request.query.get("lang"))
    j = cloud.journal()
    tasks, size = [], len(b'{"tasks":[]}')
    for r in j.tasks(TASKS_SHOWN):
        t = _public_task(r, lang)
        if r.get("status") in ACTIVE:
            # what a task still running is expected to cost and take: the estimate the run and the limit use
            t["expected"] = j.estimate(r.get("plan_hash"), r.get("shape_hash"), r.get("workflow_id") or None,
                                       form_hash=r.get("form_hash"), work=r.get("work"))
        size += len(json.dumps(t)) + 2   # as json_response writes it, and a comma
        if size > MAX_TASKS_ANSWER_BYTES:   # the newest first: the older ones are left out
            break
        tasks.append(t)
    return web.json_response({"tasks": tasks})


def _task_target(pid: str) -> str | None:
    """Where the journal says a task ran (its target URL), so refresh and cancel go there."""
    return (cloud.journal().by_prompt_id(pid) or {}).get("target_url")


async def post_cancel(request):
    pid = request.match_info["pid"]
    try:
        async with cloud.open_target(override=_task_target(pid)) as target:
            status = await cancel_by_hand(target, pid, cloud.journal(), "cancelled from the tasks tab")
        return web.json_response({"ok": True, "status": status})
    except errors.GPUGeekError as e:
        return web.json_response({"ok": False, "message": str(e)})


async def post_refresh(request):
    pid = request.match_info["pid"]
    try:
        async with cloud.open_target(override=_task_target(pid)) as target:
            d = await target.status(pid)
        rec = cloud.journal().by_prompt_id(pid)
        from ..offload.run import job_status
        fields = dict(status=job_status(d.status), queue_ms=d.queue_duration_ms, run_ms=d.run_duration_ms,
                      price=d.origin_price, result_url=d.result_url, error=d.error_msg or None)
        j = cloud.journal()
        j.update(rec["key"] if rec else j.begin(prompt_id=pid, gateway="imported"), **fields)
        return web.json_response({"ok": True, "task": _public_task(cloud.journal().by_prompt_id(pid) or {})})
    except errors.GPUGeekError as e:
        return web.json_response({"ok": False, "message": str(e)})


async def post_plan(request):
    """The server's plan of an API prompt, for the editor's marking: roles, the gateway each cloud node runs
    for, refusals (in the editor's language), flagged local nodes, expected price and time."""
    try:
        body = await request.json()
        prompt = body.get("prompt") or {}
        lang = texts.lang_of(body.get("lang") or hook.take_lang(prompt))
        whole = hook.whole_switch(body)  # the editor's switch rides as the prompt's would
        res = await asyncio.to_thread(hook.plan_prompt, prompt, lang, whole)
        extra = body.get("extra_data") if isinstance(body.get("extra_data"), dict) else {}
        await asyncio.to_thread(hook.refuse_missing_models, res, extra, lang)   # models GPUGeek lacks, marked too
    except Exception as e:  # noqa: BLE001 - the editor shows it
        return web.json_response({"ok": False, "message": f"{type(e).__name__}: {e}"})
    j = cloud.journal()
    wf = str(config.load_config().workflow_id or "")
    expected = {}
    for g, p in res.plans.items():
        if p.hash:
            inputs = prompt.get(g, {}).get("inputs") or {}
            runs = inputs.get("runs") if isinstance(inputs.get("runs"), int) else 1
            # the price of every run of a fan-out: what the daily limit will count
            expected[g] = times_runs(estimate_for(j, p, inputs.get("workflow_id") or wf), runs)
    # the queue's prompts sent ahead: their price, and the limit's room left after them (offload/run/ahead.py)
    queued = queue_money(ahead(), j, config.load_config().daily_limit)
    return web.json_response({"ok": True, "roles": res.roles, "owner": res.owner, "refusals": res.refusals,
                              "flagged": res.flagged, "groups": res.groups, "expected": expected, "ahead": queued})


async def _lists_answer(cfg, keys: list, nodes, lang: str, refresh: bool = False) -> web.Response:
    """The lists of ``nodes`` (``{class: [input names]}`` as the editor sent them) at ``keys``, each distinct list
    sent once; read, merged and encoded on a worker thread (a place's lists are megabytes)."""
    problems = await catalog.read_servers(cfg, keys, force=refresh)
    cat = catalog.catalog()

    def answer() -> bytes:
        lists = cat.view(keys, nodes)
        said = problems + [p for p in (cat.problem(k) for k in keys) if p is not None]
        return catalog.answer(lists, lang, problems=said, ok=True, where=keys)
    return web.Response(body=await asyncio.to_thread(answer), content_type="application/json")


async def post_lists(request):
    """The cloud's lists for the combos of the cloud nodes of one gateway: ``{target, workflow_id, nodes:
    {class: [input names]}, refresh, lang}`` (the gateway's own widgets; empty means the settings) ->
    ``{values: [[names]], lists: {class: {input: {list, sources}}}, where, problems}``: each distinct list once in
    ``values``, each input naming its place there. No key or token ever in the answer."""
    body = await _body(request)
    if body is None:
        return _not_json()
    lang = texts.lang_of(body.get("lang"))
    try:
        cfg = config.load_config()
        keys = catalog.keys_for(cfg, body.get("target"), body.get("workflow_id"))
        return await _lists_answer(cfg, keys, body.get("nodes"), lang, refresh=bool(body.get("refresh")))
    except errors.GPUGeekError as e:
        return web.json_response({"ok": False, "message": e.message_in(lang)})


async def post_lists_add(request):
    """Names the user typed for one input of one node class, kept for the gateway's target (per workflow id on
    GPUGeek, which has no call that lists models): ``{target, workflow_id, class, input, names, lang}``. A name
    longer than a list holds is refused with a sentence."""
    body = await _body(request)
    if body is None:
        return _not_json()
    lang = texts.lang_of(body.get("lang"))
    raw = body.get("names")
    raw = raw if isinstance(raw, list) else str(raw or "").replace("\n", ",").split(",")
    names = [n.strip() for n in raw[:catalog.MAX_VALUES] if isinstance(n, str) and n.strip()]
    cls, name = str(body.get("class") or ""), str(body.get("input") or "")
    if not names or not cls or not name:
        return web.json_response({"ok": False, "message": texts.text("lists_no_names", lang)})
    too_long = catalog.too_long([cls, name, *names])
    if too_long is not None:
        return web.json_response({"ok": False, "message": too_long.text(lang)})
    try:
        cfg = config.load_config()
        keys = catalog.keys_for(cfg, body.get("target"), body.get("workflow_id"))
        if any(k.startswith("gpugeek@") and k.endswith("/") for k in keys):
            return web.json_response({"ok": False, "message": texts.text("lists_need_workflow", lang)})
        for k in keys:
            await asyncio.to_thread(catalog.catalog().learn, k, catalog.USER, {cls: {name: names}}, replace=False)
        return await _lists_answer(cfg, keys, {cls: [name]}, lang)
    except (errors.GPUGeekError, OSError) as e:
        return web.json_response({"ok": False, "message": e.message_in(lang) if isinstance(e, errors.GPUGeekError)
                                  else f"{type(e).__name__}: {e}"})


def _editor_texts(lang: str) -> dict:
    """``locales/<lang>/editor.json``, and the pack's node names (``node_<Class>``, from nodeDefs.json)."""
    names = {f"node_{cls}": d["display_name"] for cls, d in texts.table(lang, "nodeDefs").items()
             if isinstance(d, dict) and d.get("display_name")}
    return {**names, **texts.table(lang, "editor")}


async def get_texts(request):
    """The editor's texts in one language (English where it lacks one)."""
    lang = texts.lang_of(request.query.get("lang"))
    return web.json_response({"lang": lang, "texts": {**_editor_texts("en"), **_editor_texts(lang)}})


def install(server) -> None:
    if getattr(server, "_gpugeek_routes", False):
        return
    r = server.routes

    def post(path, handler):   # every route that is not a GET takes JSON only
        r.post(path)(_json_only(handler))
    r.get("/gpugeek/config")(get_config)
    post("/gpugeek/config", post_config)
    post("/gpugeek/test", post_test)
    r.get("/gpugeek/tasks")(get_tasks)
    post("/gpugeek/tasks/{pid}/cancel", post_cancel)
    post("/gpugeek/tasks/{pid}/refresh", post_refresh)
    post("/gpugeek/plan", post_plan)
    r.get("/gpugeek/texts")(get_texts)
    post("/gpugeek/lists", post_lists)
    post("/gpugeek/lists/add", post_lists_add)
    # models received from clients (offload/receive.py): 404 while receiving is off; each route checks its own body
    from ..offload import receive
    from .models import receiver
    for (method, path), handler in receive.handlers(receiver).items():
        getattr(r, method.lower())(path)(handler)
    server._gpugeek_routes = True
