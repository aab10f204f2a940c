"""TurnClock: absolute deadlines and the overrun rule (record the miss, realign, never burst).

These tests drive the clock with a controllable time source (a list of readings) so the rule is
checked exactly; the real loop's overruns are tested in test_loop_engine.py.
"""

from __future__ import annotations

from interaction_actor.runtime.clock import TurnClock


class ManualTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_an_overrun_realigns_to_the_next_free_slot_without_bursting():
    now = ManualTime()
    clock = TurnClock(0.2, now=now)
    tick = clock.begin()  # slot 0 at t=100.0
    now.t = 100.65  # the turn ran 650 ms: slots 1, 2, 3 have all started
    fin = clock.finish(tick)
    assert fin.missed and fin.skipped == 3
    assert clock.next_slot == 4  # realigned: the next turn waits for slot 4 at 100.8 ...
    assert abs(clock.delay_to_next() - 0.15) < 1e-9  # ... instead of running slots 1-3 back to back


def test_start_times_stay_on_the_grid_however_late_each_turn_wakes():
    now = ManualTime()
    clock = TurnClock(0.2, now=now)
    for k in range(18000):  # one hour of 200 ms turns, each waking 3 ms late and computing 50 ms
        now.t = clock.deadline(clock.next_slot) + 0.003
        tick = clock.begin()
        assert tick.slot == k
        now.t += 0.05
        assert not clock.finish(tick).missed
    assert abs(clock.deadline(18000) - (100.0 + 3600.0)) < 1e-9  # no accumulated drift
    assert clock.missed == 0 and clock.skipped == 0
