"""The synthetic episode generator: deterministic, held-out seeds apart, and featurized as the session sees it."""

from __future__ import annotations

import pytest
import torch

from interaction_actor import synth
from interaction_actor import text as T
from interaction_actor.model import build_model
from interaction_actor.session import new_session, step_batch
from interaction_actor.train import featurize, train_seeds


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return build_model("tiny", seed=4)


def _same(a: synth.Episode, b: synth.Episode) -> bool:
    for x, y in zip(a.inputs, b.inputs, strict=True):
        if (x.text, x.context, x.barge_in) != (y.text, y.context, y.barge_in):
            return False
        if not torch.equal(x.audio, y.audio):
            return False
        if (x.frame is None) != (y.frame is None) or (x.frame is not None and not torch.equal(x.frame, y.frame)):
            return False
    return a.targets == b.targets and a.expect == b.expect


@pytest.mark.parametrize("task", synth.TASKS)
def test_an_episode_is_a_pure_function_of_its_task_and_seed(task):
    assert _same(synth.episode(123, task), synth.episode(123, task))


def test_different_seeds_give_different_episodes():
    eps = [synth.episode(s, "turn_taking") for s in range(6)]
    assert len({e.expect["end_sample"] for e in eps}) > 1
    assert not _same(eps[0], eps[1])


def test_training_seeds_never_reach_the_held_out_seeds():
    held = min(synth.held_out_seeds(10))
    assert all(max(train_seeds(step, 64, seed)) < held for step in (0, 10**6, 10**12) for seed in (0, 7))


def test_each_expected_utterance_starts_with_start_speaking_at_its_expected_turn():
    for task in synth.TASKS:
        for s in range(20):
            ep = synth.episode(s, task)
            assert ep.turns == synth.EPISODE_TURNS
            if ep.expect.get("say") and ep.expect["turn"] is not None:
                row = ep.targets[ep.expect["turn"]]
                assert row[0] == T.START_SPEAKING
                assert T.decode(row[1:]) == ep.expect["say"][: len(row) - 1]


def test_the_featurized_episode_is_exactly_what_the_streaming_session_writes(tiny):
    """Teacher forcing with the session's own outputs must rebuild the session's recorded sequence."""
    lay = tiny.layout
    for task in synth.TASKS:
        ep = synth.episode(31, task, tiny.config)
        s = new_session(tiny, "feat", record=True)
        for inp in ep.inputs:
            step_batch(tiny, [s], [inp])
        seq = s.record.sequence()
        toks = torch.cat([seq.tokens[0], torch.tensor([s.pending])])
        outs = [[int(toks[lay.turn_start(k) + lay.out + 1 + j]) for j in range(lay.out_slots)]
                for k in range(ep.turns)]
        c = featurize(ep, tiny.config, outs).chunk
        n = seq.tokens.shape[1]
        for name in ("tokens", "dmel", "audio_mask", "image_mask", "mel_mask"):
            assert torch.equal(getattr(c, name)[:, :n], getattr(seq, name)), (task, name)
        assert torch.equal(c.patches, seq.patches), task
