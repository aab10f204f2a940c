"""Replay: sessions in the replay format through the real stack, on a virtual clock that never sleeps.

Given an interaction backend (the native model, or any InteractionBackend), sessions (format.py) and
optionally the policies to run them under, `replay(...)` builds ONE real TurnLoop — the same code
path a live session takes: WindowBuilder, Weaver/InterleaveScheduler, `backend.step`, the policy,
Delegating — and drives it with:
  * `VirtualClock`: the TurnClock's grid, but `wait()` jumps to the next slot instead of sleeping;
    before each slot it lets the asyncio loop run a few rounds (steer replies) and feeds the turn;
  * the feed: each session's recorded raw inputs go through `TurnLoop.submit` before the turn that
    took them live; recorded transcripts reach `Hearing` (`ReplayHearing`), a stop request that
    reached the live session before a turn's emit (its chunk ended the session) becomes
    `stop_session` before that turn, a delegation the recording started directly (not by a policy)
    is started; a session whose recording ends without a stop is closed after its last turn;
  * the background: `StandIn` (default) replays, for the k-th delegation of a session, the updates
    the k-th recorded delegation received, at the same turn offsets from its start (task ids are
    rewritten), and for a delegation the recording lacks, the session header's `background` plan
    (ACCEPTED, then the request's answer after its latency); or `background=address`, a real
    Background service (the local engine and tools): its latency is wall time, so the clock then
    paces each turn to its real length by default (`pace`; 0: as fast as the CPU, and a result
    arrives after fewer turns); its results are its own, so outputs may differ from the first one on.
Returns one `ReplayRun` per (session, policy): the per-turn records the loop's own Recorder made.
With the stand-in, the recording's own policy and the same backend, a replay reproduces the live
session turn by turn (text, controls, delegate task and confidence, surfaced events, audio bits):
`compare` says where two runs differ. The scheduler's clock follows the virtual turns, so `age_ms`
differs from live by the live loop's lateness; `compare` leaves it (and task ids) out.
It never sleeps and never opens a network port (unless given a background address).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from interaction_actor.ears.contract import Heard
from interaction_actor.runtime.backend import NativeBackend, load_backend
from interaction_actor.runtime.clock import TurnClock
from interaction_actor.runtime.delegator import Delegator
from interaction_actor.runtime.hearing import Hearing
from interaction_actor.runtime.loop import LoopConfig, TurnLoop
from interplay.log import get_logger
from interplay.replay.format import ReplaySession, decode_item, event_of, update_of
from interplay.replay.recorder import Recorder
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import session_pb2 as spb

log = get_logger("interplay.replay.player")

STARTED = spb.EventKind.Name(spb.EVENT_KIND_DELEGATION_STARTED)
ENDED = spb.EventKind.Name(spb.EVENT_KIND_SESSION_ENDED)
VOLATILE = ("task_id", "age_ms")  # left out of comparisons: ids differ per run, ages follow wall time


class VirtualClock(TurnClock):
    """A TurnClock whose time is the grid itself: `wait` starts the next slot at once (no sleep, never
    late, never missed) after `yields` rounds of the asyncio loop and `before_turn(slot)`."""

    def __init__(self, period_s: float, before_turn: Callable[[int], None] | None = None, yields: int = 5,
                 pace: float = 0.0) -> None:
        self._t = 0.0
        super().__init__(period_s, now=lambda: self._t, origin=0.0)
        self.before_turn, self.yields, self.pace = before_turn, yields, pace
        self._wall: float | None = None

    async def wait(self):
        for _ in range(self.yields):
            await asyncio.sleep(0)
        if self.pace > 0:  # a real background's latency is wall time: give each turn `pace` x its length
            now = time.monotonic()
            due = now if self._wall is None else self._wall + self.pace * self.period
            await asyncio.sleep(max(0.0, due - now))
            self._wall = max(due, now)
        self._t = self.deadline(self.next_slot)
        if self.before_turn is not None:
            self.before_turn(self.next_slot)
        return self.begin()


class ReplayHearing(Hearing):
    """The loop's Hearing with no ears: recorded transcripts are put where the ears' results go."""

    def inject(self, session_id: str, events: list[dict[str, Any]]) -> None:
        for d in events:
            ev = event_of(d)
            if ev.kind == spb.EVENT_KIND_ERROR:
                m = re.search(r"failed \(([^)]*)\)", ev.text)
                h = Heard(session_id, "", True, 0, 0, error=m.group(1) if m else "transcriber_failed")
            else:
                h = Heard(session_id, ev.text, ev.update == spb.EVENT_UPDATE_FINAL, int(ev.start_turn),
                          int(ev.end_turn), confidence=ev.confidence, low_confidence=ev.low_confidence,
                          language=ev.language or "en")
            self._pending.setdefault(session_id, deque()).append(h)


@dataclass
class RecordedDelegation:
    task: str
    origin_turn: int
    policy: str
    updates: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (turn offset, Update as JSON)
    steers: list[bool] = field(default_factory=list)


def recorded_delegations(session: ReplaySession) -> list[RecordedDelegation]:
    """The recording's delegations in the order they started, each with the updates it received."""
    out: list[RecordedDelegation] = []
    by_id: dict[str, RecordedDelegation] = {}
    for t in session.turns:
        for e in (t.get("out") or {}).get("events", []):
            if e.get("kind") == STARTED:
                d = RecordedDelegation(e.get("text", ""), int(e.get("origin_turn", 0)), e.get("policy", ""))
                by_id[e.get("task_id", "")] = d
                out.append(d)
            elif e.get("update") in ("EVENT_UPDATE_STEERED", "EVENT_UPDATE_STEER_REFUSED") and e.get("task_id") in by_id:
                by_id[e["task_id"]].steers.append(e["update"] == "EVENT_UPDATE_STEERED")
    for t in session.turns:  # updates can arrive at the boundary of the turn whose chunk said it started
        for u in t.get("updates", []):
            d = by_id.get(u.get("task_id", ""))
            if d is not None:
                d.updates.append((int(t["turn"]) - d.origin_turn, u))
    return out


