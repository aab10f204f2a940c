"""`interplay train-voice` (training/train_voice.py): the flow head learns espeak-ng's voice from read windows."""

from __future__ import annotations

import json

import torch

from interaction_actor.model import text as T
from interaction_actor.model.config import preset
from interaction_actor.model.flow_head import FlowHead
from interaction_actor.model.reader import START
from interaction_actor.training import voice
from interaction_actor.training.train_voice import (
    VoiceTrainConfig,
    examples,
    plan_examples,
    train_flow,
    train_voice,
    utterance_texts,
)


def test_every_turn_of_a_plan_is_one_example_that_reads_its_own_turn():
    ws, ms = plan_examples("ok, sure.", 3, 16)
    plan = voice.utterance("ok, sure.", 3)  # the same cached plan (espeak-ng renders a text a little differently each time)
    assert len(ws) == len(ms) == plan.voiced_turns
    assert ws[0][0, 9].item() == START  # the first turn's audio reads the <start_speaking> turn as `cur`
    assert torch.equal(ms[1], plan.turn_mel(1))


def test_the_texts_a_token_stream_says_leave_out_delegate_tasks():
    out = [[T.DELEGATE, *b"we"], [T.DELEGATE_END, T.START_SPEAKING, ord("o")], [ord("k"), T.STOP_SPEAKING, T.EMPTY]]
    assert utterance_texts(out) == ["ok"]


def test_training_the_voice_lowers_its_flow_loss():
    cfg = preset("tiny")
    tc = VoiceTrainConfig(steps=201, batch=8, lr=3e-3, threads=0)
    _, run = train_flow(cfg, tc, examples(["ok, sure.", "red!", "hello there"], cfg))
    hist = run["loss_history"]
    assert run["steps"] == 201 and hist[-1]["flow"] < 0.6 * hist[0]["flow"]


def test_train_voice_keeps_the_transformer_and_writes_its_card(tmp_path):
    from interaction_actor.model.fusion import build_model
    from interaction_actor.training.train import save_shipped

    src = tmp_path / "base.pt"
    base = build_model("tiny", seed=3)
    save_shipped(base, src)
    (tmp_path / "base.json").write_text(json.dumps({"steps": 7}))
    tc = VoiceTrainConfig(phrases=4, task_episodes=1, steps=3, batch=4, threads=0)
    section = train_voice(src, tmp_path / "voiced.pt", tc, measure_after=False)
    out = build_model("tiny", checkpoint=str(tmp_path / "voiced.pt"))
    card = json.loads((tmp_path / "voiced.json").read_text())
    assert section["steps"] == 3 and card["steps"] == 7 and card["voice"]["data_turns"] > 0
    a, b = base.state_dict(), out.state_dict()
    assert all(torch.equal(a[k].half().float(), b[k]) for k in a if not k.startswith("flow."))


def test_a_continuation_starts_from_the_given_flow_head():
    cfg = preset("tiny")
    data = examples(["red!"], cfg)
    first, _ = train_flow(cfg, VoiceTrainConfig(steps=5, batch=2, threads=0), data)
    again, run = train_flow(cfg, VoiceTrainConfig(steps=0, batch=2, threads=0, init_seed=9), data,
                            init=first.state_dict())
    assert run["steps"] == 0
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True))


def test_train_voice_can_give_a_checkpoint_the_align_reader(tmp_path):
    from interaction_actor.model.fusion import build_model
    from interaction_actor.training.train import save_shipped

    src = tmp_path / "base.pt"
    save_shipped(build_model("tiny", seed=3), src)
    tc = VoiceTrainConfig(phrases=4, task_episodes=1, steps=2, batch=4, threads=0, reader="align")
    train_voice(src, tmp_path / "aligned.pt", tc, measure_after=False)
    out = build_model("tiny", checkpoint=str(tmp_path / "aligned.pt"))
    assert out.config.voice_reader == "align" and out.flow.reader.__class__.__name__ == "AlignReader"


def test_the_voice_measure_hears_espeak_and_counts_at_most_one_error_per_word_when_clipped():
    """The real transcriber on real renderings: espeak-ng's own "ok, sure." is heard nearly right; a
    fresh head's voice is not, and its clipped rate never passes one error per word."""
    from interaction_actor.training.train_voice import measure

    cfg = preset("tiny")
    torch.manual_seed(0)
    r = measure(FlowHead(cfg).eval(), cfg, texts=["ok, sure.", "red!"])
    assert r["words"] == 3 and r["wer_reference"] <= 0.34
    assert all(r[f"wer_{k}_clipped"] <= min(1.0, r[f"wer_{k}"]) for k in ("voice", "reference", "vocoder"))
    assert r["samples"][0]["said"] == "ok, sure."
