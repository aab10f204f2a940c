"""Text to speech for the cascade: a `TTS` seam and `EspeakTTS`, the assistant's one espeak-ng voice.

Contract. `TTS.synthesize(text)` is given the text of one reply (or of a piece of one) and yields
`Spoken` chunks in order, one per sentence: the sentence's text and its audio as float32 mono 16 kHz
in [-1, 1]. It may take tens of milliseconds per sentence and is called only on the cascade's TTS
worker thread, never on the turn path; it must not keep state between calls that another session
could see (one voice for everyone is fine). Yielding sentence by sentence lets the first sentence
play while the next is still being synthesized. Any other engine (a neural TTS, a remote server)
implements the same two lines: `sample_rate` and `synthesize`.

`EspeakTTS` renders with the libespeak-ng that `espeakng-loader` ships, through the ears' `say()`
(interaction_actor/ears/speech.py: one process-wide lock, PyAV resampling to 16 kHz, a disk cache
keyed by text and voice). Its default voice, "en-us+f3", is in neither the ears' TEST_VOICES nor
their HELDOUT_VOICES, so the assistant never sounds like the users the tests and benches play.
A short pause (`gap_ms` of silence) follows each sentence, as a speaker breathes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

SAMPLE_RATE = 16_000
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_SPEAKABLE = re.compile(r"[A-Za-z0-9]")


@dataclass
class Spoken:
    text: str  # the words this audio says
    audio: np.ndarray  # float32 mono 16 kHz in [-1, 1]


@runtime_checkable
class TTS(Protocol):
    sample_rate: int

    def synthesize(self, text: str) -> Iterator[Spoken]:
        """`text` as speech, sentence by sentence; never called on the turn path."""
        ...


def sentences(text: str) -> list[str]:
    """`text` cut after . ! ? and at line breaks; pieces without a letter or digit are dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and _SPEAKABLE.search(s)]


def split_ready(buffer: str) -> tuple[list[str], str]:
    """Whole sentences at the front of a growing reply, and the unfinished rest (streamed replies:
    a sentence goes to the TTS as soon as its end arrives)."""
    parts = _SENTENCE_END.split(buffer)
    if len(parts) == 1:
        return [], buffer
    done, rest = parts[:-1], parts[-1]
    return [s.strip() for s in done if s and _SPEAKABLE.search(s)], rest


def speakable(text: str) -> str:
    """What a speech engine should read: markup and emoji a model may write are dropped."""
    text = re.sub(r"[*_`#>|~\[\]{}<>]", " ", text)
    text = "".join(ch for ch in text if ch.isascii() or ch.isalpha())
    return re.sub(r"\s+", " ", text).strip()


@dataclass
class EspeakConfig:
    voice: str = "en-us+f3"
    rate: int = 165  # words per minute
    pitch: int = 50
    gap_ms: int = 120  # silence after each sentence
    cache_dir: str | None = None  # None: speech.say's default cache


class EspeakTTS:
    """espeak-ng through interaction_actor.ears.speech.say (see the module docstring)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, config: EspeakConfig | None = None) -> None:
        from interaction_actor.ears import speech

        self.config = config or EspeakConfig()
        self._say = speech.say
        self._say("ready", self.config.voice, self.config.rate, self.config.pitch,
                  cache_dir=self.config.cache_dir)  # loads the library and checks the voice now, not mid-reply

    def synthesize(self, text: str) -> Iterator[Spoken]:
        cfg = self.config
        gap = np.zeros(SAMPLE_RATE * cfg.gap_ms // 1000, np.float32)
        for sentence in sentences(text):
            words = speakable(sentence)
            if not words:
                continue
            audio = self._say(words, cfg.voice, cfg.rate, cfg.pitch, cache_dir=cfg.cache_dir)
            yield Spoken(text=sentence, audio=np.concatenate([audio.astype(np.float32), gap]))
