"""FD-bench metrics computed from the assistant's output audio, as Full-Duplex-Bench computes them.

Given one aligned recording (stream.Aligned: the user's speech spans and the assistant's audio as
heard, on the session's clock), `Scorer.score(...)` returns that episode's figures; `summarize(...)`
turns a backend's episodes into the keys of ../shared/FIGURES.md. Nothing here reads the backend's
text or tokens: only what came out as sound. It never touches the network.

What "came out" is found as FD-bench finds it (github.com/DanielLin94144/Full-Duplex-Bench,
v1_v1.5/evaluation: eval_pause_handling.py, eval_smooth_turn_taking.py, eval_user_interruption.py,
get_timing.py, get_transcript/asr.py), with these tools: speech regions by the Silero VAD
(faster-whisper's `get_speech_timestamps`, threshold 0.5, no padding) merged across gaps up to 0.5 s
(get_timing.py's MODEL_MERGE_GAP), and words by the transcriber the ears use (Whisper tiny.en,
interaction_actor/ears/transcriber.py) on each region, counted when its Judge keeps the transcript and
the recogniser's no_speech_prob is at most the Judge's `low_no_speech` (0.6). Measured here: 60
espeak-ng replies in 5 voices had no_speech_prob 0.03-0.51 (none dropped), while Whisper's
hallucinations on the native model's tones ("Thank you.", "So, let's go ahead and see.") had
0.68-0.84. Confidence does not separate them: the cascade's voice (en-us+f3) is often misheard with
confidence 0.27-0.38 ("The capitalist can be"), as low as those hallucinations. FD-bench
runs an ASR with word timestamps (parakeet-tdt-0.6b-v2) over the whole output; Whisper tiny.en's word
times are off by up to half a second at a segment's start here, so times come from the VAD and the
word count from the transcript.

- Takeover (TOR, per episode 0/1): no words -> 0; words spanning under TAKEOVER_S (1 s: first region
  start to last region end) and at most TAKEOVER_WORDS (3) -> 0 (a backchannel); else 1.
- Pause handling: the output from the end of the request's first half to the end of its second half
  (what a time-synchronous output.wav of FD-bench holds while the user is mid-request).
- Turn taking: the output from the user's end on (audio cropped there, as FD-bench crops after an
  interruption); latency = user end -> the first output speech onset (VAD, not the first word; a
  region already going at the user's end counts as 0, as FD-bench clips negative latencies).
- Interruption: stop = the interruption's onset -> the end of the output speech going on at that onset
  (get_timing.py's stop latency, not capped at the user's end); the interruption's TOR and response
  latency on the output from its end on (asr.py crops there); `addressed`: the reply's words include
  one of the interruption's topic words — a word match, not FD-bench's GPT-4 judge of relevance.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

import numpy as np

from interplay.fdbench.episodes import SR
from interplay.fdbench.stream import Aligned, Recording

TAKEOVER_S = 1.0  # FD-bench's turn_duration_threshold
TAKEOVER_WORDS = 3  # FD-bench's turn_num_words_threshold


@dataclass
class ScoringConfig:
    vad_threshold: float = 0.5
    min_silence_ms: int = 100  # silence that splits the VAD's speech chunks (they are merged below)
    min_speech_ms: int = 64  # a shorter chunk is a click
    merge_gap_s: float = 0.5  # FD-bench get_timing.py MODEL_MERGE_GAP
    pad_s: float = 0.2  # audio given to the transcriber on each side of a region
    transcriber_threads: int = 1


@dataclass
class Region:
    start: float  # session seconds
    end: float
    text: str = ""  # what the transcriber heard (counted or not)
    words: int = 0  # words counted (0 unless the transcript counts as speech: see the module docstring)
    confidence: float = 0.0
    no_speech: float = 0.0

    def describe(self) -> dict:
        return {"start_s": round(self.start, 3), "end_s": round(self.end, 3), "text": self.text, "words": self.words,
                "confidence": round(self.confidence, 3), "no_speech": round(self.no_speech, 3)}


def count_words(text: str) -> int:
    """Words of a transcript, punctuation removed as FD-bench's remove_punctuation does."""
    return len(re.sub(r"[^\w\s\[\]]", "", text).split())


