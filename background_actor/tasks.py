"""The task manager: admission (run now, queue, or refuse), deadlines, steer, cancel and accounting.

Every submitted package settles exactly once: refused at the door (ERROR "overloaded" /
"invalid_package" / "duplicate_task"), or run to one terminal update (FINAL, ERROR, CANCELLED).
Updates of a task carry seq 0, 1, 2, … without gaps. `stats()` accounts for every submission:
submitted == refused + invalid + final + error + cancelled + running + waiting; its `tool_*` keys
are the tool worker pool's (tools/isolation.py: workers, busy, hung, abandoned_total, refused_total).
Every text an update carries (text, tool call arguments, tool result, error message) has the secret
values of the manager's store replaced by `[secret:NAME]` before it is queued for the wire.
Tracing (interplay.tracing): each submission is one `background_task` span (a child of the caller's
`parent` context) from submit to its terminal update; the agent's LLM request and tool call spans
run under it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from background_actor.agent import AgentLoop
from background_actor.engine import EngineError, Usage
from delegation.scheduler import TERMINAL
from interplay import tracing
from interplay.log import get_logger
from interplay.secrets import SecretStore, redact_text
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import common_pb2 as cpb
from interplay.v1 import context_pb2 as xpb
from tools.isolation import default_pool

log = get_logger("background_actor.tasks")



@dataclass
class TaskConfig:
    max_concurrent: int = 4          # tasks running at once
    max_queued: int = 16             # tasks waiting for a slot; beyond that a delegation is refused
    max_task_s: float = 120.0        # cap on any task's time, whatever its package asks
    default_deadline_ms: int = 60_000  # used when a package says 0
    max_steers: int = 4              # steer texts accepted per task
    remember_finished: int = 4096    # finished task ids kept to answer Steer/Cancel precisely


def _no_span() -> tracing.Span:
    return tracing.INVALID_SPAN


def _end_span(t: Task, outcome: str, code: str = "") -> None:
    """End the task's span with its outcome (final, error, cancelled, invalid, refused)."""
    t.span.set_attribute("interplay.outcome", outcome)
    if code:
        t.span.set_attribute("error.type", code)
        t.span.set_status(tracing.Status(tracing.StatusCode.ERROR, code))
    elif outcome == "final":
        t.span.set_status(tracing.Status(tracing.StatusCode.OK))
    t.span.end()


@dataclass
class Task:
    pkg: xpb.ContextPackage
    updates: asyncio.Queue[bpb.Update] = field(default_factory=asyncio.Queue)
    steer: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    state: str = "new"               # new → waiting → running → done
    seq: int = 0
    steers: int = 0
    runner: asyncio.Task[None] | None = None
    cancel_reason: str = ""
    terminal: int = 0
    error_code: str = ""             # the terminal ERROR's code
    usage: list[Usage] = field(default_factory=list)
    submitted_at: float = field(default_factory=time.monotonic)
    redact: Callable[[str], str] = redact_text
    span: tracing.Span = field(default_factory=_no_span)

    @property
    def task_id(self) -> str:
        return self.pkg.task_id

    def emit(self, kind: int, text: str = "", tool_call: cpb.ToolCall | None = None,
             tool_result: cpb.ToolResult | None = None, error: cpb.ErrorInfo | None = None,
             step: int = 0, progress: float = 0.0, surfacing: int = cpb.SURFACING_MODE_SILENT) -> bool:
        """Queue one update (seq assigned here); False, and nothing sent, after the terminal one."""
        if self.terminal:
            log.debug("update_after_terminal_dropped", task_id=self.task_id, kind=bpb.UpdateKind.Name(kind))
            return False
        r = self.redact
        upd = bpb.Update(task_id=self.task_id, seq=self.seq, kind=kind, text=r(text), step=step, progress=progress,
                         surfacing=surfacing, created_unix_ms=int(time.time() * 1000))
        if tool_call is not None:
            upd.tool_call.CopyFrom(tool_call)
            upd.tool_call.arguments_json = r(upd.tool_call.arguments_json)
        if tool_result is not None:
            upd.tool_result.CopyFrom(tool_result)
            upd.tool_result.content = r(upd.tool_result.content)
        if error is not None:
            upd.error.CopyFrom(error)
            upd.error.message = r(upd.error.message)
        self.seq += 1
        if kind in TERMINAL:
            self.terminal = kind
            self.error_code = error.code if error is not None else ""
        self.updates.put_nowait(upd)
        return True

    async def aemit(self, kind: int, **fields: Any) -> None:
        self.emit(kind, **fields)


