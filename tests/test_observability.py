"""Metrics and traces from real parts: a TurnLoop with the real (tiny) model and real gRPC on 127.0.0.1,
prometheus_client's HTTP server scraped with httpx, and a delegation through a real Background server
(the actor body in-process on its own thread and loop) whose spans go to the JSON-lines file exporter
and, over real gRPC, to an OTLP collector on 127.0.0.1 (opentelemetry-proto's TraceService, recording
what it is sent). The one stand-in is the background's engine (tests/scripted_engine.py: it asks for
the scripted tool call, then answers); the gRPC hop, the task manager, the agent loop, the registry
and the tool are real.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import grpc
import httpx
import pytest
from conftest import converse, serve_background
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tpb_grpc
from prometheus_client.parser import text_string_to_metric_families
from scripted_engine import make_scripted_engine, script

from background_actor.actor import BackgroundActorImpl
from background_actor.metrics import BackgroundMetrics
from background_actor.service import ServerConfig
from interaction_actor.model.fusion import build_model
from interaction_actor.runtime.backend import NativeBackend
from interaction_actor.runtime.loop import LoopConfig, TurnLoop
from interaction_actor.runtime.metrics import LoopMetrics, serve_metrics
from interaction_actor.runtime.service import serve
from interplay import tracing
from interplay.client import audio_chunk
from interplay.demo import write_outputs
from interplay.pictures import TurnClock, draw, read_spans, trace_delegations
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import background_pb2_grpc as bgrpc
from interplay.v1 import session_pb2 as spb

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
        for _ in range(100):  # the session opens within a few turns (more on a loaded host); bounded: 5 s
            await asyncio.sleep(0.05)
            if loop.sessions:
                break
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


async def delegate_once(tiny, address: str, tool: str, task: str,
                        timeout_s: float = 20.0) -> tuple[list[spb.OutputChunk], LoopMetrics]:
    """A real TurnLoop with one session delegates `task` (allowed: `tool`), waits until its result has
    surfaced and the delegation settled, and stops; returns the session's output chunks and the loop's
    metrics."""
    loop = TurnLoop(tiny, LoopConfig(turn_ms=50, background_address=address, allowed_tools=[tool], output_queue=4000))
    sink = loop.sink()
    live = loop.open("s1", sink)
    loop.start()
    try:
        loop.start_delegation("s1", task)
        end = time.monotonic() + timeout_s
        while (loop.delegator.tasks or live.weave.spans) and time.monotonic() < end:
            await asyncio.sleep(0.05)
    finally:
        await loop.stop()
    return list(sink.q), loop.metrics  # every chunk: the queue holds more than the session's turns


class Collector(tpb_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list = []

    def Export(self, request, context):  # noqa: N802
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                self.spans.extend(ss.spans)
        return tpb.ExportTraceServiceResponse()


@pytest.fixture(scope="module")
def traced(tiny, tmp_path_factory):
    """One delegation (a scripted calculator call) from a real TurnLoop to a real Background server,
    traced into a JSON-lines file and to an OTLP collector; returns the spans (dicts) read back from the
    file, the file's text, the background server's own /metrics (scraped after the task), the spans the
    collector received, the session's output chunks and the trace file's path."""
    path = tmp_path_factory.mktemp("trace") / "spans.jsonl"
    collector = Collector()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    tpb_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    tracing.configure(str(path), "interplay-test", otlp_endpoint=f"http://127.0.0.1:{port}")
    bg = BackgroundActorImpl(ServerConfig(engine="scripted", tools=("calculator",), metrics_port=0),
                             log_level="warning", engine_factory=make_scripted_engine)

    try:
        chunks, metrics = asyncio.run(delegate_once(tiny, bg.address(), "calculator",
                                                    script("calculator", {"expression": EXPRESSION})))
        tracing.flush()
        text = path.read_text()
        background = scrape(bg.metrics_endpoint())
        http = serve_metrics(metrics, "127.0.0.1", 0)
        try:
            loop_metrics = scrape(http.address)
        finally:
            http.close()
    finally:
        bg.stop()
        tracing.shutdown()
        server.stop(0)
    return ([json.loads(line) for line in text.splitlines()], text, background, collector.spans, chunks, path,
            loop_metrics)


def one(spans: list[dict], name: str) -> dict:
    (s,) = [s for s in spans if s["name"] == name]
    return s


def test_a_delegation_is_one_trace_from_the_interaction_side_through_agent_steps_to_the_llm_request_and_its_tool_call(
        traced):
    spans = traced[0]
    session, delegate, task = one(spans, "session"), one(spans, "delegate"), one(spans, "background_task")
    chats = [s for s in spans if s["name"].startswith("chat ")]
    tool = one(spans, "execute_tool calculator")
    asked = next(c for c in chats if c["context"]["span_id"] == tool["parent_id"])  # the request that asked for it
    assert {s["context"]["trace_id"] for s in [session, delegate, task, *chats, tool]} == {
        session["context"]["trace_id"]}
    assert session["parent_id"] is None and session["attributes"]["interplay.session_id"] == "s1"
    assert delegate["parent_id"] == session["context"]["span_id"] and delegate["kind"] == "SpanKind.CLIENT"
    assert task["parent_id"] == delegate["context"]["span_id"] and task["kind"] == "SpanKind.SERVER"
    steps = {s["context"]["span_id"]: s for s in spans if s["name"] == "agent_step"}
    assert len(steps) == 2 and {s["parent_id"] for s in steps.values()} == {task["context"]["span_id"]}
    assert sorted(steps[c["parent_id"]]["attributes"]["interplay.step"] for c in chats) == [0, 1]
    assert asked["attributes"]["gen_ai.operation.name"] == "chat"
    assert asked["attributes"]["gen_ai.request.model"] == "scripted"
    assert asked["attributes"]["gen_ai.usage.input_tokens"] == 1 and asked["attributes"]["gen_ai.usage.output_tokens"] == 1
    assert tool["attributes"]["gen_ai.operation.name"] == "execute_tool"
    assert tool["attributes"]["gen_ai.tool.name"] == "calculator"
    assert tool["attributes"]["gen_ai.tool.call.id"] == "call-1" and tool["attributes"]["interplay.tool.ok"] is True
    assert delegate["status"]["status_code"] == "OK" and task["attributes"]["interplay.outcome"] == "final"


def test_the_delegate_span_records_accepted_and_tool_call_updates_as_events(traced):
    spans = traced[0]
    events = [e["name"] for e in one(spans, "delegate")["events"]]
    assert events[0] == "accepted" and "tool_call" in events and "tool_result" in events
    call = next(e for e in one(spans, "delegate")["events"] if e["name"] == "tool_call")
    assert call["attributes"]["gen_ai.tool.name"] == "calculator"


def test_the_delegate_span_lasts_until_its_result_surfaced_voiced_and_the_delegation_settled(traced):
    spans = traced[0]
    delegate = one(spans, "delegate")
    events = {e["name"]: e for e in delegate["events"]}
    names = [e["name"] for e in delegate["events"]]
    assert names.index("accepted") < names.index("result") < names.index("surfaced") < names.index("settled")
    assert events["result"]["attributes"]["interplay.outcome"] == "final"
    surfaced = events["surfaced"]["attributes"]
    assert surfaced["interplay.update"] == "final" and surfaced["interplay.mode"] == "when_idle"
    assert surfaced["interplay.voiced"] is True
    assert delegate["attributes"]["interplay.settled"] == events["settled"]["attributes"]["interplay.settled"]
    assert delegate["end_time"] >= events["settled"]["timestamp"] > events["result"]["timestamp"]


def test_the_trace_file_never_holds_the_task_text_or_the_tool_arguments(traced):
    spans, text = traced[0], traced[1]
    assert len(spans) >= 4
    assert EXPRESSION not in text and "expression" not in text


def test_an_otlp_collector_receives_the_same_spans_of_the_delegation_over_grpc(traced):
    spans, received = traced[0], traced[3]
    got = {(s.name, "0x" + s.trace_id.hex(), "0x" + s.span_id.hex()) for s in received}
    assert got == {(s["name"], s["context"]["trace_id"], s["context"]["span_id"]) for s in spans}
    tool = next(s for s in received if s.name == "execute_tool calculator")
    attrs = {a.key: a.value for a in tool.attributes}
    assert attrs["gen_ai.tool.name"].string_value == "calculator"


def test_the_report_draws_the_delegation_from_the_trace_on_the_timelines_turns(traced, tmp_path):
    """The Gantt row comes from the spans: decided → settled, the tool call and the LLM requests as
    bars, and the surfacing at the turn the session's own chunks say it happened (within a turn)."""
    spans, chunks, path = traced[0], traced[4], traced[5]
    write_outputs(chunks, records(chunks), tmp_path)
    clock = TurnClock([(c.turn, c.time_ms) for c in chunks], 50)
    (row,) = trace_delegations(read_spans(path), "s1", turn_ms=50, clock=clock)
    surfaced_at = next(c.turn for c in chunks for e in c.events if e.kind == spb.EVENT_KIND_RESULT_SURFACED)
    marks = dict((label, turn) for turn, label in row.marks)
    assert abs(marks["surfaced when_idle voiced"] - surfaced_at) <= 1.0
    assert row.started <= marks["accepted"] <= marks["final"] <= marks["surfaced when_idle voiced"] <= row.ended
    assert [b[2] for b in row.bars] == ["LLM 1 tok", "tool calculator", "LLM 1 tok"]
    assert row.task_id == one(spans, "delegate")["attributes"]["interplay.task_id"]
    png = draw(tmp_path, trace=path, turn_ms=50)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def records(chunks: list[spb.OutputChunk]) -> list[dict]:
    """The demo's timeline records of these chunks."""
    from google.protobuf.json_format import MessageToDict

    return [{"dir": "out", **MessageToDict(c, preserving_proto_field_name=True), "turn": c.turn} for c in chunks]


