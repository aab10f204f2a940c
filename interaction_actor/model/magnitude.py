"""The vocoder's learned mel -> linear magnitude (a Tacotron-style post-net) for the assistant's voice.

Griffin-Lim needs the linear STFT magnitude; the flow head speaks 80-band log10 mel. Inverting the
filterbank (pseudo-inverse + non-negative least squares, vocoder.mel_to_magnitude) smears the
harmonics of a voice, and measured through Whisper tiny.en that costs more than Griffin-Lim's phase:
espeak-ng's own mel inverted that way and vocoded is far less intelligible than its true STFT magnitude
vocoded the same way (README: "The vocoder's magnitude net"; `interplay train-vocoder` measures the
inversion against the net). The assistant speaks in one voice
(training/voice.ASSISTANT), so a small network can learn its harmonics from the mel:

    log10 mel [F, 80] -> conv(k=5) -> GELU -> conv(k=3) -> GELU -> linear -> log10 magnitude [F, 513]

applied to one turn's 16 frames at a time, exactly as the streaming vocoder sees them (edges
replicate-padded, no frame of another turn), so training and runtime agree. Trained on espeak-ng
renderings of training-split text only (never an evaluation city, word or weather word) by
`interplay train-vocoder`; shipped as interaction_actor/checkpoints/vocoder.pt (fp16, about 1 MB)
beside a JSON card. `load(cfg)` returns the shipped net for a config it fits, else None (the vocoder
then inverts the filterbank as before).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from interaction_actor.model.config import ModelConfig
from interplay.log import get_logger

log = get_logger("interaction_actor.model.magnitude")

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "vocoder.pt"
MEL_CENTRE, MEL_SCALE = -3.0, 2.0  # log10 mel -> the net's input scale (about [-2, 2.5])
MEL_MIN, MEL_MAX = -7.0, 2.0  # the input is clamped to dMel's range (as the flow head's output is)
MAG_MAX = 3.0  # log10 magnitude ceiling (a full-scale sine peaks near 2.3)


@dataclass(frozen=True)
class MagnitudeConfig:
    n_mels: int = 80
    n_freq: int = 513  # n_fft // 2 + 1
    hidden: int = 256
    kernel: int = 5  # the first conv's width in frames (the second is 3)
    floor: float = -5.0  # log10 magnitude floor of the targets and outputs

    @staticmethod
    def of(cfg: ModelConfig, **kw) -> MagnitudeConfig:
        return MagnitudeConfig(n_mels=cfg.n_mels, n_freq=cfg.n_fft // 2 + 1, **kw)


class MagnitudeNet(nn.Module):
    """[..., F, n_mels] log10 mel -> [..., F, n_freq] log10 magnitude (>= floor), frames of one turn."""

    def __init__(self, mc: MagnitudeConfig) -> None:
        super().__init__()
        self.config = mc
        self.conv1 = nn.Conv1d(mc.n_mels, mc.hidden, mc.kernel)
        self.conv2 = nn.Conv1d(mc.hidden, mc.hidden, 3)
        self.out = nn.Linear(mc.hidden, mc.n_freq)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        lead = mel.shape[:-2]
        x = mel.reshape(-1, *mel.shape[-2:]).clamp(MEL_MIN, MEL_MAX)
        x = ((x - MEL_CENTRE) / MEL_SCALE).transpose(1, 2)  # [B, n_mels, F]
        k = self.config.kernel // 2
        x = F.gelu(self.conv1(F.pad(x, (k, k), mode="replicate")))
        x = F.gelu(self.conv2(F.pad(x, (1, 1), mode="replicate")))
        y = self.out(x.transpose(1, 2))
        return torch.clamp(y, self.config.floor, MAG_MAX).reshape(*lead, *y.shape[-2:])


def save(net: MagnitudeNet, path: str | Path, card: dict | None = None) -> None:
    """fp16 weights + config (+ a JSON card beside it)."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16) for k, v in net.state_dict().items()}
    torch.save({"config": dataclasses.asdict(net.config), "state_dict": state}, str(path))
    if card is not None:
        path.with_suffix(".json").write_text(json.dumps(card, indent=1))


def load_file(path: str | Path) -> MagnitudeNet:
    blob = torch.load(str(path), map_location="cpu", weights_only=True)
    net = MagnitudeNet(MagnitudeConfig(**blob["config"]))
    net.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, n_mels: int, n_freq: int) -> MagnitudeNet | None:
    """Once per process and path (the vocoder asks every voiced turn): None when there is no file."""
    if not Path(path).is_file():
        return None
    net = load_file(path)
    if (net.config.n_mels, net.config.n_freq) != (n_mels, n_freq):
        log.warning("vocoder_net_mismatch", path=path, n_mels=net.config.n_mels, n_freq=net.config.n_freq)
        return None
    log.info("vocoder_net_loaded", path=path, params=sum(p.numel() for p in net.parameters()))
    return net


def load(cfg: ModelConfig, path: str | Path | None = None) -> MagnitudeNet | None:
    """The magnitude net for `cfg`'s spectra: `path`, else the shipped one; None when there is none or
    it does not fit `cfg` (the vocoder then inverts the filterbank)."""
    return _load_cached(str(path if path is not None else SHIPPED), cfg.n_mels, cfg.n_fft // 2 + 1)
