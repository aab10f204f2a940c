"""InteractionModel: encoder-free early fusion over the micro-turn layout, and its training forward.

The same modules serve both paths. `forward_sequence(chunk)` runs a whole interleaved sequence
(position 0 = <bos>) with the causal mask and returns final hidden states and text logits;
`training_loss` adds text cross-entropy and the flow-matching loss. The streaming session calls
`forward_chunk(chunk, caches, starts)`, which appends a chunk to per-session KV caches at its
positions. Equality of the two paths is tested with `session.new_session(..., record=True)`:
`state.record.sequence()` is the streamed sequence as one SlotChunk to feed `forward_sequence`,
and `state.record.hidden()` / `.logits()` are what the session computed at each position.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

import kernels
from interaction_actor.model import text as T
from interaction_actor.model.config import ModelConfig, preset
from interaction_actor.model.flow_head import FlowHead, normalize_mel
from interaction_actor.model.hmlp import HMLPStem
from interaction_actor.model.layout import CAND_SIZE, HIST_SIZE, IGNORE, SlotChunk, TurnLayout
from interaction_actor.model.reader import PAD
from interaction_actor.model.transformer import Transformer
from interplay.log import get_logger

log = get_logger("interaction_actor.model.fusion")


class InteractionModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config.validate()
        d = config.d_model
        self.layout = TurnLayout.from_config(config)
        self.tok_emb = nn.Parameter(torch.randn(T.VOCAB_SIZE, d) * 0.02)
        self.audio_emb = nn.Parameter(torch.randn(config.n_mels * config.dmel_levels, d) * 0.02 / config.n_mels**0.5)
        self.mel_in = nn.Parameter(torch.randn(d, config.n_mels) * 0.02)
        # where a position stands in its turn block (row 0: <bos>; row 1 + offset): tells a byte in the
        # text-in slots from one in the context or output slots, and which slot of its group it is
        self.slot_emb = nn.Parameter(torch.randn(1 + self.layout.turn_len, d) * 0.02)
        # byte history (layout.History): [lag, id] rows added where SlotChunk.hist is set, so that a slot
        # byte and the output position about to say it share an input feature (one match copies it)
        self.hist_emb = nn.Parameter(torch.randn(2, HIST_SIZE, d) * 0.02)
        # copy candidates (layout.Lookup) at output positions: [by (h1, h2) | by h1, byte] rows
        # (row CAND_END: the copied message has ended; a checkpoint from before it loads it as zeros)
        self.cand_emb = nn.Parameter(torch.randn(2, CAND_SIZE, d) * 0.02)
        self._register_load_state_dict_pre_hook(_pad_cand_rows)
        self.hmlp = HMLPStem(config)
        self.transformer = Transformer(config)
        self.flow = FlowHead(config)
        self.register_buffer("channel_offsets", torch.arange(config.n_mels) * config.dmel_levels, persistent=False)
        allowed = torch.full((T.VOCAB_SIZE,), float("-inf"))
        allowed[list(T.OUTPUT_TOKENS)] = 0.0
        self.register_buffer("output_bias", allowed, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.tok_emb.device

    # ---- embeddings and heads -------------------------------------------------------------
    def embed(self, chunk: SlotChunk) -> torch.Tensor:
        """SlotChunk [B, T] -> input embeddings [B, T, d_model] (see SlotChunk)."""
        x = kernels.embedding_bag_sum(self.tok_emb, chunk.tokens[..., None])
        extra = None
        if bool(chunk.audio_mask.any()):
            extra = torch.zeros_like(x)
            idx = chunk.dmel[chunk.audio_mask] + self.channel_offsets
            extra[chunk.audio_mask] = kernels.embedding_bag_sum(self.audio_emb, idx)
        if bool(chunk.image_mask.any()):
            extra = torch.zeros_like(x) if extra is None else extra
            extra[chunk.image_mask] = self.hmlp(chunk.patches)
        if bool(chunk.mel_mask.any()):
            extra = torch.zeros_like(x) if extra is None else extra
            extra[chunk.mel_mask] = kernels.linear(normalize_mel(chunk.mel_in[chunk.mel_mask]), self.mel_in)
        x = x if extra is None else x + extra
        h = chunk.hist
        if bool((h >= 0).any()):
            rows = self.hist_emb[0][h[..., 0].clamp(min=0)] + self.hist_emb[1][h[..., 1].clamp(min=0)]
            x = x + torch.where((h[..., :1] >= 0) & (h[..., 1:] >= 0), rows, torch.zeros_like(rows))
        c = chunk.cand
        if bool((c >= 0).any()):
            zero = torch.zeros_like(x)
            for lag in range(2):
                x = x + torch.where(c[..., lag : lag + 1] >= 0, self.cand_emb[lag][c[..., lag].clamp(min=0)], zero)
        return x

    def slot_index(self, positions: torch.Tensor) -> torch.Tensor:
        """Absolute positions -> rows of `slot_emb`: 0 for <bos>, else 1 + the offset in the turn block.
        Compaction drops whole turns, so a kept position keeps its offset."""
        return torch.where(positions == 0, 0, (positions - 1) % self.layout.turn_len + 1)

    def embed_at(self, chunk: SlotChunk, positions: torch.Tensor) -> torch.Tensor:
        """Input embeddings of `chunk` standing at `positions` [B, T]: `embed` plus the slot embedding."""
        return self.embed(chunk) + self.slot_emb[self.slot_index(positions)]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Text head tied to the token embedding."""
        return kernels.linear(hidden, self.tok_emb)

    # ---- the two paths ------------------------------------------------------------------------
    def forward_sequence(self, chunk: SlotChunk, lengths: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole sequences from position 0 -> (hidden [B, T, d], logits [B, T, V]); causal by position."""
        chunk = chunk.to(self.device)
        b, t = chunk.tokens.shape
        positions = torch.arange(t, device=self.device)[None, :].expand(b, t)
        hidden = self.transformer(self.embed_at(chunk, positions), positions,
                                  lengths=None if lengths is None else lengths.to(self.device))
        return hidden, self.logits(hidden)

    def forward_chunk(self, chunk: SlotChunk, caches: list[torch.Tensor], starts: list[int]) -> torch.Tensor:
        """Append chunk row b at positions starts[b].. to caches[b] -> hidden [B, T, d]."""
        chunk = chunk.to(self.device)
        b, t = chunk.tokens.shape
        positions = torch.tensor(starts, dtype=torch.long, device=self.device)[:, None] + torch.arange(
            t, device=self.device)[None, :]
        return self.transformer(self.embed_at(chunk, positions), positions, caches=caches, starts=starts)

    def training_loss(self, chunk: SlotChunk, text_targets: torch.Tensor, mel_targets: torch.Tensor,
                      mel_loss_mask: torch.Tensor, lengths: torch.Tensor | None = None,
                      generator: torch.Generator | None = None, flow_weight: float = 1.0,
                      read: torch.Tensor | None = None) -> dict:
        """Training forward over whole sequences.

        text_targets [B, T] long (IGNORE where no target; see layout.text_targets), mel_targets
        [B, T, n_mels] log10 mel of the assistant's voice at mel-out slots, mel_loss_mask [B, T]
        where a flow target exists, read [B, T, 4K + 1] the flow head's read window at those slots
        (model/reader.py; None: windows that read nothing). The flow loss does not reach the
        transformer: the voice reads the tokens, not the hidden state.
        Returns {"loss", "text_ce", "flow", "hidden", "logits"}.
        """
        hidden, logits = self.forward_sequence(chunk, lengths)
        valid = text_targets != IGNORE
        text_targets, mel_targets = text_targets.to(self.device), mel_targets.to(self.device)
        mel_loss_mask, valid = mel_loss_mask.to(self.device), valid.to(self.device)
        if bool(valid.any()):
            logp = kernels.log_softmax(logits[valid], dim=-1)
            text_ce = -logp.gather(-1, text_targets[valid][:, None]).mean()
        else:
            text_ce = logits.sum() * 0.0
        if bool(mel_loss_mask.any()):
            if read is None:
                read = torch.full((*mel_loss_mask.shape, 4 * self.config.text_out_slots + 1), PAD, dtype=torch.long)
                read[..., -1] = 0
            cond = read.to(self.device)[mel_loss_mask]
            target = mel_targets[mel_loss_mask]
            noise = torch.randn(target.shape, generator=generator).to(self.device)
            t = self.flow.flow_times(target.shape[0], generator).to(self.device)
            ctx = self._flow_contexts(mel_targets, mel_loss_mask) if self.config.flow_context else None
            flow = self.flow.loss(cond, target, noise, t, ctx)
        else:
            flow = hidden.sum() * 0.0
        return {"loss": text_ce + flow_weight * flow, "text_ce": text_ce, "flow": flow,
                "hidden": hidden, "logits": logits}

    def _flow_contexts(self, mel_targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The flow context of each masked mel row (teacher forcing: the previous turn's last target
        frames, silence where that turn was not voiced) -> [voiced turns, flow_context, n_mels], one
        per 16 masked rows."""
        cfg, lay = self.config, self.layout
        p = cfg.flow_context
        turns = max(0, (mel_targets.shape[1] - 1 - lay.mel - lay.frames) // lay.turn_len + 1)
        first = torch.tensor([lay.turn_start(k) + lay.mel for k in range(turns)], dtype=torch.long,
                             device=mask.device)
        voiced = mask[:, first]  # [B, turns]
        last = mel_targets[:, first[:, None] + torch.arange(lay.frames - p, lay.frames, device=mask.device)]
        prev = torch.full_like(last, cfg.dmel_min)
        prev[:, 1:] = torch.where(voiced[:, :-1, None, None], last[:, :-1], prev[:, 1:])
        turns_ctx = prev[voiced]
        if turns_ctx.shape[0] * lay.frames != int(mask.sum()):
            raise ValueError("a flow context needs whole voiced turns in the mel loss mask")
        return turns_ctx


def _pad_cand_rows(state: dict, prefix: str, *args) -> None:
    """A checkpoint written before CAND_END had N_BYTES candidate rows: its new row starts at zero (no
    effect until trained)."""
    key = prefix + "cand_emb"
    w = state.get(key)
    if w is not None and w.shape[1] < CAND_SIZE:
        state[key] = torch.cat([w, w.new_zeros(w.shape[0], CAND_SIZE - w.shape[1], w.shape[2])], dim=1)


def save_checkpoint(model: InteractionModel, path: str | Path) -> None:
    """Config + weights, loadable by build_model(checkpoint=path)."""
    torch.save({"config": dataclasses.asdict(model.config), "state_dict": model.state_dict()}, str(path))


def build_model(preset: str = "small", checkpoint: str | None = None, seed: int = 0) -> InteractionModel:
    """A model of the named preset with weights from `checkpoint`, or freshly initialised from `seed`."""
    cfg = _preset(preset)
    state = None
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"model checkpoint not found: {path}")
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
        conf = dict(blob["config"])
        conf["image_grid"] = tuple(conf["image_grid"])
        cfg = ModelConfig(**conf).validate()
        state = blob["state_dict"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InteractionModel(cfg)
    if state is not None:
        model.load_state_dict(state)
    model.eval()
    log.info("model_built", preset=preset, checkpoint=checkpoint or "", params=sum(p.numel() for p in model.parameters()))
    return model


_preset = preset
