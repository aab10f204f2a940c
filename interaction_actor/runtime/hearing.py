"""Hearing: the turn loop's side of the ears — each turn's audio out, what the user said back in.

The loop never waits for a transcript. Audio reaches the Ears (interaction_actor/ears/contract.py:
a Ray actor in its own process, or threads in-process) by non-blocking calls, as early as it can:
`arrived` forwards a chunk the moment the service hands it to the loop when it is already 16 kHz
mono PCM16 (what the project's clients send; up to a turn sooner than waiting for the window);
otherwise `feed`, after the step, hands the session's decoded window. A session whose audio stopped
for CLOSE_AFTER_TURNS turns is fed that much silence once, so a segment its client stopped in the
middle of still closes; nothing is inserted for a chunk that is merely late (jitter), which would
cut silence into the middle of speech.
At each turn boundary `collect` takes what the ears finished (never blocking), and `gather` puts a
session's results where they matter, on the asyncio side before its turn is stepped:
  1. the Converse stream: a USER_TRANSCRIPT event (text, FINAL/PARTIAL, turn span, confidence,
     low_confidence, language) rides the session's next chunk;
  2. the conversation log (→ context packages): a spoken USER span with the recogniser's confidence;
  3. the backend's input (`TurnInput.heard`) and 4. the delegation policy (as the utterance), both
     through the returned text.
Low-confidence (noise, music, mumbling) and foreign-language results are shown to the client but
nothing acts on them. A transcriber failure is one `transcriber_failed` error event for the session;
its turns go on. Every per-session collection here is bounded.

Observability: each result that reaches a session (in `gather`) is one `transcribe` span, a child of
the session's span (interplay.tracing), from the moment the window holding the speech's end was fed
to the ears (this side keeps when each turn's audio went out) to now — its attributes say the turns,
final, confidence, language, low confidence, error code; never the words. The same time goes to the
loop's `transcriber_ms` histogram (LoopMetrics.transcribed), or the failure to its errors by code.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

import torch

from interaction_actor.ears.contract import Ears, Heard
from interaction_actor.runtime.weave import event
from interplay import tracing
from interplay.log import get_logger
from interplay.v1 import session_pb2 as spb

log = get_logger("interaction_actor.runtime.hearing")

CLOSE_AFTER_TURNS = 3  # turns without any audio after which a session's open segment is closed with silence
MAX_PENDING = 64  # results kept per session between two of its turns
MAX_FED_TURNS = 512  # per session: when each of its recent turns' audio went to the ears (for latency)


class Hearing:
    def __init__(self, ears: Ears | None, turn_ms: int = 200, sample_rate: int = 16_000, metrics=None) -> None:
        self.ears = ears
        self.metrics = metrics  # a LoopMetrics: transcriber latency and failures
        self.samples_per_turn = sample_rate * turn_ms // 1000
        self._pending: dict[str, deque[Heard]] = {}
        self._quiet: dict[str, int] = {}  # session -> turns since its last audio window
        self._early: dict[str, set[int]] = {}  # session -> ids of raw items that went to the ears on arrival
        self._fed: dict[str, OrderedDict[int, float]] = {}  # session -> turn -> monotonic time its audio went out

    def collect(self, live_ids) -> None:
        """Turn boundary: take what the ears finished; keep each live session's results for its turn."""
        if self.ears is None:
            return
        try:
            got = self.ears.take()
        except Exception as exc:  # noqa: BLE001 - the ears never stop the clock
            log.error("ears_take_failed", error=repr(exc))
            return
        for h in got:
            if h.session_id in live_ids:
                self._pending.setdefault(h.session_id, deque(maxlen=MAX_PENDING)).append(h)

    def gather(self, live, events: list[spb.Event]) -> str:
        """The session's results since its last turn: events appended to `events`, finals written to its
        conversation log; returns the words a policy and the backend may act on ("" when none)."""
        queue = self._pending.pop(live.id, None)
        if not queue:
            return ""
        words = []
        for h in queue:
            self._observe(live, h)
            if h.error:
                events.append(event(spb.EVENT_KIND_ERROR, f"speech recognition failed ({h.error}); "
                                    "the session goes on", code="transcriber_failed", retryable=True))
                continue
            if not h.text.strip():
                continue
            events.append(event(spb.EVENT_KIND_USER_TRANSCRIPT, h.text,
                                update=spb.EVENT_UPDATE_FINAL if h.final else spb.EVENT_UPDATE_PARTIAL,
                                start_turn=h.start_turn, end_turn=h.end_turn, confidence=h.confidence,
                                low_confidence=h.low_confidence or h.foreign, language=h.language))
            if h.final and not h.low_confidence and not h.foreign:
                live.log.heard(h.text.strip(), h.start_turn, h.end_turn, h.confidence)
                words.append(h.text.strip())
        return " ".join(words)

    def _observe(self, live, h: Heard) -> None:
        """One result reached the loop: its `transcribe` span and the latency metric."""
        fed = self._fed.get(live.id, {}).get(h.end_turn)
        ms = (time.monotonic() - fed) * 1000 if fed is not None else h.latency_ms
        if self.metrics is not None:
            self.metrics.transcribed(ms, h.error)
        attrs: dict[str, str | int | float | bool] = {
            "interplay.session_id": live.id, "interplay.start_turn": h.start_turn, "interplay.end_turn": h.end_turn,
            "interplay.final": h.final, "interplay.confidence": round(h.confidence, 4),
            "interplay.low_confidence": h.low_confidence, "interplay.language": h.language,
            "interplay.foreign": h.foreign, "interplay.ears_ms": round(h.latency_ms, 1),
            "interplay.heard": bool(h.text.strip())}
        if h.error:
            attrs["error.type"] = h.error
        span = tracing.record_span("transcribe", live.span, ms, attrs)
        if h.error:
            span.set_status(tracing.Status(tracing.StatusCode.ERROR, h.error))

    def _sent(self, session_id: str, turn: int) -> None:
        fed = self._fed.setdefault(session_id, OrderedDict())
        fed[turn] = time.monotonic()
        fed.move_to_end(turn)
        while len(fed) > MAX_FED_TURNS:
            fed.popitem(last=False)

    def arrived(self, session_id: str, turn: int, item: object) -> None:
        """A raw input the service just handed the loop: 16 kHz mono PCM16 audio goes to the ears now
        (any other audio waits for its decoded window in `feed`). Never raises."""
        a = getattr(item, "audio", None) if isinstance(item, spb.InputChunk) and item.HasField("audio") else None
        if (self.ears is None or a is None or a.sample_rate_hz != 16_000 or a.channels not in (0, 1)
                or not a.pcm16 or len(a.pcm16) % 2 or len(a.pcm16) > 8 * self.samples_per_turn):
            return
        self._early.setdefault(session_id, set()).add(id(item))
        self._quiet[session_id] = 0
        self._sent(session_id, turn)
        try:
            self.ears.feed([(session_id, turn, bytes(a.pcm16))])
        except Exception as exc:  # noqa: BLE001
            log.error("ears_feed_failed", error=repr(exc), sessions=1)

    def took(self, session_id: str, items: list) -> bool:
        """The loop took these raw items into a session's window: True when any of them already went to
        the ears on arrival (then the window is not fed again: a chunk that arrives while the previous
        turn computes belongs to the next window, so a per-turn flag would feed it twice)."""
        fed = self._early.get(session_id)
        if not fed:
            return False
        hit = False
        for it in items:
            if id(it) in fed:
                fed.discard(id(it))
                hit = True
        return hit

    def feed(self, stepped: list[tuple[str, int, torch.Tensor | None, bool]]) -> None:
        """After the step: (session id, turn, the window's float 16 kHz audio or None, whether its audio
        already went to the ears on arrival) per stepped session."""
        if self.ears is None:
            return
        batch = []
        for sid, turn, audio, early in stepped:
            if early:
                continue
            if audio is not None and audio.numel():
                self._quiet[sid] = 0
                pcm = (audio.clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16)
            else:
                quiet = self._quiet.get(sid)
                if quiet is None:
                    continue
                self._quiet[sid] = quiet + 1
                if quiet + 1 != CLOSE_AFTER_TURNS:
                    continue
                pcm = torch.zeros(CLOSE_AFTER_TURNS * self.samples_per_turn, dtype=torch.int16)
            batch.append((sid, turn, pcm.numpy().tobytes()))
            self._sent(sid, turn)
        if not batch:
            return
        try:
            self.ears.feed(batch)
        except Exception as exc:  # noqa: BLE001
            log.error("ears_feed_failed", error=repr(exc), sessions=len(batch))

    def close(self, session_id: str) -> None:
        self._pending.pop(session_id, None)
        self._quiet.pop(session_id, None)
        self._early.pop(session_id, None)
        self._fed.pop(session_id, None)
        if self.ears is not None:
            try:
                self.ears.close(session_id)
            except Exception as exc:  # noqa: BLE001
                log.warning("ears_close_failed", session_id=session_id, error=repr(exc))

    def stop(self) -> None:
        if self.ears is not None:
            try:
                self.ears.stop()
            except Exception as exc:  # noqa: BLE001
                log.warning("ears_stop_failed", error=repr(exc))
