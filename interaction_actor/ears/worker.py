"""LocalEars: the `Ears` contract in this process — the loop feeds, two threads listen, the loop takes.

`feed` only appends the turn's windows to a bounded queue (a lock held for an append; no audio is
touched on the caller's thread) and `take` drains a results deque: neither waits on the work.
Behind them:

- the *segmenter thread* runs each session's `SessionSegmenter` (Silero VAD) over the windows in
  feed order — cheap (~1 ms per session-turn), so it keeps up in real time — and puts each closed
  segment on a bounded segment queue, stamped with the time its closing window was fed;
- the *transcriber thread* runs the `Transcriber` on one segment at a time, judges the transcript
  (`Judge`: nothing / `low_confidence` / usable) and appends the `Heard` to the results.

What is dropped when it falls behind, and counted in `stats()`:
- the segment queue full (`max_queued_segments`, the transcriber slower than people talk): the
  *oldest waiting segment* is dropped and its session gets `Heard(error="ears_overloaded")` at once,
  so the conversation knows something was said and not heard (`segments_dropped`);
- the window queue full (`max_queued_windows` turns; only when the segmenter thread is starved):
  the *oldest turn's windows* are dropped (`windows_dropped`); the sessions' VAD sees a gap;
- results nobody takes beyond `max_results`: the oldest (`results_dropped`).

A transcriber exception gives that segment's session one `Heard(error="transcriber_failed")` and
the thread goes on with the next segment; a segmenter exception gives `error="segmenter_failed"`
and resets that session's segmenter. `close(session)` is ordered with the feeds: the session's
open segment and its queued segments are dropped, nothing more comes back for it.

Tracing (interplay.tracing; a no-op unless this process configured it): each segment through the
recogniser is one `transcribe_segment` span on the transcriber thread (session id, turns, audio
seconds, compute seconds, confidence, language, verdict; never the words). The loop's side records
the `transcribe` span in the session's trace (runtime/hearing.py).

`latency_ms` of a result: from the `feed` call that carried the window which *closed* the segment
(the window in which `silence_ms` of quiet after the last speech was reached, or the max length)
to the moment the result is appended for `take`. Speech end → result is that plus the close wait
(`silence_ms`, 320 ms by default) and the half window of the last speech on average.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from interaction_actor.ears.contract import Heard
from interaction_actor.ears.segmenter import Segment, SegmenterConfig, SessionSegmenter, VadModel
from interaction_actor.ears.transcriber import (
    Judge,
    JudgeConfig,
    RemoteConfig,
    RemoteTranscriber,
    Transcriber,
    WhisperConfig,
    WhisperTranscriber,
)
from interplay import tracing
from interplay.log import get_logger
from interplay.priority import ASYNC_NICENESS

log = get_logger("interaction_actor.ears")


@dataclass
class EarsConfig:
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    transcriber: str = "whisper"  # "whisper" (faster-whisper in-process) | "openai" (a remote server)
    whisper: WhisperConfig = field(default_factory=WhisperConfig)
    remote: RemoteConfig = field(default_factory=RemoteConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    max_queued_windows: int = 250  # feed calls (turns) waiting for the segmenter: 50 s of turns
    max_queued_segments: int = 8  # closed segments waiting for the transcriber
    max_results: int = 1024  # results waiting for `take`
    emit_low_confidence: bool = True  # False: a low-confidence transcript gives no Heard at all
    expect_language: str = "en"  # a transcript in another language is marked `foreign` (detecting models only)
    niceness: int | None = ASYNC_NICENESS  # the ears' own process (an EarsActor) runs its threads at this niceness: the clock wins


def make_transcriber(config: EarsConfig) -> Transcriber:
    if config.transcriber == "whisper":
        return WhisperTranscriber(config.whisper)
    if config.transcriber == "openai":
        return RemoteTranscriber(config.remote)
    raise ValueError(f"unknown transcriber {config.transcriber!r} (whisper or openai)")


@dataclass
class _Queued:
    segment: Segment
    closed_at: float  # monotonic time of the feed that carried the closing window
    generation: int  # the session's generation when it closed (close() bumps it)


class LocalEars:
    """In-process ears (two daemon threads). `on_ready`, when given, is called (from the transcriber
    thread) each time results become ready — the Ray actor uses it to wake its long poll."""

    def __init__(self, config: EarsConfig | None = None, transcriber: Transcriber | None = None,
                 vad: VadModel | None = None, on_ready: Callable[[], None] | None = None) -> None:
        self.config = cfg = config or EarsConfig()
        self.transcriber = transcriber if transcriber is not None else make_transcriber(cfg)
        self.vad = vad or VadModel(cfg.segmenter.model_path)
        self.judge = Judge(cfg.judge)
        # for spans: the recogniser's name without a server URL's credentials
        self._transcriber_name = str(getattr(self.transcriber, "name", type(self.transcriber).__name__)).split("@")[0]
        self.on_ready = on_ready
        self._lock = threading.Lock()
        self._audio: deque[tuple] = deque()  # ("feed", t, batch) | ("close", session_id)
        self._audio_ready = threading.Condition(self._lock)
        self._segments: deque[_Queued] = deque()
        self._segments_ready = threading.Condition(self._lock)
        self._results: deque[Heard] = deque()
        self._segmenters: dict[str, SessionSegmenter] = {}  # segmenter thread only
        self._generation: dict[str, int] = {}  # session → generation (under _lock)
        self._busy = 0  # items being worked on outside the queues
        self._stopping = False
        self.counters = dict(windows_fed=0, windows_dropped=0, segments=0, segments_dropped=0,
                             segments_short=0, transcribed=0, heard=0, low_confidence=0, nothing_heard=0,
                             failures=0, results_dropped=0)
        self.timing = dict(audio_s=0.0, compute_s=0.0)  # transcribed segments: their length, the time it took
        self._threads = [threading.Thread(target=self._segment_loop, name="ears-segmenter", daemon=True),
                         threading.Thread(target=self._transcribe_loop, name="ears-transcriber", daemon=True)]
        for t in self._threads:
            t.start()

    # --- the Ears contract (the loop's side) -----------------------------------------------------

    def feed(self, turn_audio: list[tuple[str, int, bytes]]) -> None:
        if not turn_audio:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._audio) >= self.config.max_queued_windows:
                old = self._audio.popleft()
                if old[0] == "feed":
                    self.counters["windows_dropped"] += len(old[2])
                else:  # never lose a close: put it back in front
                    self._audio.appendleft(old)
            self._audio.append(("feed", now, list(turn_audio)))
            self.counters["windows_fed"] += len(turn_audio)
            self._audio_ready.notify()

    def take(self) -> list[Heard]:
        out: list[Heard] = []
        while True:
            try:
                out.append(self._results.popleft())
            except IndexError:
                return out

    def close(self, session_id: str) -> None:
        with self._lock:
            self._generation[session_id] = self._generation.get(session_id, 0) + 1
            self._audio.append(("close", session_id))
            self._audio_ready.notify()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._audio_ready.notify_all()
            self._segments_ready.notify_all()
        for t in self._threads:
            t.join(timeout=10.0)
        close = getattr(self.transcriber, "close", None)
        if callable(close):
            close()

    # --- what the bench and the actor read -------------------------------------------------------

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counters, sessions=len(self._generation), queued_windows=len(self._audio),
                        queued_segments=len(self._segments), pending_results=len(self._results))

    def backlog(self) -> int:
        """Work not yet done: queued turns + queued segments + items in progress."""
        with self._lock:
            return len(self._audio) + len(self._segments) + self._busy

    def has_results(self) -> bool:
        return bool(self._results)

    # --- the threads --------------------------------------------------------------------------------

    def _segment_loop(self) -> None:
        while True:
            with self._lock:
                while not self._audio and not self._stopping:
                    self._audio_ready.wait()
                if self._stopping:
                    return
                item = self._audio.popleft()
                self._busy += 1
            try:
                if item[0] == "close":
                    self._segmenters.pop(item[1], None)
                else:
                    self._segment_batch(item[1], item[2])
            finally:
                with self._lock:
                    self._busy -= 1

    def _segment_batch(self, fed_at: float, batch: list[tuple[str, int, bytes]]) -> None:
        for session_id, turn, pcm in batch:
            seg = self._segmenters.get(session_id)
            if seg is None:
                seg = self._segmenters[session_id] = SessionSegmenter(session_id, self.vad, self.config.segmenter)
                with self._lock:
                    self._generation.setdefault(session_id, 0)
            short_before = seg.dropped_short
            try:
                closed = seg.push(turn, pcm)
            except Exception as e:  # noqa: BLE001 — one session's failure must not stop the others
                log.exception("ears_segmenter_failed", session_id=session_id, error=f"{type(e).__name__}: {e}")
                self._segmenters.pop(session_id, None)
                self._publish(Heard(session_id=session_id, text="", final=True, start_turn=turn, end_turn=turn,
                                    low_confidence=True, error="segmenter_failed"))
                continue
            self.counters["segments_short"] += seg.dropped_short - short_before
            for segment in closed:
                self._enqueue(segment, fed_at)

    def _enqueue(self, segment: Segment, fed_at: float) -> None:
        dropped: _Queued | None = None
        with self._lock:
            gen = self._generation.get(segment.session_id, 0)
            self.counters["segments"] += 1
            if len(self._segments) >= self.config.max_queued_segments:
                dropped = self._segments.popleft()
                self.counters["segments_dropped"] += 1
            self._segments.append(_Queued(segment, fed_at, gen))
            self._segments_ready.notify()
        if dropped is not None:
            s = dropped.segment
            log.warning("ears_overloaded", session_id=s.session_id, start_turn=s.start_turn, end_turn=s.end_turn)
            self._publish(Heard(session_id=s.session_id, text="", final=True, start_turn=s.start_turn,
                                end_turn=s.end_turn, low_confidence=True, error="ears_overloaded",
                                latency_ms=(time.monotonic() - dropped.closed_at) * 1000))

    def _transcribe_loop(self) -> None:
        while True:
            with self._lock:
                while not self._segments and not self._stopping:
                    self._segments_ready.wait()
                if self._stopping:
                    return
                q = self._segments.popleft()
                live = self._generation.get(q.segment.session_id, 0) == q.generation
                self._busy += 1
            try:
                if live:
                    self._transcribe(q)
            finally:
                with self._lock:
                    self._busy -= 1

    def _transcribe(self, q: _Queued) -> None:
        s = q.segment
        with tracing.tracer().start_as_current_span("transcribe_segment", record_exception=False,
                                                    set_status_on_exception=False, attributes={
                                                        "interplay.session_id": s.session_id,
                                                        "interplay.start_turn": s.start_turn,
                                                        "interplay.end_turn": s.end_turn,
                                                        "interplay.transcriber": self._transcriber_name}) as span:
            self._transcribe_in(q, span)

    def _transcribe_in(self, q: _Queued, span: tracing.Span) -> None:
        s = q.segment
        base = dict(session_id=s.session_id, final=True, start_turn=s.start_turn, end_turn=s.end_turn)
        try:
            t = self.transcriber.transcribe(s.samples)
        except Exception as e:  # noqa: BLE001 — reported to the session, the thread goes on
            span.set_attribute("error.type", "transcriber_failed")
            span.set_status(tracing.Status(tracing.StatusCode.ERROR, type(e).__name__))
            self.counters["failures"] += 1
            log.warning("ears_transcriber_failed", session_id=s.session_id, error=f"{type(e).__name__}: {e}")
            self._publish(Heard(text="", low_confidence=True, error="transcriber_failed",
                                latency_ms=(time.monotonic() - q.closed_at) * 1000, **base))
            return
        self.counters["transcribed"] += 1
        self.timing["audio_s"] += t.duration_s
        self.timing["compute_s"] += t.compute_s
        verdict = self.judge(t)
        span.set_attributes({"interplay.audio_s": round(t.duration_s, 3), "interplay.compute_s": round(t.compute_s, 3),
                             "interplay.confidence": round(t.confidence, 4), "interplay.language": t.language,
                             "interplay.verdict": "nothing" if not verdict.keep else
                             "low_confidence" if verdict.low_confidence else "heard"})
        if not verdict.keep or (verdict.low_confidence and not self.config.emit_low_confidence):
            self.counters["nothing_heard"] += 1
            return
        if verdict.low_confidence:
            self.counters["low_confidence"] += 1
        with self._lock:  # closed while it was being transcribed: nothing comes back
            if self._generation.get(s.session_id, 0) != q.generation:
                return
        self._publish(Heard(text=t.text, confidence=t.confidence, no_speech=t.no_speech_prob,
                            low_confidence=verdict.low_confidence, language=t.language,
                            foreign=t.language != self.config.expect_language,
                            latency_ms=(time.monotonic() - q.closed_at) * 1000, **base))
        self.counters["heard"] += 1

    def _publish(self, heard: Heard) -> None:
        with self._lock:
            if len(self._results) >= self.config.max_results:
                self._results.popleft()
                self.counters["results_dropped"] += 1
            self._results.append(heard)
        if self.on_ready is not None:
            try:
                self.on_ready()
            except Exception:  # noqa: BLE001
                log.exception("ears_on_ready_failed")
