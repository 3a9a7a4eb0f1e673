"""End to end: ComfyUI's own templates (issue 31), each loaded in the real editor (the release's bundled one and the
newest) with its input files in input/ and no model on this machine, queued with Run in the cloud on (the
default here), against the GPUGeek-compatible fake whose tasks run on a second real ComfyUI holding an empty file
of every model the templates name (validation is what is measured; sampling on empty models fails at once,
which still counts as run in the cloud: that ComfyUI took the prompt).

Prints ``templates on ComfyUI V (editor): N eligible, S run in the cloud, R refused (reasons ...)`` and holds the
pack to its share: at least 95% of the eligible templates run in the cloud, and every refusal left names a node.
No template goes as a fragment (issue 38): each cloud prompt the fake received holds every node ComfyUI would run
for the prompt the editor queued (templates_corpus.comfy_outputs and fragment: ComfyUI 0.33.0's rules), and every
task the fake received is such a whole prompt of one template.
Skipped unless COMFYUI_DIR is set and the templates package is installed (requirements-test.txt pins it).
GPUGEEK_TEMPLATES (names, comma-separated) runs only those templates (while developing a fix for them)."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

import templates_corpus as corpus
from real_comfyui import stop, unwatch, watch, COMFY, PY, ROOT, comfyui_command, start_comfyui  # noqa: F401
from test_e2e_comfyui import KEY, WF, free_port, launch, wait_http

TEMPLATES = corpus.templates_dir()
FRONTEND_NEW = os.environ.get("COMFYUI_FRONTEND_NEW")
pytestmark = [pytest.mark.skipif(not COMFY, reason="COMFYUI_DIR is not set"),
              pytest.mark.skipif(TEMPLATES is None, reason="comfyui-workflow-templates-json is not installed")]
SHARE = 0.95                 # of the eligible templates, run in the cloud
# How long one template may take here from queueing to its end (its cloud task included) before it is stopped:
# every model is an empty file in the cloud, so a template's task ends within seconds; one that does real work
# on the CPU (no model at all) is stopped here, having been taken by the cloud.
TEMPLATE_BUDGET_S = 45
# Only these templates (comma-separated names), e.g. the ones a fix is about; unset: every eligible one.
ONLY = {n.strip() for n in os.environ.get("GPUGEEK_TEMPLATES", "").split(",") if n.strip()}
REPORT = Path(os.environ.get("GPUGEEK_TEMPLATES_REPORT", "")) if os.environ.get("GPUGEEK_TEMPLATES_REPORT") else None


@pytest.fixture(scope="module")
def corpus_stack(tmp_path_factory):
    """The cloud ComfyUI (no custom nodes, an empty file of every model the templates name), the fake in front of
    it, and this machine's ComfyUI with the pack and Run in the cloud on by default, for each editor."""
    tmp = tmp_path_factory.mktemp("templates")
    templates = corpus.all_templates(TEMPLATES)
    ports = {n: free_port() for n in ("cloud", "fake", "bundled", "new")}
    procs = []

    def start(name, args, env=None, cwd=None):
        p = subprocess.Popen(args, stdout=open(tmp / f"{name}.log", "w"), stderr=subprocess.STDOUT, cwd=cwd,
                                           env={**os.environ, **(env or {})})
        procs.append(p)
    models = set().union(*(corpus.model_files(wf) for wf, _ in templates.values()))
    corpus.stub_models(tmp / "comfyui-cloud" / "models", models)
    start("cloud", comfyui_command(tmp, "cloud", ports["cloud"], "--output-directory", str(tmp / "cloud-out"),
                                   pack=False), cwd=COMFY)
    start("fake", [PY, str(ROOT / "tests" / "fake_gpugeek.py"), "--port", str(ports["fake"]), "--key", KEY,
                   "--comfy", f"http://127.0.0.1:{ports['cloud']}"], cwd=str(ROOT / "tests"))
    env = {"GPUGEEK_API_KEY": KEY, "GPUGEEK_BASE_URL": f"http://127.0.0.1:{ports['fake']}",
           "GPUGEEK_WHOLE_WORKFLOW": "1", "GPUGEEK_WORKFLOW_ID": WF}
    editors = {"bundled": []}
    if FRONTEND_NEW and Path(FRONTEND_NEW, "index.html").exists():
        editors["new"] = ["--front-end-root", FRONTEND_NEW]
    urls = {}
    for name, extra in editors.items():
        (tmp / f"user-{name}").mkdir()
        start(name, comfyui_command(tmp, f"local-{name}", ports[name], "--output-directory", str(tmp / f"out-{name}"),
                                    "--user-directory", str(tmp / f"user-{name}"), *extra), env=env, cwd=COMFY)
        urls[name] = f"http://127.0.0.1:{ports[name]}"
    try:
        wait_http(f"http://127.0.0.1:{ports['cloud']}/object_info/SaveImage")
        for url in urls.values():
            wait_http(f"{url}/object_info/GPUGeekCloudExecute", timeout=180)
        info = requests.get(f"{urls['bundled']}/object_info", timeout=60).json()
        names = [n for n in corpus.eligible(templates, info) if not ONLY or n in ONLY]
        outputs = {c for c, v in info.items() if v.get("output_node")}
        files = {}
        for n in names:
            files.update(corpus.input_files(*templates[n]))
        for name in editors:
            corpus.make_inputs(tmp / f"comfyui-local-{name}" / "input", files, PY)
        watched = watch(f"http://127.0.0.1:{ports['fake']}", [tmp / f"user-{n}" for n in editors],
                        [tmp / f"out-{n}" for n in editors])
        yield {"tmp": tmp, "urls": urls, "templates": templates, "eligible": names, "output_classes": outputs,
               "fake": f"http://127.0.0.1:{ports['fake']}"}
    finally:
        if "watched" in locals():
            unwatch(watched)
        stop(procs)


