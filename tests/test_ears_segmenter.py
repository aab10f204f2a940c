"""The streaming Silero segmenter: real VAD (faster-whisper's ONNX), real espeak-ng speech, 200-ms windows."""

import numpy as np
import pytest

from interaction_actor.ears import speech
from interaction_actor.ears.segmenter import SegmenterConfig, SessionSegmenter, VadModel, VadState, windows


@pytest.fixture(scope="module")
def vad():
    return VadModel()


def run(seg, audio, turn_ms=200):
    out = []
    for turn, w in enumerate(windows(audio, turn_ms)):
        out += seg.push(turn, w)
    return out


def test_the_streaming_vad_gives_the_same_probabilities_as_faster_whispers_batched_call(vad):
    from faster_whisper.vad import get_vad_model

    audio = speech.padded(speech.say("hello how are you", "en-us"), 0.3, 0.3, floor=speech.room_tone(3, seed=5))
    audio = audio[: audio.size // 512 * 512]
    batched = get_vad_model()(audio.copy()).reshape(-1)
    state, got, rest = VadState(), [], np.zeros(0, np.float32)
    for chunk in np.array_split(audio, 17):  # uneven pieces, as windows of any length arrive
        rest = np.concatenate([rest, chunk])
        n = rest.size // 512
        if n:
            got.append(vad.probs(rest[: n * 512].reshape(n, 512), state))
            rest = rest[n * 512:]
    # all but the last frame: faster-whisper's batched call zeroes the last 64 samples of its input
    # (it writes the first frame's zero context through a view of the audio)
    assert np.allclose(np.concatenate(got)[:-1], batched[:-1], atol=1e-5)


def test_a_spoken_command_is_one_segment_with_the_turns_it_was_spoken_in(vad):
    said = speech.say("what is the weather in London today", "en-us")
    audio = speech.padded(said, lead_s=1.0, tail_s=1.2, floor=speech.room_tone(5, seed=1))
    segs = run(SessionSegmenter("s", vad), audio)
    assert len(segs) == 1
    s = segs[0]
    first, last = 1.0, 1.0 + said.size / 16000  # seconds
    assert abs(s.start_turn - int(first / 0.2)) <= 1
    assert abs(s.end_turn - int(last / 0.2)) <= 1
    assert s.reason == "silence" and s.speech_ms > 1000
    assert abs(s.samples.size / 16000 - said.size / 16000) < 0.6  # speech plus pre/post roll


def test_a_segment_closes_after_the_configured_silence(vad):
    audio = speech.padded(speech.say("set a timer for ten minutes", "en-us"), 0.4, 2.0)
    for silence_ms in (400, 1000):
        s = run(SessionSegmenter("s", vad, SegmenterConfig(silence_ms=silence_ms)), audio)[0]
        waited_ms = (s.closed_turn - s.end_turn) * 200
        assert silence_ms - 200 <= waited_ms <= silence_ms + 400


def test_room_tone_noise_and_music_open_no_segment(vad):
    for name, clip in [("room tone seed 0", speech.room_tone(4, seed=0)),
                       ("pink noise seed 1", speech.noise(4, seed=1, kind="pink")),
                       ("music seed 2", speech.music(4, seed=2))]:
        assert run(SessionSegmenter("s", vad), clip) == [], name


def test_a_long_monologue_is_cut_at_the_max_length_and_goes_on(vad):
    talk = np.concatenate([speech.say(s, "en-us+m3", rate=190) for s in speech.TEST_SENTENCES])  # ~9 s, no pause
    cfg = SegmenterConfig(max_segment_s=3.0, silence_ms=1500)
    segs = run(SessionSegmenter("s", vad, cfg), speech.padded(talk, 0.2, 2.0))
    assert sum(s.reason == "max_length" for s in segs) >= 2
    assert all(s.samples.size <= 3.0 * 16000 for s in segs)
    assert sum(s.samples.size for s in segs) / 16000 > 0.8 * talk.size / 16000  # nothing much lost at the cuts


def test_a_session_holds_bounded_audio_while_someone_talks_for_half_a_minute(vad):
    talk = np.concatenate([speech.say(s, "en-us", rate=200) for s in speech.TEST_SENTENCES * 5])
    seg = SessionSegmenter("s", vad, SegmenterConfig(max_segment_s=4.0, silence_ms=2000))
    most = 0.0
    for turn, w in enumerate(windows(talk)):
        seg.push(turn, w)
        most = max(most, seg.open_ms + len(seg._pre_roll) * 32)
    assert talk.size / 16000 > 30 and most <= 4000 + 200


def test_a_click_is_too_short_to_be_a_segment(vad):
    click = speech.say("hello how are you", "en-us")[:1600]  # 100 ms of a word
    seg = SessionSegmenter("s", vad, SegmenterConfig(min_speech_ms=300))
    assert run(seg, speech.padded(click, 0.6, 1.0)) == []
