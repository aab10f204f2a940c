"""The shipped checkpoint: small enough to commit, described by its card (config, seed, data version,
measured scores), and streamed bit for bit as trained (kernels.deterministic)."""

from __future__ import annotations

import json

import pytest
import torch

import kernels
from interaction_actor.model.fusion import build_model
from interaction_actor.model.session import new_session, step_batch
from interaction_actor.training import synth
from interaction_actor.training.train import DEFAULT_CHECKPOINT, card_path


@pytest.fixture(scope="module")
def shipped():
    torch.set_num_threads(1)
    return build_model("small", checkpoint=str(DEFAULT_CHECKPOINT))


def test_the_shipped_checkpoint_is_a_few_megabytes_with_its_card_beside_it():
    assert DEFAULT_CHECKPOINT.stat().st_size < 10_000_000  # 4.2 M parameters in fp16 (the voice's flow head: 1.9 M)
    card = json.loads(card_path(DEFAULT_CHECKPOINT).read_text())
    assert card["data_version"] == synth.DATA_VERSION
    assert {"seed", "steps", "lr", "batch"} <= set(card["train_config"]) and card["train_seconds"] > 0
    assert card["model_config"]["d_model"] == 192 and card["steps"] > 0


def test_the_card_records_the_measured_scores_of_model_and_baseline_per_task():
    ev = json.loads(card_path(DEFAULT_CHECKPOINT).read_text())["eval"]
    assert set(ev["tasks"]) == set(synth.TASKS)
    assert all(set(v) == {"interaction", "baseline"} for v in ev["tasks"].values())
    assert {"turn_taking_ms_p50", "barge_in_stop_ms_p50", "delegation_precision", "delegation_recall"} <= set(ev)


@pytest.mark.bitwise
def test_the_streaming_session_reproduces_the_shipped_models_training_forward_bit_for_bit(shipped):
    """Under kernels.deterministic() the session's logits (chunked prefill + decode, voiced turns
    included) equal forward_sequence, the forward training_loss differentiates, bit for bit."""
    with kernels.deterministic():
        for seed in synth.held_out_seeds(12):  # the first held-out delegation episode in which it voices a result
            ep = synth.episode(seed, "delegation", shipped.config)
            s = new_session(shipped, "bits", record=True)
            outs = [step_batch(shipped, [s], [inp])[0] for inp in ep.inputs]
            if any(o.speaking for o in outs) and int((s.record.sequence().cand[..., 0] >= 0).sum()) > 5:
                break
        with torch.no_grad():
            _, logits = shipped.forward_sequence(s.record.sequence())
    assert any(o.speaking for o in outs), "the trained model speaks in this episode (voiced mel slots)"
    assert int((s.record.sequence().cand[..., 0] >= 0).sum()) > 5, "it reads its answer through copy candidates"
    assert torch.equal(s.record.logits(), logits[0])


# per task, on 10 held-out episodes: regression floors well under the card's 50-episode scores on held-out
# content and voices (time_speak 1.00, cue_speak 1.00, rep_count 1.00, turn_taking 0.82, delegation 0.54).
QUALITY_FLOOR = {"time_speak": 0.6, "cue_speak": 0.6, "rep_count": 0.6, "turn_taking": 0.5, "delegation": 0.1}


@pytest.fixture(scope="module")
def held_out_result(shipped):
    from interaction_actor.training.evaluate import evaluate

    return evaluate(model=shipped, episodes=10, baseline=False, in_session=False, extras=False)


def test_the_shipped_model_scores_at_least_the_floor_on_held_out_episodes_of_every_task(held_out_result):
    """What the shipped model does, checked: 10 held-out episodes per task through the real streaming
    session (interaction_actor.training.evaluate), each task's accuracy at least its QUALITY_FLOOR. A
    checkpoint that regressed (or failed to load and ran untrained) fails here."""
    scores = held_out_result["tasks"]
    assert set(scores) == set(synth.TASKS)
    low = {task: acc for task, acc in scores.items() if acc < QUALITY_FLOOR.get(task, 0.0)}
    assert not low, f"below the floor on held-out episodes: {low} (all: {scores})"


