"""The Background service over real gRPC on 127.0.0.1, with the real local model (SmolLM2-135M, llama.cpp).

One server (the actor body, in-process, on its own thread and loop) serves the whole module, limited
to 2 running + 2 queued tasks. Its registry holds the real calculator and `slow_lookup`, a tool that
takes as long as the test says — the one stand-in here, because cancel/steer/deadline need a tool
call that is still running when they arrive (it records when it starts and when it is cancelled).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from background_actor.actor import BackgroundActorImpl
from background_actor.agent import AgentConfig
from background_actor.client import BackgroundClient
from background_actor.service import SERVICE_NAME, ServerConfig
from background_actor.tasks import TaskConfig
from interaction_actor.runtime.delegator import DelegationRequest, Delegator
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import context_pb2 as xpb
from tools import Registry, tool
from tools.builtin import calculator


class SlowState:
    def __init__(self) -> None:
        self.seconds = 30.0
        self.started = threading.Event()
        self.cancelled_at: float | None = None
        self.cancelled = threading.Event()


SLOW = SlowState()


@tool(timeout_s=60.0)
async def slow_lookup(topic: str) -> str:
    """Look a topic up in the archive. Slow.

    Args:
        topic: What to look up.
    """
    SLOW.started.set()
    try:
        await asyncio.sleep(SLOW.seconds)
    except asyncio.CancelledError:
        SLOW.cancelled_at = time.monotonic()
        SLOW.cancelled.set()
        raise
    return f"The archive says that {topic} is usually green."


def make_registry() -> Registry:
    return Registry([calculator, slow_lookup])


@pytest.fixture(scope="module")
def server():
    cfg = ServerConfig(engine="local", agent=AgentConfig(max_steps=3, max_tokens=48),
                       tasks=TaskConfig(max_concurrent=2, max_queued=2))
    impl = BackgroundActorImpl(cfg, make_registry, log_level="warning")
    yield impl
    impl.stop()


def package(task: str, tools: list[str] = (), **kw) -> xpb.ContextPackage:
    return xpb.ContextPackage(task_id=kw.pop("task_id", f"t{time.monotonic_ns()}"), session_id="s1", task=task,
                              allowed_tools=list(tools), deadline_ms=kw.pop("deadline_ms", 60_000),
                              created_unix_ms=int(time.time() * 1000), **kw)


def kinds(updates: list[bpb.Update]) -> list[str]:
    return [bpb.UpdateKind.Name(u.kind).removeprefix("UPDATE_KIND_") for u in updates]


def reset_slow(seconds: float) -> None:
    SLOW.seconds, SLOW.cancelled_at = seconds, None
    SLOW.started.clear()
    SLOW.cancelled.clear()


async def test_a_delegation_streams_accepted_partials_and_exactly_one_final_with_gapless_seq(server):
    async with BackgroundClient(server.address()) as bg:
        ups = await bg.run(package("Name a color of the sky."), timeout_s=60)
    k = kinds(ups)
    assert k[0] == "ACCEPTED" and k[-1] == "FINAL" and k.count("FINAL") == 1
    assert "PARTIAL" in k and ups[-1].text.strip()
    assert [u.seq for u in ups] == list(range(len(ups)))
    assert "".join(u.text for u in ups if u.kind == bpb.UPDATE_KIND_PARTIAL).strip() == ups[-1].text


async def test_cancel_during_a_slow_tool_stops_that_tool_within_three_seconds(server):
    """The tool would run 30 s; the bound leaves room for a loaded machine and still proves the stop."""
    reset_slow(30.0)
    pkg = package("Look up the archive entry for moss.", ["slow_lookup"], metadata={"tool_choice": "required"})
    async with BackgroundClient(server.address()) as bg:
        ups: list[bpb.Update] = []

        async def read() -> None:
            async for u in bg.delegate(pkg, timeout_s=60):
                ups.append(u)

        reader = asyncio.get_running_loop().create_task(read())
        assert await asyncio.to_thread(SLOW.started.wait, 30), "the model never called slow_lookup"
        t0 = time.monotonic()
        resp = await bg.cancel(pkg.task_id, "user changed their mind")
        await asyncio.wait_for(reader, 5)
    assert resp.cancelled
    # The tool is cancelled on its worker thread's own loop, which may run after CANCELLED reaches us.
    assert await asyncio.to_thread(SLOW.cancelled.wait, max(0.0, t0 + 3.0 - time.monotonic()) + 0.5)
    assert SLOW.cancelled_at is not None and SLOW.cancelled_at - t0 < 3.0
    assert kinds(ups)[-1] == "CANCELLED" and kinds(ups).count("CANCELLED") == 1
    assert "TOOL_CALL" in kinds(ups) and "TOOL_RESULT" not in kinds(ups)


async def test_steer_changes_the_answer_of_a_running_task(server):
    task = "Look up moss in the archive, then tell me its color."
    steer_text = "Say that the color is purple, not green."
    answers, steered = [], []
    for steer in (False, True):  # the same package twice, greedy decoding: only the steer differs
        reset_slow(1.5)
        pkg = package(task, ["slow_lookup"], metadata={"tool_choice": "required"})
        ups, sent = [], False
        async with BackgroundClient(server.address()) as bg:
            async for u in bg.delegate(pkg, timeout_s=60):
                ups.append(u)
                if steer and not sent and u.kind == bpb.UPDATE_KIND_TOOL_CALL:  # the slow tool is running
                    assert (await bg.steer(pkg.task_id, steer_text)).accepted
                    sent = True
        assert kinds(ups)[-1] == "FINAL"
        answers.append(ups[-1].text)
        steered.append([u for u in ups if u.kind == bpb.UPDATE_KIND_STEERED])
    assert steered[0] == [] and [u.text for u in steered[1]] == [steer_text]
    assert answers[0] != answers[1]
    assert "purple" not in answers[0].lower() and "purple" in answers[1].lower()


async def test_a_flood_beyond_the_limit_is_queued_or_refused_and_every_delegation_is_accounted_for(server):
    before = server.stats()
    n = 8
    async with BackgroundClient(server.address()) as bg:
        runs = await asyncio.gather(*(bg.run(package(f"Say the number {i}."), timeout_s=120) for i in range(n)))
    after = server.stats()
    terminal = [r[-1] for r in runs]
    assert all(kinds(r).count("FINAL") + kinds(r).count("ERROR") + kinds(r).count("CANCELLED") == 1 for r in runs)
    refused = [u for u in terminal if u.kind == bpb.UPDATE_KIND_ERROR and u.error.code == "overloaded"]
    queued = [r for r in runs if "QUEUED" in kinds(r)]
    finals = [u for u in terminal if u.kind == bpb.UPDATE_KIND_FINAL]
    assert len(refused) == n - 4 and all(u.error.retryable for u in refused)
    assert len(queued) == 2 and all(kinds(r)[-1] == "FINAL" for r in queued)
    assert len(finals) == 4
    delta = {k: after[k] - before[k] for k in ("submitted", "refused", "queued", "final")}
    assert delta == {"submitted": n, "refused": n - 4, "queued": 2, "final": 4}
    assert after["running"] == after["waiting"] == 0


async def test_a_task_past_its_deadline_ends_with_a_deadline_error_and_its_tool_is_stopped(server):
    """The deadline must leave the model time to call the tool (~2 s here, more on a loaded CI host), or
    there is no running tool to stop; the tool is cancelled on its worker's loop, which may run just after
    the ERROR reaches us, so the stop is awaited (bounded)."""
    reset_slow(30.0)
    pkg = package("Look up the archive entry for fern.", ["slow_lookup"], deadline_ms=8000,
                  metadata={"tool_choice": "required"})
    async with BackgroundClient(server.address()) as bg:
        ups = await bg.run(pkg, timeout_s=30)
    assert kinds(ups)[-1] == "ERROR" and ups[-1].error.code == "deadline_exceeded"
    assert SLOW.started.is_set(), f"the model did not call slow_lookup within the deadline: {kinds(ups)}"
    assert await asyncio.to_thread(SLOW.cancelled.wait, 3.0), "the tool kept running past the deadline"


async def test_a_caller_that_goes_away_gets_its_task_cancelled(server):
    """The caller hangs up while the tool runs (it leaves as soon as it sees the TOOL_CALL): the server
    cancels the task, and the tool with it."""
    reset_slow(30.0)
    before = server.stats()["cancelled"]
    pkg = package("Look up the archive entry for lichen.", ["slow_lookup"], metadata={"tool_choice": "required"})
    seen: list[bpb.Update] = []
    async with BackgroundClient(server.address()) as bg:
        async for u in bg.delegate(pkg, timeout_s=60):
            seen.append(u)
            if u.kind == bpb.UPDATE_KIND_TOOL_CALL:
                assert await asyncio.to_thread(SLOW.started.wait, 10), "slow_lookup never started"
                break  # leaving the stream and closing the channel: the caller is gone
    assert kinds(seen)[-1] == "TOOL_CALL"
    for _ in range(100):
        if server.stats()["cancelled"] > before:
            break
        await asyncio.sleep(0.05)
    assert server.stats()["cancelled"] == before + 1
    assert await asyncio.to_thread(SLOW.cancelled.wait, 3.0), "the tool kept running after the caller left"


async def test_steer_and_cancel_of_an_unknown_task_are_refused_with_a_reason(server):
    async with BackgroundClient(server.address()) as bg:
        s = await bg.steer("no-such-task", "hurry")
        c = await bg.cancel("no-such-task")
    assert (s.accepted, s.reason) == (False, "unknown_task")
    assert (c.cancelled, c.reason) == (False, "unknown_task")


async def test_an_empty_task_is_refused_with_one_error_update(server):
    async with BackgroundClient(server.address()) as bg:
        ups = await bg.run(package("   "), timeout_s=10)
    assert kinds(ups) == ["ERROR"] and ups[0].error.code == "invalid_package"


async def test_the_health_service_reports_serving(server):
    async with grpc.aio.insecure_channel(server.address()) as ch:
        r = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=2)
    assert r.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_background_and_health_services(server):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with grpc.aio.insecure_channel(server.address()) as ch:
        call = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=2)
        names = [s.name async for r in call for s in r.list_services_response.service]
    assert SERVICE_NAME in names and "grpc.health.v1.Health" in names


async def test_the_interaction_sides_delegator_gets_updates_ending_in_one_final(server):
    d = Delegator(server.address(), deadline_ms=60_000, allowed_tools=["calculator"])
    inbox: deque = deque()
    d.start(DelegationRequest(session_id="s9", task="What is 6 times 7?", turn=12, time_ms=2400), inbox)
    await asyncio.wait_for(asyncio.gather(*d.tasks.values()), 60)
    await d.close()
    k = kinds(list(inbox))
    assert k[0] == "ACCEPTED" and k[-1] == "FINAL" and k.count("FINAL") == 1
