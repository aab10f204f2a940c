"""The session router: one public Session.Converse endpoint in front of N interaction actors.

Given the interaction actors (Ray handles with their advertised addresses, or in-process members),
`RouterImpl.start()` serves the same Session service (plus gRPC health and reflection) on `host`
(127.0.0.1 by default; 0.0.0.0 for a multi-node cluster, then it advertises `advertise_host` or the
node's IP) and returns the address clients dial. Each client stream becomes a Relay (relay.py):
placed by measured load (placement.py), piped both ways, moved to another actor when its actor is
lost. The router holds no model and no session state beyond each relay's bounded copy of the
conversation; it must never buffer a session's audio without bound or hold a turn.

It runs as a Ray actor (`RouterActor`, `spawn_router`) with restarts: Ray brings a crashed router
back (clients reconnect; a fixed `port` keeps its address); `serve` starts it again. `drain()`
turns new sessions away (UNAVAILABLE) and drains every member that is a Ray actor; `stats()` says
where each live session runs and every move so far; `where(session_id)` names one session's actor.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import ray
from grpc_health.v1 import health, health_pb2

from interaction_actor.router.placement import Member, Placement, PlacementConfig, ray_member
from interaction_actor.router.relay import Relay, RelayConfig
from interaction_actor.runtime.service import SERVICE, start_session_server
from interplay.log import configure_logging, get_logger
from interplay.raylocal import advertised
from interplay.v1 import session_pb2 as spb

log = get_logger("interaction_actor.router.server")

CHANNEL_OPTIONS = [("grpc.keepalive_time_ms", 2_000), ("grpc.keepalive_timeout_ms", 2_000),
                   ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0),
                   ("grpc.max_receive_message_length", 32 << 20), ("grpc.max_send_message_length", 32 << 20),
                   ("grpc.enable_retries", 0)]


class RouterService:
    """The Session service of the router: each stream is one Relay."""

    def __init__(self, placement: Placement, config: RelayConfig) -> None:
        self.placement = placement
        self.config = config
        self.draining = False
        self.relays: dict[str, Relay] = {}
        self.moves: list[dict] = []  # every move of every session so far (newest last, bounded)
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        return self._channels[address]

    async def Converse(self, request_iterator, context: grpc.aio.ServicerContext):  # noqa: N802 - gRPC name
        try:
            first = await anext(request_iterator)
        except StopAsyncIteration:
            return
        if self.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "this router is shutting down; connect to another")
            return
        sid = _session_id(first)
        if sid and any(r.session_id == sid for r in self.relays.values()):  # no await since: atomic
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"session {sid!r} is already live")
            return
        relay = Relay(self.placement, self.channel, self.config)
        self.relays[id(relay)] = relay  # by the object: an id the client left empty is assigned in run
        try:
            await relay.run(first, request_iterator, context)
        finally:
            self.relays.pop(id(relay), None)
            self.moves = [*self.moves, *({"session_id": relay.session_id, **m} for m in relay.moves)][-1000:]

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()


def _session_id(raw: bytes) -> str:
    try:
        return spb.InputChunk.FromString(raw).session_id
    except Exception:  # noqa: BLE001 - not an InputChunk: the actor answers it
        return ""


def handler(service: RouterService) -> grpc.GenericRpcHandler:
    """Inputs pass through as bytes (the actor parses and refuses them); outputs are renumbered."""
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Converse": grpc.stream_stream_rpc_method_handler(
            service.Converse, request_deserializer=None, response_serializer=spb.OutputChunk.SerializeToString),
    })


class RouterImpl:
    """The router body (a Ray actor as RouterActor; also usable in-process)."""

    def __init__(self, actors: list[tuple[object, str]] | None = None, members: list[Member] | None = None,
                 host: str = "127.0.0.1", port: int = 0, advertise_host: str | None = None, turn_ms: int = 200,
                 log_level: str = "info", log_dir: str | None = None, relay: dict | None = None,
                 placement: dict | None = None) -> None:
        """`actors`: (Ray InteractionActor handle or actor name, its address) pairs; `members`: ready Members
        (in-process); `relay`, `placement`: RelayConfig / PlacementConfig fields."""
        self.members = [*(ray_member(h, a) for h, a in (actors or ())), *(members or ())]
        self.host, self.port, self.advertise_host = host, port, advertise_host
        self.log_level, self.log_dir = log_level, log_dir
        self.relay_config = RelayConfig(turn_ms=turn_ms, **(relay or {}))
        self.placement = Placement(self.members, PlacementConfig(**(placement or {})))
        self.service: RouterService | None = None
        self.server: grpc.aio.Server | None = None
        self.health: health.aio.HealthServicer | None = None
        self.address = ""

    async def start(self) -> str:
        if self.server is not None:
            return self.address
        if ray.is_initialized() and ray.get_runtime_context().get_actor_id():
            configure_logging(self.log_level, log_dir=self.log_dir, process="router")
        self.service = RouterService(self.placement, self.relay_config)
        server, self.health, bound = await start_session_server(handler(self.service), self.host, self.port)
        self.server = server
        self.address = advertised(f"{self.host}:{bound}", self.advertise_host)
        log.info("router_started", address=self.address, members=[m.address for m in self.members])
        return self.address

    def metrics_endpoint(self) -> str:
        return ""  # the router serves no metrics of its own: each interaction actor serves its loop's

    def member_addresses(self) -> list[str]:
        return [m.address for m in self.members]

    def where(self, session_id: str) -> str:
        """The address of the actor serving `session_id` now ("" when the router holds no such session)."""
        for relay in (self.service.relays.values() if self.service else ()):
            if relay.session_id == session_id and relay.member is not None:
                return relay.member.address
        return ""

    def stats(self) -> dict:
        relays = list(self.service.relays.values()) if self.service else []
        return {"address": self.address, "members": self.member_addresses(),
                "sessions": {r.session_id: r.member.address for r in relays if r.member is not None},
                "moves": list(self.service.moves if self.service else []) + [
                    {"session_id": r.session_id, **m} for r in relays for m in r.moves]}

    async def drain(self, timeout_s: float = 10.0) -> dict:
        """Refuse new sessions, then drain each member that is a Ray actor (at once); their reports summed."""
        if self.service is not None:
            self.service.draining = True
            for name in ("", SERVICE):
                await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        for m in self.members:  # resolve members known by name
            with contextlib.suppress(Exception):
                await m.load()
        handles = [m.handle for m in self.members if m.handle is not None]
        results = await asyncio.gather(*(h.drain.remote(timeout_s) for h in handles), return_exceptions=True)
        report: dict = {"actors": len(handles), "actors_failed": 0}
        for r in results:
            if isinstance(r, BaseException):
                report["actors_failed"] += 1
                continue
            for k, v in r.items():
                report[k] = round(report.get(k, 0) + v, 1) if k != "drain_ms" else max(report.get(k, 0.0), v)
        log.info("router_drained", **report)
        return report

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=0.5)
            self.server = None
        if self.service is not None:
            await self.service.close()


@ray.remote(max_concurrency=256, max_restarts=-1)
class RouterActor(RouterImpl):
    """Ray async actor: restarted by Ray when its process dies (`start()` again brings its server back)."""


def spawn_router(actors: list[tuple[object, str]], num_cpus: float = 0, resources: dict[str, float] | None = None,
                 **options: object) -> tuple[ray.actor.ActorHandle, str]:
    """Create a RouterActor in front of `actors` ((handle, address) pairs) and wait for its address."""
    opts: dict[str, object] = {"num_cpus": num_cpus}
    if resources:
        opts["resources"] = resources
    handle = RouterActor.options(**opts).remote(actors=actors, **options)
    return handle, ray.get(handle.start.remote(), timeout=60)
