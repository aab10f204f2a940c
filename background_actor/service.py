"""The Background gRPC service (grpc.aio) on 127.0.0.1, plus the standard health service.

`Delegate` streams a task's updates and ends after its one terminal update; a caller that goes away
(deadline, cancel) cancels its task. The caller's W3C `traceparent` metadata, when sent, is the
parent of the task's span (interplay.tracing). `Steer` / `Cancel` address a live task by id. `serve(...)`
builds engine + registry + agent + task manager and starts the server; `BackgroundServer.stop()`
cancels every live task (each still gets its terminal update) and shuts the server down.

Tools: `ServerConfig.mcp` lists MCP servers ("command arg arg" for stdio, or an http(s) URL) that
`serve` connects on its own event loop before it serves; their tools join the registry and their
connections close at `stop()`. `ServerConfig.metrics_port` serves the server's tool and LLM metrics
(background_actor/metrics.py) at http://host:port/metrics; `ServerConfig.trace_file` records this
process's spans (interplay.tracing). `ServerConfig.secrets` ({name: value}) is the store tools read with
`context.secret(name)`; its values are redacted from this process's logs and from every update.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from background_actor.agent import AgentConfig, AgentLoop
from background_actor.engine import Engine
from background_actor.engines import make_engine
from background_actor.metrics import BackgroundMetrics
from background_actor.tasks import TaskConfig, TaskManager
from delegation.scheduler import TERMINAL
from interplay import tracing
from interplay.log import get_logger
from interplay.priority import ASYNC_NICENESS
from interplay.secrets import SecretStore, register, unregister
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import background_pb2_grpc as bgrpc
from interplay.v1 import context_pb2 as xpb
from tools import Registry
from tools.isolation import PoolConfig, configure_default_pool, default_pool

log = get_logger("background_actor.service")

SERVICE_NAME = "interplay.v1.Background"


class BackgroundServicer(bgrpc.BackgroundServicer):
    def __init__(self, manager: TaskManager) -> None:
        self.manager = manager

    async def Delegate(self, request: xpb.ContextPackage, context: grpc.aio.ServicerContext
                       ) -> AsyncIterator[bpb.Update]:
        t = self.manager.submit(request, parent=tracing.incoming_context(context.invocation_metadata()))
        log.info("delegate", task_id=t.task_id, state=t.state, session_id=request.session_id)
        terminal = False
        try:
            while not terminal:
                upd = await t.updates.get()
                terminal = upd.kind in TERMINAL
                yield upd
        finally:
            if not terminal:  # the caller left (deadline, cancel, disconnect): stop its work
                self.manager.cancel(t.task_id, "the caller went away")
                log.info("delegate_caller_gone", task_id=t.task_id)

    async def Steer(self, request: bpb.SteerRequest, context: grpc.aio.ServicerContext) -> bpb.SteerResponse:
        ok, reason = self.manager.steer(request.task_id, request.text)
        log.info("steer", task_id=request.task_id, accepted=ok, reason=reason)
        return bpb.SteerResponse(accepted=ok, reason=reason)

    async def Cancel(self, request: bpb.CancelRequest, context: grpc.aio.ServicerContext) -> bpb.CancelResponse:
        ok, reason = self.manager.cancel(request.task_id, request.reason)
        log.info("cancel", task_id=request.task_id, cancelled=ok, reason=reason)
        return bpb.CancelResponse(cancelled=ok, reason=reason)


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0                                  # 0: any free port
    engine: str = "local"
    engine_options: dict[str, Any] = field(default_factory=dict)
    tools: tuple[str, ...] = ("calculator", "clock")  # built-in tools served (see tools.builtin)
    agent: AgentConfig = field(default_factory=AgentConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    grace_s: float = 1.0
    mcp: tuple[str, ...] = ()                      # MCP servers: "command arg arg" (stdio) or an http(s) URL
    mcp_connect_timeout_s: float = 30.0
    secrets: dict[str, str] = field(default_factory=dict, repr=False)  # {name: value} for tools; never printed
    tool_workers: int = 32                         # the process's tool worker threads (tools/isolation.py)
    metrics_port: int | None = None                # Prometheus /metrics on host:port (0: a free one; None: off)
    trace_file: str | None = None                  # record this process's spans there (interplay.tracing)
    otlp_endpoint: str | None = None               # and/or send them to this OTLP/gRPC collector
    niceness: int | None = ASYNC_NICENESS          # a BackgroundActor's process runs at this niceness (None: as started)


@dataclass
class BackgroundServer:
    server: grpc.aio.Server
    address: str
    manager: TaskManager
    engine: Engine
    registry: Registry
    health: Any
    secrets: SecretStore = field(default_factory=SecretStore)
    metrics: BackgroundMetrics = field(default_factory=BackgroundMetrics)

    @property
    def metrics_address(self) -> str:
        """Where this server's /metrics is served ("host:port"; "" when off)."""
        return self.metrics.address

    async def stop(self) -> None:
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.manager.shutdown()
        await self.server.stop(grace=1.0)
        await self.engine.aclose()
        await self.registry.aclose()  # MCP connections (and their processes) close here
        unregister(self.secrets)
        self.metrics.close()
        tracing.flush()


