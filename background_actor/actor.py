"""BackgroundActor: a Ray actor that serves the Background gRPC service on a fixed 127.0.0.1 port.

The server runs on its own thread and asyncio loop, started in `__init__`, so a restart by Ray
(`max_restarts`) brings the service back on the same address without anyone calling in: callers
keep their address, in-flight streams of the dead process fail (UNAVAILABLE → the caller's terminal
error), and new delegations reach the new process. `start_background(...)` → (handle, address).
MCP servers (`mcp=`) are connected on that same loop when the server starts (and again after a
restart); `secrets=` is the store the actor's tools read (see background_actor/service.py).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import ray

from background_actor.agent import AgentConfig
from background_actor.engine import Engine
from background_actor.service import BackgroundServer, ServerConfig, serve
from background_actor.tasks import TaskConfig
from interplay.log import configure_logging, get_logger
from interplay.priority import ASYNC_NICENESS, yield_cpu
from tools import Registry

log = get_logger("background_actor.actor")


class BackgroundActorImpl:
    """The actor body (also usable in-process without Ray)."""

    def __init__(self, config: ServerConfig, registry_factory: Callable[[], Registry] | None = None,
                 log_level: str = "info", start_timeout_s: float = 120.0, log_dir: str | None = None,
                 engine_factory: Callable[[], Engine] | None = None) -> None:
        configure_logging(log_level, log_dir=log_dir, process="background")
        self.config = config
        self._registry_factory = registry_factory
        self._engine_factory = engine_factory
        self._server: BackgroundServer | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="background-grpc", daemon=True)
        self._thread.start()
        if not self._ready.wait(start_timeout_s):
            raise TimeoutError(f"the Background server did not start within {start_timeout_s} s")
        if self._error is not None:
            raise RuntimeError(f"the Background server failed to start: {self._error!r}") from self._error
        log.info("background_actor_started", address=self._server.address if self._server else "", pid=os.getpid())

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            engine = self._engine_factory() if self._engine_factory is not None else None
            self._server = self._loop.run_until_complete(
                serve(self.config, engine=engine, registry_factory=self._registry_factory))
        except BaseException as exc:  # reported to __init__, which raises it to the creator
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def _call(self, coro: Any, timeout_s: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def address(self) -> str:
        """The address interaction actors dial: this node's IP when the server binds every interface."""
        from interplay.raylocal import advertised

        return advertised(self._server.address) if self._server else ""

    def metrics_endpoint(self) -> str:
        """Where this actor's Prometheus /metrics is served ("host:port"; "" when off)."""
        return self._server.metrics_address if self._server else ""

    def pid(self) -> int:
        return os.getpid()

    def tool_names(self) -> list[str]:
        return self._server.registry.names() if self._server else []

    def stats(self) -> dict[str, int]:
        async def snap() -> dict[str, int]:
            return self._server.manager.stats() if self._server else {}

        return self._call(snap())

    def describe(self) -> dict[str, Any]:
        return {"address": self.address(), "pid": os.getpid(),
                **(self._server.engine.describe() if self._server else {})}

    def stop(self) -> None:
        if self._server is not None:
            self._call(self._server.stop())
            self._server = None
        self._loop.call_soon_threadsafe(self._loop.stop)


@ray.remote(max_restarts=10, max_task_retries=3)
class BackgroundActor(BackgroundActorImpl):
    """Ray actor with restarts enabled; its methods are cheap and idempotent (safe to retry).

    Its process is its own, so once the server is up every thread of it (and each thread they start
    later: the engine's, the tools') runs at `config.niceness`: reasoning never takes a core from a turn
    loop on the same host; it gets whatever CPU the loop leaves."""

    def __init__(self, config: ServerConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        yield_cpu(config.niceness)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_background(engine: str = "local", *, engine_options: dict[str, Any] | None = None,
                     tools: tuple[str, ...] = ("calculator", "clock"), port: int | None = None,
                     max_concurrent: int = 4, max_queued: int = 16, agent: AgentConfig | None = None,
                     registry_factory: Callable[[], Registry] | None = None, name: str | None = None,
                     num_cpus: float = 0, max_restarts: int = 10, log_level: str = "info",
                     timeout_s: float = 120.0, resources: dict[str, float] | None = None,
                     host: str = "127.0.0.1", log_dir: str | None = None, mcp: tuple[str, ...] = (),
                     secrets: dict[str, str] | None = None, engine_factory: Callable[[], Engine] | None = None,
                     metrics_port: int | None = None, trace_file: str | None = None,
                     otlp_endpoint: str | None = None, niceness: int | None = ASYNC_NICENESS) -> tuple[ray.actor.ActorHandle, str]:
    """Create a BackgroundActor (Ray must be initialised) and wait for its address "127.0.0.1:port".

    The port is fixed at creation (a free one when None) so the address survives restarts.
    `registry_factory` (a picklable callable) replaces the built-in tools when given; `resources`
    places the actor on a node that offers them (as interaction_actor.runtime.actor.spawn does).
    `mcp`: MCP servers ("command arg arg" or a URL) whose tools join the actor's registry; `secrets`:
    {name: value} for tools that declare them; `engine_factory` (picklable) replaces `engine` by name.
    `metrics_port`: serve the actor's Prometheus /metrics there (0: a free port; see `metrics_endpoint`);
    `trace_file`: record the actor's spans there (JSON lines, interplay.tracing); `otlp_endpoint`: send
    them to that OTLP/gRPC collector too. `niceness`: the actor's process runs at it (None: as Ray started it).
    """
    cfg = ServerConfig(host=host, port=port or free_port(host), engine=engine, engine_options=dict(engine_options or {}),
                       tools=tuple(tools), tasks=TaskConfig(max_concurrent=max_concurrent, max_queued=max_queued),
                       mcp=tuple(mcp), secrets=dict(secrets or {}), metrics_port=metrics_port,
                       trace_file=trace_file, otlp_endpoint=otlp_endpoint, niceness=niceness)
    if agent is not None:
        cfg = replace(cfg, agent=agent)
    opts: dict[str, Any] = {"num_cpus": num_cpus, "max_restarts": max_restarts}
    if name:
        opts["name"] = name
    if resources:
        opts["resources"] = dict(resources)
    handle = BackgroundActor.options(**opts).remote(cfg, registry_factory, log_level, log_dir=log_dir,
                                                    engine_factory=engine_factory)
    address = ray.get(handle.address.remote(), timeout=timeout_s)
    return handle, address