# Loaded as the template browser loads one: a new workflow tab named after it.
QUEUE_JS = """async ([text, name]) => {
  await app.loadGraphData(JSON.parse(text), true, true, name);
  await new Promise((r) => setTimeout(r, 30));
  try { await app.queuePrompt(0, 1); return "queued"; } catch (e) { return "threw: " + e; }
}"""


def queue_one(page, stack, name, sent=None) -> tuple[str, str]:
    """Load ``name`` in the editor and queue it: ("queued", prompt id) or ("refused", why). ``sent``: gets the
    template's queued prompt (the /prompt body's prompt and partial_execution_targets, as the editor made them) and
    the nodes the answer refused (node_errors), under ``name``."""
    wf, _ = stack["templates"][name]
    with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST",
                              timeout=60000) as got:
        said = page.evaluate(QUEUE_JS, [json.dumps(wf), name])
    resp = got.value
    body = resp.json() if "json" in (resp.headers.get("content-type") or "") else {}
    if sent is not None:
        queued = json.loads(resp.request.post_data or "{}")
        sent[name] = {"prompt": queued.get("prompt") or {}, "targets": queued.get("partial_execution_targets"),
                      "refused": set((body.get("node_errors") or {})), "status": resp.status}
    if resp.status != 200:
        return "refused", _first_error(body) or f"HTTP {resp.status} ({said})"
    return "queued", body["prompt_id"]


def _first_error(body: dict) -> str:
    for nid, err in (body.get("node_errors") or {}).items():
        for e in err.get("errors") or []:
            return f"{err.get('class_type')}: {e.get('details') or e.get('message')}"
    e = body.get("error") or {}
    return f"{e.get('message', '')}: {e.get('details', '')}" if e else ""


def outcome_of(entry: dict) -> tuple[str, str]:
    """What a queued template's run here tells: the cloud's ComfyUI took its prompt (``run``: it succeeded, or
    failed while running on the empty model files), refused it (``cloud_refused``), or something else."""
    status = entry.get("status", {})
    if status.get("status_str") == "success":
        return "run", ""
    msgs = [m[1] for m in status.get("messages", []) if m[0] in ("execution_error", "execution_interrupted")]
    if not msgs:
        return "other", "no error recorded"
    m = msgs[0]
    text, kind = m.get("exception_message", "") or "", m.get("exception_type", "") or ""
    if "validation" in text.lower() or "not in list" in text.lower():
        return "cloud_refused", f"{m.get('node_type')}: {text[:300]}"
    if "TaskFailedError" in kind or "InterruptProcessingException" in kind or "interrupted" in str(m).lower():
        return "run", ""
    return "other", f"{m.get('node_type')}: {kind.rsplit('.', 1)[-1]}: {text[:300]}"


def wait_all(url: str, queued: dict) -> dict:
    """Each queued prompt's history entry; a prompt that runs past TEMPLATE_BUDGET_S is stopped."""
    done, running_since, current = {}, time.time(), None
    end = time.time() + TEMPLATE_BUDGET_S * (len(queued) + 2)
    while len(done) < len(queued) and time.time() < end:
        for pid in [p for p in queued if p not in done]:
            h = requests.get(f"{url}/history/{pid}", timeout=10).json()
            if pid in h and h[pid].get("status", {}).get("completed") is not None:
                done[pid] = h[pid]
        running = (requests.get(f"{url}/queue", timeout=10).json().get("queue_running") or [[None, None]])[0][1]
        if running != current:
            current, running_since = running, time.time()
        elif running is not None and time.time() - running_since > TEMPLATE_BUDGET_S:
            requests.post(f"{url}/interrupt", timeout=10)
            running_since = time.time()
        time.sleep(1.0)
    return done


