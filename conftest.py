"""pytest only. The pack's root is a ComfyUI package (its ``__init__.py`` imports relatively and ComfyUI
loads it under the folder's name), not a test package: pytest is told to collect it as a plain folder, so
the suite runs from a clone of any name (``comfyui-gpugeek`` included) and from inside ``custom_nodes/``.
The tests load the pack themselves, as ComfyUI does (tests/conftest.py)."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


class _RootIsAFolder:
    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path, parent):
        if Path(path).resolve() == ROOT:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config):
    config.pluginmanager.register(_RootIsAFolder(), "gpugeek-root-is-a-folder")


def pytest_sessionfinish(session, exitstatus):
    """What the tests left for the garbage collector (event loops, sessions, sockets with finalizers) is collected
    here, not in the middle of compiling a module pytest imports late (the hypothesis plugin's report): CPython
    3.11 fails such a compile with "SystemError: AST constructor recursion depth mismatch" when a finalizer runs
    inside it."""
    import gc
    gc.collect()
