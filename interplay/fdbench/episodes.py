"""The FD-bench-style episode set: what the user says, in which voice, and exactly when (ground truth).

Given `quick`, `build()` returns `Episode`s of three categories, modelled on Full-Duplex-Bench v1
(github.com/DanielLin94144/Full-Duplex-Bench, v1_v1.5/evaluation): `pause_handling` (a request with a
pause of 0.6-1.5 s inside it: the assistant should not take the turn in the pause), `turn_taking`
(a request, then silence: it should), `interruption` (a request; once the assistant is heard
speaking the user talks over it with a request on another topic: it should stop, then answer that).
Speech is espeak-ng (interaction_actor/ears/speech.py `say`) over room tone (`room_tone`, a named
seed per episode); nothing downloads. Ground truth is taken from the clean speech before the room
tone is mixed in: a span starts at the first and ends at the last 10 ms frame above TRIM_RMS.

Held out: every voice and every sentence here differs from the ears' test and bench sets
(`speech.TEST_*`, `speech.HELDOUT_*`) and from what the native model was trained on (synth.py:
procedural speech-like audio, never espeak-ng, and its typed strings); `held_out_report()` checks that
and a test holds it. The voices share espeak-ng's English phoneme data with those sets (there is no
other); the accents (Scottish, New York, Lancashire) are not used anywhere else; the cascade speaks
en-us+f3 (interaction_actor/cascade/tts.py), so no user sounds like it.

It never touches the network or a model: building the set is synthesis (cached on disk) and arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from interaction_actor.ears import speech

SR = speech.SAMPLE_RATE
CHUNK = 320  # 20 ms: the client sends audio as a microphone would (interplay.client.CHUNK_MS)
TRIM_RMS = 0.003  # a 10 ms frame of clean espeak speech above this RMS is speech (-50 dBFS)
LEAD_S = 0.6  # room tone before the user's first word
PAUSE_S = (0.6, 0.8, 1.0, 1.2, 1.4, 1.5)  # the pause inside each pause-handling request
TAIL_S = {"pause_handling": 3.0, "turn_taking": 6.0, "interruption": 6.0}  # listening after the user's last word
INTERRUPT_AFTER_S = 0.2  # the interruption starts this long after the assistant is first heard: the native
# model's replies are 0.8 s of audio of which the VAD calls ~0.3 s speech; at 0.4 s none of 6 overlapped
INTERRUPT_WAIT_S = 5.0  # ... or this long after the request ends when the assistant never speaks
QUICK = (0, 3)  # the episodes of each category that --quick runs

CATEGORIES = ("pause_handling", "turn_taking", "interruption")
VOICES = ("en-gb-scotland+m2", "en-us-nyc+m1", "en-gb-x-gbclan+f5", "en-gb-scotland+f3")

PAUSE_REQUESTS = (
    ("I was hoping", "you could recommend a good book about the ocean"),
    ("could you help me", "find a simple recipe for vegetable soup"),
    ("here is my problem", "my bicycle tire keeps going flat every week"),
    ("before we begin", "can you explain how a rainbow forms in the sky"),
    ("let me think", "what should I pack for a hiking trip in the mountains"),
    ("I would like to know", "how long it takes to boil an egg properly"),
)
TURN_REQUESTS = (
    "what is the capital city of Australia",
    "can you suggest a name for my new puppy",
    "are spiders insects or something else",
    "why does the sky look blue during the day",
    "what should I cook for dinner this evening",
    "tell me something interesting about penguins",
)
# (request, interruption, words of the interruption's topic that a reply addressing it would use)
INTERRUPTIONS = (
    ("tell me a long story about a dragon and a brave knight", "wait, actually, tell me about volcanoes instead",
     ("volcano", "volcanoes", "lava", "eruption", "erupt", "magma")),
    ("explain how airplanes manage to stay up in the air", "sorry, what about submarines",
     ("submarine", "submarines", "underwater", "dive", "ocean")),
    ("describe your favourite season of the year in detail", "hold on, which movie should I watch tonight",
     ("movie", "movies", "film", "films", "watch", "cinema")),
    ("give me some tips for learning to play the piano", "no wait, how do I learn the guitar",
     ("guitar", "guitars", "chord", "chords", "strings")),
    ("talk about the history of the game of chess", "actually, what are the rules of checkers",
     ("checkers", "draughts", "checker")),
    ("list some fun things to do in the summer", "never mind, what about in the winter",
     ("winter", "snow", "ski", "skiing", "cold", "sledding")),
)


@dataclass
class Episode:
    """One scripted user side. Times are in samples of the user's stream (16 kHz, from its first sample)."""

    name: str
    category: str
    voice: str
    texts: tuple[str, ...]  # what the user says, in order (pause: the two halves; interruption: request, interruption)
    layer: np.ndarray  # the planned speech (no room tone): for an interruption only the request
    spans: list[tuple[int, int]]  # user speech spans in `layer`
    seed: int  # of the room tone under everything
    tail_s: float
    interrupt: np.ndarray | None = None  # the interruption's speech (trimmed), played when the assistant is heard
    keywords: tuple[str, ...] = ()
    pause_s: float = 0.0

    @property
    def user_end(self) -> int:
        return self.spans[-1][1]

    def room(self, samples: int) -> np.ndarray:
        """The room tone under the whole stream (deterministic from the seed)."""
        return speech.room_tone(samples / SR, seed=self.seed)

    def describe(self) -> dict:
        return {"name": self.name, "category": self.category, "voice": self.voice, "texts": list(self.texts),
                "pause_s": self.pause_s or None, "keywords": list(self.keywords) or None,
                "user_spans_s": [[round(a / SR, 3), round(b / SR, 3)] for a, b in self.spans]}


