"""InterleaveScheduler on a virtual clock: surfacing modes, supersede, redelivery, cancel, expiry, settlement."""

from __future__ import annotations

import random

import pytest

from delegation import InterleaveScheduler, SchedulerConfig, SchedulerError, SurfacingMode, UserState
from interplay.v1 import background_pb2 as bpb

SPEAK, SILENT, BARGE = UserState.SPEAKING, UserState.SILENT, UserState.INTERRUPTED
TURN_MS = 200


class Clock:
    """Virtual milliseconds: the test sets the turn, the scheduler reads turn * 200."""

    def __init__(self) -> None:
        self.turn = 0

    def __call__(self) -> float:
        return float(self.turn * TURN_MS)


def upd(task: str, seq: int, kind: int = bpb.UPDATE_KIND_FINAL, mode: int = 0, text: str = "the answer is 42",
        ttl_ms: int = 0, created: int = 0) -> bpb.Update:
    return bpb.Update(task_id=task, seq=seq, kind=kind, surfacing=mode, text=text, ttl_ms=ttl_ms,
                      created_unix_ms=created)


def run(sched: InterleaveScheduler, clock: Clock, states: list[UserState], start: int = 0,
        offers: dict[int, list[bpb.Update]] | None = None) -> dict[int, list[str]]:
    """Step turns start.. with the given user states; offers land during a turn (after its boundary)."""
    voiced: dict[int, list[str]] = {}
    for k, st in enumerate(states):
        t = start + k
        clock.turn = t
        d = sched.step(t, st)
        if d.voice:
            voiced[t] = [f"{s.task_id}#{s.seq}" for s in d.voice]
        for u in (offers or {}).get(t, []):
            sched.offer(u, t)
    return voiced


def new(**cfg) -> tuple[InterleaveScheduler, Clock]:
    clock = Clock()
    return InterleaveScheduler(SchedulerConfig(**cfg), clock=clock), clock


def test_interrupt_update_is_voiced_at_the_next_boundary_even_while_the_user_speaks():
    s, c = new()
    voiced = run(s, c, [SPEAK] * 6, offers={2: [upd("a", 0, mode=SurfacingMode.INTERRUPT)]})
    assert voiced == {3: ["a#0"]}


def test_when_idle_update_is_voiced_at_the_users_next_pause():
    s, c = new()
    voiced = run(s, c, [SPEAK] * 5 + [SILENT] * 3, offers={1: [upd("a", 0, mode=SurfacingMode.WHEN_IDLE)]})
    assert voiced == {5: ["a#0"]}


def test_a_when_idle_result_waits_for_the_assistants_own_speech_to_end():
    s, c = new()
    voiced = {}
    for t, talking in enumerate([False, True, True, True, False, False]):
        c.turn = t
        d = s.step(t, SILENT, assistant_speaking=talking)
        voiced.update({t: [x.task_id for x in d.voice]} if d.voice else {})
        if t == 0:
            s.offer(upd("a", 0, mode=SurfacingMode.WHEN_IDLE), t)
    assert voiced == {4: ["a"]}


def test_an_assistant_that_never_stops_speaking_holds_a_when_idle_result_only_so_long():
    s, c = new(assistant_hold_turns=3)
    voiced = {}
    for t in range(8):
        c.turn = t
        d = s.step(t, SILENT, assistant_speaking=True)
        voiced.update({t: [x.task_id for x in d.voice]} if d.voice else {})
        if t == 0:
            s.offer(upd("a", 0, mode=SurfacingMode.WHEN_IDLE), t)
    assert voiced == {3: ["a"]}  # turns 0-2 held it (three speaking turns); the fourth does not


def test_silent_update_enters_context_at_the_next_boundary_and_is_never_voiced():
    s, c = new()
    contexts = []
    s.offer(upd("a", 0, mode=SurfacingMode.SILENT), 0)
    for t in range(1, 6):
        c.turn = t
        d = s.step(t, SILENT)
        contexts.append([x.task_id for x in d.context])
        assert not d.voice
    assert contexts == [["a"], [], [], [], []]


def test_a_superseded_progress_update_is_never_voiced():
    s, c = new(progress_mode=SurfacingMode.WHEN_IDLE)
    offers = {t: [upd("a", t, kind=bpb.UPDATE_KIND_PROGRESS, text=f"{t}0%")] for t in range(4)}
    voiced = run(s, c, [SPEAK] * 5 + [SILENT] * 10, offers=offers)
    assert [v for vs in voiced.values() for v in vs] == ["a#3"]
    assert {d.seq for d in s.dropped if d.reason == "superseded"} == {0, 1, 2}


def test_a_result_supersedes_the_pending_progress_of_its_task():
    s, c = new(progress_mode=SurfacingMode.WHEN_IDLE)
    offers = {0: [upd("a", 0, kind=bpb.UPDATE_KIND_PROGRESS, text="half way")], 1: [upd("a", 1)]}
    voiced = run(s, c, [SPEAK] * 3 + [SILENT] * 8, offers=offers)
    assert [v for vs in voiced.values() for v in vs] == ["a#1"]


def test_a_result_the_user_barges_in_over_is_voiced_again_at_the_next_pause():
    s, c = new()
    states = [SILENT, SILENT, SILENT, BARGE, SPEAK, SPEAK, SILENT, SILENT] + [SILENT] * 10
    voiced = run(s, c, states, offers={0: [upd("a", 0, mode=SurfacingMode.WHEN_IDLE)]})
    assert voiced == {1: ["a#0"], 6: ["a#0"]}
    assert s.history[-1].redelivery == 1


