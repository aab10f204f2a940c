"""Relay: one client session through the router, piped to an interaction actor and moved when it is lost.

Given the client's Converse stream (raw InputChunk bytes in, OutputChunks out) and the router's
Placement, `Relay.run` opens the session on the best member (a member that refuses, RESOURCE_EXHAUSTED
or UNAVAILABLE, is skipped for the next), then pipes both ways: client inputs go up through one
bounded queue (when it is full the reader waits, so gRPC flow control holds the client back: nothing
is buffered without bound), chunks come down one at a time (a slow client holds the actor's own
bounded OutputSink, which drops its oldest chunks and tells the client so).

A session ends only with SESSION_ENDED. An actor stream that fails (UNAVAILABLE, a reset connection,
the Ray actor killed), ends without SESSION_ENDED, or sends nothing for `stall_s` means the actor is
lost: the relay opens the session on another member with the same id, seeded with the conversation so
far (service.RESUME_METADATA: a ContextPackage built from the router's own copy, `SessionCopy`, fed by
what went by: typed text, the assistant's words, transcripts, delegations, woven results; bounded by
its log's window and the package budget). The client's stream stays open; the first chunk from the
new actor carries SESSION_MOVED in place of that actor's SESSION_STARTED, and turns and times are
renumbered so the client sees one session: turn indices go on without a gap, times from its start.
When no member takes it, the client gets an ERROR `session_lost` and SESSION_ENDED.
What does not move: the dead actor's model state (KV cache) and its delegations in flight.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from delegation import ConversationLog
from delegation.package import build_package
from delegation.transcript import LogConfig
from interaction_actor.router.placement import Member, Placement
from interaction_actor.runtime.service import RESUME_METADATA, SERVICE
from interaction_actor.runtime.weave import event
from interplay.log import get_logger
from interplay.v1 import session_pb2 as spb

log = get_logger("interaction_actor.router.relay")

METHOD = f"/{SERVICE}/Converse"
REFUSALS = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ALREADY_EXISTS,
            grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
            grpc.StatusCode.INTERNAL)


@dataclass
class RelayConfig:
    turn_ms: int = 200
    max_pending_inputs: int = 256  # client inputs waiting to go up (a move in progress); then the reader waits
    write_timeout_s: float = 8.0  # a client that takes no chunk for this long is gone (as service.py)
    stall_s: float = 3.0  # an actor that sends no chunk for this long is lost
    open_timeout_s: float = 5.0  # an actor that sends no first chunk this fast after opening is skipped
    resume_budget_bytes: int = 32 << 10  # the moved conversation's package (under service.MAX_RESUME_BYTES)
    log_entries: int = 512  # entries the router's copy of a conversation keeps (older: its digest)
    max_moves: int = 8  # a session that loses this many actors ends (something is wrong everywhere)


class Refused(Exception):
    """No member took the session; `code` is the last refusal's status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class SessionCopy:
    """The router's copy of one conversation, in the client's turn numbering (what a move carries)."""

    def __init__(self, session_id: str, config: RelayConfig) -> None:
        self.session_id = session_id
        self.budget = config.resume_budget_bytes
        self.log = ConversationLog(session_id, LogConfig(turn_ms=config.turn_ms, joiner="",
                                                         max_entries=config.log_entries))
        self._typed: list[str] = []

    def sent(self, raw: bytes) -> None:
        """A client input on its way up: typed text joins the conversation at the next chunk."""
        try:
            chunk = spb.InputChunk.FromString(raw)
        except Exception:  # noqa: BLE001 - the actor reports malformed input; the copy ignores it
            return
        if chunk.WhichOneof("payload") == "text" and chunk.text.text:
            self._typed.append(chunk.text.text)

    def record(self, chunk: spb.OutputChunk) -> None:
        """One output chunk (already renumbered) and the typed text since the last one."""
        typed, self._typed = " ".join(self._typed), []
        if chunk.turn <= self.log.last_turn:
            return
        self.log.record_turn(chunk.turn, typed_text=typed, assistant_text=chunk.text,
                             assistant_speaking=bool(chunk.text) or bool(chunk.audio.pcm16))
        for e in chunk.events:
            if (e.kind == spb.EVENT_KIND_USER_TRANSCRIPT and e.update == spb.EVENT_UPDATE_FINAL
                    and not e.low_confidence):
                self.log.heard(e.text, e.start_turn, e.end_turn, e.confidence)
            elif e.kind == spb.EVENT_KIND_RESULT_SURFACED and e.update == spb.EVENT_UPDATE_FINAL:
                self.log.background(e.text, chunk.turn)
            elif e.kind == spb.EVENT_KIND_DELEGATION_STARTED:
                self.log.event(f"delegated: {e.text}", chunk.turn)

    def package(self) -> bytes:
        """The conversation so far as a ContextPackage within the budget (service.RESUME_METADATA)."""
        return build_package("continue this conversation: it moved here from an interaction actor that was lost",
                             session_id=self.session_id, transcript=self.log, observations=[],
                             budget_bytes=self.budget).SerializeToString()


