"""The energy VAD: a stretch of 16 kHz audio is speech when its RMS passes SPEECH_RMS.

One rule for the runtime and the evaluation: the loop's `weave.user_state` asks whether the tail of
this turn's window holds speech (is the user pausing?), and the evaluation's turn-based harness
tracks speech per 10 ms frame to find endpoints. It is cheap and knows nothing of words: loud noise
counts as speech and a whisper does not. A model-based VAD (Silero) belongs with the transcriber.
(synth.quiet_turns is not a VAD: it labels training targets from the known speech spans.)
"""

from __future__ import annotations

import torch

SPEECH_RMS = 0.01  # float samples in [-1, 1]; room tone sits well below, espeak-ng speech far above
FRAME_SAMPLES = 160  # 10 ms at 16 kHz
TAIL_SAMPLES = 1600  # the last 100 ms of a window


def rms(audio: torch.Tensor) -> float:
    return float(audio.float().pow(2).mean().sqrt()) if audio.numel() else 0.0


def tail_is_speech(audio: torch.Tensor | None, tail: int = TAIL_SAMPLES, threshold: float = SPEECH_RMS) -> bool:
    """Whether the last `tail` samples hold speech (False for no audio)."""
    return audio is not None and audio.numel() > 0 and rms(audio[-tail:]) > threshold


def frames_are_speech(audio: torch.Tensor, threshold: float = SPEECH_RMS) -> torch.Tensor:
    """Per 10 ms frame of `audio` (its length a multiple of FRAME_SAMPLES): bool, speech or not."""
    return audio.float().view(-1, FRAME_SAMPLES).pow(2).mean(-1).sqrt() > threshold
