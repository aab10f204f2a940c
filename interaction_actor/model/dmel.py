"""dMel audio features (Bai et al. 2024) with torch only, whole-signal and streaming.

STFT n_fft 1024 / 50 ms Hann / hop 12.5 ms, magnitude -> 80 Slaney mel bands 80-7600 Hz ->
log10 (floor 1e-10) -> clamp [-7, 2] -> nearest of 16 levels -7 + 0.6 i. Frame m is centred on
sample m*hop with the signal's start reflect-padded, exactly as the `dmel` package (torch.stft,
center=True, reflect) computes it. The one difference is at the END of a signal: the package also
reflect-pads the end, which a streaming featurizer cannot know in advance, so `dmel_tokens`
returns only frames whose window lies inside the (start-padded) signal: the package's frames
0..M-1 where M = (len(audio) + 512 - 1024) // 200 + 1; the package's last few frames are omitted.

Streaming (`DMelStream`): each turn consumes exactly one turn of samples (3200) and emits exactly
16 frames. A frame needs 512 samples after its centre, so the stream lags by 2 frames: turn k
emits frames 16k-2 .. 16k+13; turn 0's first two (frames -2, -1, which do not exist) are silence.
The STFT overlap (912 samples) is carried across turns, so the streamed frames equal
`dmel_tokens` of the concatenated audio exactly.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

import kernels
from interaction_actor.model.config import ModelConfig
from interplay.log import get_logger

log = get_logger("interaction_actor.model.dmel")

STREAM_LAG_FRAMES = 2  # turn 0 starts with two frames that precede the signal (see module doc)


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale (librosa's default, htk=False)."""
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0
    mel = f / f_sp
    return torch.where(f >= min_log_hz, min_log_mel + torch.log(f.clamp(min=1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0
    return torch.where(m >= min_log_mel, min_log_hz * torch.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int = 16000, n_fft: int = 1024, n_mels: int = 80, f_min: float = 80.0,
                   f_max: float = 7600.0) -> torch.Tensor:
    """[n_mels, n_fft//2+1] Slaney-normalised triangular filters (librosa.filters.mel's defaults)."""
    fft_freqs = torch.linspace(0, sample_rate / 2, 1 + n_fft // 2, dtype=torch.float64)
    lo, hi = _hz_to_mel(torch.tensor(f_min, dtype=torch.float64)), _hz_to_mel(torch.tensor(f_max, dtype=torch.float64))
    mel_f = _mel_to_hz(torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64))
    fdiff = mel_f.diff()
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)
    weights = weights * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.float().contiguous()


@functools.lru_cache(maxsize=8)
def stft_window(n_fft: int = 1024, win_length: int = 800) -> torch.Tensor:
    """Periodic Hann of win_length centred in n_fft zeros (what torch.stft does with win_length < n_fft)."""
    w = torch.hann_window(win_length, dtype=torch.float32)
    left = (n_fft - win_length) // 2
    return torch.nn.functional.pad(w, (left, n_fft - win_length - left))


@functools.lru_cache(maxsize=8)
def dmel_levels(n_levels: int = 16, lo: float = -7.0, hi: float = 2.0) -> torch.Tensor:
    """The quantisation levels, computed as the dmel package does (float64 step rounded to 4 places)."""
    step = round((hi - lo) / (n_levels - 1), 4)
    return torch.tensor([lo + i * step for i in range(n_levels)], dtype=torch.float64).float()


def _filterbank(cfg: ModelConfig) -> torch.Tensor:
    return mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max)


def frames_to_log_mel(frames: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """[F, n_fft] raw sample frames -> [F, n_mels] log10 mel (magnitude spectrum, floor 1e-10)."""
    spec = torch.fft.rfft(frames * stft_window(cfg.n_fft, cfg.win_length), dim=-1)
    mag = torch.clamp(spec.real**2 + spec.imag**2, min=1e-10) ** 0.5
    mel = kernels.linear(mag, _filterbank(cfg))
    return torch.clamp(mel, min=1e-10).log10()


def _reflect_left(audio: torch.Tensor, pad: int) -> torch.Tensor:
    if audio.shape[-1] <= pad:
        raise ValueError(f"need more than {pad} samples to start a signal, got {audio.shape[-1]}")
    return torch.cat([audio[1 : pad + 1].flip(0), audio])


def log_mel(audio: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Whole signal float [N] -> [M, n_mels] log10 mel; frame m centred on sample m*hop (see module doc)."""
    audio = _check_audio(audio)
    padded = _reflect_left(audio, cfg.n_fft // 2)
    if padded.shape[0] < cfg.n_fft:
        return torch.zeros(0, cfg.n_mels)
    return frames_to_log_mel(padded.unfold(0, cfg.n_fft, cfg.hop_length), cfg)


def discretize(log_mel_values: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """log10 mel -> level index (long), nearest level after clamping, ties to the lower (package's argmin)."""
    levels = dmel_levels(cfg.dmel_levels, cfg.dmel_min, cfg.dmel_max)
    x = log_mel_values.clamp(min=cfg.dmel_min, max=cfg.dmel_max)
    return (x[..., None] - levels).abs().argmin(-1)


def undiscretize(tokens: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Level index -> its log10 mel value."""
    return dmel_levels(cfg.dmel_levels, cfg.dmel_min, cfg.dmel_max)[tokens]


def dmel_tokens(audio: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Whole signal -> [M, n_mels] dMel level indices (0..15)."""
    return discretize(log_mel(audio, cfg), cfg)


def _check_audio(audio: torch.Tensor) -> torch.Tensor:
    if not isinstance(audio, torch.Tensor) or audio.dim() != 1 or not audio.is_floating_point():
        raise TypeError("audio must be a 1-D float tensor of 16 kHz mono samples")
    if not torch.isfinite(audio).all():
        raise ValueError("audio contains NaN or inf samples")
    return audio.float()


@dataclass
class DMelStream:
    """Streaming dMel state: the STFT overlap carried across turns and the not-yet-consumed input."""

    started: bool = False
    buf: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # start-padded signal from the next frame on
    real: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))  # buf sample came from audio
    pending: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # arrived but not yet consumed
    frames: int = 0  # frames emitted (including turn 0's two leading silent ones)
    dropped_samples: int = 0  # input beyond one turn of backlog, dropped to stay real-time


def dmel_stream_push(state: DMelStream, audio: torch.Tensor | None, cfg: ModelConfig
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Consume one turn of audio -> (tokens [16, n_mels] long, has_audio [16] bool).

    `audio` is what arrived in the turn window (any length, or None). Exactly one turn of samples
    is consumed per call: a shortfall is filled with zeros (counted as no audio), a surplus stays
    pending for the next turn, and pending audio beyond one turn is dropped (oldest first, logged).
    A frame whose window holds no sample that came from real audio has has_audio False.
    """
    n = cfg.samples_per_turn
    if audio is not None:
        audio = _check_audio(audio)
        state.pending = torch.cat([state.pending, audio])
        if state.pending.shape[0] > 2 * n:
            drop = state.pending.shape[0] - 2 * n
            state.dropped_samples += drop
            log.warning("dmel_backlog_dropped", samples=drop)
            state.pending = state.pending[drop:]
    take = state.pending[:n]
    state.pending = state.pending[n:]
    chunk = torch.cat([take, torch.zeros(n - take.shape[0])])
    real = torch.arange(n) < take.shape[0]
    half = cfg.n_fft // 2
    if not state.started:
        state.started = True
        chunk, real = _reflect_left(chunk, half), torch.cat([real[1 : half + 1].flip(0), real])
    buf = torch.cat([state.buf, chunk])
    rbuf = torch.cat([state.real, real])
    count = (buf.shape[0] - cfg.n_fft) // cfg.hop_length + 1
    lead = cfg.frames_per_turn - count
    if lead < 0 or (lead > 0 and state.frames > 0):
        raise RuntimeError("dMel stream lost frame alignment")
    frames = buf[: (count - 1) * cfg.hop_length + cfg.n_fft].unfold(0, cfg.n_fft, cfg.hop_length)
    tokens = discretize(frames_to_log_mel(frames, cfg), cfg)
    left = (cfg.n_fft - cfg.win_length) // 2
    support = rbuf[: (count - 1) * cfg.hop_length + cfg.n_fft].unfold(0, cfg.n_fft, cfg.hop_length)
    has_audio = support[:, left : left + cfg.win_length].any(-1)
    if lead:
        tokens = torch.cat([torch.zeros(lead, cfg.n_mels, dtype=torch.long), tokens])
        has_audio = torch.cat([torch.zeros(lead, dtype=torch.bool), has_audio])
    state.buf = buf[count * cfg.hop_length :].clone()
    state.real = rbuf[count * cfg.hop_length :].clone()
    state.frames += cfg.frames_per_turn
    return tokens, has_audio

