"""Tools inside a real Ray BackgroundActor: MCP servers connected on the actor's own event loop (a real
MCP server, tests/mcp_server_fixture.py, as a subprocess of the actor), declared secrets, and a
coroutine tool that blocks its loop without stalling the actor's gRPC service. The engine is
tests/scripted_engine.py (it asks for exactly the tool call a test scripts); the rest is real."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import grpc
import pytest
import ray
import scripted_engine
from grpc_health.v1 import health_pb2, health_pb2_grpc
from scripted_engine import make_scripted_engine, script

from background_actor.actor import start_background
from background_actor.client import BackgroundClient
from background_actor.service import SERVICE_NAME
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import context_pb2 as xpb
from tools import Registry, ToolContext, tool

FIXTURE = str(Path(__file__).with_name("mcp_server_fixture.py"))
KEY = "wk-1a2b3c4d5e6f7a8b"


@tool(timeout_s=1.0)
async def nap(seconds: float) -> str:
    """Blocks its event loop (time.sleep inside async def)."""
    time.sleep(seconds)
    return f"slept {seconds}"


@tool(secrets=("weather_api_key",))
def weather(city: str, context: ToolContext) -> str:
    """Weather for a city (needs the key)."""
    return f"{city}: sunny" if context.secret("weather_api_key") == KEY else "wrong key"


def make_registry() -> Registry:
    return Registry([nap, weather])


@pytest.fixture(scope="module")
def actor(ray_local):
    # The factories live in test modules that Ray's workers cannot import: ship them by value.
    ray.cloudpickle.register_pickle_by_value(scripted_engine)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    handle, address = start_background(engine="scripted", engine_factory=make_scripted_engine,
                                       registry_factory=make_registry, mcp=(f"{sys.executable} {FIXTURE}",),
                                       secrets={"weather_api_key": KEY}, log_level="warning", max_restarts=0)
    yield handle, address
    ray.kill(handle, no_restart=True)


async def delegate(address: str, tool_name: str, arguments: dict) -> list[bpb.Update]:
    pkg = xpb.ContextPackage(task_id=f"t{time.monotonic_ns()}", session_id="s1", task=script(tool_name, arguments),
                             allowed_tools=[tool_name], deadline_ms=30_000, created_unix_ms=int(time.time() * 1000))
    async with BackgroundClient(address) as bg:
        return await bg.run(pkg, timeout_s=30)


def result_of(ups: list[bpb.Update]):
    (res,) = [u.tool_result for u in ups if u.kind == bpb.UPDATE_KIND_TOOL_RESULT]
    return res


async def test_an_mcp_tool_is_called_through_a_ray_background_actor(actor):
    _, address = actor
    ups = await delegate(address, "add", {"a": 19, "b": 23})
    assert result_of(ups).ok and result_of(ups).content == "42"
    assert ups[-1].kind == bpb.UPDATE_KIND_FINAL and ups[-1].text == "TOOL SAID: 42"


def test_the_ray_actor_serves_its_mcp_tools_beside_its_own(actor):
    handle, _ = actor
    assert ray.get(handle.tool_names.remote(), timeout=10) == ["nap", "weather", "add", "shout", "fail"]


async def test_a_ray_actors_tool_reads_the_secret_given_at_start(actor):
    _, address = actor
    ups = await delegate(address, "weather", {"city": "Rome"})
    assert result_of(ups).content == "Rome: sunny"


async def test_a_blocking_async_tool_does_not_delay_the_ray_actors_health_check(actor):
    """The tool blocks its loop for 3 s; every health check in those 3 s answers within 0.5 s."""
    _, address = actor
    run = asyncio.ensure_future(delegate(address, "nap", {"seconds": 3}))
    took = []
    async with grpc.aio.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            t0 = time.perf_counter()
            r = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
            took.append(time.perf_counter() - t0)
            assert r.status == health_pb2.HealthCheckResponse.SERVING
            await asyncio.sleep(0.05)
    ups = await run
    assert "timed out after 1 s" in result_of(ups).content
    assert len(took) >= 10 and max(took) < 0.5, took


def test_stopping_the_ray_actor_ends_its_mcp_server_process(actor):
    handle, _ = actor
    pid = ray.get(handle.pid.remote(), timeout=10)
    children = _children_running(pid, "mcp_server_fixture.py")
    assert children, "the actor has no MCP server subprocess"
    ray.get(handle.stop.remote(), timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(c) for c in children):
        time.sleep(0.05)
    assert not any(_alive(c) for c in children)


def _children_running(ppid: int, needle: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == ppid and needle in cmdline:
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
