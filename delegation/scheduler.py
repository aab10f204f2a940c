"""InterleaveScheduler: decides at each turn boundary which background updates enter the model's
context and which are voiced, and settles every delegation exactly once.

`offer(update, turn)` never blocks; `step(turn, user_state)` returns a `Decision`. Modes: INTERRUPT
voices at the next boundary (even over the user), WHEN_IDLE at the user's next pause, SILENT
enters context only. A mode is chosen as: config override > the update's suggestion > the
delegation's preferred mode > the config default. Also: expiry (ttl), supersede-by-newer progress, redelivery of a result the
user barged in over, and a drop rule for cancelled tasks. Rules in detail: see `step`.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from delegation.package import SurfacingMode, UserState
from interplay.log import get_logger
from interplay.v1 import background_pb2 as bpb

log = get_logger("delegation.scheduler")

TERMINAL = frozenset({bpb.UPDATE_KIND_FINAL, bpb.UPDATE_KIND_ERROR, bpb.UPDATE_KIND_CANCELLED})
RESULTS = frozenset({bpb.UPDATE_KIND_FINAL, bpb.UPDATE_KIND_ERROR})
PROGRESS = frozenset({bpb.UPDATE_KIND_PROGRESS, bpb.UPDATE_KIND_PARTIAL})


class SchedulerError(ValueError):
    """An update or a call the scheduler cannot accept (missing task id, turns out of order)."""


@dataclass
class SchedulerConfig:
    chars_per_turn: float = 3.0            # speech rate used to estimate how long a voicing lasts
    min_voice_turns: int = 1
    max_voice_turns: int = 60
    idle_turns: int = 1                    # consecutive silent user turns that make a pause
    # WHEN_IDLE also waits for the assistant's own speech to end, but for at most this many consecutive
    # speaking turns (a model that never stops does not hold results forever); 0: never waits for it
    assistant_hold_turns: int = 10
    max_redeliveries: int = 2              # beyond this an interrupted result is surfaced silently
    result_mode: SurfacingMode | None = None   # force the mode of FINAL/ERROR (the scheduler's last word)
    progress_mode: SurfacingMode | None = None  # force the mode of PROGRESS/PARTIAL
    default_result_mode: SurfacingMode = SurfacingMode.WHEN_IDLE
    default_progress_mode: SurfacingMode = SurfacingMode.SILENT
    max_records: int = 1024  # history, drops and settled tasks kept per session (oldest forgotten first)


@dataclass
class Surfaced:
    """One update as it surfaced (or was interrupted) at a turn."""

    task_id: str
    seq: int
    kind: int                # interplay.v1.UpdateKind
    mode: SurfacingMode
    text: str
    received_turn: int
    surfaced_turn: int
    voiced: bool
    voice_turns: int = 0
    redelivery: int = 0      # 0 for the first delivery
    age_ms: int = 0          # clock time since the update was created, at surfacing


@dataclass
class Dropped:
    task_id: str
    seq: int
    kind: int
    reason: str              # superseded | expired | cancelled | settled | duplicate | interrupted | preempted
    turn: int


@dataclass
class Settlement:
    """How and when a delegation ended; recorded exactly once per task."""

    task_id: str
    outcome: str             # voiced | context | failed | expired | cancelled | abandoned
    turn: int


@dataclass
class Decision:
    """What the scheduler decided at one turn boundary."""

    turn: int
    context: list[Surfaced] = field(default_factory=list)    # enters the model's context this turn
    voice: list[Surfaced] = field(default_factory=list)      # starts being voiced this turn (subset of context)
    voicing: Surfaced | None = None                          # being voiced during this turn, if any
    interrupted: list[Surfaced] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    settled: list[Settlement] = field(default_factory=list)

    def context_text(self) -> str:
        return "\n".join(s.text for s in self.context if s.text)


@dataclass
class _Item:
    update: bpb.Update
    received_turn: int
    created_ms: float
    mode: SurfacingMode
    state: str = "pending"   # pending | voicing | done | dropped
    voice_start: int = -1
    voice_turns: int = 0
    redeliveries: int = 0


@dataclass
class _Task:
    task_id: str
    turn: int
    preferred_mode: SurfacingMode | None = None
    cancelled: bool = False
    last_seq: int = -1
    result_seen: bool = False


def _text(u: bpb.Update) -> str:
    if u.kind == bpb.UPDATE_KIND_ERROR:
        return f"The task failed: {u.error.message or u.error.code or 'unknown error'}"
    if u.text:
        return u.text
    if u.kind == bpb.UPDATE_KIND_TOOL_RESULT:
        return u.tool_result.content
    if u.kind == bpb.UPDATE_KIND_TOOL_CALL:
        return f"calling {u.tool_call.name}"
    if u.kind == bpb.UPDATE_KIND_PROGRESS and u.progress:
        return f"{round(u.progress * 100)}% done"
    return ""


class InterleaveScheduler:
    """Per-session interleaving of background updates into the live conversation."""

    def __init__(self, config: SchedulerConfig | None = None, clock: Callable[[], float] | None = None) -> None:
        self.config = config or SchedulerConfig()
        self.clock = clock or (lambda: time.time() * 1000.0)
        self.tasks: dict[str, _Task] = {}
        self.settlements: dict[str, Settlement] = {}
        # bounded: a session that runs for hours keeps the newest `max_records` of each
        self.history: deque[Surfaced] = deque(maxlen=self.config.max_records)
        self.dropped: deque[Dropped] = deque(maxlen=self.config.max_records)
        self.stats: Counter[str] = Counter()
        self._items: list[_Item] = []
        self._voicing: _Item | None = None
        self._last_turn = -1
        self._silent_run = 0
        self._speaking_run = 0  # consecutive turns the assistant spoke (step's assistant_speaking)
        self._pending_drops: list[Dropped] = []
        self._pending_settled: list[Settlement] = []

    # ---- inputs --------------------------------------------------------------------------------
    def track(self, task_id: str, turn: int, preferred_mode: SurfacingMode | int | None = None) -> None:
        """Register a delegation the moment it starts (so that it is settled even if never answered)."""
        if not task_id:
            raise SchedulerError("a delegation needs a task id")
        if task_id not in self.tasks:
            mode = SurfacingMode(preferred_mode) if preferred_mode else None
            self.tasks[task_id] = _Task(task_id, turn, mode)

    def offer(self, update: bpb.Update, turn: int) -> None:
        """An update arrived during `turn`. Never blocks; it is considered from `step(turn)` on."""
        if not update.task_id:
            raise SchedulerError("an update without task_id cannot be scheduled")
        self.track(update.task_id, turn)
        task = self.tasks[update.task_id]
        self.stats["offered"] += 1
        if task.cancelled or update.task_id in self.settlements:
            reason = "cancelled" if task.cancelled else "settled"
            return self._drop_new(update, reason, turn)
        if update.kind == bpb.UPDATE_KIND_CANCELLED:
            return self._cancel(task, turn, "cancelled_by_background", update)
        if any(i.update.task_id == update.task_id and i.update.seq == update.seq and i.state != "dropped"
               for i in self._items):
            return self._drop_new(update, "duplicate", turn)
        if update.kind in PROGRESS:
            if task.result_seen or update.seq < task.last_seq:
                return self._drop_new(update, "superseded", turn)
            for i in self._items:  # a newer progress supersedes every older pending one of its task
                if i.state == "pending" and i.update.task_id == update.task_id and i.update.kind in PROGRESS:
                    self._drop(i, "superseded", turn)
        elif update.kind in RESULTS:
            if task.result_seen:
                return self._drop_new(update, "duplicate", turn)
            task.result_seen = True
            for i in self._items:  # the result supersedes all pending progress of its task
                if i.state == "pending" and i.update.task_id == update.task_id and i.update.kind in PROGRESS:
                    self._drop(i, "superseded", turn)
        task.last_seq = max(task.last_seq, update.seq)
        created = float(update.created_unix_ms) if update.created_unix_ms else self.clock()
        self._items.append(_Item(update, turn, created, self._mode(update, task)))

    def cancel(self, task_id: str, turn: int, reason: str = "cancelled") -> Settlement | None:
        """The interaction side cancelled `task_id`: drop its updates now and later; settle it."""
        self.track(task_id, turn)
        return self._cancel(self.tasks[task_id], turn, reason, None)

    # ---- the boundary --------------------------------------------------------------------------
    def step(self, turn: int, user_state: UserState | int, assistant_speaking: bool = False) -> Decision:
        """Decide what enters context and what is voiced in `turn`. `assistant_speaking`: the assistant's
        own output of the turn before was speech (its text or audio), as far as the caller knows.

        Order of the rules at each boundary:
          1. A voicing whose estimated length has passed has completed; a completed result
             settles as "voiced" ("failed" for an ERROR). Otherwise, a voicing the user barged in
             over (user_state INTERRUPTED) stops: a result goes back to the queue as WHEN_IDLE
             (redelivered at the next pause; after `max_redeliveries` it only enters context);
             interrupted progress is dropped.
          2. Pending updates whose ttl has passed are dropped ("expired"); an expired result
             settles as "expired". (An update already being voiced is not cut by its ttl.)
          3. Pending SILENT updates enter context; a SILENT result settles as "context"/"failed".
          4. A pending INTERRUPT update preempts a voicing that is not itself INTERRUPT (the cut
             voicing is treated as in rule 1: a result is redelivered at the next pause).
          5. If nothing is being voiced, one pending update starts: the oldest INTERRUPT one (even
             while the user speaks), else the oldest WHEN_IDLE one once the user has been silent
             for `idle_turns` turns and the assistant is not speaking (for up to
             `assistant_hold_turns` turns of its speech; a pause is both sides quiet:
             a WHEN_IDLE result that surfaced while the native model said "red!" in the demo came
             out garbled with it). One voicing at a time; two INTERRUPT updates queue.
        Only updates offered with `received_turn <= turn` are considered.
        """
        if turn <= self._last_turn:
            raise SchedulerError(f"step({turn}) after step({self._last_turn}): turns must increase")
        self._last_turn = turn
        state = UserState(user_state)
        self._silent_run = self._silent_run + 1 if state == UserState.SILENT else 0
        self._speaking_run = self._speaking_run + 1 if assistant_speaking else 0
        assistant_busy = 0 < self._speaking_run <= self.config.assistant_hold_turns
        d = Decision(turn=turn)
        now = self.clock()
        v = self._voicing
        if v is not None and turn >= v.voice_start + v.voice_turns:  # it ended before this turn began
            v.state = "done"
            self._voicing = None
            if v.update.kind in RESULTS:
                self._settle(v.update.task_id, "voiced" if v.update.kind == bpb.UPDATE_KIND_FINAL
                             else "failed", turn)
        elif v is not None and state == UserState.INTERRUPTED:
            self._cut(v, turn, d, "interrupted")
        ready = [i for i in self._items if i.state == "pending" and i.received_turn <= turn]
        for i in ready:
            ttl = i.update.ttl_ms
            if ttl > 0 and now > i.created_ms + ttl:
                self._drop(i, "expired", turn)
                if i.update.kind in RESULTS:
                    self._settle(i.update.task_id, "expired", turn)
        ready = [i for i in ready if i.state == "pending"]
        for i in ready:
            if i.mode == SurfacingMode.SILENT:
                i.state = "done"
                d.context.append(self._record(i, turn, voiced=False, now=now))
                if i.update.kind in RESULTS:
                    self._settle(i.update.task_id, "context" if i.update.kind == bpb.UPDATE_KIND_FINAL
                                 else "failed", turn)
        voiceable = [i for i in ready if i.state == "pending"]
        urgent = [i for i in voiceable if i.mode == SurfacingMode.INTERRUPT]
        if urgent and self._voicing is not None and self._voicing.mode != SurfacingMode.INTERRUPT:
            self._cut(self._voicing, turn, d, "preempted")
        if self._voicing is None:
            pick = urgent[0] if urgent else None
            if pick is None and self._silent_run >= self.config.idle_turns and not assistant_busy:
                idle = [i for i in voiceable if i.mode == SurfacingMode.WHEN_IDLE]
                pick = idle[0] if idle else None
            if pick is not None:
                text = _text(pick.update)
                pick.state, pick.voice_start = "voicing", turn
                pick.voice_turns = max(self.config.min_voice_turns, min(
                    self.config.max_voice_turns, round(len(text) / max(self.config.chars_per_turn, 1e-6))))
                self._voicing = pick
                s = self._record(pick, turn, voiced=True, now=now)
                d.context.append(s)
                d.voice.append(s)
        if self._voicing is not None:
            d.voicing = self._surfaced(self._voicing, self._voicing.voice_start, True, now)
        d.dropped, self._pending_drops = self._pending_drops, []
        d.settled, self._pending_settled = self._pending_settled, []
        self._items = [i for i in self._items if i.state in ("pending", "voicing")]
        return d

    def close(self, turn: int) -> list[Settlement]:
        """The session ends: every delegation not yet settled settles as "abandoned"."""
        for i in self._items:
            if i.state in ("pending", "voicing"):
                self._drop(i, "abandoned", turn)
        self._items, self._voicing = [], None
        for task_id in self.tasks:
            self._settle(task_id, "abandoned", turn)
        out, self._pending_settled = self._pending_settled, []
        self._pending_drops = []
        return out

    # ---- reading -------------------------------------------------------------------------------
    @property
    def voicing(self) -> Surfaced | None:
        v = self._voicing
        return None if v is None else self._surfaced(v, v.voice_start, True, self.clock())

    def pending(self) -> int:
        return sum(1 for i in self._items if i.state == "pending")

    def unsettled(self) -> list[str]:
        return [t for t in self.tasks if t not in self.settlements]

    # ---- internals -----------------------------------------------------------------------------
    def _cut(self, v: _Item, turn: int, d: Decision, why: str) -> None:
        """Stop voicing v (a barge-in or a preemption): a result is requeued, progress is dropped."""
        d.interrupted.append(self._record(v, turn, voiced=True, store=False))
        self.stats[why] += 1
        self._voicing = None
        if v.update.kind in RESULTS and v.redeliveries < self.config.max_redeliveries:
            v.state, v.mode = "pending", SurfacingMode.WHEN_IDLE
            v.redeliveries += 1
            self.stats["redelivery_queued"] += 1
        elif v.update.kind in RESULTS:
            v.state, v.mode = "pending", SurfacingMode.SILENT
            self.stats["redelivery_exhausted"] += 1
        else:
            self._drop(v, why, turn)

    def _mode(self, u: bpb.Update, task: _Task) -> SurfacingMode:
        c = self.config
        if u.kind in RESULTS:
            return SurfacingMode(c.result_mode or u.surfacing or task.preferred_mode or c.default_result_mode)
        if u.kind in PROGRESS:
            return SurfacingMode(c.progress_mode or u.surfacing or c.default_progress_mode)
        return SurfacingMode.SILENT  # accepted, queued, tool calls/results, steered: context only

    def _surfaced(self, i: _Item, turn: int, voiced: bool, now: float) -> Surfaced:
        return Surfaced(task_id=i.update.task_id, seq=i.update.seq, kind=i.update.kind, mode=i.mode,
                        text=_text(i.update), received_turn=i.received_turn, surfaced_turn=turn, voiced=voiced,
                        voice_turns=i.voice_turns if voiced else 0, redelivery=i.redeliveries,
                        age_ms=int(now - i.created_ms))

    def _record(self, i: _Item, turn: int, voiced: bool, now: float | None = None, store: bool = True) -> Surfaced:
        s = self._surfaced(i, turn, voiced, self.clock() if now is None else now)
        if store:
            self.history.append(s)
            self.stats["voiced" if voiced else "context"] += 1
            log.debug("update_surfaced", task_id=s.task_id, seq=s.seq, turn=turn, voiced=voiced, mode=s.mode.name)
        return s

    def _drop(self, i: _Item, reason: str, turn: int) -> None:
        i.state = "dropped"
        self._note_drop(Dropped(i.update.task_id, i.update.seq, i.update.kind, reason, turn))

    def _drop_new(self, u: bpb.Update, reason: str, turn: int) -> None:
        self._note_drop(Dropped(u.task_id, u.seq, u.kind, reason, turn))

    def _note_drop(self, dr: Dropped) -> None:
        self.dropped.append(dr)
        self._pending_drops.append(dr)
        self.stats[f"dropped_{dr.reason}"] += 1

    def _cancel(self, task: _Task, turn: int, reason: str, update: bpb.Update | None) -> Settlement | None:
        task.cancelled = True
        for i in self._items:
            if i.update.task_id == task.task_id and i.state in ("pending", "voicing"):
                if i is self._voicing:
                    self._voicing = None
                self._drop(i, "cancelled", turn)
        if update is not None:
            self._drop_new(update, "cancelled", turn)
        return self._settle(task.task_id, "cancelled", turn)

    def _settle(self, task_id: str, outcome: str, turn: int) -> Settlement | None:
        if task_id in self.settlements:
            self.stats["settle_again_refused"] += 1
            return None
        s = Settlement(task_id, outcome, turn)
        self.settlements[task_id] = s
        while len(self.settlements) > self.config.max_records:  # forget the oldest settled task
            old = next(iter(self.settlements))
            del self.settlements[old]
            self.tasks.pop(old, None)
        self._pending_settled.append(s)
        self.stats[f"settled_{outcome}"] += 1
        log.debug("delegation_settled", task_id=task_id, outcome=outcome, turn=turn)
        return s
