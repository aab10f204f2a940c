"""Research harness: replay a scenario on a virtual clock through a policy and the scheduler.

`run_scenario(policy, scenario, seed)` simulates the user (scripted speech, silences, barge-ins),
the interaction model (its <delegate> token, fillers, its own answers), and the background side
(latency and failure drawn from the scenario's distributions), with the real ContextPackage
builder, the real policy and the real InterleaveScheduler. No sleeping: time is turn * turn_ms.
The simulated interaction model loads no checkpoint: on the turn after an utterance ends it emits
<delegate> (the utterance as the task) with probability `Utterance.delegate_p` (the scenario's
`model_p`, else a default per intent; a seeded draw) and puts that probability in
TurnState.confidence; its own replies are placeholders of a scripted length. Scores of policies
that read the token or the confidence are therefore scores against this stand-in.
Scores are deterministic for a seed; background draws depend on (seed, scenario, utterance),
never on the policy, so policies are compared on the same luck.
"""

from __future__ import annotations

import heapq
import math
import random
import zlib
from dataclasses import dataclass, field
from typing import Any

from delegation.package import PackageConfig, SurfacingMode, UserState, build_package
from delegation.policies import Delegation, TurnState, load_policy
from delegation.scenario import Scenario, Utterance
from delegation.scheduler import RESULTS, InterleaveScheduler, SchedulerConfig, Surfaced
from delegation.transcript import ConversationLog, LogConfig
from interplay.log import get_logger
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import common_pb2 as cpb

log = get_logger("delegation.harness")

EPOCH_MS = 1_700_000_000_000  # virtual Unix time of turn 0
MODES = {"": cpb.SURFACING_MODE_UNSPECIFIED, "interrupt": cpb.SURFACING_MODE_INTERRUPT,
         "when_idle": cpb.SURFACING_MODE_WHEN_IDLE, "silent": cpb.SURFACING_MODE_SILENT}
SCORE_KEYS = ("questions", "answered_rate", "latency_ms_mean", "latency_ms_p50", "latency_ms_p90", "dead_air_s",
              "voiced_over_user", "stale_results", "wasted_background_s", "cancelled_tasks", "delegations",
              "unnecessary_delegations", "redeliveries", "expired", "superseded", "unsettled",
              "package_bytes_mean")


@dataclass
class HarnessConfig:
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    ack_turns: int = 3               # "let me check" after delegating a question
    nonanswer_turns: int = 4         # "I can't tell you that" for a question nobody looked up
    reply_turns: int = 3             # "okay" to a cancel or steer
    drain_turns: int = 400           # after the tail, turns allowed for open delegations to settle
    reactive_wait_turns: int = 100   # an after_result utterance starts anyway after this long
    package: PackageConfig = field(default_factory=PackageConfig)


@dataclass
class RunResult:
    scenario: str
    policy: str
    seed: int
    scores: dict[str, float]
    latencies_ms: list[float]
    settlements: dict[str, str]
    turns: int
    trace: list[dict[str, Any]] = field(default_factory=list)
    surfaced: list[Surfaced] = field(default_factory=list)   # the scheduler's history: every surfacing


@dataclass
class _Task:
    task_id: str
    utt: int
    start_ms: int
    finish_ms: int
    failed: bool
    needed: bool
    cancelled_ms: int | None = None
    seq: int = 0
    outcome: str = ""


@dataclass
class _Question:
    utt: int
    end_ms: int
    task_id: str | None = None
    answered_ms: int | None = None
    closed: bool = False


def _seed(*parts: object) -> int:
    return zlib.crc32(":".join(map(str, parts)).encode())


def percentile(xs: list[float], q: float) -> float:
    """Linear-interpolated q-th percentile; nan for no data."""
    if not xs:
        return math.nan
    s = sorted(xs)
    k = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


