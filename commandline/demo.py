"""``python cli.py demo``: the whole offload path with no account, against a local stand-in of GPUGeek.

It starts the test suite's fake GPUGeek server (tests/fake_gpugeek.py, faithful to the platform's API) on
127.0.0.1, then runs the bundled example workflow through the real client exactly as ``run`` does:
upload, submit once, poll, download, save. Nothing leaves this machine.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_KEY = "sk-demo-local-only"


def run_demo(out: str, run) -> int:
    """``run``: the command line's own entry (commandline/main.py ``main``), given by it: this module stands
    below it and never imports it."""
    spec = importlib.util.spec_from_file_location("gpugeek_demo_fake", ROOT / "tests" / "fake_gpugeek.py")
    fake_mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = fake_mod
    spec.loader.exec_module(fake_mod)
    fake = fake_mod.FakeGPUGeek(api_key=DEMO_KEY, queue_s=0.5, run_s=1.0)
    fake.task_opts["size"] = 512
    fake.start()
    try:
        os.environ["GPUGEEK_API_KEY"] = DEMO_KEY
        os.environ["GPUGEEK_BASE_URL"] = fake.base_url
        os.environ.setdefault("GPUGEEK_HOME", str(Path(out).resolve() / ".gpugeek-home"))
        print(f"demo: a local stand-in of GPUGeek runs on {fake.base_url}", file=sys.stderr)
        return run(["run", str(ROOT / "example_workflows" / "api" / "cloud_text_to_image_api.json"),
                     "--workflow-id", "123456789012345", "--out", out])
    finally:
        fake.stop()