def _renumber(chunk: spb.OutputChunk, turns: int, ms: int) -> None:
    """Shift the chunk's turn indices and time from the actor's numbering into the client's."""
    chunk.turn += turns
    chunk.time_ms += ms
    for e in chunk.events:
        if e.kind == spb.EVENT_KIND_USER_TRANSCRIPT:
            e.start_turn, e.end_turn = e.start_turn + turns, e.end_turn + turns
        elif e.kind == spb.EVENT_KIND_DELEGATION_STARTED:
            e.origin_turn += turns
        elif e.kind == spb.EVENT_KIND_RESULT_SURFACED:
            e.received_turn += turns
        elif e.kind == spb.EVENT_KIND_SESSION_ENDED:
            e.turns += turns


class Relay:
    def __init__(self, placement: Placement, channel: Callable[[str], grpc.aio.Channel],
                 config: RelayConfig | None = None) -> None:
        """`channel(address)`: the router's grpc.aio channel to a member (shared by its relays)."""
        self.placement = placement
        self.channel = channel
        self.config = config or RelayConfig()
        self.session_id = ""
        self.member: Member | None = None
        self.moves: list[dict] = []  # each move: from, to, why, resume_ms (loss noticed -> first new chunk)
        self.copy: SessionCopy | None = None
        self._inputs: asyncio.Queue[bytes | None] = asyncio.Queue(self.config.max_pending_inputs)
        self._client_done = False
        self._turns = self._ms = self._dropped = 0  # client's = actor's + these (changed by a move)
        self._last_turn, self._last_ms, self._last_dropped = -1, 0, 0
        self._origin: float | None = None  # monotonic time of the client's turn 0
        self._moving: tuple[str, float, str] | None = None  # (why, noticed at, from) until the new first chunk

    # ---- the client side ------------------------------------------------------------------------
    async def run(self, first: bytes, requests, context: grpc.aio.ServicerContext) -> None:
        """Serve one client stream whose first request is `first` (the caller checked its id is free)."""
        chunk = _parse_input(first)
        self.session_id = chunk.session_id or uuid.uuid4().hex[:12]
        if not chunk.session_id:
            chunk.session_id = self.session_id
            first = chunk.SerializeToString()
        self.copy = SessionCopy(self.session_id, self.config)
        self.copy.sent(first)
        reader = asyncio.get_running_loop().create_task(self._read(requests))
        call = None
        try:
            try:
                call, head = await self._open(first, None, ())
            except Refused as exc:
                await context.abort(exc.code, str(exc))
                return
            while True:
                outcome = await self._pump(call, head, context)
                if outcome is None:  # the session ended, or its client went away
                    return
                call.cancel()
                if len(self.moves) >= self.config.max_moves:
                    await self._lost(context, f"{outcome}; it already moved {len(self.moves)} times")
                    return
                self._moving = (outcome, time.monotonic(), self.member.address if self.member else "")
                log.warning("actor_lost", session_id=self.session_id, member=self._moving[2], why=outcome)
                start = spb.InputChunk(session_id=self.session_id, control=spb.Control(kind=spb.CONTROL_KIND_START))
                try:
                    call, head = await self._open(start.SerializeToString(), self.copy.package(), (self._moving[2],))
                except Refused as exc:
                    await self._lost(context, f"{outcome}; no other actor took it: {exc}")
                    return
        finally:
            reader.cancel()
            if call is not None:
                call.cancel()

    async def _read(self, requests) -> None:
        try:
            async for raw in requests:
                self.copy.sent(raw)
                await self._inputs.put(raw)  # bounded: a full queue holds the client back
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the client's stream broke: the handler ends with it
            log.info("client_stream_error", session_id=self.session_id, error=repr(exc))
        self._client_done = True
        await self._inputs.put(None)

    async def _upstream(self, first: bytes):
        """The requests of one actor stream: `first`, then the client's inputs until it half-closes."""
        yield first
        while not self._client_done or not self._inputs.empty():
            item = await self._inputs.get()
            if item is None:
                return
            yield item

    # ---- the actor side --------------------------------------------------------------------------
    async def _open(self, first: bytes, resume: bytes | None, exclude: tuple[str, ...]):
        """Open the session on the best member that takes it; (call, its first chunk) or Refused."""
        code, why = grpc.StatusCode.RESOURCE_EXHAUSTED, "no interaction actor is reachable"
        for member in await self.placement.order(exclude):
            metadata = ((RESUME_METADATA, resume),) if resume is not None else None
            self.placement.placed(member)  # before any await: a session placed at the same moment sees it
            call = self.channel(member.address).stream_stream(
                METHOD, response_deserializer=spb.OutputChunk.FromString)(self._upstream(first), metadata=metadata)
            try:
                head = await asyncio.wait_for(call.read(), self.config.open_timeout_s)
            except TimeoutError:
                call.cancel()
                self.placement.unplaced(member)
                code, why = grpc.StatusCode.UNAVAILABLE, f"{member.name} sent no first chunk"
                continue
            except grpc.aio.AioRpcError as exc:
                self.placement.unplaced(member)
                if exc.code() not in REFUSALS:
                    raise Refused(exc.code(), exc.details() or exc.code().name) from None
                code, why = exc.code(), f"{member.name}: {exc.details() or exc.code().name}"
                log.info("member_refused", session_id=self.session_id, member=member.name, code=exc.code().name)
                continue
            if head is grpc.aio.EOF:
                self.placement.unplaced(member)
                code, why = grpc.StatusCode.UNAVAILABLE, f"{member.name} closed the stream at once"
                continue
            self.member = member
            log.info("session_placed", session_id=self.session_id, member=member.name, resumed=resume is not None)
            return call, head
        raise Refused(code, why)

    async def _pump(self, call, head: spb.OutputChunk, context: grpc.aio.ServicerContext) -> str | None:
        """Chunks down to the client until the session ends (None) or the actor is lost (why)."""
        chunk = head
        while True:
            ended = self._translate(chunk)
            try:
                await asyncio.wait_for(context.write(chunk), self.config.write_timeout_s)
            except TimeoutError:
                log.warning("client_not_reading", session_id=self.session_id)
                return None
            except Exception as exc:  # noqa: BLE001 - the client went away mid-write
                log.info("client_gone", session_id=self.session_id, error=type(exc).__name__)
                return None
            if ended:
                return None
            try:
                chunk = await asyncio.wait_for(call.read(), self.config.stall_s)
            except TimeoutError:
                return f"no chunk from {self.member.name} for {self.config.stall_s:g} s"
            except grpc.aio.AioRpcError as exc:
                return f"{self.member.name} failed: {exc.code().name}: {exc.details() or ''}".rstrip(": ")
            if chunk is grpc.aio.EOF:
                return f"{self.member.name} ended the stream without ending the session"

    def _translate(self, chunk: spb.OutputChunk) -> bool:
        """Into the client's numbering (a move's first chunk: SESSION_MOVED in place of SESSION_STARTED);
        record it in the copy; True when it ends the session."""
        now = time.monotonic()
        if self._origin is None:
            self._origin = now - chunk.time_ms / 1000
        if self._moving is not None:
            why, noticed, old = self._moving
            turn_ms = self.config.turn_ms
            elapsed = round((now - self._origin) * 1000 / turn_ms) * turn_ms
            self._turns = self._last_turn + 1 - chunk.turn
            self._ms = max(self._last_ms + turn_ms, elapsed) - chunk.time_ms
            self._dropped = self._last_dropped  # the client's running total goes on
            kept = [e for e in chunk.events if e.kind != spb.EVENT_KIND_SESSION_STARTED]
            resume_ms = round((now - noticed) * 1000)
            moved = event(spb.EVENT_KIND_SESSION_MOVED, why, turns=self._last_turn + 1, age_ms=resume_ms)
            del chunk.events[:]
            chunk.events.extend([moved, *kept])
            self.moves.append({"from": old, "to": self.member.address, "why": why, "resume_ms": resume_ms,
                               "turn": self._last_turn + 1})
            log.info("session_moved", session_id=self.session_id, to=self.member.name, resume_ms=resume_ms)
            self._moving = None
        _renumber(chunk, self._turns, self._ms)
        chunk.dropped_chunks += self._dropped
        self._last_turn, self._last_ms, self._last_dropped = chunk.turn, chunk.time_ms, chunk.dropped_chunks
        self.copy.record(chunk)
        return any(e.kind == spb.EVENT_KIND_SESSION_ENDED for e in chunk.events)

    async def _lost(self, context: grpc.aio.ServicerContext, why: str) -> None:
        """No actor can go on with the session: the client is told (ERROR session_lost, SESSION_ENDED)."""
        log.error("session_lost", session_id=self.session_id, why=why)
        turn = self._last_turn + 1
        chunk = spb.OutputChunk(session_id=self.session_id, turn=turn, time_ms=self._last_ms + self.config.turn_ms,
                                events=[event(spb.EVENT_KIND_ERROR, f"the session was lost: {why}",
                                              code="session_lost", retryable=True),
                                        event(spb.EVENT_KIND_SESSION_ENDED, "the session was lost", turns=turn)])
        try:
            await asyncio.wait_for(context.write(chunk), self.config.write_timeout_s)
        except Exception as exc:  # noqa: BLE001 - the client may be gone too
            log.info("client_gone", session_id=self.session_id, error=type(exc).__name__)


def _parse_input(raw: bytes) -> spb.InputChunk:
    try:
        return spb.InputChunk.FromString(raw)
    except Exception:  # noqa: BLE001 - forwarded as is: the actor answers it with an error event
        return spb.InputChunk()
