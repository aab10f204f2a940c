"""The model's own confidence in a delegation reaches the policy live: the shipped native model,
the real TurnLoop and Session gRPC on 127.0.0.1, and a small real Background servicer written for
the test (conftest.answering_background: it only accepts and answers; the property under test is the
interaction side's decision).

The typed request "what is the weather in Rome" (a training city and template: the shipped checkpoint
rarely delegates held-out requests right, README) is one it delegates by its own <delegate> token,
with p(<delegate>) above 0.5 at the step that opened the task (the test checks it), so a
threshold of 0.5 keeps the decision and 1.0, above any probability the softmax gives it here, drops it.
"""

from __future__ import annotations

import pytest
import torch
from conftest import answering_background
from conftest import serve_background as background

from interaction_actor.model.fusion import build_model
from interaction_actor.model.session import TurnInput, new_session, step_batch
from interaction_actor.model.weights import resolve_checkpoint
from interaction_actor.runtime.loop import LoopConfig, TurnLoop
from interaction_actor.runtime.service import serve
from interplay.client import SessionClient, text_chunk
from interplay.v1 import session_pb2 as spb

REQUEST = "what is the weather in Rome"


@pytest.fixture(scope="module")
def shipped():
    return build_model("small", resolve_checkpoint("small", None), 0)


def test_the_native_model_reports_its_own_confidence_with_the_task_it_delegates(shipped):
    s = new_session(shipped, "conf")
    outs = [step_batch(shipped, [s], [TurnInput(audio=torch.zeros(3200), text=REQUEST if t == 1 else "")])[0]
            for t in range(20)]
    delegated = [o for o in outs if o.delegate_task]
    assert len(delegated) == 1 and "Rome" in delegated[0].delegate_task
    assert 0.5 < delegated[0].delegate_confidence <= 1.0
    assert all(o.delegate_confidence is None for o in outs if not o.delegate_task)


async def started_with(shipped, threshold: float) -> list[spb.Event]:
    server_bg, bg_addr = await background(answering_background("Rome: sun"))
    policy = {"policy": "threshold", "inner": "model_token", "threshold": threshold}
    loop = TurnLoop(shipped, LoopConfig(turn_ms=50, background_address=bg_addr, policy=policy))
    loop.start()
    server, address = await serve(loop)
    events: list[spb.Event] = []
    try:
        async with SessionClient(address, "threshold") as c:
            n = 0
            async for chunk in c.chunks():
                n += 1
                events += [e for e in chunk.events if e.kind == spb.EVENT_KIND_DELEGATION_STARTED]
                if n == 2:
                    await c.send(text_chunk(REQUEST))
                if n >= 24:
                    break
    finally:
        await server.stop(0.2)
        await loop.stop()
        await server_bg.stop(0.2)
    return events


async def test_a_threshold_policy_delegates_live_on_the_models_own_confidence(shipped):
    events = await started_with(shipped, 0.5)
    assert [e.text for e in events] == ["weather Rome"]
    assert events[0].policy == "model_token" and 0.5 < events[0].confidence <= 1.0


async def test_a_threshold_above_the_models_confidence_keeps_it_from_delegating(shipped):
    assert await started_with(shipped, 1.0) == []
