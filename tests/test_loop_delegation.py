"""The loop's side of delegation with real gRPC on 127.0.0.1: steering a running task, failover and
least-loaded choice across a background pool, and the barge-in event.

The Background servers here are small real gRPC servicers written for the test, because the
property under test is the interaction side's behaviour (the background actor has its own tests).
"""

from __future__ import annotations

import asyncio
import socket

import pytest
import torch
from conftest import serve_background as background

from interaction_actor.model.fusion import build_model
from interaction_actor.runtime.delegator import DelegationRequest, Delegator
from interaction_actor.runtime.loop import LoopConfig, TurnLoop
from interaction_actor.runtime.service import serve
from interplay.client import SessionClient, audio_chunk, control, text_chunk
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import background_pb2_grpc as bgrpc
from interplay.v1 import context_pb2 as xpb
from interplay.v1 import session_pb2 as spb

QUIET_100MS = torch.zeros(1600, dtype=torch.int16).numpy().tobytes()


@pytest.fixture(scope="module")
def tiny():
    return build_model("tiny", seed=0)


class SteerableBackground(bgrpc.BackgroundServicer):
    """Accepts, waits for a steer (bounded), then answers with the follow-up folded in."""

    def __init__(self) -> None:
        self.steers: list[tuple[str, str]] = []
        self.delegated: list[str] = []
        self._steered = asyncio.Event()

    async def Delegate(self, request, context):  # noqa: N802
        self.delegated.append(request.task_id)
        yield bpb.Update(task_id=request.task_id, seq=0, kind=bpb.UPDATE_KIND_ACCEPTED)
        try:
            await asyncio.wait_for(self._steered.wait(), 10.0)
        except TimeoutError:
            return
        yield bpb.Update(task_id=request.task_id, seq=1, kind=bpb.UPDATE_KIND_FINAL,
                         text=f"{request.task} ({self.steers[-1][1]})")

    async def Steer(self, request, context):  # noqa: N802
        self.steers.append((request.task_id, request.text))
        self._steered.set()
        return bpb.SteerResponse(accepted=True)


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


async def typed_after_delegation(tiny, type_at: int, window: int, text: str, turns: int = 20):
    """Delegate at chunk 2, type `text` at chunk `type_at`; returns (background, chunks, task id)."""
    bg = SteerableBackground()
    bg_server, bg_addr = await background(bg)
    loop = TurnLoop(tiny, LoopConfig(turn_ms=50, background_address=bg_addr, steer_window_turns=window))
    loop.start()
    server, address = await serve(loop)
    chunks: list[spb.OutputChunk] = []
    task_id = ""
    try:
        async with SessionClient(address, "steer") as c:
            async for chunk in c.chunks():
                chunks.append(chunk)
                if len(chunks) == 2:
                    task_id = loop.start_delegation("steer", "weather Oslo")
                if len(chunks) == type_at:
                    await c.send(text_chunk(text))
                if len(chunks) >= turns:
                    break
                await c.send(audio_chunk(QUIET_100MS))
    finally:
        await server.stop(0.2)
        await loop.stop()
        await bg_server.stop(0.2)
    return bg, chunks, task_id


async def test_text_typed_while_a_delegation_runs_steers_that_task(tiny):
    bg, chunks, task_id = await typed_after_delegation(tiny, type_at=5, window=10, text="in celsius")
    assert bg.steers == [(task_id, "in celsius")]
    steered = [e for ch in chunks for e in ch.events if e.update == spb.EVENT_UPDATE_STEERED]
    assert steered and steered[0].task_id == task_id
    surfaced = [e.text for ch in chunks for e in ch.events if e.kind == spb.EVENT_KIND_RESULT_SURFACED]
    assert surfaced == ["weather Oslo (in celsius)"]


async def test_text_typed_after_the_steer_window_is_not_sent_as_a_steer(tiny):
    bg, chunks, _ = await typed_after_delegation(tiny, type_at=12, window=5, text="tell me when red", turns=16)
    assert bg.steers == []
    assert not [e for ch in chunks for e in ch.events if e.update in (spb.EVENT_UPDATE_STEERED, spb.EVENT_UPDATE_STEER_REFUSED)]


