"""hMLP video stem (Touvron et al. 2022) for 40x40 patches: one token per patch, patch-wise only.

A frame (uint8 [H, W, 3]) is centre-cropped to the grid's aspect, resized to (rows*40, cols*40)
and split into 40x40 patches. Each patch goes through three linear stages over 4x4 -> 2x2 -> 5x5
receptive fields with RMSNorm + GELU between (never BatchNorm: it would mix patches, sessions and
time), so a patch's token depends on that patch alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from interaction_actor.model.config import ModelConfig


def frame_to_patches(frame: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """uint8 [H, W, 3] RGB -> float [rows*cols, 40, 40, 3] in [-1, 1], patches in row-major order."""
    if not isinstance(frame, torch.Tensor) or frame.dim() != 3 or frame.shape[-1] != 3:
        raise TypeError("frame must be a uint8 tensor of shape [H, W, 3]")
    if frame.dtype != torch.uint8:
        raise TypeError(f"frame must be uint8, got {frame.dtype}")
    rows, cols = cfg.image_grid
    p = cfg.patch
    h, w = frame.shape[0], frame.shape[1]
    if h < 1 or w < 1:
        raise ValueError("frame is empty")
    # centre crop to the grid's aspect ratio
    target = cols / rows
    if w / h > target:
        cw = max(1, round(h * target))
        x0 = (w - cw) // 2
        frame = frame[:, x0 : x0 + cw]
    else:
        ch = max(1, round(w / target))
        y0 = (h - ch) // 2
        frame = frame[y0 : y0 + ch]
    # large frames: integer-stride subsample to about twice the target first (cheap), then antialiased resize
    stride = max(1, min(frame.shape[0] // (rows * p), frame.shape[1] // (cols * p)) // 2)
    if stride > 1:
        frame = frame[::stride, ::stride]
    img = frame.permute(2, 0, 1)[None].float() / 127.5 - 1.0
    if img.shape[-2:] != (rows * p, cols * p):
        img = F.interpolate(img, size=(rows * p, cols * p), mode="bilinear", align_corners=False, antialias=True)
    img = img[0].permute(1, 2, 0)  # [rows*p, cols*p, 3]
    return img.reshape(rows, p, cols, p, 3).permute(0, 2, 1, 3, 4).reshape(rows * cols, p, p, 3).contiguous()


def _group(x: torch.Tensor, k: int) -> torch.Tensor:
    """[N, S, S, C] -> [N, S/k, S/k, k*k*C]: non-overlapping k x k cells, concatenated row-major."""
    n, s, _, c = x.shape
    return x.reshape(n, s // k, k, s // k, k, c).permute(0, 1, 3, 2, 4, 5).reshape(n, s // k, s // k, k * k * c)


class HMLPStem(nn.Module):
    """[N, 40, 40, 3] patches -> [N, d_model] tokens; 4x4 -> 2x2 -> 5x5 linear stages."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.patch != 40:
            raise ValueError("the hMLP stem is built for 40x40 patches (4 * 2 * 5)")
        d = cfg.d_model
        c1 = max(16, d // 4)
        self.eps = cfg.norm_eps
        self.w1 = nn.Parameter(torch.randn(c1, 4 * 4 * 3) / (48**0.5))
        self.b1 = nn.Parameter(torch.zeros(c1))
        self.n1 = nn.Parameter(torch.ones(c1))
        self.w2 = nn.Parameter(torch.randn(c1, 4 * c1) / ((4 * c1) ** 0.5))
        self.b2 = nn.Parameter(torch.zeros(c1))
        self.n2 = nn.Parameter(torch.ones(c1))
        self.w3 = nn.Parameter(torch.randn(d, 25 * c1) / ((25 * c1) ** 0.5))
        self.b3 = nn.Parameter(torch.zeros(d))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = _group(patches, 4)  # [N, 10, 10, 48]
        x = kernels.gelu(kernels.rms_norm(kernels.linear(x, self.w1, self.b1), self.n1, self.eps))
        x = _group(x, 2)  # [N, 5, 5, 4*c1]
        x = kernels.gelu(kernels.rms_norm(kernels.linear(x, self.w2, self.b2), self.n2, self.eps))
        x = _group(x, 5)  # [N, 1, 1, 25*c1]
        return kernels.linear(x[:, 0, 0], self.w3, self.b3)
