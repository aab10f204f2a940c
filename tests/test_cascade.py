"""The cascade backend (interaction_actor/cascade/): endpointing, TTS, and the whole chain with real parts —
Silero VAD, Whisper tiny.en (the ears), SmolLM2-135M through llama-cpp (the reply model), espeak-ng.

One CascadeBackend (its model loaded once) serves every test of this file; each test opens its own
session. Spoken requests are the ears' TEST sentences in their TEST voices; the assistant speaks in
its own voice (en-us+f3), which neither set uses."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import torch

from interaction_actor.cascade.backend import CascadeBackend, CascadeConfig
from interaction_actor.cascade.endpoint import EndpointConfig, Endpointer
from interaction_actor.cascade.measure import Conversation, Played
from interaction_actor.cascade.reply import ACK
from interaction_actor.cascade.tts import EspeakTTS, split_ready
from interaction_actor.ears import speech
from interaction_actor.ears.bench import word_errors
from interaction_actor.ears.segmenter import VadModel
from interaction_actor.model.session import TurnInput
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import background_pb2_grpc as bgrpc
from interplay.v1 import context_pb2 as xpb
from interplay.v1 import session_pb2 as spb

TURN = 3200  # samples in a 200-ms turn


@pytest.fixture(scope="module")
def cascade():
    backend = CascadeBackend()
    yield backend
    backend.shutdown()


@pytest.fixture(scope="module")
def ears():
    from interaction_actor.ears.worker import LocalEars

    e = LocalEars()
    yield e
    e.stop()


def windows(audio: np.ndarray) -> list[np.ndarray]:
    pad = (-audio.size) % TURN
    a = np.concatenate([audio.astype(np.float32), np.zeros(pad, np.float32)])
    return [a[i:i + TURN] for i in range(0, a.size, TURN)]


def run_turns(backend, state, inputs: list[TurnInput], *, pace_s: float = 0.2):
    """Step one session through `inputs` on a real-time grid; returns the outputs."""
    outs, t0 = [], time.monotonic()
    for k, inp in enumerate(inputs):
        outs.append(backend.step([state], [inp])[0])
        wait = t0 + (k + 1) * pace_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    return outs


def test_the_endpointer_ends_a_turn_after_min_silence_and_not_in_a_shorter_pause():
    words = speech.say("set a timer for ten minutes", "en-us")
    pause, tail = np.zeros(int(0.3 * 16000), np.float32), np.zeros(int(1.0 * 16000), np.float32)
    ep = Endpointer("s", VadModel(), EndpointConfig(min_silence_ms=500))
    results = [ep.push(w) for w in windows(np.concatenate([words, pause, words, tail]))]
    ended = [i for i, r in enumerate(results) if r.ended]
    speech_turns = (2 * words.size + pause.size) / TURN
    assert len(ended) == 1, "the 300-ms pause inside the request ended nothing; the silence after it did"
    assert speech_turns + 500 / 200 - 1 <= ended[0] <= speech_turns + 500 / 200 + 2
    assert results[1].speaking and not results[-1].in_turn


def test_the_tts_streams_a_reply_sentence_by_sentence_as_16_khz_audio():
    done, rest = split_ready("It is sunny in Oslo. Take a hat! And the")
    assert (done, rest) == (["It is sunny in Oslo.", "Take a hat!"], "And the")
    chunks = list(EspeakTTS().synthesize("It is sunny in Oslo. Take a hat!"))
    assert [c.text for c in chunks] == ["It is sunny in Oslo.", "Take a hat!"]
    assert all(c.audio.dtype == np.float32 and 0.4 * 16000 < c.audio.size < 4 * 16000 for c in chunks)
    assert all(np.abs(c.audio).max() > 0.05 for c in chunks)


def test_the_cascade_answers_a_spoken_question_with_speech_the_transcriber_understands(cascade, ears):
    user = speech.padded(speech.say("hello how are you", "en-us"), 0.4, 0.0)
    conv = Conversation(cascade, ears, session_id="spoken")
    played = Played("hello how are you", "en-us", speech_end_s=user.size / 16000)
    played.outputs = conv.play(user, after_s=10.0)
    said, first = played.said(), played.first_voice_s()
    assert said and first is not None, "it answered aloud"
    back = ears.transcriber.transcribe(played.audio()[int(first * 16000):]).text
    edits, n = word_errors(said, back)
    assert edits / n <= 0.25, (said, back)
    cascade.close(conv.state)


def test_the_cascade_stops_speaking_when_the_user_starts_talking(cascade):
    state = cascade.open("barge")
    outs = run_turns(cascade, state, [TurnInput(text="tell me a long story about a dragon and a knight")])
    while sum(o.pcm is not None for o in outs) < 2 and len(outs) < 60:  # a bounded wait for its voice
        outs += run_turns(cascade, state, [TurnInput()])
    assert outs[-1].pcm is not None and outs[-2].pcm is not None, "it is speaking when the user starts"
    talk = windows(speech.say("wait wait stop", "en-us+m3"))
    barge = run_turns(cascade, state, [TurnInput(audio=torch.from_numpy(w)) for w in talk])
    onset = 0  # the user's speech starts at the first sample of the first window
    stopped = next(i for i, o in enumerate(barge) if o.pcm is None)
    assert stopped <= onset + 1, "silent within a turn or two of the user's onset"
    assert "stop_speaking" in barge[stopped].controls or "stop_speaking" in barge[stopped - 1].controls
    assert all(o.pcm is None for o in barge[stopped:]), "and it stays silent while the user talks"
    assert state.barge_ins == 1
    cascade.close(state)


def test_the_cascade_never_voices_a_silent_result(cascade):
    state = cascade.open("silent")
    result = "Oslo: snow, minus three degrees"
    outs = run_turns(cascade, state, [TurnInput(context=result)] + [TurnInput() for _ in range(12)], pace_s=0.1)
    assert all(o.pcm is None and not o.text for o in outs)
    assert any(result in m["content"] for m in state.history if m["role"] == "user"), "it keeps it as context"
    cascade.close(state)


def test_the_cascade_voices_a_result_the_loop_marks_voiced_word_for_word(cascade):
    state = cascade.open("voiced")
    result = "Oslo: snow, minus three degrees."
    outs = run_turns(cascade, state, [TurnInput(context=result, voice=result)] + [TurnInput() for _ in range(20)],
                     pace_s=0.1)
    assert "".join(o.text for o in outs).strip() == result
    assert sum(o.pcm is not None for o in outs) >= 5, "a second or more of speech"
    cascade.close(state)


def test_the_cascade_step_never_waits_for_the_reply_model(cascade):
    state = cascade.open("fast")
    times, t0, first_audio, k = [], time.monotonic(), None, 0
    while k < 40 and (first_audio is None or k < first_audio + 3):  # bounded: 8 s
        inp = TurnInput(text="tell me about the moon") if k == 0 else TurnInput(audio=torch.zeros(TURN))
        s0 = time.perf_counter()
        out = cascade.step([state], [inp])[0]
        times.append((time.perf_counter() - s0) * 1000)
        if out.pcm is not None and first_audio is None:
            first_audio = k
        k += 1
        time.sleep(max(0.0, t0 + k * 0.2 - time.monotonic()))
    assert first_audio is not None and first_audio >= 1, "the reply took at least a turn to come"
    # a step that waited on the reply model would take seconds; one turn (200 ms) leaves a shared host room
    assert max(times) < 200.0, f"a step took {max(times):.1f} ms while the model was generating"
    cascade.close(state)


def test_a_delegation_is_acknowledged_aloud_and_reported_once_as_a_delegate_control(cascade):
    state = cascade.open("delegate")
    outs = run_turns(cascade, state, [TurnInput(text="will it rain in Paris tomorrow")])
    while ACK not in "".join(o.text for o in outs) and len(outs) < 30:  # bounded: ~6 s
        outs += run_turns(cascade, state, [TurnInput()])
    outs += run_turns(cascade, state, [TurnInput() for _ in range(3)])
    delegated = [o for o in outs if "delegate" in o.controls]
    assert len(delegated) == 1 and "paris" in delegated[0].delegate_task.lower()
    assert ACK in "".join(o.text for o in outs)
    cascade.close(state)


def test_a_closed_session_gets_nothing_more_from_the_worker_threads(cascade):
    state = cascade.open("closed")
    cascade.step([state], [TurnInput(text="hello how are you")])
    cascade.close(state)
    time.sleep(1.5)  # the reply would have been synthesized by now (~0.5 s here)
    assert not state.pieces and state.closed


def test_cascade_settings_reach_the_backend(monkeypatch):
    from interplay.runtime import interaction_kwargs, plan_from_settings
    from interplay.settings import load_settings

    monkeypatch.setenv("INTERPLAY_MODEL__BACKEND", "cascade")
    for key, value in {"MIN_SILENCE_MS": "700", "REPLY_ENGINE": "openai", "BASE_URL": "http://127.0.0.1:9/v1",
                       "REPLY_MODEL": "m", "API_KEY": "k", "VOICE": "en-gb", "MAX_REPLY_TOKENS": "20"}.items():
        monkeypatch.setenv(f"INTERPLAY_MODEL__CASCADE__{key}", value)
    kwargs = interaction_kwargs(plan_from_settings(load_settings()), [])
    cfg = CascadeConfig.from_options(**kwargs["backend_options"])
    assert (cfg.endpoint.min_silence_ms, cfg.reply.engine, cfg.reply.max_tokens, cfg.tts.voice) == \
        (700, "openai", 20, "en-gb")
    assert cfg.reply.engine_options == {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key": "k"}


def test_a_cascade_serve_delegates_by_the_reply_models_own_call_unless_a_policy_is_set(monkeypatch):
    from interplay.runtime import plan_from_settings
    from interplay.settings import load_settings

    monkeypatch.setenv("INTERPLAY_MODEL__BACKEND", "cascade")
    assert plan_from_settings(load_settings()).interaction.policy == "model_token"  # not first_of: no rule twice
    assert plan_from_settings(load_settings(), policy="rule").interaction.policy == "rule"
    monkeypatch.setenv("INTERPLAY_DELEGATION__POLICY", "always")
    assert plan_from_settings(load_settings()).interaction.policy == "always"


@pytest.mark.parametrize("env,reason", [({"INTERPLAY_EARS__ENABLED": "false"}, "ears"),
                                        ({"INTERPLAY_MODEL__CASCADE__VOICE": "xx-nope"}, "voice 'xx-nope'")])
def test_serve_backend_cascade_with_the_ears_off_or_a_voice_espeak_lacks_is_refused_in_one_line(
        monkeypatch, env, reason):
    from typer.testing import CliRunner

    from interplay.cli import app

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(app, ["serve", "--backend", "cascade", "--plan"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and reason in lines[0], result.output


# ---- through the real loop: ears, policy, delegation, weaving, gRPC ---------------------------------

RESULT = "Paris: light rain, fourteen degrees."


class RecordingBackground(bgrpc.BackgroundServicer):
    """A Background service that records each context package and answers at once. A stand-in for the
    background actor (which has its own tests): the property here is the interaction side's path."""

    def __init__(self) -> None:
        self.packages: list = []

    async def Delegate(self, request, context):  # noqa: N802
        self.packages.append(request)
        yield bpb.Update(task_id=request.task_id, seq=0, kind=bpb.UPDATE_KIND_ACCEPTED)
        yield bpb.Update(task_id=request.task_id, seq=1, kind=bpb.UPDATE_KIND_FINAL, text=RESULT)