class _Run:
    """One scenario × policy × seed simulation (state kept in one place, advanced turn by turn)."""

    def __init__(self, policy: Any, sc: Scenario, seed: int, cfg: HarnessConfig, trace: bool) -> None:
        self.policy, self.sc, self.seed, self.cfg, self.tracing = policy, sc, seed, cfg, trace
        self.ms = sc.turn_ms
        self.t = 0
        self.sched = InterleaveScheduler(cfg.scheduler, clock=lambda: float(EPOCH_MS + self.t * self.ms))
        self.log = ConversationLog(session_id=sc.name, config=LogConfig(turn_ms=sc.turn_ms))
        self.events: list[tuple[int, int, bpb.Update]] = []
        self.order = 0
        self.tasks: dict[str, _Task] = {}
        self.questions: dict[int, _Question] = {}
        self.delegations_of: dict[int, int] = {}
        self.trace: list[dict[str, Any]] = []
        self.own_until = 0          # the assistant voices its own output until this turn (exclusive)
        self.own_text = ""
        self.own_start = -1
        self.cur: tuple[int, int, int] | None = None  # (utterance index, start turn, end turn)
        self.next_idx = 0
        self.next_start: int | None = None
        self.wait_from: int | None = None   # for after_result: when waiting began
        self.voice_started_since: int | None = None
        self.last_end = -1
        self.m = dict(dead_air_ms=0, voiced_over_user=0, stale=0, unnecessary=0, package_bytes=0)
        self.latencies: list[float] = []

    # ---- the user ------------------------------------------------------------------------------
    def _place_next(self, prev_end: int) -> None:
        if self.next_idx >= len(self.sc.utterances):
            self.next_start = None
            return
        u = self.sc.utterances[self.next_idx]
        if u.after_result is not None:
            self.next_start, self.wait_from = None, prev_end + 1
        elif u.at is not None:
            self.next_start = max(u.at, prev_end + 1)
        else:
            self.next_start = prev_end + 1 + (5 if u.gap is None else u.gap)

    def _maybe_start_utterance(self) -> tuple[bool, Utterance | None]:
        if self.cur is not None or self.next_idx >= len(self.sc.utterances):
            return False, None
        u = self.sc.utterances[self.next_idx]
        if self.next_start is None and self.wait_from is not None:
            if self.voice_started_since is not None:
                self.next_start = max(self.t, self.voice_started_since + u.after_result)
            elif self.t - self.wait_from >= self.cfg.reactive_wait_turns:
                self.next_start = self.t
        if self.next_start is None or self.t < self.next_start:
            return False, None
        self.cur = (self.next_idx, self.t, self.t + u.duration - 1)
        self.next_idx += 1
        self.wait_from = self.voice_started_since = None
        return True, u

    # ---- the background side -------------------------------------------------------------------
    def _push(self, at_ms: float, task: _Task, kind: int, **kw: Any) -> None:
        bg = self.sc.background
        upd = bpb.Update(task_id=task.task_id, seq=task.seq, kind=kind, created_unix_ms=EPOCH_MS + int(at_ms), **kw)
        task.seq += 1
        if kind in (bpb.UPDATE_KIND_FINAL, bpb.UPDATE_KIND_ERROR):
            upd.ttl_ms, upd.surfacing = bg.result_ttl_ms, MODES[bg.result_mode]
        elif kind == bpb.UPDATE_KIND_PROGRESS:
            upd.ttl_ms, upd.surfacing = bg.progress_ttl_ms, MODES[bg.progress_mode]
        self.order += 1
        heapq.heappush(self.events, (int(at_ms), self.order, upd))

    def _schedule_work(self, task: _Task, from_ms: float) -> None:
        """(Re)write the task's future updates from `from_ms` to its finish."""
        self.events = [e for e in self.events if e[2].task_id != task.task_id or e[0] < from_ms]
        heapq.heapify(self.events)
        bg = self.sc.background
        if bg.progress_every_ms > 0:
            k = math.floor((from_ms - task.start_ms) / bg.progress_every_ms) + 1
            while task.start_ms + k * bg.progress_every_ms < task.finish_ms:
                at = task.start_ms + k * bg.progress_every_ms
                frac = (at - task.start_ms) / max(task.finish_ms - task.start_ms, 1)
                self._push(at, task, bpb.UPDATE_KIND_PROGRESS, text=f"still working on it, {round(frac * 100)}%",
                           progress=frac)
                k += 1
        u = self.sc.utterances[task.utt]
        if task.failed:
            self._push(task.finish_ms, task, bpb.UPDATE_KIND_ERROR,
                       error=cpb.ErrorInfo(code="tool_failed", message="the lookup failed", retryable=True))
        else:
            answer = f"Here is what I found about {u.say.rstrip('?.!')}: " + "x" * max(0, u.answer_chars - 40)
            self._push(task.finish_ms, task, bpb.UPDATE_KIND_FINAL, text=answer[:max(u.answer_chars, 1)], progress=1.0)

    def _delegate(self, d: Delegation, utt_idx: int, u: Utterance) -> None:
        nth = self.delegations_of.get(utt_idx, 0)
        self.delegations_of[utt_idx] = nth + 1
        task_id = f"{self.sc.name}-u{utt_idx}-d{nth}"
        now = self.t * self.ms
        pkg = build_package(d.task, task_id=task_id, session_id=self.sc.name, transcript=self.log,
                            priority=d.priority, origin_turn=self.t, created_unix_ms=EPOCH_MS + now,
                            preferred_mode=d.preferred_mode, config=self.cfg.package)
        self.m["package_bytes"] += pkg.ByteSize()
        rng = random.Random(_seed(self.seed, self.sc.name, "bg", utt_idx, nth))
        bg = self.sc.background
        latency = bg.latency.sample(rng)
        failed = rng.random() < bg.failure_rate
        q = self.questions.get(utt_idx)
        needed = q is not None and q.task_id is None
        task = _Task(task_id, utt_idx, now, int(now + latency), failed, needed)
        self.tasks[task_id] = task
        if needed:
            q.task_id = task_id  # type: ignore[union-attr]
        else:
            self.m["unnecessary"] += 1
        self.sched.track(task_id, self.t, d.preferred_mode)
        self._push(now + bg.accept_ms, task, bpb.UPDATE_KIND_ACCEPTED)
        self._schedule_work(task, now)
        self.log.event(f"delegated: {d.task}", self.t)
        self._note("delegate", task=task_id, needed=needed, latency_ms=round(latency), failed=failed)

    def _newest_open_task(self, running: bool = False) -> _Task | None:
        now = self.t * self.ms
        open_ = [t for t in self.tasks.values() if t.task_id not in self.sched.settlements
                 and (not running or t.finish_ms > now)]
        return max(open_, key=lambda t: t.start_ms) if open_ else None

    # ---- the interaction model -----------------------------------------------------------------
    def _respond(self, idx: int, u: Utterance) -> None:
        """The first turn after utterance idx ended: the model and the policy react."""
        now = self.t * self.ms
        emitted = random.Random(_seed(self.seed, self.sc.name, "model", idx)).random() < u.delegate_p
        target = self._newest_open_task(running=u.intent == "steer") if u.intent in ("cancel", "steer") else None
        if target is not None and u.intent == "cancel":
            self.sched.cancel(target.task_id, self.t, "user_cancelled")
            self.policy.on_cancel(target.task_id, "user_cancelled")
            target.cancelled_ms = now
            self.events = [e for e in self.events if e[2].task_id != target.task_id]
            heapq.heapify(self.events)
            self._push(now + self.sc.background.cancel_ack_ms, target, bpb.UPDATE_KIND_CANCELLED)
            self._say("okay, never mind", self.cfg.reply_turns)
        elif target is not None and u.intent == "steer":
            self.policy.on_steer(target.task_id, u.say)
            target.finish_ms = max(target.finish_ms, now) + int(self.sc.background.steer_extra_ms)
            self._push(now + 50, target, bpb.UPDATE_KIND_STEERED, text=u.say)
            self._schedule_work(target, now + 51)
            self._say("sure, I'll take that into account", self.cfg.reply_turns)
        state = TurnState(session_id=self.sc.name, turn=self.t, time_ms=now, user_state=UserState.SILENT,
                          utterance=u.say, utterance_final=True, controls=["delegate"] if emitted else [],
                          delegate_task=u.say if emitted else None, confidence=u.delegate_p,
                          active_tasks=self.sched.unsettled())
        d = self.policy.decide(state)
        if d is not None:
            self._delegate(d, idx, u)
        if u.intent == "background":
            if self.questions[idx].task_id is not None:
                self._say("let me check that", self.cfg.ack_turns)
            else:
                self.questions[idx].closed = True
                self._say("sorry, I can't tell you that", self.cfg.nonanswer_turns)
        elif u.intent == "chat" or target is None:
            turns = max(1, round(u.answer_chars / self.cfg.scheduler.chars_per_turn))
            self._say("(chat answer)", turns)

    def _say(self, text: str, turns: int) -> None:
        if self.own_until <= self.t:
            self.own_text, self.own_start = text, self.t
        self.own_until = max(self.own_until, self.t + turns)

    # ---- one turn ------------------------------------------------------------------------------
    def turn(self) -> None:
        t, now = self.t, self.t * self.ms
        v = self.sched.voicing
        assistant_before = self.own_until > t or (v is not None and v.surfaced_turn + v.voice_turns > t)
        started, u = self._maybe_start_utterance()
        barge = started and assistant_before
        if barge:
            self.own_until = t
        while self.events and self.events[0][0] <= now:
            at, _, upd = heapq.heappop(self.events)
            self.sched.offer(upd, at // self.ms)
        speaking = self.cur is not None and self.cur[1] <= t <= self.cur[2]
        state = UserState.INTERRUPTED if barge else (UserState.SPEAKING if speaking else UserState.SILENT)
        dec = self.sched.step(t, state)
        for s in dec.voice:
            if self.voice_started_since is None and self.wait_from is not None and s.kind in RESULTS:
                self.voice_started_since = t
            self.own_until = min(self.own_until, t)
            if speaking:
                self.m["voiced_over_user"] += 1
            task = self.tasks.get(s.task_id)
            if s.kind == bpb.UPDATE_KIND_FINAL and task is not None:
                if s.age_ms > self.sc.stale_after_ms:
                    self.m["stale"] += 1
                q = self.questions.get(task.utt)
                if q is not None and q.task_id == s.task_id and q.answered_ms is None:
                    q.answered_ms = now
                    self.latencies.append(float(now - q.end_ms))
            self._note("voice", task=s.task_id, kind=bpb.UpdateKind.Name(s.kind), redelivery=s.redelivery,
                       over_user=speaking)
        for s in dec.interrupted:
            self._note("interrupted", task=s.task_id)
        for st in dec.settled:
            if st.task_id in self.tasks:
                self.tasks[st.task_id].outcome = st.outcome
            self._note("settled", task=st.task_id, outcome=st.outcome)
            for q in self.questions.values():
                if q.task_id == st.task_id and st.outcome != "voiced":
                    q.closed = True
        voicing = dec.voicing is not None
        for s in dec.context:
            if not s.voiced and s.text:
                self.log.background(s.text, t)
        if started and u is not None and u.intent == "background":
            self.questions[self.next_idx - 1] = _Question(self.next_idx - 1, -1)
        # the end of an utterance: the model and the policy react on the next turn
        if self.cur is not None and t == self.cur[2] + 1:
            idx = self.cur[0]
            utt = self.sc.utterances[idx]
            self.cur = None
            self.last_end = t - 1
            if utt.intent == "background":
                self.questions[idx].end_ms = t * self.ms
            self._respond(idx, utt)
            self._place_next(t - 1)
        else:
            d = self.policy.decide(TurnState(session_id=self.sc.name, turn=t, time_ms=now, user_state=state,
                                             utterance=self.sc.utterances[self.cur[0]].say if speaking else "",
                                             active_tasks=self.sched.unsettled()))
            if d is not None and self.cur is not None:
                self._delegate(d, self.cur[0], self.sc.utterances[self.cur[0]])
        waiting = any(q.answered_ms is None and not q.closed and q.task_id is not None
                      for q in self.questions.values())
        if waiting and not speaking and not voicing and self.own_until <= t:
            self.m["dead_air_ms"] += self.ms
        # the transcript, as the interaction side records it
        self.log.record_turn(t, user_text=u.say if started and u is not None else "", user_speaking=speaking,
                             barge_in=barge, assistant_text=(dec.voice[0].text if dec.voice else
                                                             (self.own_text if self.own_start == t else "")),
                             assistant_speaking=voicing or self.own_until > t)
        self.t += 1

    def done(self) -> bool:
        if self.next_idx < len(self.sc.utterances) or self.cur is not None:
            return False
        return self.t > self.last_end + self.sc.tail_turns and not self.sched.unsettled() \
            and self.sched.voicing is None

    def _note(self, event: str, **kw: Any) -> None:
        if self.tracing:
            self.trace.append({"turn": self.t, "event": event, **kw})

    # ---- scores --------------------------------------------------------------------------------
    def finish(self) -> RunResult:
        self.sched.close(self.t)
        end_ms = self.t * self.ms
        wasted = 0.0
        for task in self.tasks.values():
            stop = min(task.finish_ms, task.cancelled_ms if task.cancelled_ms is not None else end_ms, end_ms)
            work = max(0, stop - task.start_ms)
            if task.outcome != "voiced" or not task.needed:
                wasted += work
        st = self.sched.stats
        n_q = sum(1 for u in self.sc.utterances if u.intent == "background")
        answered = sum(1 for q in self.questions.values() if q.task_id and
                       self.sched.settlements.get(q.task_id) and self.sched.settlements[q.task_id].outcome == "voiced")
        n_d = len(self.tasks)
        scores = {
            "questions": n_q,
            "answered_rate": answered / n_q if n_q else math.nan,
            "latency_ms_mean": sum(self.latencies) / len(self.latencies) if self.latencies else math.nan,
            "latency_ms_p50": percentile(self.latencies, 50),
            "latency_ms_p90": percentile(self.latencies, 90),
            "dead_air_s": self.m["dead_air_ms"] / 1000.0,
            "voiced_over_user": self.m["voiced_over_user"],
            "stale_results": self.m["stale"],
            "wasted_background_s": wasted / 1000.0,
            "cancelled_tasks": st["settled_cancelled"],
            "delegations": n_d,
            "unnecessary_delegations": self.m["unnecessary"],
            "redeliveries": st["redelivery_queued"],
            "expired": st["dropped_expired"],
            "superseded": st["dropped_superseded"],
            "unsettled": sum(1 for k in self.tasks if k not in self.sched.settlements),
            "package_bytes_mean": self.m["package_bytes"] / n_d if n_d else 0.0,
        }
        return RunResult(scenario=self.sc.name, policy=str(getattr(self.policy, "name", type(self.policy).__name__)),
                         seed=self.seed, scores=scores, latencies_ms=list(self.latencies),
                         settlements={k: v.outcome for k, v in self.sched.settlements.items()},
                         turns=self.t, trace=self.trace, surfaced=list(self.sched.history))


def run_scenario(policy: Any, scenario: Scenario, seed: int = 0, config: HarnessConfig | None = None,
                 trace: bool = False) -> RunResult:
    """Replay `scenario` through `policy` (name or object) and the scheduler; deterministic for a seed."""
    pol = load_policy(policy)
    if hasattr(pol, "reset"):
        pol.reset()
    cfg = config or HarnessConfig()
    run = _Run(pol, scenario, seed, cfg, trace)
    run._place_next(-1)
    limit = sum(u.duration + (u.at or 0) + (u.gap or 5) + (u.after_result or 0) + cfg.reactive_wait_turns
                for u in scenario.utterances) + scenario.tail_turns + cfg.drain_turns
    while not run.done() and run.t < limit:
        run.turn()
    res = run.finish()
    log.debug("scenario_run", scenario=scenario.name, policy=res.policy, seed=seed, turns=res.turns)
    return res


__all__ = ["EPOCH_MS", "SCORE_KEYS", "HarnessConfig", "RunResult", "SurfacingMode", "percentile", "run_scenario"]