def test_a_voiced_result_is_counted_by_mode_with_its_time_from_final_to_surfaced(traced):
    loop_metrics = traced[6]
    assert loop_metrics["interplay_results_surfaced_total{mode=when_idle,voiced=true}"] == 1
    assert loop_metrics["interplay_result_surface_ms_count{}"] == 1
    assert 0 < loop_metrics["interplay_result_surface_ms_sum{}"] < 5000
    assert loop_metrics["interplay_delegations_settled_total{code=,outcome=final}"] == 1


def test_llm_decode_speed_is_a_histogram_measured_as_bench_engine_measures_it():
    m = BackgroundMetrics()
    m.llm_request("m", ttft_ms=100.0, total_ms=1100.0, input_tokens=5, output_tokens=21)  # 20 more tokens in 1 s
    m.llm_request("m", ttft_ms=80.0, total_ms=90.0, input_tokens=5, output_tokens=1)  # one token: no speed to say
    samples = {s.name: s.value for f in m.registry.collect() for s in f.samples if "le" not in s.labels}
    assert samples["interplay_background_llm_tokens_per_s_count"] == 1
    assert samples["interplay_background_llm_tokens_per_s_sum"] == pytest.approx(20.0)


@pytest.fixture(scope="module")
def sessions(tiny, tmp_path_factory):
    """A real TurnLoop with no background (each delegation settles as a `no_background` error, which
    surfaces to the session), traced into a file; one session delegates twice. Returns the spans in the
    file once both delegations settled while the session was still open, and after the loop stopped."""
    path = tmp_path_factory.mktemp("sessions") / "spans.jsonl"
    tracing.configure(str(path), "interplay-test")

    def spans() -> list[dict]:
        tracing.flush()
        return [json.loads(line) for line in path.read_text().splitlines()]

    async def run() -> tuple[list[dict], list[dict]]:
        loop = TurnLoop(tiny, LoopConfig(turn_ms=50))
        live = loop.open("s2", loop.sink())
        loop.start()
        try:
            loop.start_delegation("s2", "first")
            loop.start_delegation("s2", "second")
            end = time.monotonic() + 20
            while (loop.delegator.tasks or live.weave.spans) and time.monotonic() < end:
                await asyncio.sleep(0.05)
            while_open = spans()
        finally:
            await loop.stop()
        return while_open, spans()

    try:
        return asyncio.run(run())
    finally:
        tracing.shutdown()


