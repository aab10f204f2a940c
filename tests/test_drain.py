"""A drain (what SIGTERM to `serve` does) lets running delegations settle within its bound, tells
every session it ended, and turns new sessions away, through the real Session service on 127.0.0.1.

The interaction side is the real actor body (InteractionActorImpl, in-process) with the outside
EchoBackend (its model is not the subject); the Background servers are small real gRPC servicers
written for the test, one answering after a delay and one that never answers, because the
property is what the interaction side does with a delegation still out when it drains.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from conftest import serve_background

from interaction_actor.runtime.actor import InteractionActorImpl
from interplay.client import SessionClient
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import background_pb2_grpc as bgrpc
from interplay.v1 import session_pb2 as spb


class SlowBackground(bgrpc.BackgroundServicer):
    """Accepts, then answers FINAL after `delay_s` (never, when None)."""

    def __init__(self, delay_s: float | None) -> None:
        self.delay_s = delay_s

    async def Delegate(self, request, context):  # noqa: N802
        yield bpb.Update(task_id=request.task_id, seq=0, kind=bpb.UPDATE_KIND_ACCEPTED)
        await asyncio.sleep(self.delay_s if self.delay_s is not None else 60.0)
        yield bpb.Update(task_id=request.task_id, seq=1, kind=bpb.UPDATE_KIND_FINAL, text="done")


async def drain_with_a_delegation_out(delay_s: float | None, drain_s: float):
    """One session with one delegation out; drain; returns (drain report, the session's chunks)."""
    bg_server, bg_address = await serve_background(SlowBackground(delay_s))
    actor = InteractionActorImpl(backend="tests.outside_backend:EchoBackend", turn_ms=50,
                                 background_address=bg_address, policy="never", admission=False)
    address = await actor.start()
    chunks: list[spb.OutputChunk] = []
    report: dict = {}
    try:
        async with SessionClient(address, "drained") as c:
            async for chunk in c.chunks():
                chunks.append(chunk)
                if len(chunks) == 2:
                    actor.start_delegation("drained", "weather in Oslo")
                if len(chunks) == 6:
                    drain = asyncio.get_running_loop().create_task(actor.drain(drain_s))
        report = await drain
    finally:
        await actor.stop()
        await bg_server.stop(None)
    return report, chunks


def kinds(chunks: list[spb.OutputChunk]) -> list[int]:
    return [e.kind for c in chunks for e in c.events]


async def test_a_drain_waits_for_a_running_delegation_to_come_back_before_ending_the_session():
    report, chunks = await asyncio.wait_for(drain_with_a_delegation_out(delay_s=0.6, drain_s=5.0), 30)
    assert (report["delegations_waited"], report["delegations_cancelled"]) == (1, 0)
    k = kinds(chunks)
    assert spb.EVENT_KIND_RESULT_SURFACED in k and k.index(spb.EVENT_KIND_RESULT_SURFACED) < \
        k.index(spb.EVENT_KIND_SESSION_ENDED)


async def test_a_drain_cancels_a_delegation_that_outlives_its_bound_and_still_ends_the_session():
    report, chunks = await asyncio.wait_for(drain_with_a_delegation_out(delay_s=None, drain_s=0.5), 30)
    assert report["delegations_cancelled"] == 1 and report["drain_ms"] < 5_000
    ended = [e for c in chunks for e in c.events if e.kind == spb.EVENT_KIND_SESSION_ENDED]
    assert ended and "shutting down" in ended[0].text


async def test_a_draining_server_turns_a_new_session_away_as_unavailable():
    actor = InteractionActorImpl(backend="tests.outside_backend:EchoBackend", turn_ms=50, policy="never",
                                 admission=False)
    address = await actor.start()
    try:
        await actor.drain(0.1)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async with SessionClient(address, "late") as c:
                async for _ in c.chunks():
                    pass
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await actor.stop()
