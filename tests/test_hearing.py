"""What the user says reaches the client, the conversation log and the delegation, through the real
gRPC stream: espeak-ng speech in real time, the real ears beside the loop (LocalEars: the Silero
segmenter and faster-whisper tiny.en on threads of this process), the tiny interaction model (its
own words are not the subject here), and a Background servicer written for the test that records the
context packages it is handed (the property is what the interaction side sends).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from conftest import serve_background

from interaction_actor.ears.speech import TEST_VOICES, padded, room_tone, say
from interaction_actor.ears.worker import EarsConfig, LocalEars
from interaction_actor.model.fusion import build_model
from interaction_actor.runtime.loop import LoopConfig, TurnLoop
from interaction_actor.runtime.service import serve
from interplay.client import SessionClient, audio_chunk
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import background_pb2_grpc as bgrpc
from interplay.v1 import context_pb2 as xpb
from interplay.v1 import session_pb2 as spb

REQUEST = "what is the weather in London today"  # a TEST_* sentence: the bench's held-out set has none of them
TURN = 3200  # samples in one 200 ms window


class RecordingBackground(bgrpc.BackgroundServicer):
    def __init__(self) -> None:
        self.packages: list[xpb.ContextPackage] = []

    async def Delegate(self, request, context):  # noqa: N802
        self.packages.append(request)
        yield bpb.Update(task_id=request.task_id, seq=0, kind=bpb.UPDATE_KIND_ACCEPTED)
        yield bpb.Update(task_id=request.task_id, seq=1, kind=bpb.UPDATE_KIND_FINAL, text="London: 12 C")


@pytest.fixture(scope="module")
def tiny():
    return build_model("tiny", seed=0)


async def converse(tiny, samples: np.ndarray, ears) -> tuple[list[spb.OutputChunk], RecordingBackground]:
    """Stream `samples` in real time, 200 ms a chunk, then 2 s of room tone; every chunk back."""
    bg = RecordingBackground()
    bg_server, bg_address = await serve_background(bg)
    loop = TurnLoop(tiny, LoopConfig(turn_ms=200, background_address=bg_address, policy="rule", admission=False),
                    ears=ears)
    loop.start()
    server, address = await serve(loop)
    audio = np.concatenate([samples, room_tone(2.0, seed=3)])
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    chunks: list[spb.OutputChunk] = []
    try:
        async with SessionClient(address) as client:
            async def send() -> None:
                for i in range(0, pcm.size, TURN):
                    await client.send(audio_chunk(pcm[i:i + TURN].tobytes()))
                    await asyncio.sleep(0.2)
                await client.finish()

            sender = asyncio.get_running_loop().create_task(send())
            async for chunk in client.chunks():
                chunks.append(chunk)
            await sender
    finally:
        await server.stop(None)
        await loop.stop()
        await bg_server.stop(None)
    return chunks, bg


def transcripts(chunks: list[spb.OutputChunk]) -> list[spb.Event]:
    return [e for c in chunks for e in c.events if e.kind == spb.EVENT_KIND_USER_TRANSCRIPT]


@pytest.fixture(scope="module")
def ears():
    e = LocalEars(EarsConfig())
    yield e
    e.stop()


@pytest.fixture(scope="module")
def spoken(tiny, ears):
    # tiny.en misses words now and then (with room tone of seed 1 it hears "what is that we are in
    # London today"): its accuracy is `interplay bench ears`' figure (held-out WER); this test is about
    # where the words go, so it names a seed the recogniser gets right
    speech = padded(say(REQUEST, TEST_VOICES[0]), floor=room_tone(0.4, seed=0))
    return asyncio.run(asyncio.wait_for(converse(tiny, speech, ears), 60))


def test_a_spoken_weather_request_reaches_the_client_as_a_final_transcript(spoken):
    chunks, _ = spoken
    heard = transcripts(chunks)
    assert heard, "no USER_TRANSCRIPT event"
    t = heard[0]
    assert "weather" in t.text.lower() and "london" in t.text.lower(), t.text
    assert t.update == spb.EVENT_UPDATE_FINAL and t.start_turn <= t.end_turn and 0 < t.confidence <= 1


def test_the_spoken_request_is_delegated_with_the_spoken_words_in_its_package(spoken):
    chunks, bg = spoken
    started = [e for c in chunks for e in c.events if e.kind == spb.EVENT_KIND_DELEGATION_STARTED]
    assert started and "london" in started[0].text.lower()
    said = [e for p in bg.packages for e in p.transcript if e.speaker == xpb.SPEAKER_USER and "london" in e.text.lower()]
    assert said and not said[0].typed and 0 < said[0].confidence <= 1


def test_the_transcript_arrives_without_costing_the_session_a_turn(spoken):
    chunks, _ = spoken
    assert [c.turn for c in chunks] == list(range(len(chunks)))
    assert sum(int(c.timing.missed) for c in chunks) == 0


def test_room_tone_gives_no_transcript_and_starts_no_delegation(tiny, ears):
    chunks, bg = asyncio.run(asyncio.wait_for(converse(tiny, room_tone(3.0, seed=5), ears), 60))
    assert not transcripts(chunks) and not bg.packages


class CrashingTranscriber:
    """Stand-in that injects the fault under test: the real transcriber raising mid-session."""

    def transcribe(self, samples):
        raise RuntimeError("the recogniser crashed")


def test_a_transcriber_crash_is_one_error_event_and_the_session_keeps_every_turn(tiny):
    crashing = LocalEars(EarsConfig(), transcriber=CrashingTranscriber())
    try:
        speech = padded(say(REQUEST, TEST_VOICES[1]), floor=room_tone(0.4, seed=2))
        chunks, _ = asyncio.run(asyncio.wait_for(converse(tiny, speech, crashing), 60))
    finally:
        crashing.stop()
    codes = [e.error.code for c in chunks for e in c.events if e.kind == spb.EVENT_KIND_ERROR]
    assert codes.count("transcriber_failed") == 1
    assert [c.turn for c in chunks] == list(range(len(chunks)))


class RecordingEars:
    """Stand-in that records what the loop side hands the ears (the property is what is sent, not heard)."""

    def __init__(self) -> None:
        self.fed: list[tuple[str, int, bytes]] = []

    def feed(self, turn_audio):
        self.fed.extend(turn_audio)

    def take(self):
        return []

    def close(self, session_id):
        pass

    def stop(self):
        pass


def test_a_chunk_that_arrives_while_the_previous_turn_computes_reaches_the_ears_once():
    import torch

    from interaction_actor.runtime.hearing import Hearing

    ears = RecordingEars()
    hearing = Hearing(ears)
    a, b = audio_chunk(b"\x01\x00" * TURN), audio_chunk(b"\x02\x00" * TURN)
    hearing.arrived("s", 0, a)
    early_a = hearing.took("s", [a])  # turn 0 takes A; B arrives while turn 0 computes
    hearing.arrived("s", 0, b)
    hearing.feed([("s", 0, torch.zeros(TURN), early_a)])
    early_b = hearing.took("s", [b])  # turn 1 takes B
    hearing.feed([("s", 1, torch.zeros(TURN), early_b)])
    assert [pcm for _, _, pcm in ears.fed] == [a.audio.pcm16, b.audio.pcm16]


def test_silence_closes_a_stopped_speakers_segment_once_and_a_late_chunk_inserts_none():
    from interaction_actor.runtime.hearing import CLOSE_AFTER_TURNS, Hearing

    ears = RecordingEars()
    hearing = Hearing(ears)
    hearing.arrived("s", 0, audio_chunk(b"\x01\x00" * TURN))
    hearing.feed([("s", 0, None, hearing.took("s", []))])  # the chunk came just after turn 0's window closed
    assert len(ears.fed) == 1  # no silence cut into the speech
    for turn in range(1, 2 * CLOSE_AFTER_TURNS):
        hearing.feed([("s", turn, None, False)])
    silences = [pcm for _, _, pcm in ears.fed[1:]]
    assert len(silences) == 1 and silences[0] == bytes(2 * TURN * CLOSE_AFTER_TURNS)
