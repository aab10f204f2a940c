"""Delegator: hands a task to the Background service without ever blocking the micro-turn loop.

`start()` builds a ContextPackage (with `delegation.build_package` when that exists, else a minimal
package here) and starts an asyncio task that calls Background.Delegate over gRPC; every Update
it streams is appended to the session's `updates` deque, which the loop drains at a turn
boundary. The loop never awaits these tasks. A failure (no address, unreachable server, deadline)
arrives in the same deque as a terminal ERROR update, so every delegation settles exactly once.

A pool: `address` may list several Background servers ("h:p1,h:p2"). Each delegation goes to the
one with the fewest tasks in flight from this actor (ties: round robin); when a server is
unreachable, or refuses the task as `overloaded`, before it has accepted it, the next one is tried. Once a server has
sent an update for a task, losing it is that task's terminal error: work is never run twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import grpc

from interplay.log import get_logger
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import background_pb2_grpc as bgrpc
from interplay.v1 import common_pb2 as cpb
from interplay.v1 import context_pb2 as xpb

log = get_logger("interaction_actor.delegator")

try:  # the delegation package's budgeted builder, when it is there
    from delegation import build_package as _build_package  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the delegation helper's progress
    _build_package = None


@dataclass
class DelegationRequest:
    """What the loop knows when the model emits <delegate>."""

    session_id: str
    task: str
    turn: int
    time_ms: int
    transcript: list[xpb.TranscriptEntry] = field(default_factory=list)
    user_state: int = cpb.USER_STATE_SILENT
    preferred_mode: int = cpb.SURFACING_MODE_WHEN_IDLE
    allowed_tools: list[str] | None = None  # None: the delegator's default allow-list
    deadline_ms: int | None = None  # None: the delegator's default deadline


def minimal_package(req: DelegationRequest, task_id: str, deadline_ms: int, allowed_tools: list[str],
                    max_entries: int = 32) -> xpb.ContextPackage:
    """A small package: the task, the newest `max_entries` transcript entries, state and deadline."""
    entries = req.transcript[-max_entries:]
    dropped = len(req.transcript) - len(entries)
    return xpb.ContextPackage(
        task_id=task_id, session_id=req.session_id, task=req.task, transcript=entries,
        earlier_summary=f"{dropped} earlier entries omitted" if dropped else "", dropped_entries=dropped,
        user_state=req.user_state, allowed_tools=allowed_tools, deadline_ms=deadline_ms,
        priority=cpb.PRIORITY_NORMAL, origin_turn=req.turn, created_unix_ms=int(time.time() * 1000),
        preferred_mode=req.preferred_mode)


def build(req: DelegationRequest, task_id: str, deadline_ms: int, allowed_tools: list[str]) -> xpb.ContextPackage:
    if _build_package is not None:
        try:
            return _build_package(task_id=task_id, session_id=req.session_id, task=req.task,
                                  transcript=req.transcript, user_state=req.user_state,
                                  allowed_tools=allowed_tools, deadline_ms=deadline_ms, origin_turn=req.turn,
                                  preferred_mode=req.preferred_mode)
        except TypeError as exc:  # signature differs from what this module expects: fall back, say so
            log.warning("build_package_fallback", error=str(exc))
    return minimal_package(req, task_id, deadline_ms, allowed_tools)


def error_update(task_id: str, code: str, message: str, retryable: bool = False) -> bpb.Update:
    return bpb.Update(task_id=task_id, kind=bpb.UPDATE_KIND_ERROR,
                      error=cpb.ErrorInfo(code=code, message=message, retryable=retryable),
                      created_unix_ms=int(time.time() * 1000))


class Delegator:
    """Starts Background.Delegate calls as tasks on the running asyncio loop."""

    def __init__(self, address: str | list[str] | None, deadline_ms: int = 30_000,
                 allowed_tools: list[str] | None = None) -> None:
        if isinstance(address, str):
            address = [a.strip() for a in address.split(",") if a.strip()]
        self.addresses: list[str] = list(address or [])
        self.address = ",".join(self.addresses)
        self.deadline_ms = deadline_ms
        self.allowed_tools = list(allowed_tools or [])
        self.tasks: dict[str, asyncio.Task] = {}
        self.where: dict[str, str] = {}  # task id -> the server running it
        self.inflight: dict[str, int] = dict.fromkeys(self.addresses, 0)
        self.failovers = 0
        self.sent: deque[xpb.ContextPackage] = deque(maxlen=32)  # the newest packages, for inspection
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._rr = 0

    def _stub(self, address: str) -> bgrpc.BackgroundStub:
        if address not in self._channels:
            self._channels[address] = grpc.aio.insecure_channel(address)
        return bgrpc.BackgroundStub(self._channels[address])

    def _order(self) -> list[str]:
        """Servers to try, least loaded first (round robin among equals)."""
        self._rr += 1
        n = len(self.addresses)
        rotated = [self.addresses[(self._rr + i) % n] for i in range(n)]
        return sorted(rotated, key=lambda a: self.inflight.get(a, 0))

    def start(self, req: DelegationRequest, inbox: deque) -> str:
        """Begin a delegation; returns its task id at once. Updates land in `inbox`."""
        task_id = uuid.uuid4().hex[:16]
        tools = self.allowed_tools if req.allowed_tools is None else list(req.allowed_tools)
        pkg = build(req, task_id, req.deadline_ms or self.deadline_ms, tools)
        self.sent.append(pkg)
        task = asyncio.get_running_loop().create_task(self._run(pkg, inbox), name=f"delegate-{task_id}")
        self.tasks[task_id] = task
        task.add_done_callback(lambda _t, k=task_id: (self.tasks.pop(k, None), self.where.pop(k, None)))
        log.info("delegation_started", session_id=req.session_id, task_id=task_id, turn=req.turn,
                 address=self.address)
        return task_id

    async def _run(self, pkg: xpb.ContextPackage, inbox: deque) -> None:
        task_id = pkg.task_id
        if not self.addresses:
            inbox.append(error_update(task_id, "no_background", "no background service is configured"))
            return
        last: grpc.aio.AioRpcError | None = None
        order = self._order()
        for address in order:
            self.where[task_id] = address
            self.inflight[address] = self.inflight.get(address, 0) + 1
            started = False
            try:
                call = self._stub(address).Delegate(pkg, timeout=self.deadline_ms / 1000.0)
                async for upd in call:
                    if (not started and upd.kind == bpb.UPDATE_KIND_ERROR and upd.error.code == "overloaded"
                            and address != order[-1]):
                        self.failovers += 1  # this server is full: offer the task to the next one
                        log.info("delegation_overflow", task_id=task_id, address=address)
                        break
                    started = True
                    inbox.append(upd)
                    if upd.kind in (bpb.UPDATE_KIND_FINAL, bpb.UPDATE_KIND_ERROR, bpb.UPDATE_KIND_CANCELLED):
                        return
                if not started and address != order[-1]:
                    call.cancel()
                    continue
                inbox.append(error_update(task_id, "no_terminal_update", "the background stream ended early", True))
                return
            except asyncio.CancelledError:
                inbox.append(error_update(task_id, "cancelled", "the session closed"))
                raise
            except grpc.aio.AioRpcError as exc:
                last = exc
                log.warning("delegation_failed", task_id=task_id, address=address, code=exc.code().name,
                            started=started)
                if started or exc.code() != grpc.StatusCode.UNAVAILABLE:
                    break
                self.failovers += 1  # never reached this server: the next one may take the task
            finally:
                self.inflight[address] -= 1
        code = ("deadline_exceeded" if last is not None and last.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                else "background_unavailable")
        name = last.code().name if last is not None else "UNKNOWN"
        inbox.append(error_update(task_id, code, f"Background.Delegate failed: {name}",
                                  retryable=code == "background_unavailable"))

    async def steer(self, task_id: str, text: str) -> bool:
        """Send a follow-up to a running task; False when it is not running anywhere (never raises)."""
        address = self.where.get(task_id)
        if address is None:
            return False
        try:
            resp = await self._stub(address).Steer(bpb.SteerRequest(task_id=task_id, text=text), timeout=2.0)
            return bool(resp.accepted)
        except grpc.aio.AioRpcError as exc:
            log.warning("steer_failed", task_id=task_id, code=exc.code().name)
            return False

    def cancel_all(self, task_ids: list[str]) -> None:
        for k in task_ids:
            t = self.tasks.get(k)
            if t is not None:
                t.cancel()

    async def close(self) -> None:
        for t in list(self.tasks.values()):
            t.cancel()
        for ch in self._channels.values():
            await ch.close(grace=None)
        self._channels = {}
