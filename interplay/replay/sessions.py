"""Input-only sessions for replay: synthetic (per seed) and from the harness's scenario files.

`synthetic_session(seed, phrasing)` is a pure function of (seed, phrasing): a user who types
requests on a timeline, with the microphone's noise floor every turn (as in training) and stretches
of speech-like audio (interaction_actor.training.synth.user_speech) in between; the header says which
requests need the background (`requests`: the study's ground truth, with the answer a lookup returns)
and the stand-in background's plan (`background`: a latency per request drawn from the seed, so every
policy meets the same luck). `phrasing`:
  training   the shipped checkpoint's own templates (synth.py): "weather in C?" (a lookup) and
             "say W in Ns" (not one) — what the model was trained to act on;
  held_out   phrasings it never saw: "what's the weather in C?", "is it cold in C?", "what time is it
             in C?", "how many people live in C?" (lookups) and chat with and without lookup words
             ("I love this weather", "thanks, that helps");
  mixed      both.
`scenario_session(scenario, seed)` turns a harness scenario (delegation/scenario.py) into the same
shape: each utterance is speech-like audio for its scripted duration, then its words arrive as typed
text at its end (as a final transcript would); a "background" intent is a lookup; latencies are the
scenario's distribution drawn per (seed, utterance). Reactive placements (`after_result`) become a gap
of `after_result + 10` turns: the user side of a replay is open-loop.
Nothing here runs a model; the sessions carry no outputs.
"""

from __future__ import annotations

import math
import random
import zlib

import torch

from delegation.scenario import Scenario
from interaction_actor.training.synth import CITIES, NOISE, WEATHER, WORDS, user_speech
from interplay.replay.format import ReplaySession, header

SR = 16_000
# cities no training episode names (typed or spoken: spoken.TYPED_CITIES holds "Paris" since synth-12, so
# it left this list); Lima is one of the evaluation's own held-out cities
HELD_OUT_CITIES = ("Lima", "Cairo")

TRAINING = (("weather in {city}?", True, "{city} {cond}, {temp} C"), ("say {word} in {n}s", False, ""))
HELD_OUT = (("what's the weather in {city}?", True, "{city} {cond}, {temp} C"),
            ("is it cold in {city}?", True, "{city} {cond}, {temp} C"),
            ("what time is it in {city}?", True, "{city} {hh}:{mm}"),
            ("how many people live in {city}?", True, "{city} about {m} million"),
            ("I love this weather", False, ""), ("thanks, that helps", False, ""), ("hello there", False, ""))
PHRASINGS = {"training": TRAINING, "held_out": HELD_OUT, "mixed": TRAINING + HELD_OUT}


def _seed(*parts: object) -> int:
    return zlib.crc32(":".join(map(str, parts)).encode())


def _pcm(x: torch.Tensor) -> bytes:
    return (x.clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16).numpy().tobytes()


def _audio_items(turns: int, speech: list[tuple[int, torch.Tensor]], seed: int, turn_ms: int) -> list[dict]:
    """One PCM16 audio item per turn: the noise floor plus speech placed at (start sample, wave)."""
    import base64  # noqa: PLC0415

    per = SR * turn_ms // 1000
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(turns * per, generator=g) * NOISE
    for start, w in speech:
        end = min(start + w.shape[0], x.shape[0])
        x[start:end] += w[: end - start]
    return [{"audio": base64.b64encode(_pcm(x[t * per:(t + 1) * per])).decode("ascii"), "rate": SR, "channels": 1}
            for t in range(turns)]


def _fill(template: str, rng: random.Random, cities: tuple[str, ...]) -> dict[str, str]:
    return {"city": rng.choice(cities), "cond": rng.choice(WEATHER), "temp": str(rng.randint(-9, 29)),
            "word": rng.choice(WORDS), "n": str(rng.choice((1, 2))), "hh": f"{rng.randint(0, 23):02d}",
            "mm": f"{rng.randint(0, 59):02d}", "m": str(rng.randint(1, 9))}


