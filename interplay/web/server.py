"""The page's web server: Starlette on uvicorn, serving the static page and its WebSocket bridge.

`app(cfg)` is the ASGI application: `/` the page (interplay/web/static/index.html), `/static/...`
its plain JS modules (no build step), `/ws` one Bridge session per connection (bridge.py),
`/healthz` a plain "ok". `WebServer(cfg, host, port)` runs it on its own thread with its own event
loop, so `serve` (a synchronous process) can hold it beside the actors: `start()` returns once the
socket listens and gives the URL; `stop()` closes every page's socket (and so its Converse stream)
and joins the thread. It binds `host` only (127.0.0.1 by default: a microphone needs a secure
context or localhost). It never touches the interaction loop: everything goes through gRPC.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from interplay.client import UserError
from interplay.log import get_logger
from interplay.web.bridge import Bridge, BridgeConfig

log = get_logger("interplay.web.server")

STATIC = Path(__file__).resolve().parent / "static"


def app(cfg: BridgeConfig, bridge: Bridge | None = None):
    """The ASGI app of one Session service address."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, PlainTextResponse
    from starlette.routing import Mount, Route, WebSocketRoute
    from starlette.staticfiles import StaticFiles

    bridge = bridge or Bridge(cfg)

    async def index(_request):
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def healthz(_request):
        return PlainTextResponse("ok")

    async def ws(websocket):
        await bridge.run(websocket)

    application = Starlette(routes=[Route("/", index), Route("/healthz", healthz), WebSocketRoute("/ws", ws),
                                    Mount("/static", StaticFiles(directory=STATIC), name="static")])
    application.state.bridge = bridge
    return application


class WebServer:
    """uvicorn serving `app(cfg)` on a thread of its own. `url` is set once `start()` returns."""

    def __init__(self, cfg: BridgeConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.cfg = cfg
        self.bridge = Bridge(cfg)
        self.host = host
        self._port = port
        self.url = ""
        # uvicorn's pings (20 s) find a vanished page that sent no close
        config = uvicorn.Config(app(cfg, self.bridge), host=host, port=port, log_level="warning", ws="websockets-sansio",
                                ws_max_size=cfg.max_message_bytes, lifespan="off", access_log=False,
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="interplay-web", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._server.serve())
        finally:  # finish what the bridges left suspended (their request generators) while the loop lives
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def start(self, timeout_s: float = 10.0) -> str:
        self._thread.start()
        until = time.monotonic() + timeout_s
        while not self._server.started and self._thread.is_alive() and time.monotonic() < until:
            time.sleep(0.02)
        if not self._server.started:
            raise UserError(f"the browser page could not listen on {self.host}:{self._port} (is the port in use? "
                            "choose another with --web-port, or -1 for no page)")
        sock = self._server.servers[0].sockets[0]
        port = sock.getsockname()[1]
        self.url = f"http://{self.host}:{port}/"
        log.info("web_started", url=self.url, session=self.cfg.session_address)
        return self.url

    def stop(self, timeout_s: float = 5.0) -> None:
        """Tell every page and end its Converse stream (even one whose bridge waits on a stalled stream),
        then stop uvicorn and join its thread."""
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.bridge.stopping.set)
            until = time.monotonic() + min(2.0, timeout_s)
            while self.bridge.open_streams and time.monotonic() < until:
                time.sleep(0.02)
        self._server.should_exit = True
        self._thread.join(timeout_s)