def trim(clip: np.ndarray) -> np.ndarray:
    """`clip` cut to its speech: from the first to the last 10 ms frame whose RMS is above TRIM_RMS."""
    n = clip.size // 160
    if n == 0:
        return clip
    rms = np.sqrt(np.mean(clip[: n * 160].reshape(n, 160) ** 2, axis=1))
    loud = np.flatnonzero(rms > TRIM_RMS)
    if loud.size == 0:
        return clip[:0]
    return clip[loud[0] * 160:(loud[-1] + 1) * 160].astype(np.float32)


def _said(text: str, voice: str) -> np.ndarray:
    return trim(speech.say(text, voice))


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SR)), np.float32)


def pause_episode(i: int) -> Episode:
    first, second = PAUSE_REQUESTS[i]
    voice, pause = VOICES[i % len(VOICES)], PAUSE_S[i]
    a, b = _said(first, voice), _said(second, voice)
    lead = int(LEAD_S * SR)
    gap = int(round(pause * SR))
    layer = np.concatenate([_silence(LEAD_S), a, _silence(pause), b])
    spans = [(lead, lead + a.size), (lead + a.size + gap, lead + a.size + gap + b.size)]
    return Episode(f"pause-{i}", "pause_handling", voice, (first, second), layer, spans, seed=1000 + i,
                   tail_s=TAIL_S["pause_handling"], pause_s=pause)


def turn_episode(i: int) -> Episode:
    text = TURN_REQUESTS[i]
    voice = VOICES[(i + 1) % len(VOICES)]
    a = _said(text, voice)
    lead = int(LEAD_S * SR)
    return Episode(f"turn-{i}", "turn_taking", voice, (text,), np.concatenate([_silence(LEAD_S), a]),
                   [(lead, lead + a.size)], seed=2000 + i, tail_s=TAIL_S["turn_taking"])


def interruption_episode(i: int) -> Episode:
    request, interruption, keywords = INTERRUPTIONS[i]
    voice = VOICES[(i + 2) % len(VOICES)]
    a = _said(request, voice)
    lead = int(LEAD_S * SR)
    return Episode(f"interrupt-{i}", "interruption", voice, (request, interruption),
                   np.concatenate([_silence(LEAD_S), a]), [(lead, lead + a.size)], seed=3000 + i,
                   tail_s=TAIL_S["interruption"], interrupt=_said(interruption, voice), keywords=keywords)


BUILDERS = {"pause_handling": pause_episode, "turn_taking": turn_episode, "interruption": interruption_episode}


def build(quick: bool = False, categories: tuple[str, ...] = CATEGORIES, per_category: int | None = None
          ) -> list[Episode]:
    """The set: every category's episodes (6 each; `quick`: 2 each, QUICK), or the first `per_category`."""
    out = []
    for c in categories:
        if c not in BUILDERS:
            raise ValueError(f"unknown category {c!r}; choose from {CATEGORIES}")
        idx = range(per_category) if per_category is not None else (QUICK if quick else range(len(PAUSE_S)))
        out += [BUILDERS[c](i) for i in idx]
    return out


def sentences() -> list[str]:
    """Every sentence the user says in the set."""
    return [*(" ".join(p) for p in PAUSE_REQUESTS), *(p for pair in PAUSE_REQUESTS for p in pair),
            *TURN_REQUESTS, *(r for r, _, _ in INTERRUPTIONS), *(x for _, x, _ in INTERRUPTIONS)]


def _norm(text: str) -> str:
    return " ".join("".join(ch for ch in text.lower() if ch.isalnum() or ch.isspace()).split())


def _cascade_sentences() -> tuple[str, ...]:
    """The cascade's prompt examples and its own measurement requests (when the cascade is installed)."""
    try:
        from interaction_actor.cascade import measure, reply
    except ImportError:
        return ()
    return (*(u for u, _ in reply.EXAMPLES), *(a for _, a in reply.EXAMPLES if a),
            *getattr(measure, "HELDOUT_WEATHER", ()), *getattr(measure, "HELDOUT_CHAT", ()))


def held_out_report() -> dict:
    """What the set shares with the ears' test and bench sets, the cascade's prompt examples and
    measurement requests, and the native model's training text:
    voices in common, sentences in common (after lower-casing and dropping punctuation), training
    words (synth.py's typed words, cities, replies) that occur in a sentence here, and training texts
    that occur in one as whole words ("so" in "so the thing is", not in "something"). All empty when
    held out. Two pause openings changed when training chit-chat took up "I was wondering," and
    "the thing is," (spoken.HOLD_HEADS): "I was hoping", "here is my problem"."""
    from interaction_actor.training import spoken, synth

    ours = {_norm(s) for s in sentences()}
    theirs = {_norm(s) for s in (*speech.TEST_SENTENCES, *speech.HELDOUT_SENTENCES, *_cascade_sentences())}
    train_words = {_norm(w) for w in (*synth.WORDS, *synth.CITIES, *synth.WEATHER)}
    train_texts = {_norm(t) for t in (synth.REPLY, synth.CUE_TEXT, "how many", "tell me when red",
                                      *spoken.sentences(spoken.TRAIN))}
    words = {w for s in ours for w in s.split()}
    return {"voices_shared": sorted(set(VOICES) & {*speech.TEST_VOICES, *speech.HELDOUT_VOICES,
                                                   *spoken.VOICES[spoken.TRAIN]}),
            "sentences_shared": sorted(ours & theirs),
            "training_words_used": sorted(words & train_words),
            "training_texts_used": sorted(t for t in train_texts if any(f" {t} " in f" {s} " for s in ours))}
