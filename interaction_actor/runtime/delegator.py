"""Delegator: hands a task to the Background service without ever blocking the micro-turn loop.

`start()` builds a ContextPackage with `delegation.build_package` (the one package builder) and
starts an asyncio task that delegates it through `delegation.client.BackgroundPool` (the one
Background client); every Update it streams is appended to the session's `updates` deque, which the
loop drains at a turn boundary. The loop never awaits these tasks. A failure (no address,
unreachable servers, deadline, a server lost mid-task) arrives in the same deque as a terminal ERROR
update, so every delegation settles exactly once.

A pool: `address` may list several Background servers ("h:p1,h:p2"); the pool sends each task to
the least loaded one and fails over before a task has started (see delegation.client).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from dataclasses import dataclass, field

import grpc

from delegation import PackageError, build_package
from delegation.client import BackgroundPool, error_update
from delegation.package import ConversationSource
from interplay.log import get_logger
from interplay.v1 import common_pb2 as cpb
from interplay.v1 import context_pb2 as xpb

log = get_logger("interaction_actor.runtime.delegator")


@dataclass
class DelegationRequest:
    """What the loop knows when the model emits <delegate>."""

    session_id: str
    task: str
    turn: int
    time_ms: int
    transcript: ConversationSource | list[xpb.TranscriptEntry] = field(default_factory=list)  # the session's log
    user_state: int | None = None  # None: the log's (silent for a plain list)
    preferred_mode: int = cpb.SURFACING_MODE_WHEN_IDLE
    allowed_tools: list[str] | None = None  # None: the delegator's default allow-list
    deadline_ms: int | None = None  # None: the delegator's default deadline


def build(req: DelegationRequest, task_id: str, deadline_ms: int, allowed_tools: list[str]) -> xpb.ContextPackage:
    return build_package(task_id=task_id, session_id=req.session_id, task=req.task, transcript=req.transcript,
                         user_state=req.user_state, allowed_tools=allowed_tools, deadline_ms=deadline_ms,
                         origin_turn=req.turn, preferred_mode=req.preferred_mode)


class Delegator:
    """Starts delegations as tasks on the running asyncio loop, through one BackgroundPool."""

    def __init__(self, address: str | list[str] | None, deadline_ms: int = 30_000,
                 allowed_tools: list[str] | None = None) -> None:
        if isinstance(address, str):
            address = [a.strip() for a in address.split(",") if a.strip()]
        self.addresses: list[str] = list(address or [])
        self.address = ",".join(self.addresses)
        self.deadline_ms = deadline_ms
        self.allowed_tools = list(allowed_tools or [])
        self.tasks: dict[str, asyncio.Task] = {}
        self.sent: deque[xpb.ContextPackage] = deque(maxlen=32)  # the newest packages, for inspection
        self.pool = BackgroundPool(self.addresses) if self.addresses else None

    @property
    def inflight(self) -> dict[str, int]:
        return self.pool.inflight if self.pool is not None else {}

    @property
    def failovers(self) -> int:
        return self.pool.failovers if self.pool is not None else 0

    def start(self, req: DelegationRequest, inbox: deque) -> str:
        """Begin a delegation; returns its task id at once. Updates land in `inbox`."""
        task_id = uuid.uuid4().hex[:16]
        tools = self.allowed_tools if req.allowed_tools is None else list(req.allowed_tools)
        try:
            pkg = build(req, task_id, req.deadline_ms or self.deadline_ms, tools)
        except PackageError as exc:  # a request the builder refuses settles at once, as an error update
            log.warning("delegation_refused", session_id=req.session_id, task_id=task_id, code=exc.code,
                        error=str(exc))
            inbox.append(error_update(task_id, exc.code, f"the delegation was not sent: {exc}"))
            return task_id
        self.sent.append(pkg)
        task = asyncio.get_running_loop().create_task(self._run(pkg, inbox), name=f"delegate-{task_id}")
        self.tasks[task_id] = task
        task.add_done_callback(lambda _t, k=task_id: self.tasks.pop(k, None))
        log.info("delegation_started", session_id=req.session_id, task_id=task_id, turn=req.turn,
                 address=self.address)
        return task_id

    async def _run(self, pkg: xpb.ContextPackage, inbox: deque) -> None:
        if self.pool is None:
            inbox.append(error_update(pkg.task_id, "no_background", "no background service is configured"))
            return
        try:
            async for upd in self.pool.delegate(pkg, timeout_s=pkg.deadline_ms / 1000.0):
                inbox.append(upd)
        except asyncio.CancelledError:
            inbox.append(error_update(pkg.task_id, "cancelled", "the session closed"))
            raise

    async def steer(self, task_id: str, text: str) -> bool:
        """Send a follow-up to a running task; False when it is not running anywhere (never raises)."""
        if self.pool is None:
            return False
        try:
            return bool((await self.pool.steer(task_id, text)).accepted)
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
        if self.pool is not None:
            await self.pool.close()