def run_corpus(stack, editor: str, sent: dict | None = None) -> corpus.Tally:
    """Every eligible template loaded and queued in the editor, one after the other (they run here in turn
    meanwhile), then each one's end read from this ComfyUI's history. ``sent``: each one's queued prompt
    (queue_one)."""
    pw = pytest.importorskip("playwright.sync_api")
    tally = corpus.Tally()
    url = stack["urls"][editor]
    queued = {}
    with pw.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_function("window.app && window.app.graph && window.__gpugeekMarking", timeout=60000)
        time.sleep(2)
        page.keyboard.press("Escape")
        for name in stack["eligible"]:
            try:
                said, value = queue_one(page, stack, name, sent)
            except Exception as e:   # the editor itself cannot open it (1.58.1 on one template, without the
                said, value = "editor", f"{type(e).__name__}: {str(e)[:200]}"   # pack too): counted, never hidden
            if said == "queued":
                queued[value] = name
            else:
                tally.add(name, said, value)
        browser.close()
    ends = wait_all(url, queued)
    for pid, name in queued.items():
        tally.add(name, *(outcome_of(ends[pid]) if pid in ends else ("other", "no end")))
    return tally


@pytest.mark.timeout(3600)   # every template of the package, one after the other, the stack's start included
@pytest.mark.parametrize("editor", ["bundled", "new"])
def test_the_official_templates_run_whole_in_the_cloud(corpus_stack, editor):
    if editor not in corpus_stack["urls"]:
        pytest.skip("COMFYUI_FRONTEND_NEW does not name a frontend's static folder")
    version = Path(COMFY).name.replace("ComfyUI-", "")
    before = {t["prompt_id"] for t in fake_tasks(corpus_stack)}   # the other editor's run, on the same fake
    sent: dict = {}
    tally = run_corpus(corpus_stack, editor, sent)
    line = tally.line(version, editor)
    print("\n" + line)
    refused = {n: (tally.outcome[n], tally.reasons.get(n, "")) for n in tally.outcome if tally.outcome[n] != "run"}
    for n, (o, r) in sorted(refused.items()):
        print(f"  {n}: {o}: {r}")
    if REPORT is not None:
        with open(REPORT, "a") as f:
            f.write(json.dumps({"line": line, "refused": refused}) + "\n")
    tasks = [t for t in fake_tasks(corpus_stack) if t["prompt_id"] not in before]
    fragments = fragments_sent(sent, tasks, corpus_stack["output_classes"])
    print(f"  cloud tasks: {len(tasks)}, fragments: {len(fragments)}")
    for f in fragments:
        print(f"  fragment: {f}")
    assert not fragments, fragments
    run = sum(1 for o in tally.outcome.values() if o == "run")
    assert len(tally.outcome) == len(corpus_stack["eligible"]) > 0
    if version.startswith("0.33") and not ONLY:   # the share is of the whole corpus, not of a few chosen
        assert run >= SHARE * len(tally.outcome), line
    for n, (o, r) in refused.items():   # every refusal left names a node and says what to do
        assert o in ("refused", "cloud_refused", "editor") and r, (n, o, r)


def fake_tasks(stack) -> list:
    """Every task the fake received, with the cloud prompt it was sent (the fake's test-only /_fake/stats)."""
    return requests.get(f"{stack['fake']}/_fake/stats", timeout=60).json()["tasks"]


def _nodes_of(cloud_prompt: dict) -> dict:
    """A cloud prompt's nodes that stand for the workflow's own (the pack's savers and loaders, ``gpugeek_...``, not)."""
    return {n: v.get("class_type") for n, v in cloud_prompt.items() if not str(n).startswith("gpugeek_")}


def fragments_sent(sent: dict, tasks: list, output_classes: set) -> list:
    """What was sent that is not a whole workflow: a template queued here whose task does not hold every node ComfyUI
    would run for its queued outputs (an output the answer refused on its own node may be missing, nothing it reads),
    and any task that is no template's whole prompt."""
    whole_for: dict = {}   # task index -> templates it is whole for
    problems = []
    for name, q in sorted(sent.items()):
        prompt = q["prompt"]
        outputs = corpus.comfy_outputs(prompt, output_classes.__contains__, q["targets"])
        left_out = q["refused"] & outputs
        mine = [i for i, t in enumerate(tasks)
                if all(prompt.get(n, {}).get("class_type") == c for n, c in _nodes_of(t["prompt"]).items())]
        whole = [i for i in mine if not corpus.fragment(prompt, t_ids(tasks[i]), outputs, left_out)]
        for i in whole:
            whole_for.setdefault(i, []).append(name)
        if q["status"] == 200 and outputs - q["refused"] and not whole:
            best = min((corpus.fragment(prompt, t_ids(tasks[i]), outputs, left_out) for i in mine),
                       key=lambda f: sum(map(len, f.values())), default=None)
            problems.append(f"{name}: no task holds what ComfyUI would run ({len(corpus.upstream(prompt, outputs))} "
                            f"nodes); missing {best}" if best is not None else f"{name}: queued, no task received")
    for i, t in enumerate(tasks):
        if i not in whole_for:
            problems.append(f"task {t['prompt_id']}: {len(_nodes_of(t['prompt']))} nodes, whole for no template queued")
    return problems


def t_ids(task: dict) -> set:
    return set(_nodes_of(task["prompt"]))