def request_for(session: ReplaySession, turn: int) -> tuple[int, dict[str, Any]] | None:
    """The newest request (index, request) the user made at or before `turn`."""
    best = None
    for i, r in enumerate(session.requests):
        if int(r["turn"]) <= turn:
            best = (i, r)
    return best


def planned_updates(session: ReplaySession, task: str, turn: int) -> list[tuple[int, dict[str, Any]]]:
    """The header's background plan for a delegation nothing was recorded for: ACCEPTED after
    `accept_turns`, then the answer of the request it serves (or a note that there was nothing to
    look up) after that request's latency, or an ERROR when the plan says the request's lookup fails."""
    bg = session.header.get("background", {})
    accept = int(bg.get("accept_turns", 1))
    found = request_for(session, turn)
    i, req = found if found is not None else (-1, {})
    lat = bg.get("latency_turns", [])
    latency = int(lat[i]) if 0 <= i < len(lat) else int(bg.get("default_latency_turns", 10))
    failed = bool(bg.get("failure", [])[i]) if 0 <= i < len(bg.get("failure", [])) else False
    ups = [(accept, {"kind": "UPDATE_KIND_ACCEPTED"})]
    if failed:
        ups.append((max(latency, accept), {"kind": "UPDATE_KIND_ERROR",
                                           "error": {"code": "tool_failed", "message": "the lookup failed"}}))
    else:
        answer = req.get("answer") if req.get("needs_background") else ""
        ups.append((max(latency, accept), {"kind": "UPDATE_KIND_FINAL", "progress": 1.0,
                                           "text": answer or f"nothing to look up for: {task}"}))
    return ups


@dataclass
class _Started:
    task_id: str
    turn: int
    plan: list[tuple[int, dict[str, Any]]]
    steers: list[bool]
    inbox: Any
    seq: int = 0


class StandIn:
    """A Delegator-shaped background that replays recorded (or planned) updates on the virtual clock.
    The driver calls `due(session_id, turn)` before each turn; updates land in the delegation's inbox."""

    def __init__(self, budget_bytes: int | None = 16_384) -> None:
        self.budget_bytes = budget_bytes
        self.metrics = None
        self.sessions: dict[str, ReplaySession] = {}
        self.recorded: dict[str, list[RecordedDelegation]] = {}
        self.started: dict[str, list[_Started]] = {}
        self.tasks: dict[str, _Started] = {}

    def add(self, sid: str, session: ReplaySession) -> None:
        self.sessions[sid] = session
        self.recorded[sid] = recorded_delegations(session)
        self.started[sid] = []

    def start(self, req, inbox) -> str:
        sid = req.session_id
        k = len(self.started[sid])
        task_id = f"replay-{sid}-{k}"
        rec = self.recorded[sid]
        if k < len(rec):
            plan, steers = [(o, dict(u)) for o, u in rec[k].updates], list(rec[k].steers)
        else:
            plan, steers = planned_updates(self.sessions[sid], req.task, req.turn), []
        st = _Started(task_id, req.turn, sorted(plan, key=lambda x: x[0]), steers, inbox)
        self.started[sid].append(st)
        self.tasks[task_id] = st
        return task_id

    def due(self, sid: str, turn: int) -> None:
        for st in self.started.get(sid, []):
            while st.plan and st.turn + st.plan[0][0] <= turn:
                _, u = st.plan.pop(0)
                upd = update_of({k: v for k, v in u.items() if k != "task_id"})
                upd.task_id = st.task_id
                if "seq" not in u and upd.kind != bpb.UPDATE_KIND_ACCEPTED:  # a planned update: numbered here
                    upd.seq = st.seq
                st.seq += 1
                st.inbox.append(upd)

    async def steer(self, task_id: str, text: str) -> bool:
        st = self.tasks.get(task_id)
        if st is None:
            return False
        return st.steers.pop(0) if st.steers else bool(st.plan)

    def cancel_all(self, task_ids: list[str]) -> None:
        for k in task_ids:
            st = self.tasks.get(k)
            if st is not None:
                st.plan.clear()

    async def close(self) -> None:
        return None


