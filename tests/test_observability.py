"""Metrics and traces from real parts: a TurnLoop with the real (tiny) model and real gRPC on 127.0.0.1,
prometheus_client's HTTP server scraped with httpx, and a delegation through a real Background server
(the actor body in-process on its own thread and loop) whose spans go to the JSON-lines file exporter.
The one stand-in is the background's engine (tests/scripted_engine.py: it asks for the scripted tool
call, then answers); the gRPC hop, the task manager, the agent loop, the registry and the tool are real.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from conftest import converse
from prometheus_client.parser import text_string_to_metric_families
from scripted_engine import make_scripted_engine, script

from background_actor.actor import BackgroundActorImpl
from background_actor.service import ServerConfig
from interaction_actor.model.fusion import build_model
from interaction_actor.runtime.loop import LoopConfig, TurnLoop
from interaction_actor.runtime.metrics import serve_metrics
from interaction_actor.runtime.service import serve
from interplay import tracing
from interplay.client import audio_chunk

PCM_100MS = bytes(3200)
EXPRESSION = "4111 * 4243"  # the tool's argument: it must never reach the trace file


@pytest.fixture(scope="module")
def tiny():
    return build_model("tiny", seed=0)


def scrape(address: str) -> dict[str, float]:
    """/metrics as {sample name{labels}: value}."""
    text = httpx.get(f"http://{address}/metrics", timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            if "le" in s.labels and s.labels["le"] != "+Inf":
                continue
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


async def test_metrics_scraped_from_a_running_loop_move_after_a_session(tiny):
    loop = TurnLoop(tiny, LoopConfig(turn_ms=50))  # no background address: a delegation settles as an error
    loop.start()
    server, address = await serve(loop)
    http = serve_metrics(loop.metrics, "127.0.0.1", 0)
    during: dict[str, float] = {}

    async def delegate_and_scrape() -> None:
        await asyncio.sleep(0.3)
        sid = next(iter(loop.sessions))
        loop.start_delegation(sid, "what is the weather")
        await asyncio.sleep(0.3)
        during.update(await asyncio.to_thread(scrape, http.address))

    try:
        before = await asyncio.to_thread(scrape, http.address)
        sends = [audio_chunk(PCM_100MS), audio_chunk(b"\x00\x01\x02"), audio_chunk(PCM_100MS)]  # one odd-length PCM
        await asyncio.gather(converse(address, sends, 0.8, gap_s=0.1), delegate_and_scrape())
        await asyncio.sleep(0.2)
        after = await asyncio.to_thread(scrape, http.address)
    finally:
        http.close()
        await server.stop(0.2)
        await loop.stop()
    assert http.host == "127.0.0.1"
    assert before["interplay_loop_live_sessions{}"] == 0 and during["interplay_loop_live_sessions{}"] == 1
    assert after["interplay_loop_live_sessions{}"] == 0
    for name in ("interplay_loop_turns_total{}", "interplay_loop_session_turns_total{}",
                 "interplay_loop_lateness_ms_count{}", "interplay_loop_compute_ms_count{}",
                 "interplay_loop_delegations_total{}", "interplay_delegation_latency_ms_count{}"):
        assert after[name] > before.get(name, 0), name
    assert after["interplay_loop_input_errors_total{code=bad_pcm_length}"] == 1
    assert after["interplay_delegations_settled_total{code=no_background,outcome=error}"] == 1
    assert after["interplay_loop_lateness_ms_count{}"] == after["interplay_loop_turns_total{}"]


async def delegate_once(tiny, address: str, tool: str, task: str, timeout_s: float = 20.0) -> None:
    """A real TurnLoop with one session delegates `task` (allowed: `tool`) and waits until it settles."""
    loop = TurnLoop(tiny, LoopConfig(turn_ms=50, background_address=address, allowed_tools=[tool]))
    loop.open("s1", loop.sink())
    loop.start()
    try:
        loop.start_delegation("s1", task)
        end = time.monotonic() + timeout_s
        while (loop.delegator.tasks or not loop.metrics.delegations_settled) and time.monotonic() < end:
            await asyncio.sleep(0.05)
    finally:
        await loop.stop()


@pytest.fixture(scope="module")
def traced(tiny, tmp_path_factory):
    """One delegation (a scripted calculator call) from a real TurnLoop to a real Background server,
    traced into a JSON-lines file; returns the spans (dicts) read back from it, the file's text and
    the background server's own /metrics, scraped after the task."""
    path = tmp_path_factory.mktemp("trace") / "spans.jsonl"
    tracing.configure(str(path), "interplay-test")
    bg = BackgroundActorImpl(ServerConfig(engine="scripted", tools=("calculator",), metrics_port=0),
                             log_level="warning", engine_factory=make_scripted_engine)

    try:
        asyncio.run(delegate_once(tiny, bg.address(), "calculator", script("calculator", {"expression": EXPRESSION})))
        tracing.flush()
        text = path.read_text()
        background = scrape(bg.metrics_endpoint())
    finally:
        bg.stop()
        tracing.shutdown()
    return [json.loads(line) for line in text.splitlines()], text, background


