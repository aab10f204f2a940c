"""The session router in front of several interaction actors, over real gRPC on 127.0.0.1.

The actors are real actor bodies (InteractionActorImpl, in this process) with the outside EchoBackend
(its model is not the subject: it answers typed text, so what the router pipes can be checked), 50 ms
turns; the router is the real RouterImpl with in-process members. An actor is lost by stopping its
gRPC server at once (grace None), which ends its streams as a dying process's do; killing a real Ray
actor process is tested in test_two_nodes.py.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from interaction_actor.router import Member, Placement, RouterImpl, local_member
from interaction_actor.runtime.actor import InteractionActorImpl
from interplay.client import SessionClient, text_chunk
from interplay.raylocal import advertised
from interplay.v1 import context_pb2 as xpb
from interplay.v1 import session_pb2 as spb

TURN_MS = 50


def actor(**options) -> InteractionActorImpl:
    return InteractionActorImpl(backend="tests.outside_backend:EchoBackend", turn_ms=TURN_MS, policy="never",
                                admission=False, **options)


@contextlib.asynccontextmanager
async def cluster(n: int = 2, members=None, **actor_options):
    actors = [actor(**actor_options) for _ in range(n)]
    for a in actors:
        await a.start()
    router = RouterImpl(members=members(actors) if members else [local_member(a) for a in actors], turn_ms=TURN_MS)
    await router.start()
    try:
        yield router, actors
    finally:
        await router.stop()
        for a in actors:
            await a.stop()


def kinds(chunks: list[spb.OutputChunk], kind: int) -> list[tuple[int, spb.Event]]:
    return [(c.turn, e) for c in chunks for e in c.events if e.kind == kind]


async def talk(address: str, session_id: str, script, timeout_s: float = 15.0) -> list[spb.OutputChunk]:
    """One session: `script(client, chunks)` is awaited after each chunk and returns True when done."""
    chunks: list[spb.OutputChunk] = []
    async with SessionClient(address, session_id) as c:
        async with asyncio.timeout(timeout_s):
            async for chunk in c.chunks():
                chunks.append(chunk)
                if await script(c, chunks):
                    break
    return chunks


async def test_the_router_places_two_sessions_on_two_idle_actors_one_each():
    async with (cluster(2) as (router, actors), SessionClient(router.address, "one") as a,
                SessionClient(router.address, "two") as b):
        await anext(a.chunks())
        await anext(b.chunks())
        assert sorted(router.stats()["sessions"].values()) == sorted(x.address for x in actors)


async def test_a_session_through_the_router_gets_every_turn_in_order_and_its_answers():
    async def script(c, chunks):
        if len(chunks) == 2:
            await c.send(text_chunk("hello there"))
        return any(ch.text == "echo: hello there" for ch in chunks) and len(chunks) >= 8

    async with cluster(2) as (router, _):
        chunks = await talk(router.address, "piped", script)
    assert [c.turn for c in chunks] == list(range(len(chunks)))
    times = [c.time_ms for c in chunks]  # the actor's own times (a slot it skipped under load leaves a gap)
    assert times[0] == 0 and all(b > a for a, b in zip(times, times[1:], strict=False))
    assert all(t % TURN_MS == 0 for t in times)


async def test_a_session_whose_actor_is_lost_goes_on_on_another_with_session_moved_and_no_turn_gap():
    state: dict = {}

    async def script(c, chunks):
        if len(chunks) == 4 and "killed" not in state:
            state["killed"] = state["router"].where("moving")
            victim = next(a for a in state["actors"] if a.address == state["killed"])
            await victim.server.stop(None)
        return bool(kinds(chunks, spb.EVENT_KIND_SESSION_MOVED)) and len(chunks) >= 10

    async with cluster(2) as (router, actors):
        state.update(router=router, actors=actors)
        chunks = await talk(router.address, "moving", script)
        now = router.where("moving")
    (turn, moved), = kinds(chunks, spb.EVENT_KIND_SESSION_MOVED)
    assert now and now != state["killed"]
    assert [c.turn for c in chunks] == list(range(len(chunks)))
    assert moved.turns == turn and moved.age_ms < 2000 and moved.text
    assert len(kinds(chunks, spb.EVENT_KIND_SESSION_STARTED)) == 1  # the client saw one session start
    assert not kinds(chunks, spb.EVENT_KIND_ERROR)


async def test_a_moved_session_starts_on_its_new_actor_with_the_conversation_so_far_in_its_log():
    state: dict = {}

    async def script(c, chunks):
        if len(chunks) == 2:
            await c.send(text_chunk("remember the blue door"))
        if any(ch.text == "echo: remember the blue door" for ch in chunks) and "killed" not in state:
            state["killed"] = state["router"].where("remembers")
            await next(a for a in state["actors"] if a.address == state["killed"]).server.stop(None)
        return bool(kinds(chunks, spb.EVENT_KIND_SESSION_MOVED))

    async with cluster(2) as (router, actors):
        state.update(router=router, actors=actors)
        await talk(router.address, "remembers", script)
        survivor = next(a for a in actors if a.address == router.where("remembers"))
        texts = [e.text for e in survivor.loop.sessions["remembers"].log.to_proto_entries()]
    assert "remember the blue door" in texts and "echo: remember the blue door" in texts


async def test_a_session_whose_only_actor_is_lost_ends_with_session_lost_not_a_broken_stream():
    state: dict = {}

    async def script(c, chunks):
        if len(chunks) == 3 and "killed" not in state:
            state["killed"] = True
            await state["actors"][0].server.stop(None)
        return False

    async with cluster(1) as (router, actors):
        state.update(actors=actors)
        chunks = await talk(router.address, "alone", script)
    errors = [e.error.code for _, e in kinds(chunks, spb.EVENT_KIND_ERROR)]
    assert errors == ["session_lost"] and kinds(chunks, spb.EVENT_KIND_SESSION_ENDED)
    assert [c.turn for c in chunks] == list(range(len(chunks)))


async def test_an_actor_that_refuses_a_session_despite_its_figure_is_skipped_for_the_next():
    def members(actors):  # the first one's figure says "empty" though it is full: a stale figure
        async def stale() -> dict:
            return {"sessions": 0, "headroom_ms": 1e9}
        return [Member(address=actors[0].address, load=stale), local_member(actors[1])]

    async with (cluster(2, members=members, max_sessions=1) as (router, actors),
                SessionClient(actors[0].address, "squatter") as squatter):
        await anext(squatter.chunks())
        async with SessionClient(router.address, "placed") as c:
            await anext(c.chunks())
            assert router.where("placed") == actors[1].address


async def test_a_session_no_actor_admits_is_refused_as_resource_exhausted():
    async with cluster(1, max_sessions=1) as (router, _), SessionClient(router.address, "first") as first:
        await anext(first.chunks())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async with SessionClient(router.address, "second") as c:
                await anext(c.chunks())
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_placement_ranks_the_actor_with_the_most_measured_headroom_first():
    async def none() -> dict:
        return {}

    busy, idle, full = (Member(address=a, load=none) for a in ("busy:1", "idle:2", "full:3"))
    figures = [(busy, {"sessions": 6, "measured_turns": 50, "headroom_ms": 20.0, "share_ms": 5.0}),
               (full, {"sessions": 9, "measured_turns": 50, "headroom_ms": -4.0, "share_ms": 5.0}),
               (idle, {"sessions": 2, "measured_turns": 50, "headroom_ms": 90.0, "share_ms": 5.0})]
    assert [m.address for m in Placement([busy, idle, full]).rank(figures)] == ["idle:2", "busy:1", "full:3"]


def test_a_server_bound_to_every_interface_advertises_this_nodes_address_not_0_0_0_0():
    import ray.util

    assert advertised("0.0.0.0:5051") == f"{ray.util.get_node_ip_address()}:5051"
    assert advertised("0.0.0.0:5051", "10.1.2.3") == "10.1.2.3:5051"
    assert advertised("127.0.0.1:5051") == "127.0.0.1:5051"


async def test_a_second_stream_for_a_session_the_router_holds_is_refused_as_already_exists():
    async with cluster(2) as (router, _), SessionClient(router.address, "taken") as first:
        await anext(first.chunks())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async with SessionClient(router.address, "taken") as again:
                await anext(again.chunks())
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_an_actor_refuses_resume_metadata_that_is_not_a_conversation_as_invalid_argument():
    from interaction_actor.runtime.service import RESUME_METADATA
    from interplay.v1 import session_pb2_grpc as sgrpc

    async def one(metadata) -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(a.address) as channel:
            call = sgrpc.SessionStub(channel).Converse(iter([spb.InputChunk(session_id="forged")]), metadata=metadata)
            try:
                await call.read()
                return grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                return exc.code()

    a = actor()
    await a.start()
    try:
        garbage = await one(((RESUME_METADATA, b"\xff\x00 not a package"),))
        speaker = xpb.ContextPackage(transcript=[xpb.TranscriptEntry(speaker=99, text="who?")]).SerializeToString()
        unknown = await one(((RESUME_METADATA, speaker),))
        left_open = "forged" in a.loop.sessions  # the refused session was not left behind
    finally:
        await a.stop()
    assert (garbage, unknown, left_open) == (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INVALID_ARGUMENT, False)