def test_the_shipped_model_never_voices_a_silent_result(shipped):
    """Issue 21: results behind the SILENT marker stay context. The shipped checkpoint voices none (0 of 20
    in its card's 50-episode run; a checkpoint before the hold targets voiced 7 of 13 in a synth-7 run): training repeats <empty> as an
    auxiliary target for six turns after a SILENT result arrives (synth._holds). Held-out delegation
    episodes whose result is SILENT, through the real streaming session. (Later in a session, see the
    next test.)"""
    from interaction_actor.training.evaluate import run_interactive, silent_voiced

    offset = (*synth.TASKS, *synth.SITUATIONS).index("delegation") * 1_000_000
    eps = [e for e in (synth.episode(s, "delegation", shipped.config) for s in synth.held_out_seeds(40, offset=offset))
           if e.expect.get("mode") == "silent" and e.expect.get("result_turn") is not None][:6]
    assert eps
    trs = run_interactive(shipped, eps)
    assert sum(silent_voiced(e, t) for e, t in zip(eps, trs, strict=True)) == 0


def test_the_shipped_model_does_not_voice_a_silent_result_in_the_reply_that_follows_it(shipped):
    """A SILENT result that came in at the end of one request, then chit-chat in the same session: the
    reply is the model's own, not the result (held-out sessions of eval's `in_session_episodes`, turn
    taking after a delegation). Before the copy lookup stopped offering a SILENT result's text, the
    synth-14 checkpoint began the reply with it in 5 of 22 such sessions ("Lima fog, ...")."""
    from interaction_actor.training.evaluate import in_session_episodes, run_interactive, silent_voiced_later

    chained = in_session_episodes(40, shipped.config, tasks=("turn_taking",))["turn_taking"]
    eps = [e for e in chained if e.expect["before"].get("mode") == "silent"
           and e.expect["before"].get("result_turn") is not None][:6]
    assert len(eps) == 6
    trs = run_interactive(shipped, eps)
    assert [silent_voiced_later(e, t) for e, t in zip(eps, trs, strict=True)] == [0] * 6


def test_the_shipped_model_reads_a_background_answer_as_long_as_the_demo_s_aloud(shipped):
    """The demo's background answers in a sentence ("The weather in Oslo is quite snowy, with a
    temperature of -3 C.", 63 bytes); the synth-12 model, which trained only on context messages up to
    ~25 bytes, said none over 30 in the demo's replay and fails this check (similarities 0.82, 0.0, 1.0,
    0.86); synth-13's long echo strings teach it. Held-out delegation episodes, lengthened, whose
    WHEN_IDLE result is replaced by such a sentence (held-out cities and conditions), through the real
    streaming session: the model starts saying it and says most of it (the voice plan's pace may cut a
    word; the byte copy is what is checked)."""
    from difflib import SequenceMatcher

    from interaction_actor.model import text as T
    from interaction_actor.training.evaluate import run_interactive, utterances

    offset = (*synth.TASKS, *synth.SITUATIONS).index("delegation") * 1_000_000
    eps = [e for e in (synth.episode(s, "delegation", shipped.config, turns=90)
                       for s in synth.held_out_seeds(40, offset=offset))
           if e.expect.get("mode") == "when_idle" and e.expect.get("result_turn") is not None][:4]
    answers = ["The weather in Oslo is quite snowy, with a temperature of -3 C.",
               "In Helsinki it is windy today, and the temperature is 4 C.",
               "Expect hail in Denver this afternoon, with highs of 12 C.",
               "Dublin has clouds all day, with a light wind and 9 C."]
    for ep, answer in zip(eps, answers, strict=False):
        ep.inputs[ep.expect["result_turn"]].context = T.CTX_IDLE + answer
    trs = run_interactive(shipped, eps)
    ratios = []
    for ep, tr, answer in zip(eps, trs, answers, strict=False):
        said = [text for turn, text in utterances(tr) if turn >= ep.expect["result_turn"]]
        ratios.append(max((SequenceMatcher(None, s, answer).ratio() for s in said), default=0.0))
    assert len(ratios) == 4 and min(ratios) >= 0.8, ratios