async def test_a_delegation_fails_over_to_the_next_background_when_one_is_unreachable():
    class Answering(bgrpc.BackgroundServicer):
        async def Delegate(self, request, context):  # noqa: N802
            yield bpb.Update(task_id=request.task_id, seq=0, kind=bpb.UPDATE_KIND_FINAL, text="done")

    bg_server, bg_addr = await background(Answering())
    dead = closed_port()
    d = Delegator(f"{dead},{bg_addr}", deadline_ms=5000)
    inboxes = []
    try:
        for i in range(4):  # round robin puts the dead server first for some of them
            inbox: list = []
            d.start(DelegationRequest(session_id="s", task=f"t{i}", turn=0, time_ms=0), inbox)
            inboxes.append(inbox)
        for _ in range(100):
            if all(inboxes):
                break
            await asyncio.sleep(0.05)
    finally:
        await d.close()
        await bg_server.stop(0.2)
    assert [[u.kind for u in box] for box in inboxes] == [[bpb.UPDATE_KIND_FINAL]] * 4
    assert d.failovers >= 1


async def test_a_new_delegation_goes_to_the_least_loaded_background():
    class Holding(bgrpc.BackgroundServicer):
        def __init__(self) -> None:
            self.got: list[str] = []
            self.release = asyncio.Event()

        async def Delegate(self, request, context):  # noqa: N802
            self.got.append(request.task)
            yield bpb.Update(task_id=request.task_id, seq=0, kind=bpb.UPDATE_KIND_ACCEPTED)
            try:
                await asyncio.wait_for(self.release.wait(), 10.0)
            except TimeoutError:
                return
            yield bpb.Update(task_id=request.task_id, seq=1, kind=bpb.UPDATE_KIND_FINAL, text="ok")

    async def until(done, limit_s: float = 10.0) -> None:
        for _ in range(int(limit_s / 0.02)):
            if done():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("timed out waiting for the delegations to land")

    a, b = Holding(), Holding()
    (sa, aa), (sb, ab) = await background(a), await background(b)
    d = Delegator(f"{aa},{ab}", deadline_ms=5000)

    def start(i: int) -> None:
        d.start(DelegationRequest(session_id="s", task=f"t{i}", turn=0, time_ms=0), [])

    try:
        start(0)
        start(1)
        await until(lambda: len(a.got) + len(b.got) == 2)
        first = (len(a.got), len(b.got))
        # one server finishes its task (and answers at once from now on); the other keeps holding one
        idle_address = aa
        a.release.set()
        await until(lambda: d.inflight[idle_address] == 0)
        for i in (2, 3):  # round robin would send one of these to the busy server; least loaded sends neither
            start(i)
            await until(lambda i=i: f"t{i}" in a.got + b.got)
            await until(lambda: d.inflight[idle_address] == 0)
        spread = (list(a.got), list(b.got))
    finally:
        a.release.set()
        b.release.set()
        await d.close()
        await sa.stop(0.2)
        await sb.stop(0.2)
    assert first == (1, 1)
    assert len(spread[0]) == 3 and spread[0][1:] == ["t2", "t3"] and len(spread[1]) == 1


async def test_a_barge_in_control_is_reported_once_within_three_turns_of_being_sent(tiny):
    """Sent after turn 2's chunk arrives, it lands in turn 3's window at the earliest; which window it
    lands in depends on the transport's timing, so turns 3-5 are accepted."""
    loop = TurnLoop(tiny, LoopConfig(turn_ms=50))
    loop.start()
    server, address = await serve(loop)
    chunks: list[spb.OutputChunk] = []
    try:
        async with SessionClient(address, "barge") as c:
            async for chunk in c.chunks():
                chunks.append(chunk)
                if len(chunks) == 3:
                    await c.send(control(spb.CONTROL_KIND_BARGE_IN))
                if len(chunks) >= 8:
                    break
    finally:
        await server.stop(0.2)
        await loop.stop()
    barges = [ch.turn for ch in chunks for e in ch.events if e.kind == spb.EVENT_KIND_BARGE_IN]
    assert len(barges) == 1 and 3 <= barges[0] <= 5


