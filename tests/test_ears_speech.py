"""The spoken test material: espeak-ng through espeakng-loader's libespeak-ng, cached, two disjoint sets."""

import numpy as np
import pytest

from interaction_actor.ears import speech


def test_the_test_and_heldout_sets_share_no_sentence_and_no_voice():
    assert not set(speech.TEST_SENTENCES) & set(speech.HELDOUT_SENTENCES)
    assert not set(speech.TEST_VOICES) & set(speech.HELDOUT_VOICES)
    pairs = speech.heldout_set()
    assert len(pairs) == len(speech.HELDOUT_SENTENCES) * len(speech.HELDOUT_VOICES) >= 100
    assert {v for _, v in pairs} == set(speech.HELDOUT_VOICES) and len(speech.HELDOUT_VOICES) >= 5


def test_say_gives_16khz_speech_and_the_second_call_reads_the_cache(tmp_path):
    audio = speech.say("set a timer for ten minutes", "en-us", cache_dir=tmp_path)
    assert audio.dtype == np.float32 and 1.0 < audio.size / 16000 < 3.0  # ~1.7 s at 165 words/min
    assert 0.05 < float(np.abs(audio).max()) <= 1.0
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1
    np.save(files[0], np.full(10, 0.5, np.float32))  # the cache is what a second call returns
    assert np.array_equal(speech.say("set a timer for ten minutes", "en-us", cache_dir=tmp_path),
                          np.full(10, 0.5, np.float32))


def test_an_unknown_voice_is_an_error(tmp_path):
    with pytest.raises(speech.SpeechError, match="no voice"):
        speech.say("hello", "xx-nosuchvoice", cache_dir=tmp_path)


def test_non_speech_is_reproducible_from_its_seed():
    assert np.array_equal(speech.music(1.0, seed=3), speech.music(1.0, seed=3))
    assert not np.array_equal(speech.noise(1.0, seed=3, kind="pink"), speech.noise(1.0, seed=4, kind="pink"))
    rms = float(np.sqrt(np.mean(speech.room_tone(2.0, seed=0) ** 2)))
    assert abs(20 * np.log10(rms) - (-55.0)) < 0.5
