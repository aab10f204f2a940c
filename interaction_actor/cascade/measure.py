"""Measuring the cascade on this CPU: stage latencies, turn-taking latency, intelligibility, delegation.

`Conversation` plays audio to a CascadeBackend and real ears (LocalEars: Silero + Whisper tiny.en)
turn by turn on a real-time 200-ms grid, the way the loop's hearing does (each window to the ears
after the step, their final transcripts into the next turn's `TurnInput.heard`), and records what
comes back. It is a measuring harness, not a second loop: no gRPC, no delegation, no weaving.

`measure(requests)` speaks each request with the ears' TEST voices (espeak-ng) and reports, per
request and as medians: the stage times of the reply (user speech end → the endpointer's decision →
transcript at the backend → first reply token → first audio synthesized → first sample out), the
turn-taking latency measured from the audio itself (the end of the user's speech in the played
signal → the first non-silent sample of the assistant's output on the turn grid), and the round-trip
WER (the same transcriber on the assistant's output audio against the text it said).
`delegation_rate(requests)` asks the reply model each request as typed text and counts how many it
hands to the background. `python -m interaction_actor.cascade.measure` prints both as JSON.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from interaction_actor.model.session import TurnInput, TurnOutput

SAMPLE_RATE = 16_000

# Requests the reply model's examples never show (reply.EXAMPLES) and the tests do not use.
HELDOUT_WEATHER = (
    "what is the weather like in Berlin", "how cold is it in Madrid right now",
    "is it going to snow in Chicago this weekend", "tell me the forecast for Tokyo",
    "how windy is it in Boston today", "do I need an umbrella in Seattle",
    "will it rain in Dublin this afternoon", "how hot will it be in Cairo tomorrow",
    "what's the temperature in Toronto", "is it foggy in San Francisco this morning",
    "give me the weather forecast for Sydney", "what will the weather be in Vienna on Friday",
    "is it cloudy in Amsterdam", "how humid is it in Singapore today",
    "will there be a storm in Miami tonight", "what's the weather going to be like in Prague",
    "should I bring a coat in Stockholm today", "how much rain is expected in Mumbai this week",
    "is it snowing in Denver right now", "what is the forecast for Helsinki tomorrow",
)
HELDOUT_CHAT = (
    "good morning", "thank you very much", "tell me a joke", "what is your name", "hello how are you",
    "nice to meet you", "how was your day", "you are very helpful", "good night", "what can you do",
)


@dataclass
class Played:
    """What one request produced."""

    text: str
    voice: str
    speech_end_s: float  # where the user's speech ends in the played signal
    outputs: list[TurnOutput] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)

    def said(self) -> str:
        return "".join(o.text for o in self.outputs).strip()

    def audio(self) -> np.ndarray:
        turn = SAMPLE_RATE // 5
        return np.concatenate([o.pcm.numpy() if o.pcm is not None else np.zeros(turn, np.float32)
                               for o in self.outputs]) if self.outputs else np.zeros(0, np.float32)

    def first_voice_s(self, level: float = 1e-3) -> float | None:
        a = self.audio()
        hits = np.flatnonzero(np.abs(a) > level)
        return float(hits[0]) / SAMPLE_RATE if hits.size else None


class Conversation:
    """One session of a backend and real ears on a real-time turn grid (see the module docstring)."""

    def __init__(self, backend, ears, session_id: str = "m", turn_ms: int = 200) -> None:
        self.backend, self.ears, self.sid = backend, ears, session_id
        self.turn_s = turn_ms / 1000
        self.n = SAMPLE_RATE * turn_ms // 1000
        self.state = backend.open(session_id)
        self.turn = 0
        self.step_ms: list[float] = []

    def play(self, audio: np.ndarray, *, after_s: float = 6.0, until_quiet_s: float = 1.2,
             text: str = "", barge: tuple[float, np.ndarray] | None = None) -> list[TurnOutput]:
        """Play `audio` (float32 16 kHz) window by window, then silence for up to `after_s`, stopping once
        the assistant has spoken and then been quiet `until_quiet_s`. `text` is typed at the first turn;
        `barge`: (seconds after the start, audio) played over whatever comes then."""
        total = audio.size + int(after_s * SAMPLE_RATE)
        signal = np.zeros(total, np.float32)
        signal[: audio.size] = audio
        if barge is not None:
            at = int(barge[0] * SAMPLE_RATE)
            clip = barge[1][: max(0, total - at)]
            signal[at:at + clip.size] += clip
        outs: list[TurnOutput] = []
        heard = ""
        t0 = time.monotonic()
        quiet = 0
        for k in range(total // self.n):
            wait = t0 + (k + 1) * self.turn_s - time.monotonic()  # the window has been "heard" by now
            if wait > 0:
                time.sleep(wait)
            window = signal[k * self.n:(k + 1) * self.n]
            user_audio = window if np.abs(window).max() > 0 else None
            s0 = time.perf_counter()
            out = self.backend.step([self.state], [TurnInput(audio=None if user_audio is None else torch.from_numpy(
                window.copy()), text=text if k == 0 else "", heard=heard)])[0]
            self.step_ms.append((time.perf_counter() - s0) * 1000)
            outs.append(out)
            pcm = (np.clip(window, -1, 1) * 32767).round().astype("<i2").tobytes()
            self.ears.feed([(self.sid, self.turn, pcm)])
            self.turn += 1
            heard = " ".join(h.text.strip() for h in self.ears.take()
                             if h.session_id == self.sid and h.final and not h.low_confidence and h.text.strip())
            spoke = any(o.pcm is not None for o in outs)
            quiet = quiet + 1 if (out.pcm is None and spoke and k * self.n >= audio.size) else 0
            if quiet * self.turn_s >= until_quiet_s:
                break
        return outs


def _percentiles(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"p50": float("nan"), "max": float("nan")}
    return {"p50": round(statistics.median(xs), 1), "max": round(max(xs), 1)}


def measure(requests: list[tuple[str, str]] | None = None, *, backend=None, ears=None) -> dict:
    """Speak each (text, voice) request to a fresh session; stage and turn-taking latencies, round-trip WER."""
    from interaction_actor.cascade.backend import CascadeBackend
    from interaction_actor.ears import speech
    from interaction_actor.ears.bench import word_errors
    from interaction_actor.ears.worker import LocalEars

    requests = requests or [(t, v) for t, v in zip(speech.TEST_SENTENCES, speech.TEST_VOICES * 3, strict=False)]
    backend = backend or CascadeBackend()
    ears = ears or LocalEars()
    runs, stages, edits, words = [], {k: [] for k in ("endpoint", "transcript", "first_token", "first_audio",
                                                      "first_sample")}, 0, 0
    for i, (text, voice) in enumerate(requests):
        lead = 0.4
        user = speech.padded(speech.say(text, voice), lead, 0.0)
        conv = Conversation(backend, ears, session_id=f"m{i}")
        played = Played(text, voice, speech_end_s=lead + (user.size / SAMPLE_RATE - lead))
        played.outputs = conv.play(user)
        marks = next((m for m in conv.state.timings if "submit" in m), {})
        end = marks.get("speech_end")
        if end is not None:
            for name, key in (("endpoint", "endpoint"), ("transcript", "heard"), ("first_token", "first_token"),
                              ("first_audio", "first_audio"), ("first_sample", "first_sample")):
                if key in marks:
                    stages[name].append((marks[key] - end) * 1000)
        first = played.first_voice_s()
        said = played.said()
        wer_item = None
        if first is not None and said:
            back = ears.transcriber.transcribe(played.audio()[int(first * SAMPLE_RATE) - 1600:]).text
            e, n = word_errors(said, back)
            edits, words = edits + e, words + n
            wer_item = {"said": said, "heard_back": back, "wer": round(e / max(n, 1), 3)}
        runs.append({"request": text, "voice": voice,
                     "turn_taking_ms": None if first is None else round((first - played.speech_end_s) * 1000),
                     "stages_ms": {k: round((marks[k] - end) * 1000) for k in
                                   ("endpoint", "heard", "submit", "first_token", "first_audio", "first_sample")
                                   if end is not None and k in marks},
                     "delegated": bool(marks.get("delegated")), "round_trip": wer_item,
                     "step_ms_max": round(max(conv.step_ms), 2)})
        backend.close(conv.state)
        ears.close(conv.sid)
    taking = [r["turn_taking_ms"] for r in runs if r["turn_taking_ms"] is not None]
    return {"requests": len(runs), "answered": len(taking),
            "turn_taking_ms_p50": round(statistics.median(taking)) if taking else None,
            "stages_ms_p50": {k: _percentiles(v)["p50"] for k, v in stages.items()},
            "round_trip_wer": round(edits / words, 3) if words else None,
            "step_ms_max": max(r["step_ms_max"] for r in runs), "runs": runs}


def delegation_rate(requests: tuple[str, ...] = HELDOUT_WEATHER, *, reply=None) -> dict:
    """The fraction of `requests` (typed, each alone in a fresh conversation) the reply model delegates."""
    from interaction_actor.cascade.reply import SYSTEM_PROMPT, EngineReply, example_messages

    reply = reply or EngineReply()
    reply.start()
    delegated, answers = 0, {}
    for text in requests:
        msgs = [{"role": "system", "content": SYSTEM_PROMPT}, *example_messages(), {"role": "user", "content": text}]
        events = list(reply.reply(msgs, threading.Event()))
        task = next((e.text for e in events if e.kind == "delegate"), None)
        delegated += task is not None
        answers[text] = {"delegate": task} if task else {"answer": "".join(e.text for e in events if e.kind == "text")}
    return {"requests": len(requests), "delegated": delegated, "rate": round(delegated / len(requests), 3),
            "answers": answers}


if __name__ == "__main__":  # pragma: no cover - a measuring script
    from interaction_actor.cascade.reply import EngineReply

    r = EngineReply()
    out = {"delegation_weather": delegation_rate(HELDOUT_WEATHER, reply=r),
           "delegation_chat": delegation_rate(HELDOUT_CHAT, reply=r)}
    r.close()
    out["spoken"] = measure()
    print(json.dumps(out, indent=1))
