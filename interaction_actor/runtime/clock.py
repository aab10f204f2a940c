"""TurnClock: micro-turn deadlines on a fixed grid of a monotonic clock (no drift over hours).

Turn slot k starts at `origin + k * period`; the time is never accumulated from sleeps, so
errors do not add up. Overrun rule: when a turn finishes after the start of the next slot,
the clock records a miss, counts the slots it skips, and realigns to the first slot that has
not started yet. It never runs skipped slots back to back to "catch up" (no burst).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Tick:
    """One slot of the grid as it was actually started."""

    slot: int  # index of the grid slot (skipped slots leave gaps here, never in session turns)
    scheduled: float  # grid start of the slot, clock seconds
    started: float  # when the loop actually began the turn, clock seconds

    @property
    def lateness_ms(self) -> float:
        return max(0.0, (self.started - self.scheduled) * 1000.0)


@dataclass(frozen=True)
class Finish:
    """How a turn ended relative to its slot."""

    compute_ms: float  # started -> finished
    missed: bool  # the turn ended after its slot's end (the next slot's start)
    skipped: int  # slots dropped by the realignment (0 when the turn fit)


class TurnClock:
    """Absolute-deadline clock. `now` is injectable (seconds, monotonic) for tests of the rule."""

    def __init__(self, period_s: float, now: Callable[[], float] = time.monotonic,
                 origin: float | None = None) -> None:
        if period_s <= 0:
            raise ValueError("period_s must be > 0")
        self.period = float(period_s)
        self.now = now
        self.origin = now() if origin is None else float(origin)
        self.next_slot = 0
        self.missed = 0
        self.skipped = 0

    def deadline(self, slot: int) -> float:
        """Grid start of `slot`."""
        return self.origin + slot * self.period

    def delay_to_next(self) -> float:
        """Seconds until the next slot starts (0 when it has already started)."""
        return max(0.0, self.deadline(self.next_slot) - self.now())

    def begin(self) -> Tick:
        """Start the next slot now (call at or after its deadline) and advance the grid."""
        slot = self.next_slot
        self.next_slot += 1
        return Tick(slot=slot, scheduled=self.deadline(slot), started=self.now())

    def finish(self, tick: Tick) -> Finish:
        """Close a turn: record a miss and realign past every slot that already began."""
        end = self.now()
        missed = end > self.deadline(tick.slot + 1)
        skipped = 0
        if missed:
            self.missed += 1
            first_free = max(self.next_slot, math.ceil((end - self.origin) / self.period))
            skipped = first_free - self.next_slot
            self.skipped += skipped
            self.next_slot = first_free
        return Finish(compute_ms=(end - tick.started) * 1000.0, missed=missed, skipped=skipped)

    async def wait(self) -> Tick:
        """Sleep until the next slot and begin it (asyncio sleeps only; the grid fixes the time)."""
        delay = self.delay_to_next()
        if delay > 0:
            await asyncio.sleep(delay)
        # asyncio may wake a hair early on coarse timers: never start before the grid
        while self.now() < self.deadline(self.next_slot):
            await asyncio.sleep(0.0005)
        return self.begin()
