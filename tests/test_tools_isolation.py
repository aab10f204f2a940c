"""Tool isolation through a real Background server (gRPC on 127.0.0.1, the actor body in-process on
its own thread and loop): a blocking coroutine tool cannot stall the server's loop, a timeout holds
whatever the tool does, hung calls cannot pile up threads, and hostile arguments settle as
`invalid_arguments`. The engine is tests/scripted_engine.py (it asks for exactly the call a test
scripts); everything else is real. Plus the worker pool itself, without a server.
"""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from scripted_engine import make_scripted_engine, script

from background_actor.actor import BackgroundActorImpl
from background_actor.client import BackgroundClient
from background_actor.service import SERVICE_NAME, ServerConfig
from background_actor.tasks import TaskConfig
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import context_pb2 as xpb
from tools import Registry, tool
from tools.isolation import PoolConfig, WorkerPool, configure_default_pool

WORKERS = 4
RELEASE = threading.Event()  # set at teardown: every hung `stuck` call returns then


@tool(timeout_s=1.0)
async def nap(seconds: float) -> str:
    """Blocks its event loop (time.sleep inside async def), as careless tools do."""
    time.sleep(seconds)
    return f"slept {seconds}"


@tool(timeout_s=0.3)
def stuck() -> str:
    """Never returns on its own (until the module's RELEASE)."""
    RELEASE.wait(60)
    return "released"


@tool(timeout_s=2.0)
def count(n: int) -> str:
    """Echo an integer."""
    return f"n={n}"


@tool(timeout_s=2.0)
def store(data: dict) -> str:
    """Accept any object."""
    return "stored"


def make_registry() -> Registry:
    return Registry([nap, stuck, count, store])


@pytest.fixture(scope="module")
def server():
    RELEASE.clear()
    cfg = ServerConfig(engine="scripted", tasks=TaskConfig(max_concurrent=4, max_queued=32), tool_workers=WORKERS)
    impl = BackgroundActorImpl(cfg, make_registry, log_level="warning", engine_factory=make_scripted_engine)
    yield impl
    RELEASE.set()
    impl.stop()
    configure_default_pool(PoolConfig())  # later modules get the usual pool


def package(task: str, tools: list[str], **kw) -> xpb.ContextPackage:
    return xpb.ContextPackage(task_id=f"t{time.monotonic_ns()}", session_id="s1", task=task, allowed_tools=tools,
                              deadline_ms=kw.pop("deadline_ms", 30_000), created_unix_ms=int(time.time() * 1000), **kw)


def tool_result(updates: list[bpb.Update]) -> bpb.Update:
    (res,) = [u for u in updates if u.kind == bpb.UPDATE_KIND_TOOL_RESULT]
    return res


async def health_latencies(address: str, until: asyncio.Future) -> list[float]:
    """Health checks back to back until `until` is done; the seconds each took."""
    took = []
    async with grpc.aio.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while not until.done():
            t0 = time.perf_counter()
            r = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
            took.append(time.perf_counter() - t0)
            assert r.status == health_pb2.HealthCheckResponse.SERVING
            await asyncio.sleep(0.05)
    return took


async def no_hung_calls(server, limit_s: float = 5.0) -> None:
    t0 = time.monotonic()
    while server.stats()["tool_hung"] and time.monotonic() - t0 < limit_s:
        await asyncio.sleep(0.02)
    assert server.stats()["tool_hung"] == 0


# ----------------------------------------------------------------------------- a blocking coroutine


async def test_a_blocking_async_tool_does_not_delay_the_health_check(server):
    """The tool blocks its loop for 3 s; every health check in those 3 s answers within 0.5 s."""
    async with BackgroundClient(server.address()) as bg:
        run = asyncio.ensure_future(bg.run(package(script("nap", {"seconds": 3}), ["nap"]), timeout_s=30))
        took = await health_latencies(server.address(), asyncio.ensure_future(asyncio.sleep(3.0)))
        await run
    assert len(took) >= 10 and max(took) < 0.5, took


async def test_a_blocking_async_tool_settles_timeout_close_to_its_one_second_limit(server):
    async with BackgroundClient(server.address()) as bg:
        ups = await bg.run(package(script("nap", {"seconds": 3}), ["nap"]), timeout_s=30)
    res = tool_result(ups)
    assert not res.tool_result.ok and "timed out after 1 s" in res.tool_result.content
    assert 1000 <= res.tool_result.duration_ms < 1600
    assert ups[-1].kind == bpb.UPDATE_KIND_FINAL


