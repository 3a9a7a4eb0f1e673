"""Every benchmark, each printing ours against a baseline measured in the same process.
Run: python bench/run.py   (each script also runs alone: python bench/<name>.py)"""
from __future__ import annotations

import os
import platform
import sys

sys.path.insert(0, os.path.dirname(__file__))

import cloud_lists  # noqa: E402
import codec  # noqa: E402
import fanout  # noqa: E402
import media  # noqa: E402
import overhead  # noqa: E402
import plan  # noqa: E402
import poll  # noqa: E402
import upload  # noqa: E402
import whole  # noqa: E402

if __name__ == "__main__":
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}")
    codec.main()
    codec.decoders(1024, 1024, 8)
    codec.decoders(832, 480, 16)
    codec.batch_parallel()
    codec.batch_parallel(832, 480, 81, 3)
    codec.fresh_batch()
    upload.main()
    plan.main()
    cloud_lists.main()
    cloud_lists.big()
    poll.main()
    overhead.main()
    overhead.comfyui_target()
    fanout.gpugeek(2.0, 512, 1)
    fanout.gpugeek(2.0, 1024, 1)
    fanout.gpugeek(2.0, 1024, 4, 3)
    fanout.frames(2.0, repeats=10)
    fanout.frames(2.0, net=overhead.HOME_LINK, repeats=10)
    fanout.frames(2.0, transfer="compact", repeats=10)
    fanout.frames(2.0, net=overhead.HOME_LINK, transfer="compact", repeats=10)
    media.main()
    overhead.main(net=overhead.HOME_LINK)
    overhead.uploads()
    overhead.uploads(net=overhead.HOME_LINK)
    fanout.pool(2.0)
    whole.main()
