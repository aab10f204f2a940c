"""The BackgroundActor in a real local Ray instance with the real local model: its address, and
what a caller sees when the actor process is SIGKILLed mid-task (a terminal error within 5 s; Ray
restarts the actor on the same address and the next delegation succeeds)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import deque

import pytest
import ray

from background_actor.actor import start_background
from background_actor.agent import AgentConfig
from background_actor.service import wait_serving
from interaction_actor.runtime.delegator import DelegationRequest, Delegator
from interplay.priority import thread_niceness
from interplay.v1 import background_pb2 as bpb

TERMINAL = (bpb.UPDATE_KIND_FINAL, bpb.UPDATE_KIND_ERROR, bpb.UPDATE_KIND_CANCELLED)


@pytest.fixture(scope="module")
def actor(ray_local):
    handle, address = start_background("local", agent=AgentConfig(max_steps=2, max_tokens=160), log_level="warning")
    yield handle, address
    ray.kill(handle, no_restart=True)


def test_every_thread_of_the_actor_s_process_runs_below_the_loop_s_priority(actor):
    """The engine's and the tools' threads included: niceness 10 (ServerConfig.niceness); the loop's is 0."""
    handle, _ = actor
    nice = thread_niceness(ray.get(handle.pid.remote(), timeout=30))
    assert len(nice) > 3 and set(nice.values()) == {10}


async def wait_for(inbox: deque, pred, limit_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if any(pred(u) for u in inbox):
            return time.monotonic() - t0
        await asyncio.sleep(0.01)
    raise AssertionError(f"nothing matched within {limit_s} s; got {[bpb.UpdateKind.Name(u.kind) for u in inbox]}")


def test_the_actor_reports_a_loopback_address_that_serves(actor):
    handle, address = actor
    assert address.startswith("127.0.0.1:") and ray.get(handle.address.remote(), timeout=10) == address
    assert asyncio.run(wait_serving(address, 5.0))


async def test_sigkill_mid_task_gives_a_terminal_error_within_5s_and_the_next_delegation_succeeds(actor):
    handle, address = actor
    pid = ray.get(handle.pid.remote(), timeout=10)
    d = Delegator(address, deadline_ms=60_000)
    inbox: deque = deque()
    d.start(DelegationRequest(session_id="s1", task="Tell me a long story about a lighthouse keeper.",
                              turn=1, time_ms=100), inbox)
    await wait_for(inbox, lambda u: u.kind == bpb.UPDATE_KIND_PARTIAL, 30)
    os.kill(pid, signal.SIGKILL)
    took = await wait_for(inbox, lambda u: u.kind in TERMINAL, 5.0)
    terminal = [u for u in inbox if u.kind in TERMINAL]
    assert len(terminal) == 1 and terminal[0].kind == bpb.UPDATE_KIND_ERROR and took < 5.0
    assert terminal[0].error.code == "background_died" and terminal[0].error.retryable

    assert await wait_serving(address, 60.0), "the restarted actor never served again"
    assert ray.get(handle.pid.remote(), timeout=30) != pid
    inbox2: deque = deque()  # the same Delegator (same channel) as before the kill
    d.start(DelegationRequest(session_id="s1", task="Say hello.", turn=2, time_ms=200), inbox2)
    await wait_for(inbox2, lambda u: u.kind in TERMINAL, 60)
    assert [u.kind for u in inbox2 if u.kind in TERMINAL] == [bpb.UPDATE_KIND_FINAL]
    await d.close()
