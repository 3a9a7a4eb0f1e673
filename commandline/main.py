"""The command line, on the same core as the nodes: run a saved API-format workflow on GPUGeek, and read,
cancel and load tasks (from the journal that the nodes write too).

  python cli.py run workflow_api.json --workflow-id 123456789012345 --out results/
  python cli.py run workflow_api.json --target http://server:8188 --models-dir ~/ComfyUI/models
                                        # a model the server lacks goes up once (a server that receives models)
  python cli.py status [TASK_ID]        # default: the journal's latest task
  python cli.py cancel [TASK_ID]
  python cli.py results [TASK_ID] --out results/
  python cli.py tasks                   # the journal, newest first
  python cli.py demo --out results/     # the whole path against a local stand-in of GPUGeek (no account)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from ..offload import config, errors, plan, texts
from ..offload.journal import Journal, UploadCache
from ..offload.owner import Interrupted, owner
from ..offload.plan import kinds
from ..offload.receive import ShaCache
from ..offload.run import cancel_by_hand, fetch_results, run_plan, status_text, wait_task
from ..offload.run.models import folder_source
from ..offload.targets import open_target, target_of
from ..offload.transfer import input_path, local_file, safe_file_name, save_into
from ..offload.wire import SUCCEEDED, TaskDetail


class Line:
    """A one-line progress display that rewrites itself on a terminal and prints changes otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream, self.tty, self.last = stream, stream.isatty(), ""

    def show(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self.last:
            self.stream.write("\n")


def _bar(frac: float, width: int = 20) -> str:
    n = int(max(0.0, min(1.0, frac)) * width)
    return "[" + "#" * n + "-" * (width - n) + "]"


def whole_prompt_plan(prompt: dict, input_dir: Path) -> plan.GatewayPlan:
    """A saved workflow run whole in the cloud: the planner's whole-workflow pass (every node the outputs need is
    the cloud part; local input files go up)."""
    if any(isinstance(v, dict) and v.get("class_type") in (plan.GATEWAY, plan.UPLOAD) for v in prompt.values()):
        raise errors.PlanError("This workflow contains GPUGeek nodes: run it in ComfyUI, or export only the cloud part",
                          hint="")
    for n, v in sorted(prompt.items()):
        for _, _, name in kinds.file_places(v) if isinstance(v, dict) else ():
            if kinds.local_name(name) and input_path(input_dir, name) is None:
                raise errors.PlanError(f"{v['class_type']} #{n} names {name[:80]!r}, which is outside the input "
                                       f"folder {input_dir}", hint="Copy the file into the input folder (--input-dir) "
                                       "and name it relative to it, as ComfyUI does; nothing was uploaded.")

    def here(name: str) -> bool:
        path = input_path(input_dir, name)
        return path is not None and path.is_file()
    res = plan.make_plan(prompt, {}, here, lang=texts.default_lang(), whole=True)
    if res.refusals:
        raise errors.PlanError(" ".join(s for ss in res.refusals.values() for s in ss), hint="")
    return res.plans[plan.WHOLE]


def save_files(files: dict, out: Path, task_id: str) -> list[Path]:
    saved = []
    for node, items in sorted(files.items()):
        for i, (url, data) in enumerate(items):
            saved.append(save_into(out, f"{task_id}_{safe_file_name(url, f'{node}_{i}')}", data))
    return saved


async def cmd_run(args, cfg) -> int:
    prompt = json.loads(Path(args.workflow).read_text("utf-8"))
    if isinstance(prompt, dict) and "prompt" in prompt and isinstance(prompt["prompt"], dict):
        prompt = prompt["prompt"]
    if not isinstance(prompt, dict) or not prompt or "nodes" in prompt:
        raise errors.PlanError("The file is not an API-format workflow: in ComfyUI use Workflow > Export (API)", hint="")
    input_dir = Path(args.input_dir or Path(args.workflow).parent)
    whole = whole_prompt_plan(prompt, input_dir)
    where = target_of(cfg, args.target)
    wf = None if config.is_comfy_target(where) else cfg.resolve_workflow_id(args.workflow_id)
    models = (folder_source(args.models_dir, ShaCache(config.data_dir() / "model_sha.json"))
              if args.models_dir else None)
    line = Line()
    t0 = time.monotonic()
    stop = {"flag": False}
    try:  # Ctrl-C cancels the remote task instead of leaving it running (and billed)
        import signal
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, lambda: stop.update(flag=True))
    except (NotImplementedError, RuntimeError):
        pass

    def on_event(kind, detail: TaskDetail | None = None, expected=None, **info):
        if kind == "uploading":
            line.show("Uploading inputs…")
        elif kind in ("model_uploading", "model_fetching"):
            total, done = info.get("total"), info.get("done") or 0
            line.show(f"{'Sending' if kind == 'model_uploading' else 'The server fetches'} {info.get('name')}"
                      + (f" {_bar(done / total)} {done / 1e6:.0f}/{total / 1e6:.0f} MB" if total else ""))
        elif kind == "submitted":
            line.show(f"Submitted task {info['prompt_id']}")
        elif kind == "status" and detail is not None:
            frac = 0.0
            if expected and expected.get("run_ms") and detail.run_duration_ms:
                frac = detail.run_duration_ms / expected["run_ms"]
            line.show(f"{_bar(frac if detail.status == 2 else (1.0 if detail.final else 0.0))} "
                      f"{status_text(detail, expected)}  ({time.monotonic() - t0:.1f} s)")

    async def work(job):
        async with open_target(cfg, args.target) as target:
            return await run_plan(whole, job=job, target=target, journal=Journal(), uploads=UploadCache(), values={},
                                  workflow_id=wf, timeout_s=args.timeout,
                                  read_file=lambda name: local_file(input_path(input_dir, name)),
                                  daily_limit=cfg.daily_limit, label="gpugeek run", meta={"target_url": where},
                                  models=models)
    # the task lives on the owner: Ctrl-C stops it there, and the process waits for the cancel to finish
    job = owner().start(work, label="gpugeek run", on_event=on_event)
    try:
        outcome = await job.wait(lambda: stop["flag"])
    finally:
        line.done()
    out = Path(args.out)
    saved = save_files(outcome.files, out, outcome.prompt_id)
    Journal().update(outcome.journal_key, files=[str(p) for p in saved])
    price = outcome.detail.origin_price
    print(f"task {outcome.prompt_id}: {len(saved)} file(s) in {out}; ran {outcome.detail.run_duration_ms / 1000:.1f} s"
          + (f", price {price:g}" if price is not None else ""))
    for p in saved:
        print(f"  {p}")
    return 0


