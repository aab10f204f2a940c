"""User mistakes end in one line naming the thing and what to do, exit code 2, within 2 s and before
Ray or a model starts; the Session port answers health checks and lists its services by reflection."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from typer.testing import CliRunner

from interplay import __version__
from interplay.cli import app


def run(args: list[str]) -> tuple[int, list[str], float]:
    t0 = time.monotonic()
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output.strip().splitlines(), time.monotonic() - t0


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args,names", [
    (["serve", "--checkpoint", "nope.pt"], "nope.pt"),
    (["demo", "--checkpoint", "nope.pt"], "nope.pt"),
    (["serve", "--engine", "foo"], "'foo'"),
    (["demo", "--engine", "foo"], "'foo'"),
    (["train", "--init-from", "nope.pt"], "nope.pt"),
    (["train", "--mix", "delegation,weather"], "'weather'"),
])
def test_a_wrong_serve_demo_or_train_option_is_one_line_and_exit_code_2_before_anything_starts(args, names):
    code, lines, took = run(args)
    assert code == 2 and len(lines) == 1 and names in lines[0] and lines[0].startswith("error:"), lines
    assert took < 2.0


def test_talk_to_an_address_where_nothing_listens_is_one_line_and_exit_code_2(tmp_path):
    script = tmp_path / "s.txt"
    script.write_text("hello\n")
    code, lines, took = run(["talk", f"127.0.0.1:{closed_port()}", "--script", str(script)])
    assert code == 2 and len(lines) == 1 and "no Session service answers" in lines[0] and "interplay serve" in lines[0]
    assert took < 1.5 + 2.0  # talk waits its 1.5 s connect timeout (interplay/talk.py), then says so at once


def test_talk_with_a_file_that_is_not_a_wav_names_the_file_in_one_line_and_exits_2(tmp_path):
    bad = tmp_path / "speech.wav"
    bad.write_bytes(b"this is text, not RIFF audio")
    code, lines, _ = run(["talk", "127.0.0.1:1", "--wav", str(bad)])
    assert code == 2 and len(lines) == 1 and str(bad) in lines[0] and "WAV" in lines[0]


def test_version_prints_the_version():
    code, lines, _ = run(["--version"])
    assert code == 0 and lines == [f"interplay {__version__}"]


async def test_the_session_port_answers_serving_and_lists_its_services_by_reflection():
    from interaction_actor.model.fusion import build_model
    from interaction_actor.runtime.loop import LoopConfig, TurnLoop
    from interaction_actor.runtime.service import SERVICE, serve

    loop = TurnLoop(build_model("tiny", seed=0), LoopConfig(turn_ms=100))
    loop.start()
    server, address = await serve(loop)
    try:
        async with grpc.aio.insecure_channel(address) as ch:
            h = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=2)
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                             timeout=2)
            names = [s.name async for r in call for s in r.list_services_response.service]
    finally:
        await server.stop(0.2)
        await loop.stop()
    assert h.status == health_pb2.HealthCheckResponse.SERVING
    assert SERVICE in names and "grpc.health.v1.Health" in names