class RecordedIds:
    """The backend, opening each replayed session's state under its recorded id: the native model seeds
    its sampling noise from the session id, so the replay's bits depend on it (session.session_seed)."""

    def __init__(self, backend: object) -> None:
        self.inner = backend
        self.ids: dict[str, str] = {}  # the replay's session id -> the recorded one
        self.capabilities = backend.capabilities
        self.model = getattr(backend, "model", None)

    def open(self, session_id: str) -> Any:
        return self.inner.open(self.ids.get(session_id, session_id))

    def step(self, states: list[Any], inputs: list[Any]) -> list[Any]:
        return self.inner.step(states, inputs)

    def close(self, state: Any) -> None:
        self.inner.close(state)


@dataclass
class ReplayRun:
    session_id: str  # the recorded session's id
    policy: str  # the label of the policy it ran under
    turns: list[dict[str, Any]]  # the replay's own records (format.py's turn lines, with `out`)
    session: ReplaySession  # what was replayed
    wall_s: float = 0.0  # wall time of the replay this run was part of


@dataclass
class _Feed:
    run_id: str
    session: ReplaySession
    direct: dict[int, list[str]]  # turn -> tasks the recording delegated directly at that turn


def _policy_of(session: ReplaySession) -> object:
    p = session.header.get("policy") or "model_token"
    return p if isinstance(p, (str, dict)) else "model_token"


def _runs(sessions: list[ReplaySession], policies: Mapping[str, object] | None) -> list[tuple[ReplaySession, str, object]]:
    if policies is None:
        out = []
        for s in sessions:
            p = _policy_of(s)
            out.append((s, p if isinstance(p, str) else str(p.get("label") or p.get("policy")), p))
        return out
    return [(s, label, spec) for s in sessions for label, spec in policies.items()]