async def test_a_rule_policy_delegates_a_typed_request_with_the_conversation_in_its_package(tiny):
    bg = SteerableBackground()
    bg_server, bg_addr = await background(bg)
    loop = TurnLoop(tiny, LoopConfig(turn_ms=50, background_address=bg_addr, policy="rule",
                                     allowed_tools=["weather"]))
    loop.start()
    server, address = await serve(loop)
    chunks: list[spb.OutputChunk] = []
    try:
        async with SessionClient(address, "rule") as c:
            await c.send(text_chunk("hi there"))
            async for chunk in c.chunks():
                chunks.append(chunk)
                if len(chunks) == 3:
                    await c.send(text_chunk("what is the weather in Oslo?"))
                if len(chunks) >= 8:
                    break
    finally:
        await server.stop(0.2)
        await loop.stop()
        await bg_server.stop(0.2)
    started = [e.text for ch in chunks for e in ch.events if e.kind == spb.EVENT_KIND_DELEGATION_STARTED]
    assert started == ["what is the weather in Oslo?"]
    pkg = loop.delegator.sent[0]
    users = [e.text for e in pkg.transcript if e.speaker == xpb.SPEAKER_USER]
    assert users == ["hi there", "what is the weather in Oslo?"]
    assert list(pkg.allowed_tools) == ["weather"]


async def test_a_delegation_refused_as_overloaded_is_offered_to_the_next_background():
    from interplay.v1 import common_pb2 as cpb

    class Full(bgrpc.BackgroundServicer):
        def __init__(self) -> None:
            self.refused = 0

        async def Delegate(self, request, context):  # noqa: N802
            self.refused += 1
            yield bpb.Update(task_id=request.task_id, seq=0, kind=bpb.UPDATE_KIND_ERROR,
                             error=cpb.ErrorInfo(code="overloaded", message="full", retryable=True))

    class Answering(bgrpc.BackgroundServicer):
        async def Delegate(self, request, context):  # noqa: N802
            yield bpb.Update(task_id=request.task_id, seq=0, kind=bpb.UPDATE_KIND_FINAL, text="done")

    full = Full()
    (sf, af), (sa, aa) = await background(full), await background(Answering())
    d = Delegator(f"{af},{aa}", deadline_ms=5000)
    boxes: list[list] = [[], []]
    try:
        for box in boxes:
            d.start(DelegationRequest(session_id="s", task="t", turn=0, time_ms=0), box)
        for _ in range(100):
            if all(boxes):
                break
            await asyncio.sleep(0.05)
    finally:
        await d.close()
        await sf.stop(0.2)
        await sa.stop(0.2)
    assert [[u.text for u in box] for box in boxes] == [["done"], ["done"]]
    assert full.refused >= 1



async def test_a_delegation_cancelled_before_it_ever_ran_still_settles_as_cancelled():
    bg = SteerableBackground()
    bg_server, bg_addr = await background(bg)
    d = Delegator(bg_addr, deadline_ms=5000)
    inbox: list = []
    try:
        task_id = d.start(DelegationRequest(session_id="s", task="weather Oslo", turn=0, time_ms=0), inbox)
        d.cancel_all([task_id])  # the session closed in the tick the delegation started: its task never ran
        for _ in range(50):
            if inbox:
                break
            await asyncio.sleep(0.02)
    finally:
        await d.close()
        await bg_server.stop(0.2)
    assert [(u.kind, u.error.code) for u in inbox] == [(bpb.UPDATE_KIND_ERROR, "cancelled")]
    assert bg.delegated == []  # nothing reached the background


def test_the_native_model_sees_each_surfaced_results_mode_as_a_marker_before_its_line():
    """What the loop hands the native model: voiced-now lines behind CTX_NOW, SILENT ones behind
    CTX_SILENT (context only, never to be voiced), the rest behind CTX_IDLE; other events add nothing."""
    from delegation import SurfacingMode
    from interaction_actor.model import text as T
    from interaction_actor.runtime.weave import event, marked_context
    from interplay.v1 import session_pb2 as spb

    surfaced = [event(spb.EVENT_KIND_RESULT_SURFACED, "Lima hail, 3 C", mode=int(SurfacingMode.WHEN_IDLE), voiced=True),
                event(spb.EVENT_KIND_RESULT_SURFACED, "looked up 2 sources", mode=int(SurfacingMode.SILENT)),
                event(spb.EVENT_KIND_RESULT_SURFACED, "a note", mode=int(SurfacingMode.WHEN_IDLE)),
                event(spb.EVENT_KIND_BARGE_IN, "user barged in")]
    assert marked_context(surfaced) == "\n".join(
        [T.CTX_NOW + "Lima hail, 3 C", T.CTX_SILENT + "looked up 2 sources", T.CTX_IDLE + "a note"])
