"""The runtime on a two-node Ray cluster (Ray's cluster utilities: two raylets on this machine).

The interaction actor runs on the head node, a pool of two background actors (the local engine,
the built-in calculator) on the second node. One background is SIGKILLed while it works on a task:
the session gets that task's terminal error within 5 s, keeps its turns, and the next delegation is
served (by the survivor, or by the restarted actor on the same address).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import ray
from ray.cluster_utils import Cluster

from interplay.client import SessionClient, audio_chunk
from interplay.v1 import session_pb2 as spb

QUIET_100MS = bytes(3200)
MB = 1024 * 1024


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_worker_niceness", "0")
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1},
                                                      "object_store_memory": 80 * MB, "include_dashboard": False})
    c.add_node(num_cpus=1, resources={"second": 1}, object_store_memory=80 * MB)
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def runtime(cluster):
    from background_actor.actor import start_background
    from interaction_actor.runtime.actor import spawn

    backgrounds = [start_background(engine="local", tools=("calculator",), resources={"second": 0.1},
                                    log_level="warning") for _ in range(2)]
    ia, address = spawn(resources={"head": 0.1}, preset="tiny", checkpoint="none", seed=0, turn_ms=100,
                        background_address=",".join(a for _, a in backgrounds), allowed_tools=["calculator"],
                        delegation_deadline_ms=60_000)
    yield ia, address, backgrounds
    for h in [ia] + [h for h, _ in backgrounds]:
        ray.kill(h, no_restart=True)


async def converse_until(address: str, ia, script, timeout_s: float = 60.0) -> list[spb.OutputChunk]:
    """Stream silence, one chunk per turn; `script(session_id, chunks)` may act and returns True when done."""
    chunks: list[spb.OutputChunk] = []
    async with SessionClient(address, "cluster") as c:
        await c.send(audio_chunk(QUIET_100MS))
        async with asyncio.timeout(timeout_s):
            async for chunk in c.chunks():
                chunks.append(chunk)
                if await script(c.session_id, chunks):
                    break
                await c.send(audio_chunk(QUIET_100MS))
    return chunks


def events(chunks, kind: int) -> list[tuple[int, spb.Event]]:
    return [(c.turn, e) for c in chunks for e in c.events if e.kind == kind]


def node_of(handle) -> str:
    return ray.get(handle.__ray_call__.remote(lambda _self: ray.get_runtime_context().get_node_id()), timeout=30)


def test_the_interaction_actor_runs_on_the_head_node_and_the_background_pool_on_the_second(cluster, runtime):
    ia, _, backgrounds = runtime
    alive = [n for n in ray.nodes() if n["Alive"]]
    head = next(n["NodeID"] for n in alive if "head" in n["Resources"])
    second = next(n["NodeID"] for n in alive if "second" in n["Resources"])
    assert len(alive) == 2 and head != second
    assert node_of(ia) == head
    assert [node_of(h) for h, _ in backgrounds] == [second, second]


def test_a_background_killed_mid_task_is_reported_and_the_next_request_is_served(runtime):
    ia, address, backgrounds = runtime
    state: dict = {"first": None, "killed_at": None, "second": None}

    async def script(sid: str, chunks: list[spb.OutputChunk]) -> bool:
        if len(chunks) == 2:
            state["first"] = await ia.start_delegation.remote(sid, "what is 123 times 45? use the calculator")
        if state["first"] and state["killed_at"] is None:
            busy = [h for h, _ in backgrounds if (await h.stats.remote()).get("running", 0) > 0]
            if busy:
                os.kill(await busy[0].pid.remote(), signal.SIGKILL)
                state["killed_at"] = time.monotonic()
        errs = [e for _, e in events(chunks, spb.EVENT_KIND_ERROR) if e.task_id == state["first"]]
        if errs and state["second"] is None:
            state["error_after_s"] = time.monotonic() - state["killed_at"]
            state["second"] = await ia.start_delegation.remote(sid, "what is 2 plus 3? use the calculator")
        done = [e for _, e in events(chunks, spb.EVENT_KIND_RESULT_SURFACED)
                if e.task_id == state["second"] and e.update == spb.EVENT_UPDATE_FINAL]
        return bool(done)

    chunks = asyncio.run(converse_until(address, ia, script, timeout_s=90))
    assert state["killed_at"] is not None, "no background was seen working on the task"
    assert state["error_after_s"] < 5.0
    assert [c.turn for c in chunks] == list(range(len(chunks)))  # the session never missed a beat
    final = [e.text for _, e in events(chunks, spb.EVENT_KIND_RESULT_SURFACED) if e.task_id == state["second"]]
    assert final and final[-1]
