"""ModelConfig: every size and layout constant of the interaction model, with named presets.

`tiny` is for CPU tests (fast), `small` is the CPU demo default (one session's turn well inside
the 200 ms budget on one core), `gpu` is a bigger model for an accelerator; `tiny_moe` and
`small_moe` are tiny and small with a top-2 mixture-of-experts FFN (4 experts, each half the dense
width). Audio constants are the dMel paper's and are not meant to be changed per preset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    # transformer
    d_model: int = 192
    n_layers: int = 4
    n_heads: int = 3
    n_kv_heads: int = 1
    ffn_dim: int = 512
    moe_experts: int = 0  # 0 = dense SwiGLU FFN; > 0 = mixture of experts with top-k routing
    moe_top_k: int = 2
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_seq_len: int = 8192  # RoPE table size: the longest sequence (training) or cache (session)
    # micro-turn layout (see layout.py)
    image_grid: tuple[int, int] = (2, 2)  # rows, cols of 40x40 patches per frame
    text_in_slots: int = 8
    context_slots: int = 8
    text_out_slots: int = 3
    # session
    # default KV capacity in positions (small: 89 turns = 17.9 s): two training episodes (80 turns, the
    # longest sequence the model is trained on) fit before the first compaction
    capacity: int = 5120
    prefix_turns: int = 1  # compaction keeps BOS + the first `prefix_turns` turns ...
    keep_fraction: float = 0.75  # ... and the newest whole turns filling this share of the rest
    temperature: float = 0.0  # 0 = greedy text decoding; > 0 = seeded sampling
    # flow-matching mel head
    flow_dim: int = 256
    flow_blocks: int = 3
    flow_steps: int = 4
    voice_reader: str = "mlp"  # the flow head's reader (model/reader.py): "mlp" or "align"
    # the previous turn's last mel frames the flow head sees (0: none; the head reads only the bytes)
    flow_context: int = 0
    # frames each flow block mixes within a turn (0: each frame on its own; else an odd width, e.g. 3)
    flow_mix: int = 0
    # the sampler's noise scale (1.0 = the flow's own prior): lower is closer to the mean voice, with less
    # frame-to-frame speckle (each mel frame is sampled on its own). 0.0 was chosen on training-split
    # utterances with the flow head that read the hidden state (Whisper WER 1.00 at 0.0, 1.61 at 0.5,
    # 1.42 at 1.0), never on held-out ones
    flow_noise: float = 0.0
    # vocoder
    griffin_lim_iters: int = 8
    # audio (dMel paper settings)
    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 800  # 50 ms
    hop_length: int = 200  # 12.5 ms -> 80 frames/s
    n_mels: int = 80
    f_min: float = 80.0
    f_max: float = 7600.0
    dmel_levels: int = 16
    dmel_min: float = -7.0
    dmel_max: float = 2.0
    turn_ms: int = 200
    patch: int = 40

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def frames_per_turn(self) -> int:
        return self.sample_rate * self.turn_ms // 1000 // self.hop_length

    @property
    def samples_per_turn(self) -> int:
        return self.frames_per_turn * self.hop_length

    @property
    def image_patches(self) -> int:
        return self.image_grid[0] * self.image_grid[1]

    def validate(self) -> ModelConfig:
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError("d_model must divide by n_heads and n_heads by n_kv_heads")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even for RoPE")
        if self.moe_experts and not 0 < self.moe_top_k <= self.moe_experts:
            raise ValueError("moe_top_k must be in 1..moe_experts")
        if self.text_out_slots < 1:
            raise ValueError("text_out_slots must be >= 1")
        if self.voice_reader not in ("mlp", "align"):
            raise ValueError("voice_reader must be 'mlp' or 'align'")
        if not 0 <= self.flow_context <= self.frames_per_turn:
            raise ValueError(f"flow_context must be in 0..{self.frames_per_turn}")
        if self.flow_mix < 0 or (self.flow_mix and self.flow_mix % 2 == 0):
            raise ValueError("flow_mix must be 0 or an odd width")
        if not 0.0 < self.keep_fraction < 1.0:
            raise ValueError("keep_fraction must be in (0, 1)")
        if self.capacity > self.max_seq_len:
            raise ValueError("capacity must not exceed max_seq_len")
        return self

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes).validate()


_TINY = ModelConfig(
    d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=4096,
    image_grid=(1, 1), text_in_slots=4, context_slots=4, text_out_slots=3, capacity=4096,
    flow_dim=64, flow_blocks=1, flow_steps=2, griffin_lim_iters=8,
)

PRESETS: dict[str, ModelConfig] = {
    "tiny": _TINY,
    "tiny_moe": dataclasses.replace(_TINY, ffn_dim=64, moe_experts=4, moe_top_k=2),
    "small": ModelConfig(),
    "small_moe": ModelConfig(ffn_dim=256, moe_experts=4, moe_top_k=2),
    "gpu": ModelConfig(
        d_model=1024, n_layers=16, n_heads=16, n_kv_heads=4, ffn_dim=2816, moe_experts=8, moe_top_k=2,
        max_seq_len=32768, image_grid=(3, 4), text_in_slots=16, context_slots=16, text_out_slots=6,
        capacity=16384, flow_dim=512, flow_blocks=3, flow_steps=8, griffin_lim_iters=32,
    ),
}


def preset(name: str) -> ModelConfig:
    """The named preset (`tiny`, `tiny_moe`, `small`, `small_moe`, `gpu`); KeyError listing the names otherwise."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].validate()
