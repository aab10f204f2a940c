"""What the user says shows in the session's trace and in the loop's metrics: espeak-ng speech streamed in
real time over real gRPC to a TurnLoop with the tiny model and the real ears beside it (LocalEars: the
Silero segmenter and faster-whisper tiny.en on threads of this process), its spans in a JSON-lines file
(interplay.tracing) and its /metrics scraped from prometheus_client's HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import httpx
import numpy as np
import pytest
from conftest import converse
from prometheus_client.parser import text_string_to_metric_families

from interaction_actor.ears.speech import TEST_VOICES, padded, room_tone, say
from interaction_actor.ears.worker import EarsConfig, LocalEars
from interaction_actor.model.fusion import build_model
from interaction_actor.runtime.loop import LoopConfig, TurnLoop
from interaction_actor.runtime.metrics import serve_metrics
from interaction_actor.runtime.service import serve
from interplay import tracing
from interplay.client import audio_chunk
from interplay.v1 import session_pb2 as spb

REQUEST = "what is the weather in London today"  # with room tone of seed 0, tiny.en hears it right
TURN = 3200  # samples in one 200 ms window


def scrape(address: str) -> dict[str, float]:
    """/metrics as {sample name: value} (label-free samples only)."""
    text = httpx.get(f"http://{address}/metrics", timeout=5).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


async def talk(tiny, ears) -> tuple[list[spb.OutputChunk], dict[str, float]]:
    """Say REQUEST in real time (200 ms a chunk), then room tone; every chunk back and the loop's /metrics."""
    loop = TurnLoop(tiny, LoopConfig(turn_ms=200, admission=False), ears=ears)
    loop.start()
    server, address = await serve(loop)
    http = serve_metrics(loop.metrics, "127.0.0.1", 0)
    audio = np.concatenate([padded(say(REQUEST, TEST_VOICES[0]), floor=room_tone(0.4, seed=0)),
                            room_tone(1.6, seed=3)])
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    sends = [audio_chunk(pcm[i:i + TURN].tobytes()) for i in range(0, pcm.size, TURN)]
    try:
        chunks = await converse(address, sends, 0.4, session_id="heard", gap_s=0.2)
        scraped = await asyncio.to_thread(scrape, http.address)
    finally:
        http.close()
        await server.stop(None)
        await loop.stop()
    return chunks, scraped


@pytest.fixture(scope="module")
def heard(tmp_path_factory):
    path = tmp_path_factory.mktemp("ears-trace") / "spans.jsonl"
    tracing.configure(str(path), "interplay-test")
    ears = LocalEars(EarsConfig())
    try:
        chunks, scraped = asyncio.run(asyncio.wait_for(talk(build_model("tiny", seed=0), ears), 90))
        tracing.flush()
        text = path.read_text()
    finally:
        ears.stop()
        tracing.shutdown()
    return [json.loads(line) for line in text.splitlines()], text, chunks, scraped


def final(chunks: list[spb.OutputChunk]) -> spb.Event:
    (ev,) = [e for c in chunks for e in c.events
             if e.kind == spb.EVENT_KIND_USER_TRANSCRIPT and e.update == spb.EVENT_UPDATE_FINAL]
    return ev


def ms(span: dict) -> float:
    return (datetime.fromisoformat(span["end_time"]) - datetime.fromisoformat(span["start_time"])).total_seconds() * 1000


def test_a_heard_utterance_is_a_transcribe_span_in_its_sessions_trace(heard):
    spans, _, chunks, _ = heard
    ev = final(chunks)
    (session,) = [s for s in spans if s["name"] == "session"]
    (span,) = [s for s in spans if s["name"] == "transcribe"]
    assert span["parent_id"] == session["context"]["span_id"]
    assert span["context"]["trace_id"] == session["context"]["trace_id"]
    assert span["attributes"]["interplay.final"] is True and span["attributes"]["interplay.heard"] is True
    assert (span["attributes"]["interplay.start_turn"], span["attributes"]["interplay.end_turn"]) == (
        ev.start_turn, ev.end_turn)
    assert 100 < ms(span) < 5000  # speech end (its window fed to the ears) → the transcript at the loop


def test_the_recogniser_s_own_work_is_a_transcribe_segment_span_naming_the_session(heard):
    spans = heard[0]
    (seg,) = [s for s in spans if s["name"] == "transcribe_segment"]
    a = seg["attributes"]
    assert a["interplay.session_id"] == "heard" and a["interplay.verdict"] == "heard"
    assert a["interplay.audio_s"] > 1.0 and 0 < a["interplay.compute_s"] < ms(seg) / 1000 + 0.01


def test_the_trace_never_holds_what_the_user_said(heard):
    _, text, chunks, _ = heard
    assert "London" in final(chunks).text  # it was heard ...
    assert "London" not in text and "weather" not in text  # ... and kept out of the spans


def test_the_transcriber_latency_reaches_the_loop_s_metrics_endpoint(heard):
    spans, _, _, scraped = heard
    (span,) = [s for s in spans if s["name"] == "transcribe"]
    assert scraped["interplay_transcriber_latency_ms_count"] == 1
    assert scraped["interplay_transcriber_latency_ms_sum"] == pytest.approx(ms(span), abs=2.0)