def takeover(regions: list[Region]) -> int:
    """FD-bench's TOR of one window (see the module docstring)."""
    words = sum(r.words for r in regions)
    if words == 0:
        return 0
    spoken = [r for r in regions if r.words]
    duration = spoken[-1].end - spoken[0].start
    return 0 if duration < TAKEOVER_S and words <= TAKEOVER_WORDS else 1


class Scorer:
    """The VAD and the transcriber over output audio; one per process (the transcriber loads once)."""

    def __init__(self, config: ScoringConfig | None = None, transcriber=None) -> None:
        from interaction_actor.ears.transcriber import Judge, WhisperConfig, WhisperTranscriber

        self.config = cfg = config or ScoringConfig()
        # the judge's ears: no vocabulary prompt, so a score does not lean towards the names the ears expect
        self.transcriber = transcriber or WhisperTranscriber(WhisperConfig(cpu_threads=cfg.transcriber_threads,
                                                                           prompt=""))
        self.judge = Judge()

    def speech(self, track: np.ndarray, t0: float = 0.0, t1: float | None = None,
               merge_gap_s: float | None = None) -> list[Region]:
        """Speech regions of `track[t0:t1]` (session seconds), merged across gaps up to merge_gap_s (the
        config's unless given)."""
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        cfg = self.config
        a = max(0, int(round(t0 * SR)))
        b = track.size if t1 is None else min(track.size, int(round(t1 * SR)))
        if b - a < 512:
            return []
        opts = VadOptions(threshold=cfg.vad_threshold, min_silence_duration_ms=cfg.min_silence_ms,
                          min_speech_duration_ms=cfg.min_speech_ms, speech_pad_ms=0)
        found = get_speech_timestamps(np.ascontiguousarray(track[a:b], np.float32), opts)
        merged: list[Region] = []
        for s in found:
            start, end = (a + s["start"]) / SR, (a + s["end"]) / SR
            if merged and start - merged[-1].end <= (cfg.merge_gap_s if merge_gap_s is None else merge_gap_s):
                merged[-1].end = end
            else:
                merged.append(Region(start, end))
        return merged

    def heard(self, track: np.ndarray, t0: float = 0.0, t1: float | None = None,
              merge_gap_s: float | None = None) -> list[Region]:
        """`speech(...)` with each region's words (the transcriber on the region, `pad_s` either side
        but not outside the window)."""
        regions = self.speech(track, t0, t1, merge_gap_s)
        lo_limit = max(0, int(round(t0 * SR)))
        hi_limit = track.size if t1 is None else min(track.size, int(round(t1 * SR)))
        for r in regions:
            lo = max(lo_limit, int((r.start - self.config.pad_s) * SR))
            hi = min(hi_limit, int((r.end + self.config.pad_s) * SR))
            t = self.transcriber.transcribe(track[lo:hi])
            r.text, r.confidence, r.no_speech = t.text, t.confidence, t.no_speech_prob
            if self.judge(t).keep and t.no_speech_prob <= self.judge.config.low_no_speech:
                r.words = count_words(t.text)
        return regions

    def score(self, rec: Recording, al: Aligned) -> dict:
        """One episode's figures (see the module docstring); `complete` False when its stream failed."""
        ep = rec.episode
        out: dict = {**ep.describe(), "session_id": rec.session_id, "complete": rec.complete, "error": rec.error,
                     "refused": len(rec.refused),
                     "turns": len(rec.turns), "missed": al.missed,
                     "user_spans_session_s": [[round(a, 3), round(b, 3)] for a, b in al.user_spans]}
        if not rec.turns:
            return out
        everything = self.heard(al.track)
        out["output"] = [r.describe() for r in everything]
        out["output_speech_s"] = round(sum(r.end - r.start for r in everything), 3)
        if ep.category == "pause_handling":
            (_, pause_start), (_, user_end) = al.user_spans[0], al.user_spans[-1]
            window = self.heard(al.track, pause_start, user_end)
            out.update(tor=takeover(window), words=sum(r.words for r in window),
                       onset_after_pause_ms=_ms(window[0].start - pause_start) if window else None,
                       said=" ".join(r.text for r in window if r.words))
        elif ep.category == "turn_taking":
            user_end = al.user_spans[-1][1]
            window = self.heard(al.track, user_end)
            out.update(tor=takeover(window), words=sum(r.words for r in window),
                       latency_ms=_ms(window[0].start - user_end) if window else None,
                       said=" ".join(r.text for r in window if r.words))
        else:
            out.update(self._interruption(rec, al))
        return out

    def _interruption(self, rec: Recording, al: Aligned) -> dict:
        ep = rec.episode
        if rec.interrupt_at is None or len(al.user_spans) < 2:
            return {"tor": 0, "interrupted": False}
        onset, end = al.user_spans[-1]
        spoke = rec.heard_at is not None
        going = [r for r in self.speech(al.track) if r.start <= onset < r.end]
        window = self.heard(al.track, end)
        said = " ".join(r.text for r in window if r.words)
        topic = {k.lower() for k in ep.keywords}
        return {"interrupted": True, "assistant_heard_first": spoke, "overlapped": bool(going),
                "stop_ms": _ms(going[0].end - onset) if going else None,
                "tor": takeover(window), "words": sum(r.words for r in window),
                "response_ms": _ms(window[0].start - end) if window else None, "said": said,
                "addressed": bool(topic & set(re.sub(r"[^\w\s]", " ", said.lower()).split()))}


