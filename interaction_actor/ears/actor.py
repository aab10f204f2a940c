"""The ears in their own process: `EarsActor` (a Ray actor around LocalEars) and `RayEars` (the loop's side).

`EarsActor` is an async Ray actor (`max_restarts`, no task retries): `feed(batch)` enqueues into its
LocalEars, `poll(timeout_s)` is a long poll that returns the results ready now, or waits up to
`timeout_s` for the first one (woken by the worker's `on_ready`), `close`, `stats`, `pid`, `stop`.
The model loads in `__init__`; `ready()` answers once it has.

`RayEars` implements the `Ears` contract for the turn loop without ever waiting on the actor:
`feed` is `actor.feed.remote(batch)`, fire-and-forget (the refs are kept only to be reaped, so a
failed feed is not an unhandled Ray error); `take` checks ONE outstanding `poll` ref with
`ray.wait([ref], timeout=0)` and issues the next one once it has read that one (a poll issued and then
dropped unread would take the actor's ready results with it). When that poll fails because the
actor died, `take` returns one `Heard(error="transcriber_failed")` per live session it has fed
(open segments and queued audio died with the process), once per outage. While Ray restarts it (up to
`max_restarts` times) a call fails at once with ActorUnavailableError, so `take` polls again every
RESTART_POLL_S until the new process answers. After restarts run out (ActorDiedError) `alive` is
False, a poll is retried once a second, and feeds go nowhere.

`start_ears(config)` → (actor handle, RayEars), once the model is loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from typing import Any

import ray

from interaction_actor.ears.contract import Heard
from interaction_actor.ears.worker import EarsConfig, LocalEars
from interplay import tracing
from interplay.log import configure_logging, get_logger
from interplay.priority import yield_cpu

log = get_logger("interaction_actor.ears.actor")


class EarsActorImpl:
    """The actor body (usable in-process too, inside a running event loop for `poll`)."""

    def __init__(self, config: EarsConfig | None = None, log_level: str = "info", log_dir: str | None = None,
                 trace_file: str | None = None, otlp_endpoint: str | None = None) -> None:
        configure_logging(log_level, log_dir=log_dir, process="ears")
        if trace_file or otlp_endpoint:  # its `transcribe_segment` spans (worker.py) go where the loop's go
            tracing.configure(trace_file, "interplay-ears", otlp_endpoint=otlp_endpoint)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self.ears = LocalEars(config, on_ready=self._wake)
        log.info("ears_actor_started", pid=os.getpid(), transcriber=self.ears.transcriber.name)

    def _wake(self) -> None:  # the transcriber thread
        loop, event = self._loop, self._event
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    async def ready(self) -> int:
        return os.getpid()

    async def pid(self) -> int:
        return os.getpid()

    async def feed(self, batch: list[tuple[str, int, bytes]]) -> None:
        self.ears.feed(batch)

    async def poll(self, timeout_s: float = 1.0) -> list[Heard]:
        """The results ready now; when there are none, wait up to `timeout_s` for the first."""
        if self._event is None:
            self._loop, self._event = asyncio.get_running_loop(), asyncio.Event()
        if not self.ears.has_results():
            self._event.clear()
            if not self.ears.has_results():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._event.wait(), timeout_s)
        return self.ears.take()

    async def close(self, session_id: str) -> None:
        self.ears.close(session_id)

    async def stats(self) -> dict[str, int]:
        return self.ears.stats()

    async def stop(self) -> None:
        self.ears.stop()
        tracing.flush()  # the last segments' spans, before Ray ends the process


@ray.remote(max_restarts=3, max_task_retries=0)
class EarsActor(EarsActorImpl):
    """Ray actor with restarts; in-flight calls of a dead process fail (RayEars reports them).

    Its process is the ears' own, so once the model is loaded every thread of it (and each thread they
    start later) runs at `config.niceness`: a Whisper decode never takes a core from the turn loop."""

    def __init__(self, config: EarsConfig | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        yield_cpu((config or EarsConfig()).niceness)


RESTART_POLL_S = 0.2  # while Ray restarts the actor: how soon take() polls again


class RayEars:
    """`Ears` for the loop's process, backed by an EarsActor. Not thread-safe: the loop's thread only."""

    def __init__(self, handle: Any, *, poll_timeout_s: float = 1.0, max_pending_feeds: int = 256,
                 owns_actor: bool = True) -> None:
        self.actor = handle
        self.poll_timeout_s = poll_timeout_s
        self.max_pending_feeds = max_pending_feeds
        self.owns_actor = owns_actor
        self._poll: ray.ObjectRef | None = None
        self._feeds: deque[ray.ObjectRef] = deque()
        self._last_turn: dict[str, int] = {}  # live sessions → the last turn fed
        self._failures_in_row = 0  # polls failed since the last one that answered
        self._retry_at = 0.0  # while not alive: when to try a poll again
        self.alive = True
        self.deaths = 0  # actor failures seen by take()
        self.feeds_lost = 0  # feed calls that failed (their audio died with the actor)

    def feed(self, turn_audio: list[tuple[str, int, bytes]]) -> None:
        if not turn_audio:
            return
        for session_id, turn, _ in turn_audio:
            self._last_turn[session_id] = turn
        self._feeds.append(self.actor.feed.remote(turn_audio))
        if len(self._feeds) > self.max_pending_feeds:  # the actor is gone or stuck: stop tracking the oldest
            self._feeds.popleft()
        if self._poll is None and self.alive and time.monotonic() >= self._retry_at:
            self._poll = self.actor.poll.remote(self.poll_timeout_s)

    def take(self) -> list[Heard]:
        self._reap_feeds()
        if self._poll is None:
            if not self._last_turn or time.monotonic() < self._retry_at:
                return []
            self._poll = self.actor.poll.remote(self.poll_timeout_s)
        ready, _ = ray.wait([self._poll], timeout=0, fetch_local=True)
        if not ready:
            return []
        ref, self._poll = self._poll, None
        try:
            results = ray.get(ref, timeout=0)
        except ray.exceptions.RayError as e:
            return self._died(e)  # the next poll is issued by take() once `_retry_at` has passed
        self._poll = self.actor.poll.remote(self.poll_timeout_s)
        self._failures_in_row = 0
        self.alive = True
        return [h for h in results if h.session_id in self._last_turn]

    def close(self, session_id: str) -> None:
        self._last_turn.pop(session_id, None)
        self.actor.close.remote(session_id)

    def stop(self) -> None:
        if self.owns_actor:
            with contextlib.suppress(ray.exceptions.RayError):
                ray.get(self.actor.stop.remote(), timeout=10)
            ray.kill(self.actor, no_restart=True)
        self._poll = None
        self._feeds.clear()

    def _reap_feeds(self) -> None:
        if not self._feeds:
            return
        done, _ = ray.wait(list(self._feeds), num_returns=len(self._feeds), timeout=0, fetch_local=False)
        if not done:
            return
        finished = set(done)
        for ref in done:
            try:
                ray.get(ref, timeout=0)
            except ray.exceptions.RayError:
                self.feeds_lost += 1
        self._feeds = deque(r for r in self._feeds if r not in finished)

    def _died(self, error: BaseException) -> list[Heard]:
        """A poll failed. ActorUnavailableError: the process died and Ray is restarting it (a call made
        meanwhile fails at once, max_task_retries=0), so poll again in RESTART_POLL_S; any other error
        (ActorDiedError: restarts ran out) marks the actor gone (`alive` False), polled once a second."""
        self._failures_in_row += 1
        self.deaths += int(self._failures_in_row == 1)  # one outage, however many polls it fails
        if isinstance(error, ray.exceptions.ActorUnavailableError):
            self._retry_at = time.monotonic() + RESTART_POLL_S
        else:
            self.alive = False
            self._retry_at = time.monotonic() + 1.0
        log.warning("ears_actor_failed", error=type(error).__name__, alive=self.alive, sessions=len(self._last_turn))
        if self._failures_in_row > 1:  # the same outage seen again: said once already
            return []
        return [Heard(session_id=sid, text="", final=True, start_turn=turn, end_turn=turn, low_confidence=True,
                      error="transcriber_failed") for sid, turn in self._last_turn.items()]


def start_ears(config: EarsConfig | None = None, *, max_restarts: int = 3, num_cpus: float = 0,
               name: str | None = None, timeout_s: float = 120.0, poll_timeout_s: float = 1.0,
               log_level: str = "info", log_dir: str | None = None, trace_file: str | None = None,
               otlp_endpoint: str | None = None, resources: dict[str, float] | None = None) -> tuple[Any, RayEars]:
    """Create an EarsActor (Ray must be initialised), wait until its model is loaded, return
    (handle, RayEars). `num_cpus` 0 by default: the transcriber's threads are `config.whisper.cpu_threads`."""
    opts: dict[str, Any] = {"num_cpus": num_cpus, "max_restarts": max_restarts}
    if name:
        opts["name"] = name
    if resources:
        opts["resources"] = dict(resources)
    handle = EarsActor.options(**opts).remote(config or EarsConfig(), log_level, log_dir, trace_file, otlp_endpoint)
    ray.get(handle.ready.remote(), timeout=timeout_s)
    return handle, RayEars(handle, poll_timeout_s=poll_timeout_s)