def test_a_sessions_delegations_are_children_of_its_session_span_in_one_trace(sessions):
    _, spans = sessions
    session = one(spans, "session")
    delegates = [s for s in spans if s["name"] == "delegate"]
    assert len(delegates) == 2 and session["parent_id"] is None and session["kind"] == "SpanKind.SERVER"
    assert {d["parent_id"] for d in delegates} == {session["context"]["span_id"]}
    assert {d["context"]["trace_id"] for d in delegates} == {session["context"]["trace_id"]}
    assert all(d["attributes"]["interplay.settled"] == "failed" for d in delegates)  # the error was voiced
    assert session["attributes"]["interplay.turns"] > 0 and session["end_time"] >= max(d["end_time"] for d in delegates)


def test_a_delegation_span_is_exported_when_it_settles_while_its_session_is_still_open(sessions):
    while_open, _ = sessions
    assert [s["name"] for s in while_open].count("delegate") == 2
    assert "session" not in [s["name"] for s in while_open]


async def test_a_session_still_open_when_tracing_shuts_down_ends_its_span_there(tiny, tmp_path):
    path = tmp_path / "spans.jsonl"
    tracing.configure(str(path), "interplay-test")
    loop = TurnLoop(tiny, LoopConfig(turn_ms=50))
    try:
        loop.open("s3", loop.sink())
        tracing.shutdown()  # the process stops without closing its session
    finally:
        await loop.stop()  # closing it afterwards ends nothing twice
    (session,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert session["name"] == "session" and session["attributes"]["interplay.session_id"] == "s3"
    assert session["attributes"]["interplay.ended_by"] == "shutdown" and session["end_time"]


def test_a_background_actor_serves_its_tool_and_llm_metrics_on_its_own_endpoint(traced):
    background = traced[2]
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


async def test_a_backend_s_speech_synthesis_lands_in_its_session_s_trace_and_the_loop_s_tts_histogram(tiny, tmp_path):
    """The hooks a backend with a TTS uses (the cascade's): the loop hands it its LoopMetrics, and
    `record_span(TTS_SPAN, long_span("session:ID"), ms)` puts the synthesis under the session's span.
    No TTS runs here: the call stands for the one such a backend makes after each synthesis."""

    class Speaking(NativeBackend):
        metrics = None  # a backend that records its own stages says so; the loop fills it in

    path = tmp_path / "spans.jsonl"
    tracing.configure(str(path), "interplay-test")
    loop = TurnLoop(Speaking(tiny), LoopConfig(turn_ms=50))
    try:
        loop.open("s4", loop.sink())
        tracing.record_span(tracing.TTS_SPAN, tracing.long_span("session:s4"), 120.0, {"interplay.tts.chars": 12})
        loop.backend.metrics.tts(120.0)
    finally:
        await loop.stop()
        tracing.shutdown()
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    session, tts = one(spans, "session"), one(spans, "tts")
    assert loop.backend.metrics is loop.metrics and loop.metrics.tts_ms.n == 1
    assert tts["parent_id"] == session["context"]["span_id"]
    took = datetime.fromisoformat(tts["end_time"]) - datetime.fromisoformat(tts["start_time"])
    assert abs(took.total_seconds() - 0.120) < 0.002


class Hanging(bgrpc.BackgroundServicer):
    """A Background that accepts a task and then works on it for longer than any test waits."""

    async def Delegate(self, request, context):  # noqa: N802
        yield bpb.Update(task_id=request.task_id, seq=0, kind=bpb.UPDATE_KIND_ACCEPTED)
        await asyncio.sleep(30)


async def test_a_delegation_out_when_its_session_closes_ends_abandoned_and_nothing_writes_on_it_after(
        tiny, tmp_path, caplog):
    path = tmp_path / "spans.jsonl"
    tracing.configure(str(path), "interplay-test")
    server, address = await serve_background(Hanging())
    loop = TurnLoop(tiny, LoopConfig(turn_ms=50, background_address=address))
    try:
        live = loop.open("s5", loop.sink())
        loop.start_delegation("s5", "still out")
        end = time.monotonic() + 10
        while not live.updates and time.monotonic() < end:  # accepted: the task is out
            await asyncio.sleep(0.01)
        loop.close("s5")  # the client left: its delegation is cancelled and settles afterwards
        while loop.delegator.tasks and time.monotonic() < end:
            await asyncio.sleep(0.01)
    finally:
        await loop.stop()
        await server.stop(None)
        tracing.shutdown()
    delegate = one([json.loads(line) for line in path.read_text().splitlines()], "delegate")
    assert delegate["attributes"]["interplay.settled"] == "abandoned"
    assert [e["name"] for e in delegate["events"]] == ["accepted", "settled"]
    assert loop.metrics.delegations_settled == {("error", "cancelled"): 1}  # still counted, once
    assert not [r for r in caplog.records if "ended span" in r.getMessage()]


async def test_a_client_s_traceparent_on_converse_makes_the_session_span_a_child_of_the_client_s_span(tiny, tmp_path):
    from interplay.client import text_chunk
    from interplay.v1 import session_pb2_grpc as sgrpc

    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    path = tmp_path / "spans.jsonl"
    tracing.configure(str(path), "interplay-test")
    loop = TurnLoop(tiny, LoopConfig(turn_ms=50))
    loop.start()
    server, address = await serve(loop)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            call = sgrpc.SessionStub(channel).Converse(
                iter([text_chunk("hello")]), metadata=(("traceparent", f"00-{trace_id}-{span_id}-01"),))
            turns = 0
            async for _chunk in call:
                turns += 1
                if turns == 3:
                    break
            call.cancel()
        end = time.monotonic() + 5
        while loop.sessions and time.monotonic() < end:
            await asyncio.sleep(0.05)
    finally:
        await server.stop(0.2)
        await loop.stop()
        tracing.shutdown()
    session = one([json.loads(line) for line in path.read_text().splitlines()], "session")
    assert (session["context"]["trace_id"], session["parent_id"]) == (f"0x{trace_id}", f"0x{span_id}")
