#!/usr/bin/env python3
"""Command line of comfyui-gpugeek (run `python cli.py --help`). Works with or without ComfyUI installed.

The pack's folder is loaded as a package (as ComfyUI loads it, but without the node layer), so the command
line and the core import each other exactly as they do inside ComfyUI."""
import importlib
import os
import sys
import types

ROOT = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "comfyui_gpugeek_cli"


def _load_main():
    pack = types.ModuleType(PACKAGE)
    pack.__path__ = [ROOT]
    sys.modules.setdefault(PACKAGE, pack)
    return importlib.import_module(f"{PACKAGE}.commandline.main").main


if __name__ == "__main__":
    sys.exit(_load_main()())
