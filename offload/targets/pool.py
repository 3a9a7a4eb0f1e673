"""Several places a cloud part can run, used as one: a pool of ComfyUI servers (``target`` = URLs separated by
commas), or a single target. Each task of a prompt goes to the least busy server, read from its queue just
before the submit; a server that does not answer then is skipped for that task (never after a body was
sent). Result files are fetched from the server that made them."""
from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack, asynccontextmanager

from .. import errors
from ..redact import get_logger

log = get_logger("gpugeek.pool")
# How long a server may take to show its queue before a submit; a slower one is skipped for that task.
QUEUE_READ_TIMEOUT_S = 3.0


def split_targets(where: str | None) -> list:
    """``"http://a:8188, http://b:8188"`` -> the URLs; a single target (GPUGeek, one server) -> [it]."""
    parts = [p.strip().rstrip("/") for p in str(where or "").split(",") if p.strip()]
    return parts or [str(where or "")]


class Pool:
    def __init__(self, targets: list):
        if not targets:
            raise errors.ConfigError("No target to run on")
        self.targets = list(targets)
        self.lock = asyncio.Lock()          # one choice and submit at a time: each sees the last one's queue
        self.sent = {id(t): 0 for t in self.targets}

    @property
    def name(self) -> str:
        return self.targets[0].name if len(self.targets) == 1 else "pool"

    async def choose(self):
        """The least busy target now (its queue, running and pending); ties go to the one sent fewer tasks."""
        if len(self.targets) == 1:
            return self.targets[0]
        loads = await asyncio.gather(*(self._load(t) for t in self.targets))
        ready = [(load, self.sent[id(t)], i) for i, (t, load) in enumerate(zip(self.targets, loads)) if load is not None]
        if not ready:
            raise errors.BusyError(key="err_pool_silent", values={"count": len(self.targets)})
        target = self.targets[min(ready)[2]]
        self.sent[id(target)] += 1
        return target

    async def _load(self, target) -> int | None:
        read = getattr(target, "queue_load", None)
        if read is None:
            return 0
        try:
            return await asyncio.wait_for(read(), QUEUE_READ_TIMEOUT_S)
        except (errors.GPUGeekError, asyncio.TimeoutError, OSError) as e:
            log.warning("%s did not show its queue (%s): skipped for this task", getattr(target, "url", "?"),
                        type(e).__name__)
            return None

    async def fetch(self, url: str, max_bytes: int | None = None, budget=None) -> bytes:
        """A result file, from the target whose address it is (the first target where none matches), charged to
        the task's one ``budget`` whichever server it comes from."""
        for t in self.targets:
            base = getattr(t, "url", None)
            if base and url.startswith(base + "/"):
                return await t.fetch(url, max_bytes, budget=budget)
        return await self.targets[0].fetch(url, max_bytes, budget=budget)


@asynccontextmanager
async def open_pool(cfg, where: str, open_one):
    """Every target named in ``where`` opened with ``open_one(cfg, url)`` (an async context manager)."""
    async with AsyncExitStack() as stack:
        targets = [await stack.enter_async_context(open_one(cfg, url)) for url in split_targets(where)]
        yield Pool(targets)
