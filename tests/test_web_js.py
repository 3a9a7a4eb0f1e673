"""The editor extension's JavaScript tests (node's own test runner), run from the Python suite so that one
command runs everything. The editor has no planner of its own (the marking is the server's plan), so
there is nothing to keep in step with the Python plan here."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_javascript_suite():
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is required in CI for the editor tests")
        pytest.skip("node is not installed: the editor's JavaScript tests cannot run")
    res = subprocess.run([node, "--test", str(ROOT / "web" / "tests")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "# fail 0" in res.stdout and "# pass " in res.stdout

