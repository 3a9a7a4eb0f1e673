"""Another host on 127.0.0.1: records every request it receives (method, path, headers) and answers each
with one fixed response. Stands for a result host, an attacker's redirect target, a wrong base URL that
serves an nginx page, or a proxy: a request for another host arrives here in absolute form (its Host header names
that host), and a tunnel (CONNECT, for https) is recorded and refused with 502, as a proxy that cannot reach it."""
from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from fake_gpugeek import close_server_loop


class OtherHost:
    def __init__(self, status: int = 200, html: bool = False):
        self.status, self.html = status, html
        self.seen: list = []
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)

    @web.middleware
    async def _any(self, request, handler):   # before routing: a CONNECT has no path to route
        self.seen.append((request.method, request.path_qs, dict(request.headers)))
        if request.method == "CONNECT":
            return web.Response(status=502)
        if self.html:
            return web.Response(status=self.status, text="<html><h1>404 Not Found</h1>nginx</html>",
                                content_type="text/html")
        return web.json_response({"code": 0, "data": {}}, status=self.status)

    def _serve(self, ready):
        self.loop = asyncio.new_event_loop()
        app = web.Application(middlewares=[self._any])
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        ready.set()
        self.loop.run_forever()
        close_server_loop(self.loop, runner)

    def stop(self):
        if self.loop.is_closed():   # stopped already
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