def _target_for(args, pid: str) -> str | None:
    """--target, else where the journal says the task ran."""
    if getattr(args, "target", ""):
        return args.target
    rec = Journal().by_prompt_id(pid) or {}
    return rec.get("target_url")


def _task_id(args) -> str:
    if args.task_id:
        return str(args.task_id).strip()
    rec = Journal().latest()
    if not rec:
        raise errors.NotFoundError("The journal has no task yet: give a task id", hint="")
    return rec["prompt_id"]


async def cmd_status(args, cfg) -> int:
    pid = _task_id(args)
    async with open_target(cfg, _target_for(args, pid)) as target:
        d = await target.status(pid)
    print(json.dumps({"task_id": d.prompt_id, "status": d.status_name, "position": d.current_position,
                      "queue_size": d.queue_size, "queue_ms": d.queue_duration_ms, "run_ms": d.run_duration_ms,
                      "price": d.origin_price, "error": d.error_msg, "results": d.result_url}, ensure_ascii=False,
                     indent=1))
    return 0


async def cmd_cancel(args, cfg) -> int:
    pid = _task_id(args)
    async with open_target(cfg, _target_for(args, pid)) as target:
        status = await cancel_by_hand(target, pid, Journal(), "cancelled from the command line")
    print(f"task {pid}: cancel requested ({status})")
    return 0


