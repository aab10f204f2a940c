"""The InteractionBackend seam: the loop steps whatever backend it is given, chosen by name or by
`module:attr`. An outside backend (tests/outside_backend.py, not part of the package) runs through
the real TurnLoop and the real Session gRPC service on 127.0.0.1, and asks for delegations through
the same path as the native model."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import converse

from interaction_actor.model.fusion import build_model
from interaction_actor.model.session import TurnInput
from interaction_actor.runtime.actor import InteractionActorImpl
from interaction_actor.runtime.backend import BackendError, Capabilities, NativeBackend, load_backend
from interplay.client import text_chunk
from interplay.v1 import session_pb2 as spb

TURN_MS = 50


async def talk(address: str, texts: list[str], turns: int) -> list[spb.OutputChunk]:
    """Send each text at its own turn, keep the stream open `turns` turns, half-close, read to the end."""
    return await converse(address, [text_chunk(t) for t in texts], turns * TURN_MS / 1000, gap_s=2 * TURN_MS / 1000)


@pytest.fixture
async def echo_actor():
    impl = InteractionActorImpl(backend="outside_backend:EchoBackend", backend_options={"prefix": "heard: "},
                                turn_ms=TURN_MS, log_level="warning")
    address = await impl.start()
    yield impl, address
    await impl.stop()


async def test_an_outside_backend_named_by_module_attr_answers_a_session_over_real_grpc(echo_actor):
    impl, address = echo_actor
    assert impl.loop.backend.capabilities.name == "echo"
    chunks = await asyncio.wait_for(talk(address, ["hello there"], turns=6), timeout=30)
    assert [c.turn for c in chunks] == list(range(len(chunks))), "one chunk per turn, none missing"
    said = "".join(c.text for c in chunks)
    assert "heard: hello there" in said
    assert any(e.kind == spb.EVENT_KIND_SESSION_ENDED for c in chunks for e in c.events)


async def test_the_loop_opens_and_closes_the_outside_backend_s_session_state(echo_actor):
    impl, address = echo_actor
    await asyncio.wait_for(talk(address, ["one"], turns=3), timeout=30)
    backend = impl.loop.backend
    assert len(backend.opened) == 1 and backend.closed == backend.opened


async def test_an_outside_backend_s_delegation_request_starts_a_delegation_with_its_task(echo_actor):
    _, address = echo_actor
    chunks = await asyncio.wait_for(talk(address, ["delegate: weather in Oslo"], turns=6), timeout=30)
    started = [e for c in chunks for e in c.events if e.kind == spb.EVENT_KIND_DELEGATION_STARTED]
    assert [e.text for e in started] == ["weather in Oslo"]
    assert spb.CONTROL_TOKEN_DELEGATE in [k for c in chunks for k in c.controls]


def test_the_native_backend_steps_the_model_and_states_its_capabilities():
    tiny = build_model("tiny", seed=0)
    backend = load_backend("native", model=tiny)
    assert isinstance(backend, NativeBackend)
    assert backend.capabilities == Capabilities(name="native", turn_ms=tiny.config.turn_ms,
                                                sample_rate=tiny.config.sample_rate)
    state = backend.open("s")
    outs = [backend.step([state], [TurnInput()])[0] for _ in range(2)]
    assert [(o.session_id, o.turn) for o in outs] == [("s", 0), ("s", 1)]


def test_the_native_backend_opens_sessions_with_the_kv_capacity_it_was_given():
    tiny = build_model("tiny", seed=0)
    assert load_backend("native", model=tiny).open("a").cache.capacity == tiny.config.capacity
    assert load_backend("native", model=tiny, kv_capacity=1024).open("b").cache.capacity == 1024


def test_a_kv_capacity_too_small_for_two_turns_is_refused_when_the_backend_starts():
    with pytest.raises(BackendError, match="capacity 10 <"):
        load_backend("native", model=build_model("tiny", seed=0), kv_capacity=10)


@pytest.mark.parametrize("spec,reason", [
    ("nope", "unknown backend 'nope'"),
    ("outside_backend:Missing", "cannot load backend"),
    ("no_such_module_xyz:Thing", "cannot load backend"),
    ("os.path:sep", "neither a backend nor a class or factory"),
    ("collections:OrderedDict", "is not an InteractionBackend"),
])
def test_a_spec_that_names_no_backend_is_refused_with_the_reason(spec, reason):
    with pytest.raises(BackendError, match=reason):
        load_backend(spec)


def test_a_ready_backend_instance_is_used_as_it_is_and_refuses_options():
    from outside_backend import EchoBackend

    ready = EchoBackend()
    assert load_backend(ready) is ready
    with pytest.raises(BackendError, match="takes no options"):
        load_backend(ready, prefix="x")


def test_serve_with_a_backend_that_names_nothing_says_so_in_one_line_and_exits_2_before_ray_starts():
    from typer.testing import CliRunner

    from interplay.cli import app

    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["serve", "--backend", "no_such_module_xyz:Thing", "--seconds", "1"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "no_such_module_xyz:Thing" in lines[0], result.output
    assert time.monotonic() - t0 < 5.0, "refused before anything started (Ray alone takes ~4 s)"


def test_a_native_backend_has_loaded_its_vocoder_net_before_its_first_session():
    """Its warm-up turns voice once, so the first real voiced turn reads no file (in the demo that turn
    took 307 ms of a 200 ms slot before the warm-up)."""
    from interaction_actor.model import magnitude

    if not magnitude.SHIPPED.is_file():
        pytest.skip("no shipped vocoder net")
    magnitude._load_cached.cache_clear()
    NativeBackend(build_model("small", None, 0))
    assert magnitude._load_cached.cache_info().currsize == 1
