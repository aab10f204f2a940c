"""Delegator: hands a task to the Background service without ever blocking the micro-turn loop.

`start()` (on the loop's event-loop thread) checks the request and takes a snapshot of the session's
ConversationLog (O(window) pointer copies: the log goes on recording), then starts an asyncio task
that builds the ContextPackage with `delegation.build_package` (the one package builder) on the
delegator's own build thread — never the event-loop thread, never the turn-step worker — and
delegates it through `delegation.client.BackgroundPool` (the one Background client); every Update it
streams is appended to the session's `updates` deque, which the loop drains at a turn boundary. The
loop never awaits these tasks. A failure (a refused or failed build, no address, unreachable servers,
deadline, a server lost mid-task) arrives in the same deque as a terminal ERROR update, so every
delegation settles exactly once, and only in its own session.

A pool: `address` may list several Background servers ("h:p1,h:p2"); the pool sends each task to
the least loaded one and fails over before a task has started (see delegation.client).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc

from delegation import PackageError, build_package
from delegation.client import BackgroundPool, error_update
from delegation.package import ConversationSource, check_request
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


def build(req: DelegationRequest, task_id: str, deadline_ms: int, allowed_tools: list[str],
          budget_bytes: int | None = None) -> xpb.ContextPackage:
    return build_package(task_id=task_id, session_id=req.session_id, task=req.task, transcript=req.transcript,
                         user_state=req.user_state, allowed_tools=allowed_tools, deadline_ms=deadline_ms,
                         origin_turn=req.turn, preferred_mode=req.preferred_mode, budget_bytes=budget_bytes)


def prepare(req: DelegationRequest, task_id: str, deadline_ms: int, allowed_tools: list[str],
            budget_bytes: int | None = None) -> Callable[[], xpb.ContextPackage]:
    """On the caller's thread: the cheap checks (PackageError at once) and a snapshot of the
    conversation; returns the build, to be run on any thread."""
    check_request(req.task, deadline_ms)
    src = req.transcript
    frozen = src.snapshot() if isinstance(src, ConversationSource) else list(src)
    return functools.partial(build, dataclasses.replace(req, transcript=frozen), task_id, deadline_ms, allowed_tools,
                             budget_bytes)


def _lower_priority(step: int = 5) -> None:
    """Build threads run a few niceness steps below the loop's threads (Linux: per thread)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + step))


class Delegator:
    """Starts delegations as tasks on the running asyncio loop, through one BackgroundPool."""

    def __init__(self, address: str | list[str] | None, deadline_ms: int = 30_000,
                 allowed_tools: list[str] | None = None, budget_bytes: int | None = None) -> None:
        if isinstance(address, str):
            address = [a.strip() for a in address.split(",") if a.strip()]
        self.addresses: list[str] = list(address or [])
        self.address = ",".join(self.addresses)
        self.deadline_ms = deadline_ms
        self.allowed_tools = list(allowed_tools or [])
        self.budget_bytes = budget_bytes  # a package's serialized size limit (None: the builder's default)
        self.tasks: dict[str, asyncio.Task] = {}
        self.sent: deque[xpb.ContextPackage] = deque(maxlen=32)  # the newest packages, for inspection
        self.pool = BackgroundPool(self.addresses) if self.addresses else None
        # package builds: one thread of their own (started at the first build), below the loop's priority
        self._builds = ThreadPoolExecutor(max_workers=1, thread_name_prefix="package-build",
                                          initializer=_lower_priority)

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
            job = prepare(req, task_id, req.deadline_ms or self.deadline_ms, tools, self.budget_bytes)
        except PackageError as exc:  # a request the builder refuses settles at once, as an error update
            self._refused(req.session_id, task_id, exc, inbox)
            return task_id
        task = asyncio.get_running_loop().create_task(self._run(req.session_id, task_id, job, inbox),
                                                      name=f"delegate-{task_id}")
        self.tasks[task_id] = task
        task.add_done_callback(lambda _t, k=task_id: self.tasks.pop(k, None))
        log.info("delegation_started", session_id=req.session_id, task_id=task_id, turn=req.turn,
                 address=self.address)
        return task_id

    def _refused(self, session_id: str, task_id: str, exc: PackageError, inbox: deque) -> None:
        log.warning("delegation_refused", session_id=session_id, task_id=task_id, code=exc.code, error=str(exc))
        inbox.append(error_update(task_id, exc.code, f"the delegation was not sent: {exc}"))

    async def _run(self, session_id: str, task_id: str, job: Callable[[], xpb.ContextPackage], inbox: deque) -> None:
        try:
            try:
                pkg = await asyncio.get_running_loop().run_in_executor(self._builds, job)
            except PackageError as exc:
                self._refused(session_id, task_id, exc, inbox)
                return
            except Exception as exc:  # noqa: BLE001 - a builder fault is this delegation's error, nothing more
                log.error("package_failed", session_id=session_id, task_id=task_id, error=repr(exc), exc_info=exc)
                inbox.append(error_update(task_id, "package_failed",
                                          f"the delegation was not sent: the package build failed: {exc!r}"))
                return
            self.sent.append(pkg)
            if self.pool is None:
                inbox.append(error_update(task_id, "no_background", "no background service is configured"))
                return
            async for upd in self.pool.delegate(pkg, timeout_s=pkg.deadline_ms / 1000.0):
                inbox.append(upd)
        except asyncio.CancelledError:
            inbox.append(error_update(task_id, "cancelled", "the session closed"))
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
        self._builds.shutdown(wait=False, cancel_futures=True)
        if self.pool is not None:
            await self.pool.close()