def one(spans: list[dict], name: str) -> dict:
    (s,) = [s for s in spans if s["name"] == name]
    return s


def test_a_delegation_is_one_trace_from_the_interaction_side_to_the_llm_request_and_its_tool_call(traced):
    spans, _, _ = traced
    delegate, task = one(spans, "delegate"), one(spans, "background_task")
    chats = [s for s in spans if s["name"].startswith("chat ")]
    tool = one(spans, "execute_tool calculator")
    asked = next(c for c in chats if c["context"]["span_id"] == tool["parent_id"])  # the request that asked for it
    assert {s["context"]["trace_id"] for s in [delegate, task, *chats, tool]} == {delegate["context"]["trace_id"]}
    assert delegate["parent_id"] is None and delegate["kind"] == "SpanKind.CLIENT"
    assert task["parent_id"] == delegate["context"]["span_id"] and task["kind"] == "SpanKind.SERVER"
    assert all(c["parent_id"] == task["context"]["span_id"] for c in chats) and len(chats) == 2
    assert asked["attributes"]["gen_ai.operation.name"] == "chat"
    assert asked["attributes"]["gen_ai.request.model"] == "scripted"
    assert asked["attributes"]["gen_ai.usage.input_tokens"] == 1 and asked["attributes"]["gen_ai.usage.output_tokens"] == 1
    assert tool["attributes"]["gen_ai.operation.name"] == "execute_tool"
    assert tool["attributes"]["gen_ai.tool.name"] == "calculator"
    assert tool["attributes"]["gen_ai.tool.call.id"] == "call-1" and tool["attributes"]["interplay.tool.ok"] is True
    assert delegate["status"]["status_code"] == "OK" and task["attributes"]["interplay.outcome"] == "final"


def test_the_delegate_span_records_accepted_and_tool_call_updates_as_events(traced):
    spans, _, _ = traced
    events = [e["name"] for e in one(spans, "delegate")["events"]]
    assert events[0] == "accepted" and "tool_call" in events and "tool_result" in events
    call = next(e for e in one(spans, "delegate")["events"] if e["name"] == "tool_call")
    assert call["attributes"]["gen_ai.tool.name"] == "calculator"


def test_the_trace_file_never_holds_the_task_text_or_the_tool_arguments(traced):
    spans, text, _ = traced
    assert len(spans) >= 4
    assert EXPRESSION not in text and "expression" not in text


def test_a_background_actor_serves_its_tool_and_llm_metrics_on_its_own_endpoint(traced):
    _, _, background = traced
    assert background["interplay_background_tool_calls_total{outcome=ok,tool=calculator}"] == 1
    assert background["interplay_background_tool_latency_ms_count{tool=calculator}"] == 1
    assert background["interplay_background_llm_ttft_ms_count{model=scripted}"] == 2  # the call, then the answer
    assert background["interplay_background_tasks_total{outcome=final}"] == 1


def test_a_delegation_to_a_ray_background_actor_is_one_trace_across_two_processes(tiny, ray_local, tmp_path):
    """The background here is a real Ray actor in its own process, with the fault bench's scripted engine
    (interplay/fault_kit.py: it makes the exact tool call asked for); the interaction side is this process."""
    import functools
    import os

    import ray

    from background_actor.actor import start_background
    from interplay.fault_kit import script as fault_script
    from interplay.runtime import load_registry

    path = tmp_path / "spans.jsonl"
    tracing.configure(str(path), "interplay-interaction")
    handle, address = start_background(engine="interplay.fault_kit:FaultEngine", trace_file=str(path),
                                       registry_factory=functools.partial(load_registry,
                                                                          "interplay.fault_kit:fault_registry"))

    try:
        asyncio.run(delegate_once(tiny, address, "fault_slow", fault_script(("fault_slow", '{"seconds": 0.1}')), 30))
        tracing.flush()
        background_pid = ray.get(handle.pid.remote(), timeout=10)
        ray.get(handle.stop.remote(), timeout=30)  # flushes the actor's spans
    finally:
        ray.kill(handle)
        tracing.shutdown()
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    delegate, task, tool = one(spans, "delegate"), one(spans, "background_task"), one(spans, "execute_tool fault_slow")
    assert background_pid != os.getpid()
    assert delegate["resource"]["attributes"]["service.name"] == "interplay-interaction"
    assert task["resource"]["attributes"]["service.name"] != "interplay-interaction"
    assert {s["context"]["trace_id"] for s in (delegate, task, tool)} == {delegate["context"]["trace_id"]}
    assert task["parent_id"] == delegate["context"]["span_id"]
    assert tool["attributes"]["gen_ai.tool.name"] == "fault_slow"