def synthetic_session(seed: int, phrasing: str = "mixed", *, requests: int = 5, turn_ms: int = 200,
                      gap_turns: tuple[int, int] = (14, 22), latency_turns: tuple[int, int] = (3, 18),
                      speech_p: float = 0.5, tail_turns: int = 25) -> ReplaySession:
    """A synthetic input-only session (see the module docstring)."""
    if phrasing not in PHRASINGS:
        raise ValueError(f"phrasing must be one of {sorted(PHRASINGS)}, got {phrasing!r}")
    rng = random.Random(_seed("synthetic", phrasing, seed))
    cities = CITIES if phrasing == "training" else CITIES + HELD_OUT_CITIES
    per = SR * turn_ms // 1000
    t = rng.randint(2, 5)
    reqs, texts, speech, lat = [], {}, [], []
    for i in range(requests):
        template, needs, answer = rng.choice(PHRASINGS[phrasing])
        f = _fill(template, rng, cities)
        text = template.format(**f)
        reqs.append({"turn": t, "text": text, "needs_background": needs, "answer": answer.format(**f)})
        texts[t] = text
        lat.append(rng.randint(*latency_turns))
        gap = rng.randint(*gap_turns)
        if rng.random() < speech_p:  # the user talks on a while later: maybe while a result comes in
            onset = (t + rng.randint(3, max(4, gap - 6))) * per + rng.randint(0, per - 1)
            speech.append((onset, user_speech(random.Random(_seed("speech", seed, i)), rng.uniform(0.5, 1.5))))
        t += gap
    turns = t + tail_turns
    items = _audio_items(turns, speech, _seed("noise", phrasing, seed), turn_ms)
    rows = [{"turn": k, "in": [items[k], *([{"text": texts[k]}] if k in texts else [])]} for k in range(turns)]
    h = header(f"synthetic-{phrasing}-{seed}", turn_ms, source="synthetic", origin_unix_ms=1_700_000_000_000,
               policy="model_token", requests=reqs,
               background={"latency_turns": lat, "accept_turns": 1, "failure": [False] * len(reqs)},
               meta={"seed": seed, "phrasing": phrasing})
    return ReplaySession(h, rows)


def scenario_session(sc: Scenario, seed: int = 0) -> ReplaySession:
    """A harness scenario as an input-only replay session (see the module docstring)."""
    turn_ms = sc.turn_ms
    per = SR * turn_ms // 1000
    t, prev_end = 0, -1
    reqs, texts, speech, lat, failed = [], {}, [], [], []
    for i, u in enumerate(sc.utterances):
        if u.at is not None:
            start = max(u.at, prev_end + 1)
        elif u.after_result is not None:
            start = prev_end + 1 + u.after_result + 10
        else:
            start = prev_end + 1 + (5 if u.gap is None else u.gap)
        end = start + u.duration - 1
        w = user_speech(random.Random(_seed("scenario", sc.name, seed, i)), u.duration * turn_ms / 1000 * 0.9)
        speech.append((start * per, w))
        texts[end + 1] = u.say  # the words arrive when the utterance ends, as a final transcript would
        rng = random.Random(_seed(seed, sc.name, "bg", i, 0))  # the harness's draw for the first delegation
        lat.append(max(1, math.ceil(sc.background.latency.sample(rng) / turn_ms)))
        failed.append(rng.random() < sc.background.failure_rate)
        reqs.append({"turn": end + 1, "text": u.say, "needs_background": u.intent == "background",
                     "answer": f"Here is what I found about {u.say.rstrip('?.!')}", "intent": u.intent})
        prev_end = t = end
    turns = t + 2 + sc.tail_turns
    items = _audio_items(turns, speech, _seed("noise", sc.name, seed), turn_ms)
    rows = [{"turn": k, "in": [items[k], *([{"text": texts[k]}] if k in texts else [])]} for k in range(turns)]
    h = header(f"scenario-{sc.name}-{seed}", turn_ms, source="scenario", origin_unix_ms=1_700_000_000_000,
               policy="model_token", requests=reqs,
               background={"latency_turns": lat, "accept_turns": max(1, math.ceil(sc.background.accept_ms / turn_ms)),
                           "failure": failed},
               meta={"seed": seed, "scenario": sc.name})
    return ReplaySession(h, rows)


__all__ = ["HELD_OUT", "PHRASINGS", "TRAINING", "scenario_session", "synthetic_session"]
