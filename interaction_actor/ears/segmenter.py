"""The segmenter: a session's turn windows in, closed speech segments out (streaming, bounded).

Given each turn's window of 16 kHz mono PCM16 (200 ms in the loop, any length works), a
`SessionSegmenter` runs the Silero VAD that faster-whisper ships (`faster_whisper/assets/
silero_vad_v6.onnx`, through onnxruntime, 512-sample = 32 ms frames) and returns a `Segment` when
an utterance ends: after `silence_ms` of non-speech following speech, or when it reaches
`max_segment_s` (then the next segment starts at once if the user is still talking). It never
blocks on anything but its own arithmetic (~0.13 ms per 32 ms frame on this CPU) and holds at most
`pre_roll_ms + max_segment_s` of audio per session, plus the VAD's 2×128 state and < 32 ms of
unprocessed remainder. Segments with less than `min_speech_ms` of speech (a click, a cough) are
dropped and counted. One `VadModel` (one ONNX session) is shared by every session's segmenter; a
segmenter is used by one thread at a time (the ears' worker).

Turns: `start_turn` is the turn whose window held the segment's first speech frame, `end_turn`
the turn whose window held its last speech frame, `closed_turn` the turn whose window ended it.
The VAD's recurrent state carries across windows exactly as faster-whisper's batched call carries
it across frames (each frame sees the previous frame's last 64 samples as context).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
FRAME = 512  # Silero's frame at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous frame each frame sees


@dataclass
class SegmenterConfig:
    threshold: float = 0.5  # a frame with speech probability >= this is speech
    neg_threshold: float = 0.35  # below this it is silence; in between it keeps the current state
    silence_ms: int = 320  # non-speech after speech that closes a segment (1.6 turns; 480 cost ~170 ms of
    # final-transcript latency at the loop, `interplay bench ears`; a longer pause splits the request)
    max_segment_s: float = 15.0  # a segment is cut at this length (Whisper's window is 30 s)
    min_speech_ms: int = 160  # a segment with less speech than this is dropped (clicks, coughs)
    pre_roll_ms: int = 192  # audio kept before the first speech frame (the onset the VAD misses)
    post_roll_ms: int = 256  # audio kept after the last speech frame (the rest is trailing silence)
    model_path: str = ""  # "" → faster-whisper's packaged Silero VAD


def default_vad_path() -> Path:
    from faster_whisper.utils import get_assets_path

    return Path(get_assets_path()) / "silero_vad_v6.onnx"


class VadModel:
    """The Silero VAD as one onnxruntime session (1 thread); `probs` is thread-safe and stateless."""

    def __init__(self, path: str | Path = "") -> None:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 4
        self.path = str(path or default_vad_path())
        self._session = onnxruntime.InferenceSession(self.path, providers=["CPUExecutionProvider"], sess_options=opts)
        self._lock = threading.Lock()

    def probs(self, frames: np.ndarray, state: VadState) -> np.ndarray:
        """Speech probability of each 512-sample frame of `frames` [n, 512] float32; advances `state`."""
        prev = np.concatenate([state.context[None, :], frames[:-1, -CONTEXT:]], axis=0)
        inp = np.ascontiguousarray(np.concatenate([prev, frames], axis=1), dtype=np.float32)
        with self._lock:
            out, state.h, state.c = self._session.run(None, {"input": inp, "h": state.h, "c": state.c})
        state.context = frames[-1, -CONTEXT:].copy()
        return np.asarray(out, dtype=np.float32).reshape(-1)


@dataclass
class VadState:
    """The VAD's recurrent state for one stream."""

    h: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), np.float32))
    c: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros(CONTEXT, np.float32))


@dataclass
class Segment:
    session_id: str
    start_turn: int  # the turn whose window held the first speech frame
    end_turn: int  # the turn whose window held the last speech frame
    closed_turn: int  # the turn whose window closed the segment
    samples: np.ndarray  # float32 16 kHz in [-1, 1]: pre-roll + speech + post-roll
    speech_ms: float  # frames judged speech, in ms
    reason: str  # "silence" | "max_length" | "flush"


@dataclass
class _Open:
    """The segment being collected (frames since pre-roll), as float32 frames of 512 samples."""

    frames: list[np.ndarray]
    start_turn: int
    end_turn: int
    speech_frames: int = 0
    last_speech_index: int = 0  # index in `frames` of the last speech frame
    silence_frames: int = 0  # consecutive non-speech frames since the last speech frame


