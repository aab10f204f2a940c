"""Griffin-Lim vocoder (torch only): 80-band log10 mel frames -> 16 kHz waveform, turn by turn.

Mel frames use the dMel framing (frame m centred on sample m*200, 800-sample Hann in 1024 FFT).
Magnitudes come from the mel by the assistant voice's magnitude net when one is shipped
(model/magnitude.py), else by non-negative least squares against the
filterbank; phases by fast
Griffin-Lim (momentum 0.99) over the turn's 16 new frames while the last 4 frames of the previous
turn stay fixed as context, so consecutive turns join without a seam. Turn k of a voiced run emits
exactly 3200 samples, global samples [3200k - 400, 3200k + 2800): a constant 25 ms delay, after
which no later frame touches them. A silent turn resets the context (speech restarts from silence);
the last 400 samples of a run (the final frames' fade-out) are not emitted.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from interaction_actor.model.config import ModelConfig
from interaction_actor.model.dmel import log_mel, mel_filterbank, stft_window

CTX_FRAMES = 4
MOMENTUM = 0.99


@dataclass
class VocoderState:
    ctx: torch.Tensor | None = None  # complex [CTX_FRAMES, n_fft//2+1]: last frames' final spectra
    turns: int = 0  # voiced turns emitted in the current run


@dataclass
class _Geometry:
    n_fft: int
    hop: int
    window: torch.Tensor = field(repr=False)


@functools.lru_cache(maxsize=4)
def _pinv(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    return torch.linalg.pinv(mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max).double()).float()


def mel_to_magnitude(mel: torch.Tensor, cfg: ModelConfig, nnls_iters: int = 10) -> torch.Tensor:
    """log10 mel [..., n_mels] -> linear magnitude [..., n_fft//2+1] >= 0: the filterbank's pseudo-inverse,
    refined by non-negative least-squares multiplicative updates (Lee & Seung)."""
    fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max)
    pinv = _pinv(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max)
    y = 10.0 ** mel.float()
    m = torch.clamp(torch.matmul(y, pinv.T), min=0.0) + 1e-6
    hty = torch.matmul(y, fb)
    for _ in range(nnls_iters):
        m = m * hty / (torch.matmul(torch.matmul(m, fb.T), fb) + 1e-10)
    return m


def _istft(spec: torch.Tensor, g: _Geometry) -> torch.Tensor:
    """[S, N, n_freq] complex -> [S, (N-1)*hop + n_fft] least-squares overlap-add."""
    s, n, _ = spec.shape
    frames = torch.fft.irfft(spec, n=g.n_fft, dim=-1) * g.window  # [S, N, n_fft]
    length = (n - 1) * g.hop + g.n_fft
    ola = F.fold(frames.transpose(1, 2), output_size=(1, length), kernel_size=(1, g.n_fft), stride=(1, g.hop))
    wsum = F.fold((g.window**2)[None, :, None].expand(1, g.n_fft, n), output_size=(1, length),
                  kernel_size=(1, g.n_fft), stride=(1, g.hop))
    return ola[:, 0, 0] / torch.clamp(wsum[:, 0, 0], min=1e-3)


def _stft(x: torch.Tensor, g: _Geometry) -> torch.Tensor:
    return torch.fft.rfft(x.unfold(-1, g.n_fft, g.hop) * g.window, dim=-1)


def magnitudes(mels: torch.Tensor, cfg: ModelConfig, net=None) -> torch.Tensor:
    """[S, 16, n_mels] log10 mel of one turn each -> linear magnitude [S, 16, n_freq]: the magnitude net
    (`net`; None: the shipped one, model/magnitude.py, when there is one; False: none), else the
    filterbank inversion."""
    if net is None:
        from interaction_actor.model import magnitude

        net = magnitude.load(cfg)
    if net is False or net is None:
        return mel_to_magnitude(mels, cfg)
    with torch.no_grad():  # one session at a time: its bits do not depend on who shares the batch
        return torch.stack([10.0 ** net(m[None].float())[0] for m in mels])


def vocode_turns(states: list[VocoderState], mels: list[torch.Tensor], cfg: ModelConfig,
                 n_iter: int | None = None, net=None) -> list[torch.Tensor]:
    """One voiced turn for each session (batched): mel [16, n_mels] -> float32 pcm [3200]. `net`: the
    magnitude net (None: the shipped one when there is one; False: the filterbank inversion)."""
    if not states:
        return []
    g = _Geometry(cfg.n_fft, cfg.hop_length, stft_window(cfg.n_fft, cfg.win_length))
    n_iter = cfg.griffin_lim_iters if n_iter is None else n_iter
    n_freq = cfg.n_fft // 2 + 1
    mag = magnitudes(torch.stack(mels), cfg, net)  # [S, F, n_freq]
    nf = mag.shape[1]
    ctx = torch.stack([st.ctx if st.ctx is not None else torch.zeros(CTX_FRAMES, n_freq, dtype=torch.complex64)
                       for st in states])
    # initial phase: continue each bin's phase from the last context frame at its centre frequency
    advance = 2 * torch.pi * torch.arange(n_freq) * g.hop / g.n_fft
    phase0 = torch.angle(ctx[:, -1])[:, None, :] + advance[None, None, :] * torch.arange(1, nf + 1)[None, :, None]
    new = torch.polar(mag, phase0)
    prev = new
    for _ in range(n_iter):
        est = _stft(_istft(torch.cat([ctx, new], dim=1), g), g)[:, CTX_FRAMES:]
        proj = torch.polar(mag, torch.angle(est))
        new = proj + MOMENTUM * (proj - prev)
        prev = proj
    spec = torch.cat([ctx, prev], dim=1)
    wave = _istft(spec, g)
    start = CTX_FRAMES * g.hop + g.n_fft // 2 - cfg.win_length // 2
    out = wave[:, start : start + nf * g.hop]
    for i, st in enumerate(states):
        st.ctx = spec[i, -CTX_FRAMES:].clone()
        st.turns += 1
    return [o.clone() for o in out]


def reset(state: VocoderState) -> None:
    """A silent turn: the next voiced turn starts from silence."""
    state.ctx = None
    state.turns = 0


DELAY_SAMPLES = 400  # voiced turn k's pcm starts at global sample 3200k - 400


def griffin_lim(mel: torch.Tensor, cfg: ModelConfig, n_iter: int | None = None, net=None) -> torch.Tensor:
    """Whole mel [F, n_mels] -> waveform whose sample s is centred like frame s/200 (runs the stream;
    `net` as vocode_turns takes it)."""
    per = cfg.frames_per_turn
    pad = (-mel.shape[0]) % per
    mel = torch.cat([mel, torch.full((pad, mel.shape[1]), cfg.dmel_min)])
    st = VocoderState()
    pcm = torch.cat([vocode_turns([st], [mel[i : i + per]], cfg, n_iter, net)[0] for i in range(0, mel.shape[0], per)])
    return pcm[DELAY_SAMPLES:]


def mel_error(audio: torch.Tensor, mel: torch.Tensor, cfg: ModelConfig, floor: float = -4.0) -> float:
    """Mean |log10 mel difference| between `audio`'s mel and `mel` over frames both cover, bins above `floor`."""
    got = log_mel(audio, cfg)
    n = min(got.shape[0], mel.shape[0])
    sel = mel[:n] > floor
    return float((got[:n] - mel[:n]).abs()[sel].mean())