class TaskManager:
    """Runs tasks through one AgentLoop under the concurrency and queue limits of TaskConfig."""

    def __init__(self, agent: AgentLoop, config: TaskConfig | None = None, secrets: SecretStore | None = None) -> None:
        self.agent = agent
        self.metrics = agent.metrics  # tasks settled, by outcome (None: not counted)
        self.config = config or TaskConfig()
        self.secrets = secrets
        self.live: dict[str, Task] = {}
        self.waiting: list[Task] = []
        self.running: set[str] = set()
        self.finished: OrderedDict[str, str] = OrderedDict()
        self.counts = {k: 0 for k in ("submitted", "accepted", "queued", "refused", "invalid",
                                      "final", "error", "cancelled")}

    # ------------------------------------------------------------------ admission

    def submit(self, pkg: xpb.ContextPackage, parent: Any = None) -> Task:
        """Admit a package; the returned task's `updates` already hold its first update. `parent`: the
        OpenTelemetry context the task's span starts under (the caller's, from gRPC metadata)."""
        self.counts["submitted"] += 1
        if not pkg.task_id:
            pkg.task_id = uuid.uuid4().hex[:16]
        span = tracing.tracer().start_span("background_task", context=parent, kind=tracing.SpanKind.SERVER,
                                           attributes={"gen_ai.operation.name": "invoke_agent",
                                                       "interplay.task_id": pkg.task_id,
                                                       "interplay.session_id": pkg.session_id})
        t = Task(pkg, redact=self._redact, span=span)
        problem = None if pkg.task.strip() else ("invalid_package", "the package has an empty task")
        if problem is None and pkg.task_id in self.live:
            problem = ("duplicate_task", f"task {pkg.task_id} is already running")
        if problem is not None:
            self.counts["invalid"] += 1
            t.emit(bpb.UPDATE_KIND_ERROR, error=cpb.ErrorInfo(code=problem[0], message=problem[1]),
                   surfacing=cpb.SURFACING_MODE_SILENT)
            t.state = "done"
            _end_span(t, "invalid", problem[0])
            if self.metrics is not None:
                self.metrics.task_settled("invalid")
            return t
        if len(self.running) < self.config.max_concurrent:
            self.live[t.task_id] = t
            self._start(t)
        elif len(self.waiting) < self.config.max_queued:
            self.live[t.task_id] = t
            t.state = "waiting"
            self.counts["queued"] += 1
            # priority first (HIGH before NORMAL before LOW), then arrival order
            pos = next((i for i, w in enumerate(self.waiting) if w.pkg.priority < pkg.priority), len(self.waiting))
            self.waiting.insert(pos, t)
            t.emit(bpb.UPDATE_KIND_QUEUED, text=f"waiting for a free slot ({len(self.waiting)} queued)")
            t.span.add_event("queued", {"interplay.queued": len(self.waiting)})
        else:
            self.counts["refused"] += 1
            t.state = "done"
            t.emit(bpb.UPDATE_KIND_ERROR, surfacing=cpb.SURFACING_MODE_SILENT, error=cpb.ErrorInfo(
                code="overloaded", retryable=True,
                message=f"{len(self.running)} tasks running and {len(self.waiting)} queued; try again later"))
            log.warning("delegation_refused", task_id=t.task_id, running=len(self.running), queued=len(self.waiting))
            _end_span(t, "refused", "overloaded")
            if self.metrics is not None:
                self.metrics.task_settled("refused")
        return t

    def _start(self, t: Task) -> None:
        t.state = "running"
        self.running.add(t.task_id)
        self.counts["accepted"] += 1
        t.emit(bpb.UPDATE_KIND_ACCEPTED, text="working on it")
        t.span.add_event("accepted")
        t.runner = asyncio.get_running_loop().create_task(self._drive(t), name=f"task-{t.task_id}")
        t.runner.add_done_callback(lambda _r, task=t: self._ensure_settled(task))

    def _ensure_settled(self, t: Task) -> None:
        """A runner cancelled before its first step never ran `_drive`: settle it here."""
        if not t.terminal:
            t.emit(bpb.UPDATE_KIND_CANCELLED, text=t.cancel_reason or "cancelled")
        if t.state != "done":
            self._settle(t)

    def _deadline_s(self, pkg: xpb.ContextPackage) -> float:
        budget_ms = pkg.deadline_ms or self.config.default_deadline_ms
        left = budget_ms / 1000.0
        if pkg.created_unix_ms:
            left = (pkg.created_unix_ms + budget_ms) / 1000.0 - time.time()
        return min(left, self.config.max_task_s)

    async def _drive(self, t: Task) -> None:
        pkg = t.pkg
        kind, text, err = bpb.UPDATE_KIND_FINAL, "", None
        try:
            left = self._deadline_s(pkg)
            if left <= 0:
                raise TimeoutError("the deadline passed before the task started")
            with tracing.use_span(t.span, record_exception=False, set_status_on_exception=False):
                async with asyncio.timeout(left):
                    text = await self.agent.run(pkg, t.aemit, t.steer, t.usage)
        except asyncio.CancelledError:
            kind, text = bpb.UPDATE_KIND_CANCELLED, t.cancel_reason or "cancelled"
        except TimeoutError as exc:
            kind, err = bpb.UPDATE_KIND_ERROR, cpb.ErrorInfo(code="deadline_exceeded", message=str(exc) or
                                                               "the task ran past its deadline", retryable=False)
        except EngineError as exc:
            kind, err = bpb.UPDATE_KIND_ERROR, cpb.ErrorInfo(code=exc.code, message=exc.message[:300],
                                                               retryable=exc.retryable)
        except Exception as exc:  # a bug must still settle the task
            log.exception("task_crashed", task_id=t.task_id)
            kind, err = bpb.UPDATE_KIND_ERROR, cpb.ErrorInfo(code="internal_error", message=type(exc).__name__)
        mode = pkg.preferred_mode or cpb.SURFACING_MODE_WHEN_IDLE
        t.emit(kind, text=text, error=err, progress=1.0 if kind == bpb.UPDATE_KIND_FINAL else 0.0,
               surfacing=cpb.SURFACING_MODE_SILENT if kind == bpb.UPDATE_KIND_CANCELLED else mode)
        self._settle(t)

    def _settle(self, t: Task) -> None:
        name = {bpb.UPDATE_KIND_FINAL: "final", bpb.UPDATE_KIND_ERROR: "error",
                bpb.UPDATE_KIND_CANCELLED: "cancelled"}[t.terminal]
        self.counts[name] += 1
        t.state = "done"
        self.running.discard(t.task_id)
        self.live.pop(t.task_id, None)
        self.finished[t.task_id] = name
        while len(self.finished) > self.config.remember_finished:
            self.finished.popitem(last=False)
        tokens = sum(u.completion_tokens for u in t.usage)
        log.info("task_settled", task_id=t.task_id, outcome=name, steps=len(t.usage), tokens=tokens,
                 seconds=round(time.monotonic() - t.submitted_at, 3))
        t.span.set_attributes({"interplay.steps": len(t.usage), "gen_ai.usage.output_tokens": tokens})
        if any(u.prompt_tokens for u in t.usage):
            t.span.set_attribute("gen_ai.usage.input_tokens", sum(u.prompt_tokens for u in t.usage))
        _end_span(t, name, t.error_code)
        if self.metrics is not None:
            self.metrics.task_settled(name)
        while self.waiting and len(self.running) < self.config.max_concurrent:
            self._start(self.waiting.pop(0))

    # ------------------------------------------------------------------ steer / cancel

    def steer(self, task_id: str, text: str) -> tuple[bool, str]:
        t = self.live.get(task_id)
        if t is None:
            return False, "already_finished" if task_id in self.finished else "unknown_task"
        if not text.strip():
            return False, "empty_text"
        if t.steers >= self.config.max_steers:
            return False, "steer_limit"
        t.steers += 1
        t.steer.put_nowait(text)
        return True, ""

    def cancel(self, task_id: str, reason: str = "") -> tuple[bool, str]:
        t = self.live.get(task_id)
        if t is None:
            return False, "already_finished" if task_id in self.finished else "unknown_task"
        t.cancel_reason = reason or "cancelled by request"
        if t.state == "waiting":
            self.waiting.remove(t)
            t.emit(bpb.UPDATE_KIND_CANCELLED, text=t.cancel_reason)
            self._settle(t)
        elif t.runner is not None:
            t.runner.cancel()
        return True, ""

    def _redact(self, text: str) -> str:
        if not text:
            return text
        return redact_text(self.secrets.redact(text) if self.secrets is not None else text)

    def stats(self) -> dict[str, int]:
        pool = {f"tool_{k}": v for k, v in default_pool().stats().items()}
        return {**self.counts, "running": len(self.running), "waiting": len(self.waiting), **pool}

    async def shutdown(self) -> None:
        runners = [t.runner for t in self.live.values() if t.runner is not None]
        for tid in list(self.live):
            self.cancel(tid, "the background actor is shutting down")
        if runners:
            await asyncio.gather(*runners, return_exceptions=True)
