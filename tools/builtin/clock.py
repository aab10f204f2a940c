"""`clock` (current time in an IANA zone) and `timer` ("remind me in N seconds").

A timer returns at once; when due it emits a background update through the caller's
`ToolContext.emit`. `Timers` owns the pending tasks (bounded per session) and cancels them on close.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import zoneinfo
from dataclasses import dataclass, field

from tools.errors import ToolError
from tools.logs import tools_logger
from tools.outcome import ToolContext
from tools.spec import Tool, tool

log = tools_logger("tools.clock")


def zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name.strip() or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "US" is a tzdata folder
        raise ToolError(f"unknown time zone '{name}'; use an IANA name like 'Europe/Paris' or 'UTC'") from None


@tool(timeout_s=1.0, idempotent=True, max_concurrency=16, max_result_chars=400)
def clock(timezone: str = "UTC") -> str:
    """Tell the current date and time in a time zone.

    Args:
        timezone: IANA time-zone name, e.g. "Europe/Paris", "America/New_York" or "UTC".
    """
    now = dt.datetime.now(zone(timezone))
    return f"{now.strftime('%A %d %B %Y, %H:%M:%S')} {now.tzname()} ({now.isoformat(timespec='seconds')})"


@dataclass
class TimerConfig:
    max_seconds: float = 24 * 3600.0
    max_pending_per_session: int = 20
    message_chars: int = 300


@dataclass
class Timers:
    """Pending reminders; one instance per registry (no global state)."""

    config: TimerConfig = field(default_factory=TimerConfig)
    _tasks: dict[str, tuple[str, asyncio.Task[None]]] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def pending(self, session_id: str | None = None) -> int:
        return sum(1 for s, t in self._tasks.values() if not t.done() and (session_id is None or s == session_id))

    def start(self, seconds: float, message: str, context: ToolContext) -> str:
        if context.emit is None:
            raise ToolError("reminders are not available here (no channel for background updates)")
        if not 0 < seconds <= self.config.max_seconds:
            raise ToolError(f"seconds must be > 0 and <= {self.config.max_seconds:g}")
        if self.pending(context.session_id) >= self.config.max_pending_per_session:
            raise ToolError(f"too many pending reminders (max {self.config.max_pending_per_session})")
        timer_id = f"timer-{next(self._ids)}"
        text = message.strip()[: self.config.message_chars] or "time is up"
        task = asyncio.get_running_loop().create_task(self._fire(timer_id, seconds, text, context), name=timer_id)
        self._tasks[timer_id] = (context.session_id, task)
        task.add_done_callback(lambda _t: self._tasks.pop(timer_id, None))
        log.info("timer_set", timer_id=timer_id, seconds=seconds, session_id=context.session_id)
        return timer_id

    async def _fire(self, timer_id: str, seconds: float, text: str, context: ToolContext) -> None:
        await asyncio.sleep(seconds)
        try:
            await context.send(f"Reminder ({timer_id}): {text}")
            log.info("timer_fired", timer_id=timer_id, session_id=context.session_id)
        except Exception as exc:  # the emitter failing must not crash the loop
            log.warning("timer_emit_failed", timer_id=timer_id, error=repr(exc))

    def cancel(self, timer_id: str) -> bool:
        entry = self._tasks.pop(timer_id, None)
        if entry is None:
            return False
        entry[1].cancel()
        return True

    async def aclose(self) -> None:
        tasks = [t for _, t in self._tasks.values()]
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def make_timer_tool(timers: Timers) -> Tool:
    """The `timer` tool bound to `timers`."""

    # inline: the reminder it starts outlives the call and must live on the caller's loop
    @tool(timeout_s=1.0, max_concurrency=16, max_result_chars=400, isolation="inline")
    async def timer(seconds: float, message: str, context: ToolContext) -> str:
        """Set a reminder: after `seconds`, a background update with `message` is sent to the user.

        Args:
            seconds: Delay in seconds from now (e.g. 600 for ten minutes).
            message: What to remind the user of.
        """
        timer_id = timers.start(seconds, message, context)
        due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
        return f"Reminder {timer_id} set for {seconds:g} s from now (due {due.isoformat(timespec='seconds')})."

    return timer
