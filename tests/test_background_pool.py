"""BackgroundPool over two real BackgroundActors (Ray, local model): when the actor running a task is
SIGKILLed, an idempotent task is run again on the other actor and ends FINAL; any other task ends with
one terminal ERROR "background_died"."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import ray

from background_actor.agent import AgentConfig
from background_actor.pool import BackgroundPool, start_pool
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import context_pb2 as xpb

TERMINAL = (bpb.UPDATE_KIND_FINAL, bpb.UPDATE_KIND_ERROR, bpb.UPDATE_KIND_CANCELLED)


@pytest.fixture(scope="module")
def pool(ray_local):
    handles, addresses = start_pool(2, "local", agent=AgentConfig(max_steps=2, max_tokens=160), log_level="warning")
    yield handles, addresses
    for h in handles:
        ray.kill(h, no_restart=True)


async def run_and_kill(handles, addresses, idempotent: bool) -> tuple[list[bpb.Update], list[str]]:
    """The task's updates, and the address of the actor that accepted it, at each ACCEPTED."""
    pids = {a: ray.get(h.pid.remote(), timeout=30) for h, a in zip(handles, addresses, strict=True)}
    bg = BackgroundPool(addresses)
    pkg = xpb.ContextPackage(task_id=f"p{time.monotonic_ns()}", task="Tell me a long story about a lighthouse.",
                             idempotent=idempotent, deadline_ms=60_000, created_unix_ms=int(time.time() * 1000))
    ups: list[bpb.Update] = []
    accepted_by: list[str] = []
    killed = False
    async for u in bg.delegate(pkg, timeout_s=60):
        ups.append(u)
        if u.kind == bpb.UPDATE_KIND_ACCEPTED:
            accepted_by.append(bg.owner[pkg.task_id])
        if not killed and u.kind == bpb.UPDATE_KIND_PARTIAL:
            os.kill(pids[bg.owner[pkg.task_id]], signal.SIGKILL)
            killed = True
    await bg.close()
    return ups, accepted_by


async def test_an_idempotent_task_whose_actor_dies_is_run_again_on_the_other_actor(pool):
    ups, accepted_by = await asyncio.wait_for(run_and_kill(*pool, idempotent=True), 90)
    kinds = [u.kind for u in ups]
    assert [k for k in kinds if k in TERMINAL] == [bpb.UPDATE_KIND_FINAL]
    assert any(u.kind == bpb.UPDATE_KIND_PROGRESS and "retrying" in u.text for u in ups)
    assert kinds.count(bpb.UPDATE_KIND_ACCEPTED) == 2
    assert len(set(accepted_by)) == 2 and set(accepted_by) == set(pool[1])  # the second run: the other actor


async def test_a_task_that_is_not_idempotent_ends_with_one_background_died_error(pool):
    ups, _ = await asyncio.wait_for(run_and_kill(*pool, idempotent=False), 90)
    terminal = [u for u in ups if u.kind in TERMINAL]
    assert len(terminal) == 1 and terminal[0] is ups[-1]
    assert terminal[0].kind == bpb.UPDATE_KIND_ERROR and terminal[0].error.code == "background_died"