async def replay_async(backend: object, sessions: Iterable[ReplaySession], policies: Mapping[str, object] | None = None,
                       *, background: str | None = None, torch_threads: int = 1, yields: int = 5,
                       pace: float | None = None) -> list[ReplayRun]:
    """The replay on the running asyncio loop (see the module docstring); `policies`: label → spec
    (None: each session under the policy its header names). `pace`: each virtual turn lasts at least
    this many turn lengths of wall time (None: 0 with the stand-in, as fast as the CPU allows; 1.0 with
    a real background, whose latency is wall time)."""
    sessions = list(sessions)
    runs = _runs(sessions, policies)
    if not runs:
        return []
    turn_ms = sessions[0].turn_ms
    if any(s.turn_ms != turn_ms for s in sessions):
        raise ValueError("replay one turn length at a time (sessions differ in turn_ms)")
    standin = StandIn() if background is None else None
    feeds: dict[str, _Feed] = {}
    hearing = ReplayHearing(None, turn_ms=turn_ms)
    loop: TurnLoop | None = None

    def before_turn(slot: int) -> None:
        for rid, feed in feeds.items():
            live = loop.sessions.get(rid)
            if live is None:
                continue
            t = live.turn
            if t >= len(feed.session.turns):
                loop.close(rid)
                continue
            rec = feed.session.turns[t]
            for task in feed.direct.get(t, []):
                loop.start_delegation(rid, task)
            if standin is not None:
                standin.due(rid, t)
            ended = [e for e in (rec.get("out") or {}).get("events", []) if e.get("kind") == ENDED]
            if (rec.get("stopping") or ended) and not live.stopping:  # a stop that arrived before this turn's emit
                loop.stop_session(rid, rec.get("stop_reason", "") or (ended[0].get("text", "") if ended else ""))
            if rec.get("refused"):
                live.refused += int(rec["refused"])
            if rec.get("heard"):
                hearing.inject(rid, rec["heard"])
            for d in rec.get("in", []):
                loop.submit(rid, decode_item(d))

    delegator = standin if standin is not None else Delegator(background)
    cfg = LoopConfig(turn_ms=turn_ms, max_sessions=len(runs) + 1, output_queue=4, idle_timeout_s=0, admission=False,
                     torch_threads=torch_threads, niceness=None)
    if isinstance(backend, str):
        backend = load_backend(backend)
    elif not callable(getattr(backend, "step", None)):
        backend = NativeBackend(backend)  # a bare InteractionModel, as TurnLoop takes it
    ids = RecordedIds(backend)
    loop = TurnLoop(ids, cfg, delegator=delegator,
                    clock=lambda period: VirtualClock(period, before_turn, yields,
                                                      (1.0 if background else 0.0) if pace is None else pace))
    loop.hearing = hearing
    loop.recorder = Recorder(None, turn_ms=turn_ms, backend=loop.backend, keep=True, source="replay")
    meta: dict[str, tuple[ReplaySession, str]] = {}
    for n, (s, label, spec) in enumerate(runs):
        rid = f"r{n}"
        ids.ids[rid] = s.session_id
        live = loop.open(rid)
        live.policy = loop.delegating.new_policy() if spec is None else _new_policy(loop, spec)
        origin = float(s.header.get("origin_unix_ms", 0))
        live.weave.scheduler.clock = (lambda lv=live, o=origin: o + lv.turn * turn_ms)
        direct: dict[int, list[str]] = {}
        for d in recorded_delegations(s):
            if d.policy == "direct":
                direct.setdefault(d.origin_turn, []).append(d.task)
        feeds[rid] = _Feed(rid, s, direct)
        if standin is not None:
            standin.add(rid, s)
        meta[rid] = (s, label)
    t0 = time.perf_counter()
    await loop.run(max_turns=max(len(s.turns) for s in sessions) + 2)
    await loop.stop()
    wall = time.perf_counter() - t0
    out = []
    for rid, (s, label) in meta.items():
        rec = loop.recorder.sessions.get(rid)
        out.append(ReplayRun(s.session_id, label, rec.turns if rec is not None else [], s, wall))
    log.info("replayed", runs=len(out), turns=sum(len(r.turns) for r in out), wall_s=round(wall, 3))
    return out


def _new_policy(loop: TurnLoop, spec: object) -> object:
    from delegation import load_policy  # noqa: PLC0415

    if isinstance(spec, Mapping):
        d = {k: v for k, v in spec.items() if k != "label"}
        return load_policy(d)
    return load_policy(spec) if isinstance(spec, str) else loop.delegating.new_policy()


def replay(backend: object, sessions: Iterable[ReplaySession], policies: Mapping[str, object] | None = None,
           **options: Any) -> list[ReplayRun]:
    """`replay_async` in a fresh asyncio loop (for callers that have none running)."""
    return asyncio.run(replay_async(backend, sessions, policies, **options))


def comparable(out: dict[str, Any] | None) -> dict[str, Any] | None:
    """A turn's output without what legitimately differs between runs (task ids, ages, the file a live
    run was saved to)."""
    if out is None:
        return None
    evs = [{k: v for k, v in e.items() if k not in VOLATILE} for e in out.get("events", [])]
    for e in evs:  # where a live run saved itself (SESSION_STARTED) is no output of the session
        if "replay_file" in e.get("attrs", {}):
            e["attrs"] = {k: v for k, v in e["attrs"].items() if k != "replay_file"}
            if not e["attrs"]:
                del e["attrs"]
    return {**{k: v for k, v in out.items() if k != "events"}, "events": evs}


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[str]:
    """Where two runs of a session differ, turn by turn (empty: identical); one line per difference."""
    diffs = []
    if len(a) != len(b):
        diffs.append(f"turns: {len(a)} vs {len(b)}")
    for x, y in zip(a, b, strict=False):
        ox, oy = comparable(x.get("out")), comparable(y.get("out"))
        if ox == oy:
            continue
        keys = sorted(k for k in set(ox or {}) | set(oy or {}) if (ox or {}).get(k) != (oy or {}).get(k))
        diffs.append(f"turn {x.get('turn')}: " + "; ".join(f"{k}: {(ox or {}).get(k)!r} vs {(oy or {}).get(k)!r}"
                                                          for k in keys))
    return diffs


__all__ = ["ReplayHearing", "ReplayRun", "StandIn", "VirtualClock", "compare", "comparable", "recorded_delegations",
           "replay", "replay_async"]