def _ms(seconds: float) -> float:
    return round(1000.0 * max(0.0, seconds), 1)


def _p50(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 1) if xs else None


def _mean(xs: list[float]) -> float | None:
    return round(statistics.fmean(xs), 4) if xs else None


def _pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 1) if xs else None


def summarize(episodes: list[dict], clock: list[Aligned]) -> dict:
    """A backend's FIGURES.md keys (rates over its completed episodes) plus counts and the clock check."""
    done = [e for e in episodes if e.get("complete")]
    by = {c: [e for e in done if e["category"] == c] for c in ("pause_handling", "turn_taking", "interruption")}
    turns = by["turn_taking"]
    cut = [e for e in by["interruption"] if e.get("interrupted")]
    delivery = [x for a in clock for x in a.delivery_ms]
    return {
        "pause_takeover_rate": _mean([e["tor"] for e in by["pause_handling"]]),
        "turn_taking_takeover_rate": _mean([e["tor"] for e in turns]),
        "turn_taking_latency_ms_p50": _p50([e["latency_ms"] for e in turns if e.get("latency_ms") is not None]),
        "turn_taking_latency_ms_p50_takeovers": _p50([e["latency_ms"] for e in turns if e["tor"]]),
        "turn_taking_latency_ms_mean_takeovers": _mean([e["latency_ms"] for e in turns if e["tor"]]),
        "turn_taking_responses": sum(e.get("latency_ms") is not None for e in turns),
        "interruption_takeover_rate": _mean([e["tor"] for e in by["interruption"]]),
        "interruption_stop_ms_p50": _p50([e["stop_ms"] for e in cut if e.get("stop_ms") is not None]),
        "interruption_overlapped": sum(bool(e.get("overlapped")) for e in cut),
        "interruption_response_ms_p50": _p50([e["response_ms"] for e in cut if e.get("response_ms") is not None]),
        "interruption_addressed_rate": _mean([float(bool(e.get("addressed"))) for e in by["interruption"]]),
        "episodes": len(done),
        "episodes_planned": len(episodes),
        "episodes_with_output_speech": sum(bool(e.get("output")) for e in done),
        "output_words": sum(r["words"] for e in done for r in e.get("output", [])),
        "sessions_refused": sum(e.get("refused", 0) for e in episodes),
        "turns": sum(e.get("turns", 0) for e in episodes),
        "missed_turns": sum(a.missed for a in clock),
        "turn_gaps": sum(a.gaps for a in clock),
        "lateness_ms_p99": _pct([x for a in clock for x in a.lateness_ms], 99),
        "delivery_ms_p50": _pct(delivery, 50),
        "delivery_ms_max": round(max(delivery), 1) if delivery else None,
        "send_late_ms_p99": _pct([x for a in clock for x in a.send_late_ms], 99),
        # the delegation scenarios' keys (FIGURES.md): run.evaluate fills them from delegation.summarize when
        # the scenarios ran for this backend; null when they did not
        "results_voiced_once": None, "results_lost": None, "results_voiced_twice": None,
        "result_to_voiced_ms_p50": None,
    }
