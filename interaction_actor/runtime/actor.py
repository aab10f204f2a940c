"""InteractionActor: a Ray async actor hosting the TurnLoop and the Session service.

`start()` builds the interaction backend (the native model by default; any InteractionBackend by
`backend="module:attr"`), starts the loop and the gRPC server and returns the Session address
others should dial: the server binds `host` (127.0.0.1 by default; 0.0.0.0 for a multi-node
cluster) and publishes `advertise_host` when given, else this node's IP when it binds every
interface (interplay.raylocal.advertised); `load()` is the loop's admission figure (what a session
router places by); `metrics()` returns the loop's counters; `stop()` shuts everything down.
`metrics_port` (0: a free one) serves the loop's Prometheus metrics at http://host:port/metrics
(`metrics_endpoint()` says where); `trace_file` makes this process record OpenTelemetry spans there
and `otlp_endpoint` sends them to that OTLP/gRPC collector (interplay.tracing).
`spawn(...)` creates the actor and waits for its address. The loop and server run on the actor's
own asyncio loop; the model step runs in the loop's worker thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import ray

from interaction_actor.runtime.inputs import InputLimits
from interaction_actor.runtime.loop import LoopConfig, TurnLoop
from interaction_actor.runtime.metrics import serve_metrics
from interplay import tracing
from interplay.log import configure_logging, get_logger
from interplay.raylocal import advertised

log = get_logger("interaction_actor.runtime.actor")


class InteractionActorImpl:
    """The actor body (also usable without Ray, in-process)."""

    def __init__(self, preset: str = "small", checkpoint: str | None = None, seed: int = 0,
                 host: str = "127.0.0.1", port: int = 0, metrics_port: int | None = None,
                 log_level: str = "info", backend: str = "native", backend_options: dict | None = None,
                 log_dir: str | None = None, ears: object | None = None, trace_file: str | None = None,
                 otlp_endpoint: str | None = None, advertise_host: str | None = None,
                 **loop_options: object) -> None:
        """`ears`: an interaction_actor.ears.worker.EarsConfig to transcribe what users say (an EarsActor
        of its own when Ray is running, else threads in this process); None: no transcripts."""
        self.preset, self.checkpoint, self.seed = preset, checkpoint, seed
        self.log_dir, self.trace_file, self.otlp_endpoint = log_dir, trace_file, otlp_endpoint
        self.ears_config, self.ears_handle, self.ears = ears, None, None
        self.backend_spec, self.backend_options = backend, dict(backend_options or {})
        self.host, self.port, self.metrics_port, self.log_level = host, port, metrics_port, log_level
        self.advertise_host = advertise_host
        limits = loop_options.pop("limits", None)
        self.config = LoopConfig(**loop_options, limits=InputLimits(**limits) if isinstance(limits, dict)
                                 else (limits or InputLimits()))
        self.loop: TurnLoop | None = None
        self.server = None
        self.http = None
        self.address = ""
        self.metrics_address = ""

    async def start(self) -> str:
        if self.loop is not None:
            return self.address
        from interaction_actor.runtime.backend import load_backend
        from interaction_actor.runtime.service import serve

        configure_logging(self.log_level, log_dir=self.log_dir, process="interaction")
        if self.trace_file or self.otlp_endpoint:
            tracing.configure(self.trace_file, "interplay-interaction", otlp_endpoint=self.otlp_endpoint)
        options = self.backend_options
        if self.backend_spec == "native":
            options = {"preset": self.preset, "checkpoint": self.checkpoint, "seed": self.seed, **options}
        backend = load_backend(self.backend_spec, **options)
        if self.ears_config is not None:
            self.ears = await asyncio.to_thread(self._start_ears)
        self.loop = TurnLoop(backend, self.config, ears=self.ears)
        self.loop.start()
        self.server, bound = await serve(self.loop, self.host, self.port)
        self.address = advertised(bound, self.advertise_host)
        if self.metrics_port is not None:
            self.http = serve_metrics(self.loop.metrics, self.host, self.metrics_port)
            self.metrics_address = advertised(self.http.address, self.advertise_host)
        log.info("interaction_actor_started", address=self.address, backend=backend.capabilities.name,
                 preset=self.preset,
                 metrics=self.metrics_address, config=str(asdict(self.config)))
        return self.address

    def metrics_endpoint(self) -> str:
        return self.metrics_address

    def load(self) -> dict:
        """The loop's admission figure (TurnLoop.load) with this actor's address; `draining` when it
        turns new sessions away. Cheap: a router asks before placing each session."""
        if self.loop is None:
            return {"address": self.address, "sessions": 0, "headroom_ms": float("-inf"), "draining": True}
        service = getattr(self.server, "interplay_parts", (None,))[0]
        return {**self.loop.load(), "address": self.address, "draining": bool(getattr(service, "draining", False))}

    def metrics(self, reset: bool = False) -> dict:
        snap = self.loop.metrics.snapshot() if self.loop else {}
        if reset and self.loop:
            self.loop.metrics.reset()
        return snap

    def start_delegation(self, session_id: str, task: str) -> str:
        """Delegate for a live session now (what a <delegate> token does); returns the task id."""
        return self.loop.start_delegation(session_id, task)

    def recent_packages(self) -> list[bytes]:
        """The newest context packages this actor delegated (serialized ContextPackage), oldest first."""
        return [p.SerializeToString() for p in self.loop.delegator.sent] if self.loop else []

    def sessions(self) -> list[str]:
        return list(self.loop.sessions) if self.loop else []

    async def drain(self, timeout_s: float = 10.0) -> dict:
        """Graceful shutdown, first half: new sessions are refused (UNAVAILABLE, health NOT_SERVING);
        running delegations get up to `timeout_s` to come back (their results reach the sessions as
        usual); then every session ends with SESSION_ENDED "the server is shutting down" (a delegation
        still out is cancelled, which settles it). Returns what happened; `stop()` follows."""
        import asyncio
        import time

        from interaction_actor.runtime.service import start_drain

        if self.loop is None or self.server is None:
            return {"sessions_ended": 0, "delegations_waited": 0, "delegations_cancelled": 0, "drain_ms": 0.0}
        t0 = time.monotonic()
        await start_drain(self.server)
        turn_s = self.loop.config.turn_ms / 1000

        def running() -> int:
            return sum(len(live.tasks) for live in self.loop.sessions.values())

        waited = running()
        while running() and time.monotonic() - t0 < timeout_s:
            await asyncio.sleep(turn_s)
        cancelled = running()
        ended = list(self.loop.sessions)
        for sid in ended:
            self.loop.stop_session(sid, "the server is shutting down")
        end = time.monotonic() + max(5 * turn_s, 1.0)
        while self.loop.sessions and time.monotonic() < end:  # each gets SESSION_ENDED at its next turn
            await asyncio.sleep(turn_s / 2)
        await asyncio.sleep(turn_s)  # let the streams flush their last chunk
        report = {"sessions_ended": len(ended), "delegations_waited": waited - cancelled,
                  "delegations_cancelled": cancelled, "drain_ms": round(1000 * (time.monotonic() - t0), 1)}
        log.info("drained", **report)
        return report

    def _start_ears(self):
        if ray.is_initialized():
            from interaction_actor.ears.actor import start_ears

            self.ears_handle, ears = start_ears(self.ears_config, log_level=self.log_level, log_dir=self.log_dir,
                                                trace_file=self.trace_file, otlp_endpoint=self.otlp_endpoint)
            return ears
        from interaction_actor.ears.worker import LocalEars

        return LocalEars(self.ears_config)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=0.5)
            self.server = None
        if self.http is not None:
            self.http.close()
            self.http = None
        if self.loop is not None:
            await self.loop.stop()
            self.loop = None
        if self.ears is not None:
            self.ears.stop()  # RayEars also ends its EarsActor
            self.ears, self.ears_handle = None, None
        if self.trace_file or self.otlp_endpoint:
            tracing.flush()


@ray.remote(max_concurrency=64)
class InteractionActor(InteractionActorImpl):
    """Ray async actor (all public methods are coroutines or cheap)."""


def spawn(name: str | None = None, num_cpus: float = 0, resources: dict[str, float] | None = None,
          **options: object) -> tuple[ray.actor.ActorHandle, str]:
    """Create an InteractionActor (on a node offering `resources`, when given) and wait for its address."""
    opts: dict[str, object] = {"num_cpus": num_cpus}
    if resources:
        opts["resources"] = resources
    if name:
        opts["name"] = name
    handle = InteractionActor.options(**opts).remote(**options)
    address = ray.get(handle.start.remote(), timeout=120)
    return handle, address


def spawn_many(count: int, num_cpus: float = 0, resources: dict[str, float] | None = None,
               strategy: str = "SPREAD", name_prefix: str | None = None,
               **options: object) -> list[tuple[ray.actor.ActorHandle, str]]:
    """`count` InteractionActors started at once (spread over the cluster's nodes by default), each on a
    free port publishing its node's address (named `name_prefix-i` when given); waits for all of them.
    For a session router's members."""
    opts: dict[str, object] = {"num_cpus": num_cpus, "scheduling_strategy": strategy}
    if resources:
        opts["resources"] = resources
    handles = [InteractionActor.options(**opts, **({"name": f"{name_prefix}-{i}"} if name_prefix else {}))
               .remote(**{**options, "port": 0}) for i in range(count)]
    addresses = ray.get([h.start.remote() for h in handles], timeout=180)
    return list(zip(handles, addresses, strict=True))