async def serve(config: ServerConfig | None = None, *, engine: Engine | None = None,
                registry: Registry | None = None,
                registry_factory: Callable[[], Registry] | None = None) -> BackgroundServer:
    """Start the Background + health services; returns once the engine is loaded and the port bound."""
    cfg = config or ServerConfig()
    if cfg.trace_file or cfg.otlp_endpoint:
        tracing.configure(cfg.trace_file, "interplay-background", otlp_endpoint=cfg.otlp_endpoint)
    secrets = SecretStore(cfg.secrets)
    register(secrets)  # from here on, this process's logs never show a value
    if default_pool().config.max_workers != cfg.tool_workers:
        configure_default_pool(PoolConfig(max_workers=cfg.tool_workers))
    if registry is None:
        if registry_factory is not None:
            registry = registry_factory()
        else:
            from tools.builtin import default_registry

            registry = default_registry(include=cfg.tools)
    if cfg.mcp:
        await connect_mcp(registry, cfg.mcp, cfg.mcp_connect_timeout_s)
    engine = engine or make_engine(cfg.engine, **cfg.engine_options)
    await engine.start()
    metrics = BackgroundMetrics()
    manager = TaskManager(AgentLoop(engine, registry, cfg.agent, secrets=secrets, metrics=metrics), cfg.tasks,
                          secrets=secrets)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    bgrpc.add_BackgroundServicer_to_server(BackgroundServicer(manager), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(f"{cfg.host}:{cfg.port}")
    if port == 0:
        raise OSError(f"could not bind {cfg.host}:{cfg.port}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    address = f"{cfg.host}:{port}"
    if cfg.metrics_port is not None:
        metrics.serve(cfg.host, cfg.metrics_port)
    log.info("background_serving", address=address, engine=engine.describe(), tools=registry.names(),
             metrics=metrics.address,
             max_concurrent=cfg.tasks.max_concurrent, max_queued=cfg.tasks.max_queued)
    return BackgroundServer(server, address, manager, engine, registry, health_servicer, secrets, metrics)


async def connect_mcp(registry: Registry, servers: tuple[str, ...], connect_timeout_s: float = 30.0) -> None:
    """Connect each MCP server on the running loop and add its tools to `registry` (which then owns the
    connections: `registry.aclose()` ends them). On any failure the connections made so far are closed
    and the error (tools.mcp.MCPConnectionError, or DuplicateToolError on a name clash) is raised."""
    from tools.mcp import load_mcp_tools, stdio

    for entry in servers:
        target: Any = entry if entry.startswith(("http://", "https://")) else stdio(*shlex.split(entry))
        try:
            loaded = await load_mcp_tools(target, connect_timeout_s=connect_timeout_s)
        except BaseException:
            await registry.aclose()
            raise
        try:
            registry.include(loaded)
        except BaseException:
            await loaded.aclose()
            await registry.aclose()
            raise
        log.info("mcp_server_added", server=entry.split()[0] if entry else entry, tools=loaded.names())


async def wait_serving(address: str, timeout_s: float = 30.0) -> bool:
    """Poll the health service until it answers SERVING (True) or `timeout_s` passes (False)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    async with grpc.aio.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while loop.time() < end:
            try:
                r = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1.0)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    return False
