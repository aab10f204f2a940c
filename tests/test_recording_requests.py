"""A client asks the server to save its session for replay (call metadata `interplay-record`): from
`interplay talk --record` and from the page (the bridge's `?record=1`). Real parts: the shipped
model in the real TurnLoop, Session gRPC on 127.0.0.1, the real CLI and the real WebSocket bridge;
the saved file is replayed on the virtual clock (interplay.replay) and must give the same outputs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner
from websockets.asyncio.client import connect

from interaction_actor.model.fusion import build_model
from interaction_actor.model.weights import resolve_checkpoint
from interaction_actor.runtime.loop import LoopConfig, TurnLoop
from interaction_actor.runtime.service import serve
from interplay.cli import app
from interplay.client import SessionClient, text_chunk
from interplay.replay import compare, read_session, replay_async
from interplay.v1 import session_pb2 as spb
from interplay.web.bridge import BridgeConfig
from interplay.web.server import WebServer

HELLO = Path(__file__).resolve().parent.parent / "examples" / "assets" / "hello.wav"


@pytest.fixture(scope="module")
def shipped():
    return build_model("small", resolve_checkpoint("small", None), 0)


async def served(model, **config):
    loop = TurnLoop(model, LoopConfig(turn_ms=200, admission=False, **config))
    loop.start()
    server, address = await serve(loop)
    return loop, server, address


async def test_talk_record_saves_the_session_and_the_file_replays_turn_by_turn(shipped, tmp_path):
    loop, server, address = await served(shipped, requested_record_dir=str(tmp_path))
    try:
        result = await asyncio.to_thread(CliRunner().invoke, app, ["talk", address, "--wav", str(HELLO), "--json",
                                                                     "--record", "--tail", "1.0"])
    finally:
        await server.stop(0.2)
        await loop.stop()
    assert result.exit_code == 0, result.output[-2000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    saved = Path(summary["replay_file"])
    assert saved.parent == tmp_path and saved.exists()
    recorded = read_session(saved)
    assert len(recorded.turns) == summary["turns"]
    [run] = await replay_async(shipped, [recorded])
    assert compare(recorded.turns, run.turns) == []


async def test_a_session_that_did_not_ask_is_not_saved(shipped, tmp_path):
    loop, server, address = await served(shipped, requested_record_dir=str(tmp_path))
    try:
        async with SessionClient(address, "unasked") as c:
            async for chunk in c.chunks():
                if chunk.turn >= 3:
                    break
    finally:
        await server.stop(0.2)
        await loop.stop()
    assert list(tmp_path.iterdir()) == []


async def test_a_record_request_to_a_server_that_records_nothing_is_an_error_event_and_the_session_goes_on(shipped):
    loop, server, address = await served(shipped)  # no record_dir, no requested_record_dir
    chunks: list[spb.OutputChunk] = []
    try:
        async with SessionClient(address, "norec", record=True) as c:
            await c.send(text_chunk("hello"))
            async for chunk in c.chunks():
                chunks.append(chunk)
                if len(chunks) >= 6:
                    break
    finally:
        await server.stop(0.2)
        await loop.stop()
    errors = [e for ch in chunks for e in ch.events if e.kind == spb.EVENT_KIND_ERROR]
    assert [e.error.code for e in errors] == ["recording_unavailable"]
    assert [ch.turn for ch in chunks] == list(range(6))


async def test_a_page_that_asks_to_record_gets_its_session_saved_and_told_where(shipped, tmp_path):
    loop, server, address = await served(shipped, requested_record_dir=str(tmp_path))
    web = WebServer(BridgeConfig(address))
    url = await asyncio.to_thread(web.start)
    try:
        async with connect(url.replace("http://", "ws://") + "ws?record=1") as ws:
            started = None
            async with asyncio.timeout(10):
                while started is None:
                    raw = await ws.recv()
                    if isinstance(raw, str) and (m := json.loads(raw))["type"] == "turn":
                        started = next((e for e in m.get("events", [])
                                        if e["kind"] == "EVENT_KIND_SESSION_STARTED"), None)
            await ws.send(json.dumps({"type": "stop"}))
    finally:
        await asyncio.to_thread(web.stop)
        await server.stop(0.2)
        await loop.stop()
    saved = Path(started["attrs"]["replay_file"])
    assert saved.parent == tmp_path and read_session(saved).turns
