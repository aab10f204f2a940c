"""The flow head's options (model/flow_head.py): a context of the previous turn's last mel frames
(`flow_context`) and frames mixed within a turn (`flow_mix`)."""

from __future__ import annotations

import random

import pytest
import torch

import kernels
from interaction_actor.model.config import ModelConfig, preset
from interaction_actor.model.flow_head import FlowHead, turn_context
from interaction_actor.model.reader import VOCAB, frame_windows
from interaction_actor.training import synth, train
from interaction_actor.training.train_voice import VoiceTrainConfig, examples, plan_examples, say, train_flow

CFG = preset("tiny").replace(flow_context=4, flow_mix=3)


def _head(cfg: ModelConfig = CFG, seed: int = 0) -> FlowHead:
    """A fresh head whose zero-initialised weights (modulations, output layer) are drawn instead, so
    that its condition shows in its output."""
    torch.manual_seed(seed)
    head = FlowHead(cfg)
    _draw_zeros(head)
    return head.eval()


def _draw_zeros(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.normal_(std=0.1)


def _windows(rng: random.Random, turns: int) -> torch.Tensor:
    return torch.cat([frame_windows([rng.randrange(VOCAB) for _ in range(12)], 16) for _ in range(turns)])


def _ctx(turns: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(turns, 4, 80, generator=g) * 6 - 6


def test_a_context_head_renders_a_turn_differently_after_a_different_previous_turn():
    head, w = _head(), _windows(random.Random(1), 1)
    zero = torch.zeros(16, 80)
    a, b = head.sample(w, zero, 2, _ctx(1, 1)), head.sample(w, zero, 2, _ctx(1, 2))
    assert not torch.allclose(a, b)


def test_a_context_head_called_without_its_context_is_a_clear_error():
    with pytest.raises(ValueError, match="context of 4 frames"):
        _head().sample(_windows(random.Random(1), 1), torch.zeros(16, 80), 2)


def test_after_a_quiet_turn_the_context_is_silence_and_after_a_voiced_one_its_last_frames():
    assert torch.equal(turn_context(None, CFG), torch.full((4, 80), CFG.dmel_min))
    prev = torch.randn(16, 80)
    assert torch.equal(turn_context(prev, CFG), prev[12:])


def test_a_mixing_head_lets_a_frame_hear_its_neighbours_and_not_the_far_frames():
    head, w = _head(), _windows(random.Random(2), 1)
    ctx, zero = _ctx(1, 1), torch.zeros(16, 80)
    w2 = w.clone()
    w2[5, -1] = 9  # frame 5 reads another frame index: one block, one Euler step -> frames 4, 5 and 6 move
    a, b = head.sample(w, zero, 1, ctx), head.sample(w2, zero, 1, ctx)
    changed = [i for i in range(16) if not torch.equal(a[i], b[i])]
    assert changed == [4, 5, 6]


@pytest.mark.bitwise
def test_a_mixing_context_head_gives_a_turn_the_same_bits_whatever_turns_share_the_call():
    head, w = _head(), _windows(random.Random(3), 9)
    ctx, noise = _ctx(9, 3), torch.randn(9 * 16, 80, generator=torch.Generator().manual_seed(3))
    with kernels.deterministic():
        whole = head.sample(w, noise, 2, ctx)
        for t0, n in ((0, 1), (2, 3), (5, 4)):
            rows = slice(t0 * 16, (t0 + n) * 16)
            assert torch.equal(head.sample(w[rows], noise[rows], 2, ctx[t0 : t0 + n]), whole[rows])


def test_the_trainer_gives_each_voiced_turn_the_previous_turns_last_target_frames():
    """fusion's teacher-forced contexts: a turn after a voiced turn reads its last 4 target frames, the
    first turn of an utterance reads silence."""
    from interaction_actor.model.fusion import InteractionModel

    model = InteractionModel(CFG)
    ep = synth.episode(7, "turn_taking", cfg=CFG)
    f = train.featurize(ep, CFG)
    ctx = model._flow_contexts(f.mel_targets, f.mel_mask)
    lay, voiced = model.layout, f.voiced
    assert sum(voiced) >= 2
    row = 0
    for k, v in enumerate(voiced):
        if not v:
            continue
        a = lay.turn_start(k - 1) + lay.mel
        want = f.mel_targets[0, a + 12 : a + 16] if k and voiced[k - 1] else torch.full((4, 80), CFG.dmel_min)
        assert torch.equal(ctx[row], want)
        row += 1
    assert row == ctx.shape[0]


def test_train_voice_says_a_text_turn_by_turn_each_after_its_own_rendering():
    head = _head()
    mels = say(head, CFG, "sure, it is five.")
    ws, _ = plan_examples("sure, it is five.", CFG.text_out_slots, 16)
    assert len(mels) == len(ws) >= 3
    again = head.sample(ws[2], torch.zeros(16, 80), CFG.flow_steps,
                        turn_context(mels[1], CFG)[None])
    assert torch.equal(again, mels[2])


def test_a_context_head_learns_on_the_voices_examples_reading_its_own_renderings():
    tc = VoiceTrainConfig(steps=201, batch=8, lr=3e-3, threads=0, own_context=0.5)
    _, run = train_flow(CFG, tc, examples(["ok, sure.", "red!", "hello there"], CFG))
    hist = run["loss_history"]
    assert hist[-1]["flow"] < 0.7 * hist[0]["flow"]


def test_a_context_or_mix_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match="flow_context"):
        ModelConfig(flow_context=17).validate()
    with pytest.raises(ValueError, match="flow_mix"):
        ModelConfig(flow_mix=2).validate()


def test_train_voice_with_an_even_mix_width_is_a_one_line_error():
    from typer.testing import CliRunner

    from interplay.cli import app

    result = CliRunner().invoke(app, ["train-voice", "--out", "unused.pt", "--mix", "2"])
    assert result.exit_code == 2 and "--mix 2: choose 0 or an odd width" in result.output
    assert "Traceback" not in result.output


def test_train_voice_can_give_a_checkpoint_a_context_and_mix_head(tmp_path):
    from interaction_actor.model.fusion import build_model
    from interaction_actor.training.train import save_shipped
    from interaction_actor.training.train_voice import train_voice

    src = tmp_path / "base.pt"
    save_shipped(build_model("tiny", seed=3), src)
    tc = VoiceTrainConfig(phrases=4, task_episodes=1, steps=2, batch=4, threads=0, context=4, mix=3, own_context=0.5)
    train_voice(src, tmp_path / "ctx.pt", tc, measure_after=False)
    out = build_model("tiny", checkpoint=str(tmp_path / "ctx.pt"))
    assert (out.config.flow_context, out.config.flow_mix) == (4, 3)
    with pytest.raises(ValueError, match="new shape"):
        train_voice(src, tmp_path / "again.pt", VoiceTrainConfig(steps=1, context=4, init_from_checkpoint=True),
                    measure_after=False)


def test_a_mixing_head_trains_each_turn_at_one_flow_time_and_a_per_frame_head_each_row_at_its_own():
    t = _head().flow_times(48, torch.Generator().manual_seed(0))
    assert all(len(set(t[i : i + 16].tolist())) == 1 for i in range(0, 48, 16)) and len(set(t.tolist())) == 3
    per_frame = FlowHead(preset("tiny")).flow_times(48, torch.Generator().manual_seed(0))
    assert len(set(per_frame.tolist())) == 48
