"""Weaver: one session's bridge between background Updates and its micro-turns.

`offer(update, turn)` (asyncio side, at a turn boundary) hands each Update to the session's
`delegation.InterleaveScheduler` and returns the stream events it implies (tool call, progress,
errors). `decide(turn, user_state)` (worker side, once per turn, before the model step) returns the
text that enters the model's context this turn and the RESULT_SURFACED / interruption events. The
scheduler picks the moment (INTERRUPT now, WHEN_IDLE at the user's pause, SILENT as context only);
the model, which sees the text in its context slots, voices it. Every delegation settles once.

Each tracked delegation's `delegate` span (interplay.tracing, started by delegating.py) gets a
`surfaced` event each time one of its updates surfaces (mode, voiced or context only, redelivery,
age), `voicing_cut` when a barge-in or a preemption cuts it, and ends with a `settled` event when the
scheduler settles the delegation (voiced, context, failed, expired, cancelled; abandoned at close).

`event(...)` builds every stream Event the runtime sends: its facts go into the Event's typed fields
(session.proto documents which kind sets which), never into the free-form `attrs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from delegation import InterleaveScheduler, SchedulerConfig, SchedulerError, SurfacingMode, UserState
from interaction_actor.model.vad import tail_is_speech
from interplay import tracing
from interplay.log import get_logger
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import common_pb2 as cpb
from interplay.v1 import session_pb2 as spb

log = get_logger("interaction_actor.runtime.weave")



def event(kind: int, text: str = "", *, task_id: str = "", code: str = "", retryable: bool = False,
          mode: int = 0, attrs: dict[str, object] | None = None, **fields: object) -> spb.Event:
    """An output-stream Event; `code` adds an ErrorInfo. `fields` are the Event's typed fields
    (voiced=True, update=spb.EVENT_UPDATE_FINAL, seq=3, ...): a name the Event lacks raises ValueError,
    so a typo cannot slip into the wire as a silent string. `attrs`: free-form extras, as strings."""
    ev = spb.Event(kind=kind, text=text, task_id=task_id, mode=mode, **fields)
    if attrs:
        ev.attrs.update({k: str(v) for k, v in attrs.items()})
    if code:
        ev.error.CopyFrom(cpb.ErrorInfo(code=code, message=text, retryable=retryable))
    return ev


def event_update(kind: int) -> int:
    """The EventUpdate of a background UpdateKind (the same name after the prefix)."""
    return spb.EventUpdate.Value("EVENT_UPDATE_" + bpb.UpdateKind.Name(kind).removeprefix("UPDATE_KIND_"))


def user_state(audio: torch.Tensor | None, text: str, barge_in: bool) -> UserState:
    """INTERRUPTED on a barge-in control; SPEAKING when the window's tail holds speech or text was
    typed in it; SILENT otherwise. The energy VAD (vad.py): the scheduler only needs "is the user pausing"."""
    if barge_in:
        return UserState.INTERRUPTED
    if text or tail_is_speech(audio):
        return UserState.SPEAKING
    return UserState.SILENT


def _kind(upd: bpb.Update) -> str:
    return _kind_name(upd.kind)


def _kind_name(kind: int) -> str:
    return bpb.UpdateKind.Name(kind).removeprefix("UPDATE_KIND_").lower()


@dataclass
class Weaver:
    """Per-session interleaving state; not thread-safe (the loop calls it from one side at a time)."""

    config: SchedulerConfig = field(default_factory=SchedulerConfig)
    scheduler: InterleaveScheduler = field(init=False)

    spans: dict[str, tracing.Span] = field(default_factory=dict)  # task id → its `delegate` span, until it settles

    def __post_init__(self) -> None:
        self.scheduler = InterleaveScheduler(self.config)

    def track(self, task_id: str, turn: int, preferred_mode: int = cpb.SURFACING_MODE_WHEN_IDLE,
              span: tracing.Span | None = None) -> None:
        """A delegation started; `span` (its `delegate` span) is ended here when the delegation settles."""
        self.scheduler.track(task_id, turn, preferred_mode)
        if span is not None:
            self.spans[task_id] = span

    def cancel(self, task_id: str, turn: int) -> None:
        self.scheduler.cancel(task_id, turn, "cancelled_by_user")

    @staticmethod
    def for_the_model(upd: bpb.Update) -> bool:
        """Which updates the scheduler weaves into the conversation: results, errors, cancellations,
        and progress the background explicitly asks to surface (a timer's alert). Streamed partial
        text, tool traffic and acknowledgements are shown to the client but never enter the model's
        context slots: fragments there would be noise the model was not trained on."""
        if upd.kind in (bpb.UPDATE_KIND_FINAL, bpb.UPDATE_KIND_ERROR, bpb.UPDATE_KIND_CANCELLED):
            return True
        return upd.kind == bpb.UPDATE_KIND_PROGRESS and upd.surfacing != cpb.SURFACING_MODE_UNSPECIFIED

    def offer_all(self, updates: list[bpb.Update], turn: int) -> list[spb.Event]:
        """`offer` each update, with consecutive PARTIAL updates of a task merged into one event."""
        events: list[spb.Event] = []
        for upd in updates:
            prev = events[-1] if events else None
            if (upd.kind == bpb.UPDATE_KIND_PARTIAL and prev is not None and prev.task_id == upd.task_id
                    and prev.kind == spb.EVENT_KIND_PROGRESS and prev.update == spb.EVENT_UPDATE_PARTIAL):
                prev.text += upd.text
                prev.seq = upd.seq
                continue
            events.extend(self.offer(upd, turn))
        return events

    def offer(self, upd: bpb.Update, turn: int) -> list[spb.Event]:
        """Queue an Update for the scheduler; return the events the client sees for it right away."""
        if self.for_the_model(upd):
            try:
                self.scheduler.offer(upd, turn)
            except SchedulerError as exc:
                log.warning("update_refused", error=str(exc), kind=_kind(upd))
                return [event(spb.EVENT_KIND_ERROR, str(exc), task_id=upd.task_id, code="bad_update")]
        if upd.kind in (bpb.UPDATE_KIND_ERROR, bpb.UPDATE_KIND_CANCELLED):
            return [event(spb.EVENT_KIND_ERROR, upd.error.message or _kind(upd), task_id=upd.task_id,
                          code=upd.error.code or _kind(upd), retryable=upd.error.retryable, seq=upd.seq)]
        if upd.kind == bpb.UPDATE_KIND_TOOL_CALL:
            return [event(spb.EVENT_KIND_TOOL_CALL, upd.tool_call.name, task_id=upd.task_id,
                          tool_call=upd.tool_call, seq=upd.seq)]
        if upd.kind == bpb.UPDATE_KIND_FINAL:
            return [event(spb.EVENT_KIND_PROGRESS, "result received", task_id=upd.task_id,
                          update=spb.EVENT_UPDATE_FINAL, seq=upd.seq, progress=upd.progress)]
        text = upd.text or upd.tool_result.content
        return [event(spb.EVENT_KIND_PROGRESS, text, task_id=upd.task_id, update=event_update(upd.kind),
                      seq=upd.seq, progress=upd.progress)]

    def decide(self, turn: int, state: UserState, assistant_speaking: bool = False) -> tuple[str, list[spb.Event]]:
        """This turn's context text and the surfacing events (called once per turn, turns increasing);
        `assistant_speaking`: the session's previous turn was speech (WHEN_IDLE waits for it to end)."""
        try:
            d = self.scheduler.step(turn, state, assistant_speaking)
        except SchedulerError as exc:  # a turn replayed out of order: surface nothing, keep going
            log.warning("scheduler_step_refused", error=str(exc), turn=turn)
            return "", []
        events: list[spb.Event] = []
        voiced = {(s.task_id, s.seq) for s in d.voice}
        for s in d.context:
            if not s.text:  # ACCEPTED / QUEUED acknowledgements carry nothing to surface
                continue
            is_voiced = (s.task_id, s.seq) in voiced
            events.append(event(spb.EVENT_KIND_RESULT_SURFACED, s.text, task_id=s.task_id, mode=int(s.mode),
                                voiced=is_voiced, received_turn=s.received_turn, age_ms=int(s.age_ms),
                                update=event_update(s.kind), redelivery=s.redelivery))
            self._span_event(s.task_id, "surfaced", turn, {
                "interplay.update": _kind_name(s.kind), "interplay.mode": SurfacingMode(s.mode).name.lower(),
                "interplay.voiced": is_voiced, "interplay.received_turn": s.received_turn,
                "interplay.age_ms": int(s.age_ms), "interplay.redelivery": s.redelivery})
        for s in d.interrupted:
            events.append(event(spb.EVENT_KIND_BARGE_IN, f"voicing of {s.task_id} cut", task_id=s.task_id,
                                mode=int(SurfacingMode.WHEN_IDLE)))
            self._span_event(s.task_id, "voicing_cut", turn, {"interplay.update": _kind_name(s.kind)})
        for st in d.settled:
            self._settled(st.task_id, st.outcome, st.turn)
        return d.context_text(), events

    def close(self, turn: int) -> None:
        for st in self.scheduler.close(turn):
            self._settled(st.task_id, st.outcome, st.turn)
        for task_id in list(self.spans):  # tracked elsewhere and never settled here: end them too
            self._settled(task_id, "abandoned", turn)

    def _span_event(self, task_id: str, name: str, turn: int, attrs: dict[str, str | int | bool]) -> None:
        span = self.spans.get(task_id)
        if span is not None:
            span.add_event(name, {"interplay.turn": turn, **attrs})

    def _settled(self, task_id: str, outcome: str, turn: int) -> None:
        log.info("delegation_settled", task_id=task_id, outcome=outcome, turn=turn)
        span = self.spans.pop(task_id, None)
        if span is not None:
            span.add_event("settled", {"interplay.settled": outcome, "interplay.turn": turn})
            span.set_attribute("interplay.settled", outcome)
            span.end()


def marked_context(surfaced: list[spb.Event]) -> str:
    """The turn's surfaced lines for a backend that reads the context itself (the native model), each
    led by its surfacing-mode marker (model/text.py): voiced now (INTERRUPT, or WHEN_IDLE at a pause)
    -> CTX_NOW; SILENT -> CTX_SILENT (context only: never voiced); otherwise CTX_IDLE."""
    from delegation import SurfacingMode
    from interaction_actor.model import text as T

    lines = []
    for e in surfaced:
        if e.kind != spb.EVENT_KIND_RESULT_SURFACED or not e.text:
            continue
        mark = T.CTX_NOW if e.voiced else T.CTX_SILENT if e.mode == int(SurfacingMode.SILENT) else T.CTX_IDLE
        lines.append(mark + e.text.replace("\n", " "))
    return "\n".join(lines)

