"""Delegating: the turn loop's delegation side, apart from its clocked core.

After each turn, on the asyncio side, `after_turn` asks the session's policy (delegation.policies)
whether the turn starts a delegation. A decision starts one: the session's ConversationLog goes to
the Delegator (delegator.py), which snapshots it at once and builds the context package on its own
build thread (never this event-loop thread) and delegates it as a task the clock never awaits; its
updates, a failed build's error included, land in the session's `updates` deque. Without a
decision, text the user typed soon after a delegation started (`steer_window_turns`) is sent to
the running task as a Steer.
What happened rides the session's next output chunk as events. A failing policy is logged and
counted as no decision: it never stops the clock.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping

from delegation import Delegation, TurnState, load_policy
from interaction_actor.runtime.delegator import DelegationRequest, Delegator, delegation_span
from interaction_actor.runtime.metrics import LoopMetrics
from interaction_actor.runtime.weave import event
from interplay.log import get_logger
from interplay.v1 import common_pb2 as cpb
from interplay.v1 import session_pb2 as spb

log = get_logger("interaction_actor.runtime.delegating")


def shorten(task: str, limit_bytes: int) -> tuple[str, int]:
    """`task` within `limit_bytes` of UTF-8: its head (3/4) and tail (1/4) around a marker saying how
    much was left out; returns (task, bytes left out), (task, 0) when it fits."""
    raw = task.encode()
    if len(raw) <= limit_bytes:
        return task, 0
    marker = f" [... {len(raw) - limit_bytes} bytes left out ...] "
    room = max(0, limit_bytes - len(marker.encode()) - 8)
    head = raw[: room * 3 // 4].decode(errors="ignore")
    tail = raw[len(raw) - room // 4:].decode(errors="ignore")
    out = head + marker + tail
    return out, len(raw) - len(out.encode())


class Delegating:
    def __init__(self, delegator: Delegator, metrics: LoopMetrics, *, turn_ms: int, policy: object,
                 policy_options: dict, steer_window_turns: int) -> None:
        self.delegator = delegator
        self.metrics = metrics
        self.turn_ms = turn_ms
        self.policy_spec, self.policy_options = policy, dict(policy_options)
        self.steer_window_turns = steer_window_turns
        self._side: set[asyncio.Task] = set()  # steer calls in flight (never awaited by the loop)

    def new_policy(self) -> object:
        """A session's own policy object (policies keep per-session state)."""
        spec = self.policy_spec
        if isinstance(spec, (str, type, Mapping)):  # a name, a class, or {"policy": name, **options}
            return load_policy(spec, **self.policy_options)
        return copy.deepcopy(spec)

    def start(self, live, task: str, decision: Delegation | None = None) -> str:
        """Start a delegation for the live session (what a decision does); returns the task id at once.
        A task over a quarter of the package budget is shortened first (see `shorten`), with an
        ERROR event `request_truncated` telling the client; the delegation goes on."""
        turn = live.turn
        limit = max(256, (self.delegator.budget_bytes or 16_384) // 4)
        task, cut = shorten(task, limit)
        if cut:
            live.events.append(event(spb.EVENT_KIND_ERROR, f"the request was {cut + len(task.encode())} bytes; "
                                     f"the delegation carries its first and last parts ({len(task.encode())} "
                                     "bytes)", code="request_truncated"))
        mode = int(decision.preferred_mode) if decision is not None else cpb.SURFACING_MODE_WHEN_IDLE
        span = delegation_span(live.id, turn, mode, live.span)  # the session's child; the weaver ends it
        if decision is not None and decision.reason:
            span.set_attribute("interplay.policy", decision.reason)
        req = DelegationRequest(session_id=live.id, task=task, turn=turn, time_ms=int(turn * self.turn_ms),
                                transcript=live.log, preferred_mode=mode,
                                allowed_tools=decision.allowed_tools if decision is not None else None,
                                deadline_ms=decision.deadline_ms if decision is not None else None, span=span)
        task_id = self.delegator.start(req, live.updates)
        live.tasks[task_id] = turn
        live.weave.track(task_id, turn, mode, span)
        self.metrics.delegations += 1
        live.log.event(f"delegated: {task}", turn)
        live.events.append(event(spb.EVENT_KIND_DELEGATION_STARTED, task, task_id=task_id, origin_turn=turn,
                                 policy=(decision.reason if decision is not None else "") or "direct",
                                 confidence=(decision.confidence or 0.0) if decision is not None else 0.0))
        return task_id

    def after_turn(self, live, chunk: spb.OutputChunk, *, time_ms: int, user, typed: str, task: str | None,
                   heard: str = "", confidence: float | None = None) -> None:
        """The policy's decision for this turn: start a delegation, or steer the running one with what
        the user said. The utterance is the text typed in this window, else the words the ears heard
        (a final transcript that arrived since the last turn): policies see speech as well as text."""
        typed = typed or heard
        decision = self._decide(live, chunk, time_ms=time_ms, user=user, typed=typed, task=task,
                                confidence=confidence)
        if decision is not None:
            self.start(live, decision.task, decision)  # a task; its events ride the next chunk
        elif typed and live.tasks:  # a follow-up soon after a delegation started: steer it
            newest, started = next(reversed(live.tasks.items()))
            if chunk.turn - started <= self.steer_window_turns:
                t = asyncio.get_running_loop().create_task(self._steer(live, newest, typed))
                self._side.add(t)
                t.add_done_callback(self._side.discard)

    def _decide(self, live, chunk: spb.OutputChunk, *, time_ms: int, user, typed: str,
                task: str | None, confidence: float | None = None) -> Delegation | None:
        controls = [spb.ControlToken.Name(c).removeprefix("CONTROL_TOKEN_").lower() for c in chunk.controls]
        st = TurnState(session_id=live.id, turn=chunk.turn, time_ms=time_ms, user_state=user, utterance=typed,
                       utterance_final=bool(typed), controls=controls, delegate_task=task,
                       active_tasks=list(live.tasks), confidence=confidence)
        try:
            return live.policy.decide(st)
        except Exception as exc:  # noqa: BLE001 - a policy bug must not stop the clock
            log.error("policy_failed", session_id=live.id, error=repr(exc))
            return None

    async def _steer(self, live, task_id: str, text: str) -> None:
        """Forward a follow-up to the running task; the outcome rides the session's next chunk."""
        ok = await self.delegator.steer(task_id, text)
        live.events.append(event(spb.EVENT_KIND_PROGRESS, text if ok else f"steer not accepted: {text}",
                                 task_id=task_id,
                                 update=spb.EVENT_UPDATE_STEERED if ok else spb.EVENT_UPDATE_STEER_REFUSED))

    async def stop(self) -> None:
        """Cancel steer calls in flight and close the delegator (its tasks settle as cancelled)."""
        for t in list(self._side):
            t.cancel()
        await self.delegator.close()
