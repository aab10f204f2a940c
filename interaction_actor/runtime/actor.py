"""InteractionActor: a Ray async actor hosting the TurnLoop and the Session service on 127.0.0.1.

`start()` builds the interaction backend (the native model by default; any InteractionBackend by
`backend="module:attr"`), starts the loop and the gRPC server and returns the Session address
("127.0.0.1:port"); `metrics()` returns the loop's counters; `stop()` shuts everything down.
`spawn(...)` creates the actor and waits for its address. The loop and server run on the actor's
own asyncio loop; the model step runs in the loop's worker thread.
"""

from __future__ import annotations

from dataclasses import asdict

import ray

from interaction_actor.runtime.inputs import InputLimits
from interaction_actor.runtime.loop import LoopConfig, TurnLoop
from interaction_actor.runtime.metrics import serve_metrics
from interplay.log import configure_logging, get_logger

log = get_logger("interaction_actor.runtime.actor")


class InteractionActorImpl:
    """The actor body (also usable without Ray, in-process)."""

    def __init__(self, preset: str = "small", checkpoint: str | None = None, seed: int = 0,
                 host: str = "127.0.0.1", port: int = 0, metrics_port: int | None = None,
                 log_level: str = "info", backend: str = "native", backend_options: dict | None = None,
                 **loop_options: object) -> None:
        self.preset, self.checkpoint, self.seed = preset, checkpoint, seed
        self.backend_spec, self.backend_options = backend, dict(backend_options or {})
        self.host, self.port, self.metrics_port, self.log_level = host, port, metrics_port, log_level
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

        configure_logging(self.log_level)
        options = self.backend_options
        if self.backend_spec == "native":
            options = {"preset": self.preset, "checkpoint": self.checkpoint, "seed": self.seed, **options}
        backend = load_backend(self.backend_spec, **options)
        self.loop = TurnLoop(backend, self.config)
        self.loop.start()
        self.server, self.address = await serve(self.loop, self.host, self.port)
        if self.metrics_port is not None:
            self.http = await serve_metrics(self.loop.metrics, self.host, self.metrics_port)
            host, port = self.http.sockets[0].getsockname()[:2]
            self.metrics_address = f"{host}:{port}"
        log.info("interaction_actor_started", address=self.address, backend=backend.capabilities.name,
                 preset=self.preset,
                 metrics=self.metrics_address, config=str(asdict(self.config)))
        return self.address

    def metrics_endpoint(self) -> str:
        return self.metrics_address

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