def test_a_redelivered_result_settles_as_voiced_only_once_it_is_heard_to_the_end():
    s, c = new()
    states = [SILENT, SILENT, BARGE, SILENT] + [SILENT] * 20
    run(s, c, states, offers={0: [upd("a", 0, mode=SurfacingMode.WHEN_IDLE)]})
    assert s.settlements["a"].outcome == "voiced" and s.settlements["a"].turn >= 3 + s.history[-1].voice_turns


def test_updates_of_a_cancelled_task_are_dropped_now_and_later():
    s, c = new(progress_mode=SurfacingMode.WHEN_IDLE)
    s.offer(upd("a", 0, kind=bpb.UPDATE_KIND_PROGRESS, text="working"), 0)
    s.cancel("a", 0, "user")
    s.offer(upd("a", 1), 1)
    voiced = run(s, c, [SILENT] * 10, start=1)
    assert voiced == {}
    assert sorted((d.seq, d.reason) for d in s.dropped) == [(0, "cancelled"), (1, "cancelled")]


def test_an_expired_update_is_not_voiced():
    s, c = new()
    s.offer(upd("a", 0, mode=SurfacingMode.WHEN_IDLE, ttl_ms=1000, created=0), 0)
    voiced = run(s, c, [SPEAK] * 8 + [SILENT] * 5)  # the user talks for 1.6 s: past the 1 s ttl
    assert voiced == {}
    assert s.settlements["a"].outcome == "expired"


def test_an_interrupt_result_preempts_a_when_idle_voicing_which_is_redelivered():
    s, c = new()
    long = "y" * 60
    offers = {0: [upd("idle", 0, mode=SurfacingMode.WHEN_IDLE, text=long)],
              3: [upd("urgent", 0, mode=SurfacingMode.INTERRUPT, text="timer!")]}
    voiced = run(s, c, [SILENT] * 40, offers=offers)
    assert voiced[4] == ["urgent#0"]
    assert [t for t, v in voiced.items() if v == ["idle#0"]] == [1, 6]


def test_every_delegation_settles_exactly_once_under_random_traffic():
    rng = random.Random(7)
    for trial in range(30):
        s, c = new(max_redeliveries=rng.randint(0, 2))
        tasks = [f"t{i}" for i in range(6)]
        settled: list[str] = []
        seq = dict.fromkeys(tasks, 0)
        for t in range(120):
            c.turn = t
            for _ in range(rng.randint(0, 3)):
                task = rng.choice(tasks)
                kind = rng.choice([bpb.UPDATE_KIND_PROGRESS] * 3 + [bpb.UPDATE_KIND_FINAL, bpb.UPDATE_KIND_ERROR,
                                                                    bpb.UPDATE_KIND_CANCELLED])
                s.offer(upd(task, seq[task], kind=kind, mode=rng.choice([0, 1, 2, 3]), ttl_ms=rng.choice([0, 600]),
                            created=t * TURN_MS), t)
                seq[task] += rng.choice([0, 1])  # duplicates happen
            if rng.random() < 0.03:
                s.cancel(rng.choice(tasks), t)
            d = s.step(t, rng.choice([SPEAK, SILENT, SILENT, BARGE]))
            settled += [x.task_id for x in d.settled]
        settled += [x.task_id for x in s.close(120)]
        assert sorted(settled) == sorted(s.tasks), trial


def test_a_tracked_delegation_that_never_answers_settles_as_abandoned_at_close():
    s, _ = new()
    s.track("quiet", 0)
    s.step(0, SILENT)
    assert [(x.task_id, x.outcome) for x in s.close(1)] == [("quiet", "abandoned")]


def test_an_update_without_a_task_id_is_refused():
    s, _ = new()
    with pytest.raises(SchedulerError):
        s.offer(bpb.Update(kind=bpb.UPDATE_KIND_FINAL), 0)


def test_steps_must_move_forward_in_turns():
    s, _ = new()
    s.step(3, SILENT)
    with pytest.raises(SchedulerError):
        s.step(3, SILENT)


def test_the_decision_records_the_turn_each_update_surfaced():
    s, c = new()
    run(s, c, [SPEAK, SPEAK, SILENT, SILENT] + [SILENT] * 10,
        offers={0: [upd("a", 0, kind=bpb.UPDATE_KIND_ACCEPTED), upd("a", 1, mode=SurfacingMode.WHEN_IDLE)]})
    assert [(h.seq, h.received_turn, h.surfaced_turn, h.voiced) for h in s.history] == [(0, 0, 1, False),
                                                                                         (1, 0, 2, True)]


def test_a_long_session_keeps_only_the_newest_records_of_history_drops_and_settled_tasks():
    clock = Clock()
    s = InterleaveScheduler(SchedulerConfig(max_records=4), clock=clock)
    for i in range(12):  # twelve delegations, each answered twice (the second a duplicate, dropped)
        t = 2 * i
        clock.turn = t
        s.track(f"t{i}", t)
        s.offer(upd(f"t{i}", 0, mode=SurfacingMode.INTERRUPT), t)
        s.offer(upd(f"t{i}", 0, mode=SurfacingMode.INTERRUPT), t)
        s.step(t + 1, SILENT)
    for t in range(24, 24 + 12 * 6):  # each answer takes a few turns to voice: let every one surface
        clock.turn = t
        s.step(t, SILENT)
    assert s.unsettled() == []
    assert len(s.history) == 4 and [h.task_id for h in s.history] == ["t8", "t9", "t10", "t11"]
    assert len(s.dropped) == 4 and len(s.settlements) <= 4 and len(s.tasks) <= 4 + len(s.unsettled())
    assert "t11" in s.settlements and "t0" not in s.settlements
