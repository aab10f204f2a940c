"""The ears' contract: what the turn loop hands the transcriber and what comes back.

The loop calls `feed` once per turn with every live session's audio of that window (16 kHz mono
PCM16) and `take` at each turn boundary; neither may block (the loop never waits for a transcript:
a call costs well under a millisecond, the work happens in another thread or process). `take`
returns the `Heard` results that became ready since the last call, in order per session. A session's
audio is segmented by a streaming voice-activity detector; at a segment's end the segment is
transcribed and one final `Heard` comes back (partials too, where the CPU allows). Silence, noise
and music give no transcript, or one marked `low_confidence`. A transcriber failure is reported as a
`Heard` with `error` set (the session keeps its turns); `close` forgets a session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass
class Heard:
    session_id: str
    text: str  # what was said ("" when nothing usable was heard, or on error)
    final: bool  # False: a partial that a later Heard of the same segment replaces
    start_turn: int  # the turn whose window held the segment's first speech
    end_turn: int  # the turn whose window held its last speech
    confidence: float = 0.0  # 0..1: exp(mean token log-probability) of the transcript
    no_speech: float = 0.0  # 0..1: the recogniser's probability that the segment held no speech
    low_confidence: bool = False  # noise, music, mumbling: do not act on it
    language: str = "en"  # the language the recogniser assumed or detected
    foreign: bool = False  # the speech was not in the recogniser's language
    latency_ms: float = 0.0  # from the feed of the segment's last window to this result being ready
    error: str = ""  # a transcriber failure: a short code, e.g. "transcriber_failed"


@runtime_checkable
class Ears(Protocol):
    def feed(self, turn_audio: list[tuple[str, int, bytes]]) -> None:
        """(session id, turn, 16 kHz mono PCM16 bytes of that turn's window) for each session; never blocks."""

    def take(self) -> list[Heard]:
        """Results ready since the last call; never blocks."""

    def close(self, session_id: str) -> None:
        """Forget a session (its open segment is dropped)."""

    def stop(self) -> None:
        """Release threads, processes and models."""
