"""The interactivity suite: its scorer accepts exactly the right content at the right turn, the VAD
baseline waits for the user's endpoint, and the whole suite runs end to end through real sessions."""

from __future__ import annotations

import pytest
import torch

from interaction_actor.model import text as T
from interaction_actor.model.fusion import build_model
from interaction_actor.training import synth
from interaction_actor.training.evaluate import (
    VadHarness,
    evaluate,
    in_session_episodes,
    latencies,
    oracle_transcript,
    score,
)


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return build_model("tiny", seed=3)


@pytest.mark.parametrize("task", synth.TASKS)
def test_the_episode_targets_themselves_score_as_right(task):
    eps = [synth.episode(s, task) for s in synth.held_out_seeds(8)]
    assert all(score(ep, oracle_transcript(ep)) for ep in eps)


@pytest.mark.parametrize("task", ["time_speak", "rep_count", "turn_taking"])
def test_the_right_words_two_turns_late_score_as_wrong(task):
    ep = synth.episode(synth.held_out_seeds(1)[0], task)
    late = [[T.EMPTY] * len(ep.targets[0])] * 2 + ep.targets[:-2]
    assert score(ep, oracle_transcript(ep)) and not score(ep, oracle_transcript(ep, late))


def test_saying_nothing_scores_as_wrong_when_something_was_due():
    ep = synth.episode(synth.held_out_seeds(1)[0], "delegation")
    silent = [[T.EMPTY] * len(ep.targets[0]) for _ in ep.targets]
    assert not score(ep, oracle_transcript(ep, silent))


def test_turn_taking_latency_of_the_targets_is_the_quiet_detection_delay():
    """Replying at the first quiet turn answers 125..325 ms after the user stops (plus compute)."""
    take = []
    for s in synth.held_out_seeds(8):
        ep = synth.episode(s, "turn_taking")
        take += latencies(ep, oracle_transcript(ep), compute_ms=0.0)[0]
    assert take and all(100.0 <= t <= 400.0 for t in take)


def test_the_vad_harness_ends_the_users_turn_after_the_endpoint_silence():
    harness = VadHarness()
    eps = [synth.episode(s, "turn_taking") for s in synth.held_out_seeds(8)]
    singles = [e for e in eps if e.expect["barge_in"] is None]  # one utterance, then silence
    assert singles, "no episode without a barge-in among the 8: nothing would be checked"
    for ep in singles:
        trig, _ = harness.triggers(ep)
        first = trig.index(True)
        end_ms = ep.speech[0][1] / 16.0
        assert end_ms + harness.endpoint_ms - 20 <= (first + 1) * 200.0
        assert first * 200.0 <= end_ms + harness.endpoint_ms + 20


@pytest.fixture(scope="module")
def suite(tiny):
    return evaluate(model=tiny, episodes=2)


def test_the_suite_runs_end_to_end_on_a_tiny_model_and_reports_the_figures_keys(suite):
    r = suite
    assert {"tasks", "turn_taking_ms_p50", "barge_in_stop_ms_p50", "delegation_precision",
            "delegation_recall"} <= set(r)
    assert set(r["tasks"]) == set(synth.TASKS) and r["episodes_per_task"] == 2
    for v in r["tasks"].values():
        assert set(v) == {"interaction", "baseline"}
        # each score is the share of the task's 2 episodes scored right: 0, 1/2 or 1, nothing between
        assert 2 * v["interaction"] in (0, 1, 2) and 2 * v["baseline"] in (0, 1, 2)
    assert r["turn_compute_ms"] > 0 and r["baseline"]["harness"] == "vad"
    assert set(r["tasks_in_session"]) == set(synth.TASKS)
    assert all(2 * v in (0, 1, 2) for v in r["tasks_in_session"].values())


def test_the_suite_scores_the_same_model_identically_on_a_second_run(tiny, suite):
    """Held-out seeds, greedy decoding: a rerun gives the same per-task scores, delegation figures and
    response turns (only the measured compute time may differ; the latency is compared without it)."""
    again = evaluate(model=tiny, episodes=2, baseline=False, in_session=False)
    assert {t: v["interaction"] for t, v in suite["tasks"].items()} == again["tasks"]
    same = ("delegation_precision", "delegation_recall", "turn_taking_responses", "barge_in_stops")
    assert {k: suite[k] for k in same} == {k: again[k] for k in same}

    def when_it_spoke(r: dict) -> float | None:  # each latency adds the measured compute time once
        return None if r["turn_taking_ms_p50"] is None else r["turn_taking_ms_p50"] - r["turn_compute_ms"]

    a, b = when_it_spoke(suite), when_it_spoke(again)
    assert (a is None) == (b is None) and (a is None or abs(a - b) < 0.2)  # the figures are rounded


@pytest.mark.parametrize("task", synth.TASKS)
def test_an_in_session_episode_follows_another_task_and_its_targets_score_as_right_on_its_own_turns(task):
    for ep in in_session_episodes(4, synth.ModelConfig())[task]:
        off = ep.expect["offset"]
        assert ep.task == task and off == synth.EPISODE_TURNS and ep.turns == 2 * synth.EPISODE_TURNS
        assert ep.inputs[off].text == synth.episode(ep.seed, task).inputs[0].text
        assert score(ep, oracle_transcript(ep)[off:])
