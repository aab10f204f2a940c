"""The context package as the live loop builds it, over real gRPC on 127.0.0.1: what a session saw
reaches the package, the conversation beyond the log's window arrives as a digest, and the build runs
off the event-loop thread, so a slow or failing build costs neither the turn clock nor other sessions.

The Background servers are small real gRPC servicers written for the test (the property under test
is the interaction side's behaviour; the background actor has its own tests).
"""

from __future__ import annotations

import asyncio
import io
import threading
import time

import pytest
import torch
from conftest import serve_background
from PIL import Image

from interaction_actor.model.fusion import build_model
from interaction_actor.runtime import delegator as delegator_module
from interaction_actor.runtime.loop import LoopConfig, TurnLoop
from interaction_actor.runtime.service import serve
from interplay.client import SessionClient, audio_chunk, text_chunk
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import background_pb2_grpc as bgrpc
from interplay.v1 import session_pb2 as spb

QUIET_100MS = torch.zeros(1600, dtype=torch.int16).numpy().tobytes()


@pytest.fixture(scope="module")
def tiny():
    return build_model("tiny", seed=0)


class Answering(bgrpc.BackgroundServicer):
    async def Delegate(self, request, context):  # noqa: N802
        yield bpb.Update(task_id=request.task_id, seq=0, kind=bpb.UPDATE_KIND_FINAL, text="done")


def red_frame() -> spb.InputChunk:
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (220, 25, 20)).save(buf, format="JPEG", quality=85)
    return spb.InputChunk(video=spb.VideoFrame(data=buf.getvalue(), encoding=spb.FRAME_ENCODING_JPEG,
                                               width=320, height=240))


async def run_session(loop: TurnLoop, address: str, sid: str, script: dict[int, list[spb.InputChunk]],
                      turns: int, on_chunk=None) -> list[spb.OutputChunk]:
    """One real client: at chunk i send script[i] (else 100 ms of quiet); `on_chunk(n)` after each."""
    chunks: list[spb.OutputChunk] = []
    async with SessionClient(address, sid) as c:
        for item in script.get(0, []):
            await c.send(item)
        async for chunk in c.chunks():
            chunks.append(chunk)
            if on_chunk is not None:
                on_chunk(len(chunks))
            if len(chunks) >= turns:
                break
            for item in script.get(len(chunks), [audio_chunk(QUIET_100MS)]):
                await c.send(item)
    return chunks


async def with_loop(tiny, config: LoopConfig, body):
    bg_server, bg_addr = await serve_background(Answering())
    config.background_address = bg_addr
    loop = TurnLoop(tiny, config)
    loop.start()
    server, address = await serve(loop)
    try:
        return await body(loop, address)
    finally:
        await server.stop(0.2)
        await loop.stop()
        await bg_server.stop(0.2)


async def test_a_video_frame_the_session_sent_reaches_the_package_as_an_observation(tiny):
    script = {0: [red_frame()], 3: [text_chunk("what is the weather in Oslo?")]}

    async def body(loop, address):
        await run_session(loop, address, "seen", script, turns=12)
        return loop.delegator.sent

    sent = await with_loop(tiny, LoopConfig(turn_ms=50, policy="rule"), body)
    (obs,) = sent[0].observations
    assert "mean colour red" in obs.description and "320x240 JPEG" in obs.description
    assert obs.mime_type == "image/jpeg" and 0 < len(obs.image) < 8_000  # a short session: the image fits


async def test_a_long_session_package_carries_a_digest_of_entries_beyond_the_log_window(tiny):
    script = {i: [text_chunk(f"note {i}: the door code is {1000 + i}")] for i in range(1, 20)}
    script[22] = [text_chunk("what is the weather in Oslo?")]

    async def body(loop, address):
        await run_session(loop, address, "long", script, turns=30)
        return loop.delegator.sent

    sent = await with_loop(tiny, LoopConfig(turn_ms=50, policy="rule", transcript_entries=8), body)
    pkg = sent[0]
    assert pkg.omitted.log_entries > 0 and pkg.dropped_entries >= pkg.omitted.log_entries
    assert "user (typed): note 1: the door code is 1001" in pkg.earlier_summary
    assert pkg.transcript[-1].text == "what is the weather in Oslo?"


async def test_a_package_is_built_on_the_build_thread_not_the_event_loop_thread(tiny, monkeypatch):
    real = delegator_module.build
    threads: list[threading.Thread] = []

    def recording_build(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(delegator_module, "build", recording_build)

    async def body(loop, address):
        await run_session(loop, address, "where", {3: [text_chunk("what is the weather in Oslo?")]}, turns=10)
        return threading.current_thread()

    loop_thread = await with_loop(tiny, LoopConfig(turn_ms=50, policy="rule"), body)
    assert len(threads) == 1 and threads[0] is not loop_thread
    assert threads[0].name.startswith("package-build")


async def test_turns_keep_coming_while_a_slow_package_build_runs(tiny, monkeypatch):
    real = delegator_module.build
    building = threading.Event()
    built = threading.Event()

    def slow_build(*args, **kwargs):
        building.set()
        time.sleep(0.6)
        built.set()
        return real(*args, **kwargs)

    monkeypatch.setattr(delegator_module, "build", slow_build)
    during: list[int] = []

    async def body(loop, address):
        def on_chunk(n: int) -> None:
            if n == 3:
                loop.start_delegation("clock", "weather Oslo")
            elif building.is_set() and not built.is_set():
                during.append(n)

        return await run_session(loop, address, "clock", {}, turns=40, on_chunk=on_chunk)

    await with_loop(tiny, LoopConfig(turn_ms=50), body)
    assert built.is_set()
    assert len(during) >= 4, during  # 0.6 s is 12 turns: a blocked loop would deliver none


async def test_a_failing_package_build_is_an_error_event_for_that_session_only(tiny, monkeypatch):
    real = delegator_module.build

    def flaky_build(req, *args, **kwargs):
        if req.session_id == "broken":
            raise RuntimeError("builder bug")
        return real(req, *args, **kwargs)

    monkeypatch.setattr(delegator_module, "build", flaky_build)

    async def body(loop, address):
        def starter(sid: str):
            return lambda n: loop.start_delegation(sid, "weather Oslo") if n == 3 else None

        return await asyncio.gather(
            run_session(loop, address, "broken", {}, turns=20, on_chunk=starter("broken")),
            run_session(loop, address, "fine", {}, turns=20, on_chunk=starter("fine")))

    broken, fine = await with_loop(tiny, LoopConfig(turn_ms=50), body)
    codes = {sid: [e.error.code for ch in chunks for e in ch.events if e.kind == spb.EVENT_KIND_ERROR]
             for sid, chunks in (("broken", broken), ("fine", fine))}
    assert codes == {"broken": ["package_failed"], "fine": []}
    assert len(broken) == 20  # the session itself went on
    assert [e.text for ch in fine for e in ch.events if e.kind == spb.EVENT_KIND_RESULT_SURFACED] == ["done"]