async def test_steer_and_cancel_answer_at_once_while_a_tool_blocks_its_loop(server):
    async with BackgroundClient(server.address()) as bg:
        pkg = package(script("nap", {"seconds": 3}), ["nap"])
        ups: list[bpb.Update] = []

        async def read() -> None:
            async for u in bg.delegate(pkg, timeout_s=30):
                ups.append(u)

        reader = asyncio.ensure_future(read())
        while not any(u.kind == bpb.UPDATE_KIND_TOOL_CALL for u in ups):
            await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        steered = await bg.steer(pkg.task_id, "hurry up")
        t_steer = time.perf_counter() - t0
        t0 = time.perf_counter()
        cancelled = await bg.cancel(pkg.task_id, "changed my mind")
        t_cancel = time.perf_counter() - t0
        await asyncio.wait_for(reader, 5)
    assert steered.accepted and cancelled.cancelled
    assert t_steer < 0.5 and t_cancel < 0.5
    assert ups[-1].kind == bpb.UPDATE_KIND_CANCELLED


# ----------------------------------------------------------------------------- hung calls


async def test_twenty_hung_sync_calls_hold_no_more_threads_than_the_pool(server):
    """The pool has 4 workers: the first 4 calls time out and stay hung; the other 16 settle at once as
    `unavailable`; the count of hung calls is in the stats; no more than 4 worker threads exist."""
    await no_hung_calls(server)  # the `nap`s of earlier tests end within 3 s
    before, threads_before = server.stats(), threading.active_count()
    contents, durations = [], []
    async with BackgroundClient(server.address()) as bg:
        for _ in range(20):
            ups = await bg.run(package(script("stuck", {}), ["stuck"]), timeout_s=30)
            res = tool_result(ups).tool_result
            contents.append(res.content)
            durations.append(res.duration_ms)
            assert ups[-1].kind == bpb.UPDATE_KIND_FINAL
    grown = threading.active_count() - threads_before
    stats = server.stats()
    timed_out = [c for c in contents if "timed out" in c]
    refused = [(c, d) for c, d in zip(contents, durations, strict=True) if "could not start" in c]
    assert grown <= WORKERS and stats["tool_workers"] <= WORKERS
    assert len(timed_out) == WORKERS and len(refused) == 20 - WORKERS
    assert all(d < 100 for _, d in refused)  # at once, not after the 0.3 s timeout
    assert stats["tool_hung"] == WORKERS
    assert stats["tool_refused_total"] - before["tool_refused_total"] == 20 - WORKERS


async def test_hung_workers_return_to_the_pool_when_their_calls_end(server):
    RELEASE.set()  # the hung `stuck` calls (if any) return now
    await no_hung_calls(server)
    RELEASE.clear()
    async with BackgroundClient(server.address()) as bg:
        ups = await bg.run(package(script("count", {"n": 7}), ["count"]), timeout_s=30)
    assert tool_result(ups).tool_result.content == "n=7"


# ----------------------------------------------------------------------------- hostile arguments


async def test_an_integer_of_5000_digits_settles_invalid_arguments_and_the_task_still_ends_final(server):
    async with BackgroundClient(server.address()) as bg:
        ups = await bg.run(package(script("count", '{"n": ' + "7" * 5000 + "}"), ["count"]), timeout_s=30)
    res = tool_result(ups).tool_result
    assert not res.ok and "Invalid arguments for tool 'count'" in res.content and "5000 digits" in res.content
    assert ups[-1].kind == bpb.UPDATE_KIND_FINAL


async def test_arguments_nested_20000_deep_settle_invalid_arguments_and_the_task_still_ends_final(server):
    deep = '{"data": ' + "[" * 20_000 + "]" * 20_000 + "}"
    async with BackgroundClient(server.address()) as bg:
        ups = await bg.run(package(script("store", deep), ["store"]), timeout_s=30)
    res = tool_result(ups).tool_result
    assert not res.ok and "nested 20001 levels deep" in res.content
    assert ups[-1].kind == bpb.UPDATE_KIND_FINAL


# ----------------------------------------------------------------------------- the pool alone


async def test_a_pool_call_runs_a_coroutine_on_a_loop_other_than_the_callers():
    @tool
    async def where() -> int:
        """The id of the loop it runs on."""
        return id(asyncio.get_running_loop())

    pool = WorkerPool(PoolConfig(max_workers=2))
    got = await pool.run(where, {}, _ctx(), "c1", 2.0)
    assert got != id(asyncio.get_running_loop())


async def test_a_waiting_call_is_refused_at_once_when_the_last_free_worker_hangs():
    """One worker, busy with a live call that then times out and hangs: a call waiting for it is
    refused as soon as that happens, not at the end of its own 5 s timeout."""
    from tools.isolation import CallTimedOut, PoolExhausted

    gate = threading.Event()

    @tool(timeout_s=0.2)
    def blocker() -> str:
        """Blocks until released."""
        gate.wait(10)
        return "done"

    pool = WorkerPool(PoolConfig(max_workers=1))
    try:
        first = asyncio.ensure_future(pool.run(blocker, {}, _ctx(), "a", 0.2))
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        second = asyncio.ensure_future(pool.run(blocker, {}, _ctx(), "b", 5.0))
        with pytest.raises(CallTimedOut):
            await first
        with pytest.raises(PoolExhausted):
            await second
        assert time.perf_counter() - t0 < 1.0 and pool.stats()["hung"] == 1
    finally:
        gate.set()


def _ctx():
    from tools import ToolContext

    return ToolContext()
