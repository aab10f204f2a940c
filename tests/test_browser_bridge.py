"""The page's WebSocket bridge without a browser: a real WebSocket client (the `websockets` library) on
127.0.0.1 talks to the bridge served by uvicorn (interplay.web.server), which holds a real Converse
stream to a real TurnLoop with the tiny interaction model (random weights: its words are not the
subject here) and the real gRPC Session service, all in this process. The back-pressure test puts a
stalled session (written for the test: the fault it injects) behind the bridge instead.
"""

from __future__ import annotations

import asyncio
import json
import os

import grpc
import httpx
import pytest
from websockets.asyncio.client import connect

from interaction_actor.model.fusion import build_model
from interaction_actor.runtime.loop import LoopConfig, TurnLoop
from interaction_actor.runtime.service import serve
from interplay.v1 import session_pb2 as spb
from interplay.v1 import session_pb2_grpc as sgrpc
from interplay.web.bridge import BridgeConfig
from interplay.web.server import WebServer

TURN_MS = 100


@pytest.fixture(scope="module")
def tiny():
    return build_model("tiny", seed=0)


@pytest.fixture
async def bridged(tiny):
    loop = TurnLoop(tiny, LoopConfig(turn_ms=TURN_MS, admission=False))
    loop.start()
    server, address = await serve(loop)
    web = WebServer(BridgeConfig(address))
    url = await asyncio.to_thread(web.start)
    try:
        yield loop, web, url.replace("http://", "ws://") + "ws"
    finally:
        await asyncio.to_thread(web.stop)
        await server.stop(None)
        await loop.stop()


async def until(ws, kind: str, timeout_s: float = 5.0) -> dict:
    """The next JSON message of this type (binary audio and other types are skipped)."""
    async with asyncio.timeout(timeout_s):
        while True:
            raw = await ws.recv()
            if isinstance(raw, str) and (msg := json.loads(raw))["type"] == kind:
                return msg


BAD = [b"\x01\x00",  # audio with an odd byte count
       b"\x01" + b"\x00" * 70_000,  # audio over the bridge's 64 kB (2 s) per frame
       b"\x07abc",  # an unknown tag
       b"\x02not a jpeg", b"", "not json", json.dumps({"type": "shout"}), json.dumps({"type": "text", "text": ""}),
       json.dumps(["text", "hello"])]


async def test_a_bad_frame_from_the_page_gets_an_error_event_not_a_dead_socket(bridged):
    loop, web, ws_url = bridged
    async with connect(ws_url) as ws:
        await until(ws, "session")
        errors = []
        for bad in BAD:
            await ws.send(bad)
            errors.append(await until(ws, "error"))
        assert [e["code"] for e in errors] == ["bad_frame"] * len(BAD)
        await ws.send(json.dumps({"type": "text", "text": "hello"}))
        await ws.send(b"\x01" + b"\x00\x00" * 320)  # a good 20 ms mic frame
        first = await until(ws, "turn")
        later = [await until(ws, "turn") for _ in range(3)]
        assert [m["turn"] for m in later] == [first["turn"] + 1, first["turn"] + 2, first["turn"] + 3]
        assert not [e for m in [first, *later] for e in m.get("events", []) if e["kind"] == "EVENT_KIND_ERROR"]
    assert web.bridge.bad_frames == len(BAD)


async def test_a_session_that_ends_on_the_server_tells_the_page_and_closes_its_socket(bridged):
    loop, web, ws_url = bridged
    async with connect(ws_url) as ws:
        await until(ws, "session")
        await until(ws, "turn")
        assert len(loop.sessions) == 1 and web.bridge.open_streams == 1
        await ws.send(json.dumps({"type": "stop"}))
        closed = await until(ws, "closed")
        assert closed["reason"] == "session ended"
        async with asyncio.timeout(5):
            await ws.wait_closed()
        assert ws.close_code == 1000
    assert web.bridge.open_streams == 0 and not loop.sessions


async def test_the_page_and_its_plain_js_modules_are_served_without_a_build_step(bridged):
    _, web, _ = bridged
    async with httpx.AsyncClient(base_url=web.url, timeout=10) as http:
        page = await http.get("/")
        assert page.status_code == 200 and '<script type="module" src="/static/app.js">' in page.text
        for module in ("app.js", "media.js", "player.js", "timeline.js", "mic-worklet.js"):
            got = await http.get(f"/static/{module}")
            assert got.status_code == 200 and "javascript" in got.headers["content-type"], module


class StalledSession(sgrpc.SessionServicer):
    """Stand-in for the fault under test (the real Session service always reads its stream): a session
    that takes the stream and then reads nothing and answers nothing."""

    async def Converse(self, request_iterator, context):  # noqa: N802 - gRPC name
        await asyncio.sleep(30)
        yield spb.OutputChunk()


async def test_a_session_that_stops_reading_stops_the_pages_sends_instead_of_filling_memory():
    server = grpc.aio.server()
    sgrpc.add_SessionServicer_to_server(StalledSession(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    web = WebServer(BridgeConfig(f"127.0.0.1:{port}"))
    url = await asyncio.to_thread(web.start)
    frame = b"\x01" + os.urandom(6400)  # 200 ms of "audio" that no compression shrinks
    sent = 0
    try:
        async with connect(url.replace("http://", "ws://") + "ws", compression=None, close_timeout=1) as ws:
            await until(ws, "session")
            with pytest.raises(TimeoutError):
                while sent * len(frame) < 64_000_000:
                    await asyncio.wait_for(ws.send(frame), 1.0)
                    sent += 1
            await asyncio.to_thread(web.stop)  # lets the page go although its session never read a byte
    finally:
        await asyncio.to_thread(web.stop)
        await server.stop(None)
    # what is held on the way: the bridge's 64 chunks, gRPC's window, the socket buffers (a few MB each)
    assert sent * len(frame) < 40_000_000, f"{sent * len(frame) / 1e6:.0f} MB taken before the page was held back"
    assert web.bridge.open_streams == 0