@pytest.fixture(scope="module")
def spoken_delegation(cascade, ears):
    """A spoken weather request through the TurnLoop and the Session service (real gRPC on 127.0.0.1),
    the loop's ears, the `model_token` policy alone (no rule on the words): (background, chunks)."""
    from conftest import converse, serve_background

    from interaction_actor.ears.segmenter import windows as pcm_windows
    from interaction_actor.runtime.loop import LoopConfig, TurnLoop
    from interaction_actor.runtime.service import serve
    from interplay.client import audio_chunk

    async def run():
        bg = RecordingBackground()
        bg_server, bg_addr = await serve_background(bg)
        loop = TurnLoop(cascade, LoopConfig(turn_ms=200, background_address=bg_addr, policy="model_token",
                                            idle_timeout_s=30.0), ears=ears)
        loop.start()
        server, address = await serve(loop)
        user = speech.padded(speech.say("will it rain in Paris tomorrow", "en-us"), 0.4, 10.0)
        try:
            chunks = await converse(address, [audio_chunk(w) for w in pcm_windows(user)], 0.4, gap_s=0.2)
        finally:
            await server.stop(0.2)
            await loop.stop()
            await bg_server.stop(0.2)
        return bg, chunks

    return asyncio.run(run())


def test_a_spoken_request_the_reply_model_delegates_reaches_the_background_through_the_context_package(
        spoken_delegation):
    bg, chunks = spoken_delegation
    started = [e for c in chunks for e in c.events if e.kind == spb.EVENT_KIND_DELEGATION_STARTED]
    assert len(started) == 1 and "paris" in started[0].text.lower()
    assert spb.CONTROL_TOKEN_DELEGATE in [k for c in chunks for k in c.controls]
    assert len(bg.packages) == 1
    pkg = bg.packages[0]
    assert pkg.task == started[0].text
    users = [e.text.lower() for e in pkg.transcript if e.speaker == xpb.SPEAKER_USER]
    assert any("paris" in u and "rain" in u for u in users), "the package says what the ears heard"


def test_the_cascade_voices_the_background_result_once_when_the_user_pauses(spoken_delegation):
    _, chunks = spoken_delegation
    said = "".join(c.text for c in chunks)
    assert said.count(RESULT) == 1, said
    voiced = [e for c in chunks for e in c.events if e.kind == spb.EVENT_KIND_RESULT_SURFACED and e.voiced]
    assert [e.text for e in voiced] == [RESULT]
    at = next(c.turn for c in chunks if RESULT in c.text)
    assert any(c.audio.pcm16 for c in chunks if at <= c.turn < at + 3), "with its audio"
