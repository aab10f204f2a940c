"""Endpointing: one session's streaming Silero VAD, turn by turn — is the user talking, did they stop.

Given each turn's window of 16 kHz float32 audio (or None when the client sent none), an `Endpointer`
runs the ears' own `SessionSegmenter` (interaction_actor/ears/segmenter.py: the Silero VAD that
faster-whisper ships, through one shared `VadModel`) with `silence_ms = min_silence_ms`, and returns
an `Endpoint`: whether the user is speaking at the window's end, whether speech started in this
window (an onset: what stops the assistant's voice), and whether the user has been quiet for at
least `min_silence_ms` after speaking (the end of their turn). It is not a second VAD
implementation: the segmenter's hysteresis, pre-roll and minimum-speech rules apply as they do for
the ears. A turn without audio counts as a turn of silence, so a client that stops sending audio
mid-utterance still reaches an end. Cost: ~1 ms per 200-ms window on this CPU (six 32-ms Silero
frames) — small enough to run inside the backend's step. It never blocks on anything but that.

`onset` needs `onset_ms` of speech in a row (two 32-ms frames by default), so a click does not cut
the assistant off; the segmenter's `min_speech_ms` rule still decides whether a segment counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from interaction_actor.ears.segmenter import FRAME, SAMPLE_RATE, SegmenterConfig, SessionSegmenter, VadModel


@dataclass
class EndpointConfig:
    min_silence_ms: int = 500  # quiet after speech that ends the user's turn
    onset_ms: int = 64  # speech in a row that counts as the user starting to talk (barge-in)
    threshold: float = 0.5  # Silero speech probability (the ears' default)
    min_speech_ms: int = 160  # a segment with less speech is a click or a cough: no turn end


@dataclass
class Endpoint:
    """What one window told the endpointer."""

    speaking: bool  # the window's last frame was speech
    onset: bool  # `onset_ms` of speech in a row began or completed in this window
    ended: bool  # a user turn ended in this window (min_silence_ms of quiet after enough speech)
    in_turn: bool  # the user has spoken and not yet been quiet for min_silence_ms
    speech_end_at: float | None = None  # monotonic time of the ended turn's last speech (estimated)


class Endpointer:
    """One session's endpointing state; used by one thread at a time (the backend's step)."""

    def __init__(self, session_id: str, vad: VadModel, config: EndpointConfig | None = None) -> None:
        self.config = cfg = config or EndpointConfig()
        self.segmenter = SessionSegmenter(session_id, vad, SegmenterConfig(
            threshold=cfg.threshold, silence_ms=cfg.min_silence_ms, min_speech_ms=cfg.min_speech_ms,
            max_segment_s=30.0, pre_roll_ms=0, post_roll_ms=0))
        self._onset_frames = max(1, -(-cfg.onset_ms * SAMPLE_RATE // 1000 // FRAME))
        self._run = 0  # speech frames in a row so far
        self._last_speech_at: float | None = None
        self._turn = 0

    def push(self, audio: np.ndarray | None, now: float | None = None) -> Endpoint:
        """One turn's window (float32 16 kHz in [-1, 1], any length; None: a turn of silence). `now`: when
        the window's last sample was heard (monotonic; default: now)."""
        now = time.monotonic() if now is None else now
        seg = self.segmenter
        if audio is None or audio.size == 0:
            if seg.open_ms == 0.0 and self._run == 0:  # nothing open: a silent turn changes nothing
                self._turn += 1
                return Endpoint(speaking=False, onset=False, ended=False, in_turn=False)
            audio = np.zeros(SAMPLE_RATE // 5, np.float32)
        pcm = np.clip(np.round(np.asarray(audio, np.float32) * 32767.0), -32768, 32767).astype("<i2")
        n = pcm.size // FRAME + 1
        onset = ended = False
        end_at = None
        # one 32-ms frame at a time, so the run of speech and the time of the last speech frame are exact
        for k in range(n):
            piece = pcm[k * FRAME:(k + 1) * FRAME]
            if piece.size == 0:
                break
            before = seg.frames_seen
            closed = seg.push(self._turn, piece.tobytes())
            if seg.frames_seen == before:  # the piece went to the segmenter's remainder
                continue
            at = now - (pcm.size - min(pcm.size, (k + 1) * FRAME)) / SAMPLE_RATE
            if seg.speaking:
                self._run += 1
                self._last_speech_at = at
                onset = onset or self._run == self._onset_frames
            else:
                self._run = 0
            if closed:
                ended, end_at = True, self._last_speech_at or at
        self._turn += 1
        return Endpoint(speaking=seg.speaking, onset=onset, ended=ended, in_turn=seg.open_ms > 0.0,
                        speech_end_at=end_at)
