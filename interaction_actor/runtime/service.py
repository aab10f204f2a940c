"""Session.Converse over grpc.aio: the client-facing bidi stream, served by a TurnLoop.

Each stream is one session: the first chunk's `session_id` names it (the server assigns one when
empty). A reader task hands raw chunks to the loop (no decoding here); the response side yields
from the session's bounded OutputSink, so a slow client only ever loses its own oldest chunks
(counted in `dropped_chunks`, see loop.py) and never slows the loop. The request deserializer
never raises: bytes that are not an InputChunk become an error event, not a broken stream.
A STOP control or a half-closed request stream ends the session after its next turn.

Transport limits (`server_options`): gRPC's own message limit sits well above the project's
per-item limits (inputs.InputLimits), so an oversize frame or audio chunk is refused by the project
with an error event on a live stream instead of gRPC ending the stream; HTTP/2 keepalive pings find
a frozen or vanished client, and so does the write deadline: a chunk the client has not taken
within WRITE_TIMEOUT_S (it stopped reading: frozen, vanished, or stuck) ends its stream, so its
session is reclaimed within about 10 s and ends like any closed stream; its log is kept until then.

A moved session (the session router opened it again here after its actor was lost) arrives with call
metadata RESUME_METADATA: a serialized ContextPackage of the conversation so far (at most
MAX_RESUME_BYTES), carried into the new session's ConversationLog before its first turn
(ConversationLog.carry_over); metadata that does not parse is refused with INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from interaction_actor.runtime.inputs import Malformed, safe_parse
from interaction_actor.runtime.loop import SessionError, TurnLoop
from interplay import tracing
from interplay.log import get_logger
from interplay.v1 import context_pb2 as xpb
from interplay.v1 import session_pb2 as spb

log = get_logger("interaction_actor.runtime.service")

SERVICE = "interplay.v1.Session"


WRITE_TIMEOUT_S = 8.0  # a client that takes no chunk for this long is gone (a live one takes 5 a second)
RESUME_METADATA = "interplay-resume-bin"  # a moved session's conversation so far (a ContextPackage)
MAX_RESUME_BYTES = 64 << 10
RECORD_METADATA = "interplay-record"  # "1": the client asks for its session to be saved for replay


def wants_recording(context: grpc.aio.ServicerContext) -> bool:
    """Whether the call's RECORD_METADATA asks for the session to be recorded ("1" / "true" / "yes")."""
    value = next((v for k, v in (context.invocation_metadata() or ()) if k == RECORD_METADATA), "")
    return str(value).strip().lower() in ("1", "true", "yes")


def resume_package(context: grpc.aio.ServicerContext) -> xpb.ContextPackage | None:
    """The RESUME_METADATA package of this call, None when there is none; ValueError when unusable."""
    raw = next((v for k, v in (context.invocation_metadata() or ()) if k == RESUME_METADATA), None)
    if raw is None:
        return None
    if len(raw) > MAX_RESUME_BYTES:
        raise ValueError(f"{RESUME_METADATA} is {len(raw)} bytes; at most {MAX_RESUME_BYTES}")
    try:
        return xpb.ContextPackage.FromString(raw)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise ValueError(f"{RESUME_METADATA} is not a ContextPackage: {exc}") from None


