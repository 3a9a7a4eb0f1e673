#!/usr/bin/env python3
"""Command line of comfyui-gpugeek (run `python cli.py --help`). Works with or without ComfyUI installed."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from offload.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
