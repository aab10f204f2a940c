"""The ears' figures: word error rate, real-time factor and segment-close → result latency, measured.

`measure_transcriber(quick)` plays the held-out espeak-ng set (`speech.heldout_set`: sentences and
voices no test uses) through a real `LocalEars` (Silero segmenter + the configured transcriber),
one utterance at a time, each with 0.4 s before and 1.0 s after over a quiet room tone (seed = the
utterance's index), in 200-ms windows. Each window is fed when the ears have finished the previous
one, as in real time when they keep up (but without waiting out the wall clock), so:

- `wer`: word edit distance (substitutions + deletions + insertions) / reference words, summed over
  the set, after normalisation (lower case, punctuation dropped, digits spelled out: "10" = "ten",
  "%" = "percent"). A small implementation here, not jiwer. Every Heard of the utterance counts,
  low-confidence ones included; an utterance with no Heard counts all its words as deletions.
- `rtf`: transcriber compute time / transcribed audio time (segments, as cut by the segmenter).
- `latency_ms_p50/p99/max`: per result, from the feed of the window that closed the segment to the
  result being ready for `take` (`Heard.latency_ms`; the loop-side figure adds the close wait).

`measure_thresholds(seeds)` gives the recogniser's scores (`no_speech`, `confidence`) on speech
(the TEST_* set) and on non-speech made from named seeds (room tone, white/pink/brown noise,
music-like tones at two levels), transcribed whole (not through the VAD, which rejects them all
here), and whether the Silero segmenter opened a segment on them: the evidence for `JudgeConfig`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from interaction_actor.ears import speech
from interaction_actor.ears.contract import Heard
from interaction_actor.ears.segmenter import SessionSegmenter, VadModel, windows
from interaction_actor.ears.transcriber import Judge, Transcriber
from interaction_actor.ears.worker import EarsConfig, LocalEars, make_transcriber

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def _spell(n: int) -> list[str]:
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_ONES[n // 100], "hundred"] + (_spell(n % 100) if n % 100 else [])
    if n < 10000:
        return _spell(n // 1000) + ["thousand"] + (_spell(n % 1000) if n % 1000 else [])
    return list(str(n))


def normalise(text: str) -> list[str]:
    """Lower case, "%" → percent, digits spelled out (< 10 000), a number run into a one-letter unit split from it
    ("14c" → "fourteen c", as "14 C" reads), punctuation dropped; the words."""
    text = text.lower().replace("%", " percent ")
    text = re.sub(r"(\d),(\d)", r"\1\2", text)
    text = re.sub(r"(\d)([a-z])\b", r"\1 \2", text)
    words: list[str] = []
    for tok in re.sub(r"[^a-z0-9' ]+", " ", text).split():
        if tok.isdigit():
            words += _spell(int(tok))
        else:
            words.append(tok.strip("'"))
    return [w for w in words if w]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edits, reference words): Levenshtein distance over normalised words."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)


def _percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def measure_transcriber(quick: bool = False, *, config: EarsConfig | None = None,
                        transcriber: Transcriber | None = None, cache_dir: str | None = None,
                        progress: Callable[[int, int], None] | None = None, timeout_s: float = 60.0) -> dict:
    """WER, RTF and close → result latency of LocalEars on the held-out espeak-ng set (see the module
    docstring). quick: 30 utterances (6 sentences × 5 voices), else 120."""
    cfg = config or EarsConfig()
    items = speech.heldout_set(quick)
    ears = LocalEars(cfg, transcriber=transcriber if transcriber is not None else make_transcriber(cfg))
    edits = ref_words = missing = 0
    latencies: list[float] = []
    low = 0
    worst: list[tuple[float, str, str, str]] = []
    t_start = time.perf_counter()
    try:
        for i, (text, voice) in enumerate(items):
            audio = speech.padded(speech.say(text, voice, cache_dir=cache_dir), 0.4, 1.0,
                                  floor=speech.room_tone(3.0, seed=i))
            sid = f"u{i}"
            heard: list[Heard] = []
            for turn, window in enumerate(windows(audio)):
                _wait(lambda: ears.backlog() == 0, timeout_s)
                ears.feed([(sid, turn, window)])
                heard += ears.take()
            _wait(lambda: ears.backlog() == 0, timeout_s)
            heard += ears.take()
            ears.close(sid)
            heard = [h for h in heard if h.session_id == sid and not h.error]
            hyp = " ".join(h.text for h in heard)
            e, n = word_errors(text, hyp)
            edits, ref_words = edits + e, ref_words + n
            missing += not heard
            low += sum(h.low_confidence for h in heard)
            latencies += [h.latency_ms for h in heard]
            worst.append((e / max(1, n), text, voice, hyp))
            if progress is not None:
                progress(i + 1, len(items))
        stats = ears.stats()
        timing = dict(ears.timing)
    finally:
        ears.stop()
    worst.sort(key=lambda w: -w[0])
    wcfg = cfg.whisper
    return {
        "wer": edits / max(1, ref_words),
        "wer_method": "word edit distance / reference words after normalise() (lower case, punctuation "
                      "dropped, digits spelled out); not jiwer",
        "rtf": timing["compute_s"] / max(1e-9, timing["audio_s"]),
        "latency_ms_p50": _percentile(latencies, 50),
        "latency_ms_p99": _percentile(latencies, 99),
        "latency_ms_max": max(latencies) if latencies else float("nan"),
        "latency_from": "the feed of the window that closed the segment → the result ready for take()",
        "utterances": len(items),
        "audio_s": timing["audio_s"],
        "transcribe_s": timing["compute_s"],
        "wall_s": time.perf_counter() - t_start,
        "missing": missing,
        "low_confidence": low,
        "segments": stats["segments"],
        "transcriber": ears.transcriber.name,
        "cpu_threads": wcfg.cpu_threads if cfg.transcriber == "whisper" else None,
        "encoder_window": wcfg.encoder_window if cfg.transcriber == "whisper" else None,
        "voices": list(speech.HELDOUT_VOICES),
        "worst": [{"wer": round(w, 3), "text": t, "voice": v, "heard": h} for w, t, v, h in worst[:5]],
    }


def _wait(cond: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("the ears did not finish in time")
        time.sleep(0.002)


def non_speech(seeds: tuple[int, ...] = (0, 1, 2), seconds: float = 3.0) -> list[tuple[str, np.ndarray]]:
    """Named non-speech clips: room tone at -55 and -40 dBFS, white/pink/brown noise at -25 dBFS,
    music-like tones at -20 and -35 dBFS, for each seed."""
    out: list[tuple[str, np.ndarray]] = []
    for seed in seeds:
        out += [(f"room_tone -55 dB seed {seed}", speech.room_tone(seconds, seed)),
                (f"room_tone -40 dB seed {seed}", speech.room_tone(seconds, seed, -40.0))]
        out += [(f"{kind} noise -25 dB seed {seed}", speech.noise(seconds, seed, kind)) for kind in
                ("white", "pink", "brown")]
        out += [(f"music -20 dB seed {seed}", speech.music(seconds, seed)),
                (f"music -35 dB seed {seed}", speech.music(seconds, seed, -35.0))]
    return out


def measure_thresholds(seeds: tuple[int, ...] = (0, 1, 2), *, config: EarsConfig | None = None,
                       transcriber: Transcriber | None = None, cache_dir: str | None = None) -> dict:
    """Scores on speech (TEST_* sentences × voices) and on `non_speech(seeds)`; per clip: no_speech,
    confidence, text, the judge's verdict, and whether the segmenter opened a segment."""
    cfg = config or EarsConfig()
    tr = transcriber if transcriber is not None else make_transcriber(cfg)
    judge = Judge(cfg.judge)
    vad = VadModel(cfg.segmenter.model_path)
    clips = [(f"speech {v}: {s}", speech.say(s, v, cache_dir=cache_dir)) for s in speech.TEST_SENTENCES
             for v in speech.TEST_VOICES]
    clips += non_speech(seeds)
    rows = []
    for name, audio in clips:
        t = tr.transcribe(audio)
        verdict = judge(t)
        seg = SessionSegmenter("t", vad, replace(cfg.segmenter))
        opened = 0
        for turn, w in enumerate(windows(speech.padded(audio, 0.2, 1.0))):
            opened += len(seg.push(turn, w))
        rows.append({"clip": name, "speech": name.startswith("speech"), "no_speech": round(t.no_speech_prob, 3),
                     "confidence": round(t.confidence, 3), "text": t.text, "kept": verdict.keep,
                     "low_confidence": verdict.low_confidence, "vad_segments": opened})

    def summary(xs: list[dict]) -> dict:
        return {"n": len(xs), "no_speech_min": min(r["no_speech"] for r in xs),
                "no_speech_max": max(r["no_speech"] for r in xs),
                "confidence_min": min(r["confidence"] for r in xs), "confidence_max": max(r["confidence"] for r in xs),
                "kept_usable": sum(r["kept"] and not r["low_confidence"] for r in xs),
                "kept_low_confidence": sum(r["kept"] and r["low_confidence"] for r in xs),
                "dropped": sum(not r["kept"] for r in xs), "vad_opened": sum(r["vad_segments"] > 0 for r in xs)}

    return {"speech": summary([r for r in rows if r["speech"]]),
            "non_speech": summary([r for r in rows if not r["speech"]]), "seeds": list(seeds), "clips": rows,
            "transcriber": tr.name}
