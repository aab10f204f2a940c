"""The trainer: a short run lowers the loss, resuming equals an uninterrupted run, the card records the
run, and the streaming session reproduces the trained model's training-forward logits bit for bit."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import kernels
from interaction_actor.model.fusion import build_model
from interaction_actor.model.session import new_session, step_batch
from interaction_actor.training import synth
from interaction_actor.training.train import TrainConfig, card_path, train


def _cfg(steps: int, **kw) -> TrainConfig:
    return TrainConfig(preset="tiny", steps=steps, batch=2, lr=3e-3, warmup=4, threads=1, checkpoint_every=3,
                       max_minutes=0.0, **kw)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A test-sized run: the tiny preset, 30 steps of 2 rows (the mix rotates through the tasks); ~20 s."""
    d = tmp_path_factory.mktemp("short")
    card = train(d / "t.pt", config=_cfg(30), progress=False, work_dir=d / "work")
    return d / "t.pt", card


def test_a_short_training_run_lowers_the_text_loss(short_run):
    _, card = short_run
    hist = card["loss_history"]
    assert hist[0]["step"] == 1 and hist[-1]["step"] == 30
    assert hist[-1]["text_ce"] < 0.5 * hist[0]["text_ce"]


def _streamed_vs_trained(model, ep):
    s = new_session(model, "bits", record=True)
    for inp in ep.inputs:
        step_batch(model, [s], [inp])
    with torch.no_grad():
        _, logits = model.forward_sequence(s.record.sequence())
    return s.record.logits(), logits[0]


@pytest.mark.bitwise
def test_the_session_reproduces_the_trained_models_training_forward_logits_bit_for_bit(short_run):
    """Under kernels.deterministic() the session's chunked prefill + decode equal forward_sequence
    (the forward training_loss differentiates) over the streamed sequence, bit for bit."""
    model = build_model("tiny", checkpoint=str(short_run[0]))
    for task in ("turn_taking", "cue_speak"):
        with kernels.deterministic():
            streamed, trained = _streamed_vs_trained(model, synth.episode(synth.held_out_seeds(1)[0], task))
        assert torch.equal(streamed, trained), task


def test_a_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path):
    train(tmp_path / "a.pt", config=_cfg(4), progress=False, work_dir=tmp_path / "wa")
    train(tmp_path / "b.pt", config=_cfg(2), progress=False, work_dir=tmp_path / "wb")
    card = train(tmp_path / "b.pt", config=_cfg(4), progress=False, work_dir=tmp_path / "wb")
    assert card["steps"] == 4 and card["resumed_from"] == 2
    a = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_card_beside_the_checkpoint_records_config_seed_and_data_version(short_run):
    path, _ = short_run
    card = json.loads(card_path(path).read_text())
    assert card["data_version"] == synth.DATA_VERSION
    assert card["train_config"] == json.loads(json.dumps(dataclasses.asdict(_cfg(30))))
    assert card["train_config"]["seed"] == _cfg(30).seed
    assert card["model_config"]["d_model"] == 64 and card["steps"] == 30


def test_a_fine_tuning_run_starts_from_the_named_checkpoints_weights(short_run, tmp_path):
    """With lr 0 one step changes nothing (AdamW's decay is lr-scaled), so the written weights are the
    checkpoint's: the run started from them, not from its seed; the card records the base run's steps."""
    base, _ = short_run
    card = train(tmp_path / "ft.pt", config=dataclasses.replace(_cfg(1), lr=0.0, init_from=str(base)),
                 progress=False, work_dir=tmp_path / "w")
    assert card["init_steps"] == 30 and card["train_config"]["init_from"] == str(base)
    a = torch.load(base, weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "ft.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_fine_tune_may_continue_a_checkpoint_saved_with_another_kv_capacity(short_run, tmp_path):
    """The KV capacity is a session's setting, not the weights' (synth-11's longer episodes needed a larger
    one than the checkpoint it continued): the run starts from the weights and keeps its own capacity."""
    base, _ = short_run
    blob = torch.load(base, weights_only=True)
    blob["config"] = {**blob["config"], "capacity": blob["config"]["capacity"] // 2}
    torch.save(blob, tmp_path / "small_cache.pt")
    train(tmp_path / "ft.pt", config=dataclasses.replace(_cfg(1), lr=0.0, init_from=str(tmp_path / "small_cache.pt")),
          progress=False, work_dir=tmp_path / "w")
    out = torch.load(tmp_path / "ft.pt", weights_only=True)
    assert out["config"]["capacity"] == 2 * blob["config"]["capacity"]
    assert all(torch.equal(blob["state_dict"][k], out["state_dict"][k]) for k in blob["state_dict"])


def test_fine_tuning_from_a_checkpoint_of_another_preset_is_refused(tmp_path):
    from interaction_actor.model.weights import DEFAULT_CHECKPOINT

    with pytest.raises(ValueError, match="another model configuration"):
        train(tmp_path / "x.pt", config=dataclasses.replace(_cfg(1), init_from=str(DEFAULT_CHECKPOINT)),
              progress=False, work_dir=tmp_path / "w")


def test_a_self_voice_fine_tune_trains_the_transformer_under_a_fixed_voice(short_run, tmp_path):
    base, _ = short_run
    tc = dataclasses.replace(_cfg(3), init_from=str(base), self_voice=True, flow_weight=0.0)
    train(tmp_path / "sv.pt", config=tc, progress=False, work_dir=tmp_path / "w")
    a = torch.load(base, weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "sv.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("flow."))
    assert not all(torch.equal(a[k], b[k]) for k in a if not k.startswith("flow."))
