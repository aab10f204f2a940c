"""Flow-matching mel head: a read window -> one 80-band log10 mel frame.

A small residual MLP whose norms are modulated (adaptive RMSNorm: scale and shift) by the reader's
condition (model/reader.py: the bytes the model said last turn, before it and this turn, and the
frame's index in the turn) and the flow time. Two options (config, both off in the shipped voice):
`flow_context` P: the condition also reads the previous turn's last P mel frames (log10 mel; silence
when that turn was not voiced), which show where the sound was when this turn begins: what the bytes
alone cannot (where earlier words fell); one context per turn. `flow_mix` W: each block reads each
frame with its W - 1 neighbours within the turn (zeros past the turn's ends), so a turn's 16 frames
are sampled together (and trained at one flow time, `flow_times`). With either, the rows of a call
are whole turns, 16 consecutive rows each. Trained with the conditional flow-matching loss
(straight path x_t = (1-t) x0 + t x1, target velocity x1 - x0) and sampled with Euler steps from
Gaussian noise that the caller seeds (per session and position, see `frame_noise`), so sampling
replays exactly.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import nn

import kernels
from interaction_actor.model.config import ModelConfig
from interaction_actor.model.reader import make_reader

MEL_MEAN = -2.5  # log10 mel normalisation for the flow (dMel range [-7, 2] -> about [-1.8, 1.8])
MEL_STD = 2.5
TIME_FEATURES = 64


def normalize_mel(mel: torch.Tensor) -> torch.Tensor:
    return (mel - MEL_MEAN) / MEL_STD


def denormalize_mel(x: torch.Tensor) -> torch.Tensor:
    return x * MEL_STD + MEL_MEAN


def time_features(t: torch.Tensor) -> torch.Tensor:
    """[N] flow time in [0, 1] -> [N, 64] sinusoidal features."""
    half = TIME_FEATURES // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    ang = (t.float() * 1000.0)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


def frame_noise(seed: int, turn: int, n_frames: int, n_mels: int) -> torch.Tensor:
    """The Gaussian start noise of a turn's mel frames: a pure function of (session seed, turn)."""
    digest = hashlib.blake2b(f"{seed}:{turn}".encode(), digest_size=8).digest()
    g = torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return torch.randn(n_frames, n_mels, generator=g)


def turn_context(prev_mel: torch.Tensor | None, cfg: ModelConfig) -> torch.Tensor:
    """The flow context of a turn [flow_context, n_mels]: the previous turn's last frames, or silence
    (dmel_min) when it was not voiced."""
    if prev_mel is None:
        return torch.full((cfg.flow_context, cfg.n_mels), cfg.dmel_min)
    return prev_mel[prev_mel.shape[0] - cfg.flow_context:].float()


class _AdaBlock(nn.Module):
    def __init__(self, w: int, mix: int = 0) -> None:
        super().__init__()
        self.mod = nn.Parameter(torch.zeros(2 * w, w))
        self.mod_b = nn.Parameter(torch.zeros(2 * w))
        self.fc1 = nn.Parameter(torch.randn(2 * w, w * max(1, mix)) / math.sqrt(w * max(1, mix)))
        self.fc2 = nn.Parameter(torch.randn(w, 2 * w) / math.sqrt(2 * w) * 0.5)


