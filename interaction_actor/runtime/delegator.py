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

Observability: each delegation is one `delegate` span (interplay.tracing; a no-op unless tracing is
configured) with an event per accepted / queued / progress / tool call / tool result / steered update
and a `result` event at its terminal update; its context rides the Delegate call as W3C `traceparent`
metadata. The turn loop starts the span itself (`delegation_span`, a child of the session's span) and
passes it in the request: the loop ends it when the result has surfaced and the delegation settled
(weave.py). A request without a span gets one from `start()`, ended at the terminal update. When the loop sets `metrics` (a LoopMetrics), each settled delegation is counted by outcome
with its latency.

A pool: `address` may list several Background servers ("h:p1,h:p2"); the pool sends each task to
the least loaded one and fails over before a task has started (see delegation.client).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc

from delegation import PackageError, build_package
from delegation.client import BackgroundPool, error_update
from delegation.package import ConversationSource, check_request
from interplay import tracing
from interplay.log import get_logger
from interplay.priority import lower_thread
from interplay.v1 import background_pb2 as bpb
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
    span: tracing.Span | None = None  # the caller's `delegate` span (delegation_span), which the caller
    # ends; None: start() starts one and ends it at the terminal update


def delegation_span(session_id: str, turn: int, preferred_mode: int,
                    parent: tracing.Span = tracing.INVALID_SPAN) -> tracing.Span:
    """A delegation's `delegate` span, a child of `parent` (the session's span; INVALID_SPAN: a trace of
    its own). `Delegator.start` adds the task id."""
    return tracing.tracer().start_span("delegate", context=tracing.set_span_in_context(parent),
                                       kind=tracing.SpanKind.CLIENT, attributes={
                                           "interplay.session_id": session_id, "interplay.turn": turn,
                                           "interplay.preferred_mode": int(preferred_mode)})


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
        self.metrics = None  # a LoopMetrics (set by the TurnLoop): delegations settled, by outcome, and latency
        # package builds: one thread of their own (started at the first build), below the loop's priority
        self._builds = ThreadPoolExecutor(max_workers=1, thread_name_prefix="package-build",
                                          initializer=lower_thread)

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
        own = req.span is None
        span = delegation_span(req.session_id, req.turn, req.preferred_mode) if own else req.span
        span.set_attribute("interplay.task_id", task_id)
        put = _Settle(inbox, span, self.metrics, end_span=own)
        try:
            job = prepare(req, task_id, req.deadline_ms or self.deadline_ms, tools, self.budget_bytes)
        except PackageError as exc:  # a request the builder refuses settles at once, as an error update
            self._refused(req.session_id, task_id, exc, put)
            return task_id
        task = asyncio.get_running_loop().create_task(self._run(req.session_id, task_id, job, put),
                                                      name=f"delegate-{task_id}")
        self.tasks[task_id] = task
        task.add_done_callback(lambda t, k=task_id: self._ended(k, t, put))
        log.info("delegation_started", session_id=req.session_id, task_id=task_id, turn=req.turn,
                 address=self.address)
        return task_id

    def _ended(self, task_id: str, task: asyncio.Task, put: _Settle) -> None:
        """A delegation's task is done. One cancelled before it ever ran (its session closed in the tick
        it started) never reached `_delegate`'s handler: it settles here, so none is left unsettled."""
        self.tasks.pop(task_id, None)
        if task.cancelled() and not put.done:
            put(error_update(task_id, "cancelled", "the session closed"))

    def _refused(self, session_id: str, task_id: str, exc: PackageError, put: _Settle) -> None:
        log.warning("delegation_refused", session_id=session_id, task_id=task_id, code=exc.code, error=str(exc))
        put(error_update(task_id, exc.code, f"the delegation was not sent: {exc}"))

    async def _run(self, session_id: str, task_id: str, job: Callable[[], xpb.ContextPackage], put: _Settle) -> None:
        with tracing.use_span(put.span, record_exception=False, set_status_on_exception=False):
            await self._delegate(session_id, task_id, job, put)

    async def _delegate(self, session_id: str, task_id: str, job: Callable[[], xpb.ContextPackage],
                        put: _Settle) -> None:
        try:
            try:
                pkg = await asyncio.get_running_loop().run_in_executor(self._builds, job)
            except PackageError as exc:
                self._refused(session_id, task_id, exc, put)
                return
            except Exception as exc:  # noqa: BLE001 - a builder fault is this delegation's error, nothing more
                log.error("package_failed", session_id=session_id, task_id=task_id, error=repr(exc), exc_info=exc)
                put(error_update(task_id, "package_failed",
                                 f"the delegation was not sent: the package build failed: {exc!r}"))
                return
            self.sent.append(pkg)
            if self.pool is None:
                put(error_update(task_id, "no_background", "no background service is configured"))
                return
            async for upd in self.pool.delegate(pkg, timeout_s=pkg.deadline_ms / 1000.0):
                put(upd)
        except asyncio.CancelledError:
            put(error_update(task_id, "cancelled", "the session closed"))
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


_EVENTS = {bpb.UPDATE_KIND_ACCEPTED: "accepted", bpb.UPDATE_KIND_QUEUED: "queued", bpb.UPDATE_KIND_PROGRESS: "progress",
           bpb.UPDATE_KIND_TOOL_CALL: "tool_call", bpb.UPDATE_KIND_TOOL_RESULT: "tool_result",
           bpb.UPDATE_KIND_STEERED: "steered"}
_OUTCOMES = {bpb.UPDATE_KIND_FINAL: "final", bpb.UPDATE_KIND_ERROR: "error", bpb.UPDATE_KIND_CANCELLED: "cancelled"}


class _Settle:
    """Puts a delegation's updates in its session's inbox; records them on its span (an event per
    update, the first PARTIAL included, never their text) and, at the terminal update, records the
    outcome (a `result` event, the span's status; the span ends here when `end_span`) and counts the
    outcome and latency. Every delegation's updates pass through exactly one of these."""

    def __init__(self, inbox: deque, span: tracing.Span, metrics=None, end_span: bool = True) -> None:
        self.inbox, self.span, self.metrics, self.end_span = inbox, span, metrics, end_span
        self.t0 = time.monotonic()
        self.partials = 0
        self.done = False

    def __call__(self, upd: bpb.Update) -> None:
        self.inbox.append(upd)
        if self.done:
            return
        # a span its owner already ended (the session closed before this update came) records nothing more
        span = self.span if self.span.is_recording() else tracing.INVALID_SPAN
        kind = upd.kind
        if kind == bpb.UPDATE_KIND_PARTIAL:
            self.partials += 1
            if self.partials == 1:
                span.add_event("first_partial", {"interplay.step": upd.step})
        elif kind in _EVENTS:
            attrs: dict[str, str | int | bool] = {"interplay.seq": upd.seq}
            if kind == bpb.UPDATE_KIND_TOOL_CALL:
                attrs |= {"gen_ai.tool.name": upd.tool_call.name, "gen_ai.tool.call.id": upd.tool_call.call_id}
            elif kind == bpb.UPDATE_KIND_TOOL_RESULT:
                attrs |= {"gen_ai.tool.name": upd.tool_result.name, "gen_ai.tool.call.id": upd.tool_result.call_id,
                          "interplay.tool.ok": upd.tool_result.ok}
            span.add_event(_EVENTS[kind], attrs)
        elif kind in _OUTCOMES:
            self.done = True
            outcome, code = _OUTCOMES[kind], upd.error.code if kind == bpb.UPDATE_KIND_ERROR else ""
            ms = 1000 * (time.monotonic() - self.t0)
            span.set_attributes({"interplay.outcome": outcome, "interplay.partials": self.partials})
            span.add_event("result", {"interplay.outcome": outcome, "interplay.seq": upd.seq,
                                      **({"error.type": code} if code else {})})
            if code:
                span.set_attribute("error.type", code)
                span.set_status(tracing.Status(tracing.StatusCode.ERROR, code))
            elif outcome == "final":
                span.set_status(tracing.Status(tracing.StatusCode.OK))
            if self.end_span:
                span.end()
            if self.metrics is not None:
                self.metrics.delegation_settled(outcome, code, ms)