async def cmd_results(args, cfg) -> int:
    pid = _task_id(args)
    j = Journal()
    rec = j.by_prompt_id(pid)
    async with open_target(cfg, _target_for(args, pid)) as target:
        if rec and rec.get("status") == SUCCEEDED and rec.get("result_url"):
            from ..offload.wire import result_urls
            detail = TaskDetail(prompt_id=pid, status=SUCCEEDED, result_url=result_urls(rec["result_url"]))
        else:
            line = Line()
            detail = await wait_task(pid, target=target, journal=j, key=(rec or {}).get("key"),
                                     timeout_s=args.timeout, interrupted=lambda: False,
                                     on_event=lambda kind, detail=None, **k: detail and line.show(status_text(detail)),
                                     cancel_on_exit=False)
            line.done()
        files = await fetch_results(detail, target)
    saved = save_files(files, Path(args.out), pid)
    print(f"task {pid}: {len(saved)} file(s) in {args.out}")
    for p in saved:
        print(f"  {p}")
    return 0


async def cmd_tasks(args, cfg) -> int:
    for r in Journal().tasks(args.limit):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.get("created", 0)))
        price = r.get("price")
        print(f"{when}  {r.get('prompt_id') or '-':>18}  {r.get('status', '?'):10}  "
              f"{(r.get('run_ms') or 0) / 1000:7.1f} s  {'' if price is None else price}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="gpugeek", description="Run ComfyUI workflows on GPUGeek's cloud GPUs.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a saved API-format workflow on GPUGeek")
    r.add_argument("workflow")
    r.add_argument("--workflow-id", default="", help="GPUGeek workflow id (default: GPUGEEK_WORKFLOW_ID)")
    r.add_argument("--out", default="gpugeek-results")
    r.add_argument("--input-dir", default="", help="where LoadImage files are (default: the workflow's folder)")
    r.add_argument("--timeout", type=float, default=1800)
    r.add_argument("--target", default="", help="the URL of a ComfyUI server to run on instead of GPUGeek "
                                                "(default: GPUGEEK_TARGET)")
    r.add_argument("--models-dir", action="append", default=[], metavar="DIR",
                   help="a ComfyUI-style models folder (DIR/loras/..., DIR/checkpoints/...): a model the workflow names "
                        "that the server lacks goes up once (to a server that receives models); on GPUGeek, one its "
                        "list lacks is named before paying. Repeatable")
    for name in ("status", "cancel", "results"):
        s = sub.add_parser(name, help=f"{name} of a task (default: the journal's latest)")
        s.add_argument("task_id", nargs="?")
        s.add_argument("--target", default="")
        if name == "results":
            s.add_argument("--out", default="gpugeek-results")
            s.add_argument("--timeout", type=float, default=1800)
    t = sub.add_parser("tasks", help="the journal's tasks, newest first")
    t.add_argument("--limit", type=int, default=30)
    d = sub.add_parser("demo", help="the whole path against a local stand-in of GPUGeek (no account needed)")
    d.add_argument("--out", default="gpugeek-demo")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "demo":
            from .demo import run_demo
            return run_demo(args.out, main)
        cfg = config.load_config()
        fn = {"run": cmd_run, "status": cmd_status, "cancel": cmd_cancel, "results": cmd_results,
              "tasks": cmd_tasks}[args.cmd]
        try:
            return asyncio.run(fn(args, cfg))
        finally:  # a task being cancelled on the owner is seen to the end before the process exits
            if owner().active():
                print("waiting for the remote task to be cancelled…", file=sys.stderr)
                owner().drain()
    except errors.GPUGeekError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"stopped; task {e.task_id} was asked to cancel" if e.task_id else "stopped before submitting",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    except (OSError, ValueError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