class FlowHead(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w, m = cfg.flow_dim, cfg.n_mels
        self.eps = cfg.norm_eps
        self.n_mels = m
        self.frames, self.context, self.mix = cfg.frames_per_turn, cfg.flow_context, cfg.flow_mix
        self.w_in = nn.Parameter(torch.randn(w, m) / math.sqrt(m))
        self.reader = make_reader(cfg.voice_reader, cfg.text_out_slots, w, cfg.frames_per_turn)
        self.w_time = nn.Parameter(torch.randn(w, TIME_FEATURES) / math.sqrt(TIME_FEATURES))
        if self.context:
            self.w_ctx = nn.Parameter(torch.randn(w, self.context * m) / math.sqrt(self.context * m))
        self.blocks = nn.ModuleList(_AdaBlock(w, self.mix) for _ in range(cfg.flow_blocks))
        self.out_mod = nn.Parameter(torch.zeros(2 * w, w))
        self.out_mod_b = nn.Parameter(torch.zeros(2 * w))
        self.w_out = nn.Parameter(torch.zeros(m, w))
        self.b_out = nn.Parameter(torch.zeros(m))
        self.register_buffer("ones", torch.ones(w), persistent=False)

    def _adanorm(self, x: torch.Tensor, c: torch.Tensor, mod: torch.Tensor, mod_b: torch.Tensor) -> torch.Tensor:
        scale, shift = kernels.linear(c, mod, mod_b).chunk(2, dim=-1)
        return kernels.rms_norm(x, self.ones, self.eps) * (1.0 + scale) + shift

    def condition(self, window: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """window [N, 4K + 1] read windows (+ context [N / 16, flow_context, n_mels] log10 mel, one per
        turn, when the head has one) -> the rows' projected condition [N, flow_dim]."""
        c = self.reader(window)
        if self.context:
            if context is None or context.shape[1:] != (self.context, self.n_mels) \
                    or context.shape[0] * self.frames != c.shape[0]:
                raise ValueError(f"this flow head reads a context of {self.context} frames per turn of "
                                 f"{self.frames} rows")
            ctx = kernels.linear(normalize_mel(context).reshape(context.shape[0], -1), self.w_ctx)
            c = c + ctx.repeat_interleave(self.frames, dim=0)
        return c

    def flow_times(self, rows: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training flow times for `rows` rows: one per row, or for a mixing head (whose turn's frames
        are sampled together) one per turn."""
        if not self.mix:
            return torch.rand(rows, generator=generator)
        if rows % self.frames:
            raise ValueError("a mixing flow head trains on whole voiced turns")
        return torch.rand(rows // self.frames, generator=generator).repeat_interleave(self.frames)

    def _neighbours(self, y: torch.Tensor) -> torch.Tensor:
        """[N, w] rows of whole turns -> [N, mix * w]: each frame beside its neighbours in its turn."""
        n, w = y.shape
        r = self.mix // 2
        g = y.view(n // self.frames, self.frames, w)
        pad = y.new_zeros(g.shape[0], r, w)
        g = torch.cat([pad, g, pad], dim=1)
        return torch.cat([g[:, o : o + self.frames] for o in range(self.mix)], dim=-1).reshape(n, self.mix * w)

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, window: torch.Tensor,
                 context: torch.Tensor | None = None) -> torch.Tensor:
        """x_t [N, n_mels] (normalised), t [N], window [N, 4K + 1] read windows -> velocity [N, n_mels]."""
        return self._velocity(x_t, t, self.condition(window, context))

    def _velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond_proj: torch.Tensor) -> torch.Tensor:
        c = kernels.silu(cond_proj + kernels.linear(time_features(t), self.w_time))
        h = kernels.linear(x_t, self.w_in)
        for blk in self.blocks:
            y = self._adanorm(h, c, blk.mod, blk.mod_b)
            if self.mix:
                y = self._neighbours(y)
            h = h + kernels.linear(kernels.silu(kernels.linear(y, blk.fc1)), blk.fc2)
        return kernels.linear(self._adanorm(h, c, self.out_mod, self.out_mod_b), self.w_out, self.b_out)

    def loss(self, window: torch.Tensor, target_mel: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
             context: torch.Tensor | None = None) -> torch.Tensor:
        """Conditional flow-matching loss (mean squared velocity error) for log10 mel targets."""
        x1 = normalize_mel(target_mel)
        tt = t[:, None]
        x_t = (1.0 - tt) * noise + tt * x1
        return (self.velocity(x_t, t, window, context) - (x1 - noise)).pow(2).mean()

    @torch.no_grad()
    def sample(self, window: torch.Tensor, noise: torch.Tensor, steps: int,
               context: torch.Tensor | None = None) -> torch.Tensor:
        """Euler integration from `noise` [N, n_mels] at t=0 to t=1 -> log10 mel [N, n_mels] in [-7, 2]."""
        x = noise.clone()
        dt = 1.0 / steps
        cond_proj = self.condition(window, context)
        for i in range(steps):
            t = torch.full((x.shape[0],), i * dt, device=x.device)
            x = x + dt * self._velocity(x, t, cond_proj)
        return denormalize_mel(x).clamp(-7.0, 2.0)