class SessionService:
    def __init__(self, loop: TurnLoop, write_timeout_s: float = WRITE_TIMEOUT_S) -> None:
        self.loop = loop
        self.write_timeout_s = write_timeout_s
        self.draining = False  # set by a drain: new sessions are refused with UNAVAILABLE

    async def Converse(self, request_iterator, context: grpc.aio.ServicerContext):  # noqa: N802 - gRPC name
        try:
            first = await anext(request_iterator)
        except StopAsyncIteration:
            return
        sid = first.session_id if isinstance(first, spb.InputChunk) else ""
        if self.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "this server is shutting down; connect to another")
            return
        try:
            resumed = resume_package(context)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        sink = self.loop.sink()
        try:
            # a client's W3C traceparent makes the session's span a child of the client's own
            live = self.loop.open(sid, sink, trace_context=tracing.incoming_context(context.invocation_metadata()),
                                  record=wants_recording(context))
        except SessionError as exc:
            status = grpc.StatusCode.ALREADY_EXISTS if exc.code == "session_exists" else grpc.StatusCode.RESOURCE_EXHAUSTED
            await context.abort(status, str(exc))
            return
        sid = live.id
        if resumed is not None:
            try:
                carried = live.log.carry_over(list(resumed.transcript), resumed.earlier_summary)
            except ValueError as exc:  # an unknown speaker or entry kind, impossible turns
                self.loop.close(sid)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{RESUME_METADATA}: {exc}")
                return
            log.info("session_resumed", session_id=sid, entries=carried, summary=bool(resumed.earlier_summary))
        self.loop.submit(sid, first)
        reader = asyncio.get_running_loop().create_task(self._read(sid, request_iterator))
        try:
            while (chunk := await sink.get()) is not None:
                if context.done():
                    break
                try:
                    await asyncio.wait_for(context.write(chunk), self.write_timeout_s)
                except TimeoutError:
                    log.warning("client_not_reading", session_id=sid, timeout_s=self.write_timeout_s)
                    break
                except Exception as exc:  # noqa: BLE001 - the client went away mid-write
                    log.info("client_gone", session_id=sid, error=type(exc).__name__)
                    break
        finally:
            reader.cancel()
            self.loop.close(sid)

    async def _read(self, sid: str, request_iterator) -> None:
        try:
            async for item in request_iterator:
                self.loop.submit(sid, item)
            self.loop.stop_session(sid)  # half-close == STOP
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken client stream ends only its own session
            log.info("client_stream_error", session_id=sid, error=repr(exc))
            self.loop.close(sid)


def handler(service: SessionService) -> grpc.GenericRpcHandler:
    """The Session service with a deserializer that turns unparsable bytes into `Malformed`."""
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Converse": grpc.stream_stream_rpc_method_handler(
            service.Converse, request_deserializer=safe_parse,
            response_serializer=spb.OutputChunk.SerializeToString),
    })


MAX_MESSAGE_BYTES = 32 << 20  # gRPC's limit: far above InputLimits, so the project's limits answer first
KEEPALIVE_MS = 5_000  # ping an idle connection this often ...
KEEPALIVE_TIMEOUT_MS = 4_000  # ... and drop it when a ping is not answered in this long


def server_options(max_message_bytes: int = MAX_MESSAGE_BYTES, keepalive_ms: int = KEEPALIVE_MS,
                   keepalive_timeout_ms: int = KEEPALIVE_TIMEOUT_MS) -> list[tuple[str, object]]:
    """The Session server's transport settings (see the module docstring)."""
    return [("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", keepalive_ms), ("grpc.keepalive_timeout_ms", keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_metadata_size", 2 * MAX_RESUME_BYTES),  # a moved session's RESUME_METADATA fits
            ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
            ("grpc.http2.max_pings_without_data", 0)]


async def serve(loop: TurnLoop, host: str = "127.0.0.1", port: int = 0,
                options: list[tuple[str, object]] | None = None) -> tuple[grpc.aio.Server, str]:
    """Start a grpc.aio server for the Session service, the standard health service (SERVING from the
    moment it returns: the loop and its backend exist by then) and server reflection; returns
    (server, "host:port"). `start_drain(server)` later turns new sessions away (see drain)."""
    service = SessionService(loop)
    server, health_servicer, bound = await start_session_server(handler(service), host, port, options)
    server.interplay_parts = (service, health_servicer)  # for start_drain
    log.info("session_service_started", address=f"{host}:{bound}")
    return server, f"{host}:{bound}"


async def start_session_server(rpc_handler: grpc.GenericRpcHandler, host: str, port: int,
                               options: list[tuple[str, object]] | None = None
                               ) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    """A started grpc.aio server answering the Session service through `rpc_handler` (this module's
    `handler`, or the router's), the standard health service (SERVING) and server reflection, with
    `server_options()` under the caller's `options`; returns (server, health servicer, bound port).
    RuntimeError when the port cannot be bound."""
    merged = dict(server_options())
    merged.update(dict(options or []))  # the caller's settings win
    server = grpc.aio.server(options=list(merged.items()))
    server.add_generic_rpc_handlers((rpc_handler,))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise RuntimeError(f"could not bind the Session service on {host}:{port}")
    await server.start()
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer, bound


async def start_drain(server: grpc.aio.Server) -> None:
    """Turn new sessions away (UNAVAILABLE) and answer health NOT_SERVING; live sessions go on."""
    service, health_servicer = server.interplay_parts
    service.draining = True
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)


__all__ = ["Malformed", "SessionService", "handler", "serve", "server_options", "start_drain"]