class SessionSegmenter:
    """One session's streaming segmenter. `push(turn, pcm16)` → the segments that closed in that window."""

    def __init__(self, session_id: str, vad: VadModel, config: SegmenterConfig | None = None) -> None:
        self.session_id = session_id
        self.vad = vad
        self.config = cfg = config or SegmenterConfig()
        self.state = VadState()
        self._remainder = np.zeros(0, np.float32)  # < FRAME samples not yet given to the VAD
        self._pre_roll: list[np.ndarray] = []  # the last few non-speech frames (bounded)
        self._open: _Open | None = None
        self._pre_frames = max(0, cfg.pre_roll_ms * SAMPLE_RATE // 1000 // FRAME)
        self._post_frames = max(0, cfg.post_roll_ms * SAMPLE_RATE // 1000 // FRAME)
        self._silence_frames = max(1, -(-cfg.silence_ms * SAMPLE_RATE // 1000 // FRAME))
        self._max_frames = max(1, int(cfg.max_segment_s * SAMPLE_RATE) // FRAME)
        self._min_speech_frames = max(1, -(-cfg.min_speech_ms * SAMPLE_RATE // 1000 // FRAME))
        self.speaking = False  # the last frame was judged speech (hysteresis applied)
        self.frames_seen = 0
        self.dropped_short = 0  # segments dropped for too little speech

    def push(self, turn: int, pcm16: bytes) -> list[Segment]:
        """Feed one turn's window (16 kHz mono PCM16 bytes); return segments closed by it."""
        audio = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
        if self._remainder.size:
            audio = np.concatenate([self._remainder, audio])
        n = audio.size // FRAME
        self._remainder = audio[n * FRAME:].copy()
        if n == 0:
            return []
        frames = audio[: n * FRAME].reshape(n, FRAME)
        probs = self.vad.probs(frames, self.state)
        self.frames_seen += n
        out: list[Segment] = []
        for frame, p in zip(frames, probs, strict=True):
            seg = self._step(turn, frame, float(p))
            if seg is not None:
                out.append(seg)
        return out

    def flush(self, turn: int) -> Segment | None:
        """Close the open segment now (end of stream); None when nothing usable is open."""
        seg = self._close(turn, "flush") if self._open is not None else None
        self._remainder = np.zeros(0, np.float32)
        return seg

    @property
    def open_ms(self) -> float:
        return 0.0 if self._open is None else len(self._open.frames) * FRAME * 1000 / SAMPLE_RATE

    def _step(self, turn: int, frame: np.ndarray, p: float) -> Segment | None:
        cfg = self.config
        if p >= cfg.threshold:
            speech = True
        elif p < cfg.neg_threshold:
            speech = False
        else:
            speech = self.speaking  # hysteresis: in between keeps the current state
        self.speaking = speech
        seg = self._open
        if seg is None:
            if not speech:
                self._pre_roll.append(frame.copy())
                if len(self._pre_roll) > self._pre_frames:
                    self._pre_roll.pop(0)
                return None
            self._open = seg = _Open(frames=self._pre_roll, start_turn=turn, end_turn=turn)
            self._pre_roll = []
        seg.frames.append(frame.copy())
        if speech:
            seg.speech_frames += 1
            seg.last_speech_index = len(seg.frames) - 1
            seg.silence_frames = 0
            seg.end_turn = turn
        else:
            seg.silence_frames += 1
        if seg.silence_frames >= self._silence_frames:
            return self._close(turn, "silence")
        if len(seg.frames) >= self._max_frames:
            closed = self._close(turn, "max_length")
            if speech:  # still talking: the next segment starts with this frame's successor
                self._open = _Open(frames=[], start_turn=turn, end_turn=turn)
            return closed
        return None

    def _close(self, turn: int, reason: str) -> Segment | None:
        seg = self._open
        self._open = None
        assert seg is not None
        keep = min(len(seg.frames), seg.last_speech_index + 1 + self._post_frames)
        tail = seg.frames[keep:]
        self._pre_roll = tail[-self._pre_frames:] if self._pre_frames else []
        if seg.speech_frames < self._min_speech_frames:
            self.dropped_short += 1
            return None
        samples = np.concatenate(seg.frames[:keep]) if keep else np.zeros(0, np.float32)
        return Segment(session_id=self.session_id, start_turn=seg.start_turn, end_turn=seg.end_turn,
                       closed_turn=turn, samples=samples, speech_ms=seg.speech_frames * FRAME * 1000 / SAMPLE_RATE,
                       reason=reason)


def windows(samples: np.ndarray, turn_ms: int = 200) -> list[bytes]:
    """Cut float32 16 kHz audio into the loop's turn windows of PCM16 bytes (the last one zero-padded)."""
    n = SAMPLE_RATE * turn_ms // 1000
    pcm = np.clip(np.round(np.asarray(samples, np.float32) * 32767.0), -32768, 32767).astype("<i2")
    pad = (-pcm.size) % n
    if pad:
        pcm = np.concatenate([pcm, np.zeros(pad, "<i2")])
    return [pcm[i:i + n].tobytes() for i in range(0, pcm.size, n)]
