"""The research harness: shipped scenarios replay deterministically on a virtual clock and score sensibly."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from delegation.harness import SCORE_KEYS, run_scenario
from delegation.scenario import Scenario, ScenarioError, default_scenario_dir, load_scenario, load_scenarios

SCENARIOS = {s.name: s for s in load_scenarios()}


def test_at_least_a_dozen_scenarios_ship_and_all_load():
    assert len(list(default_scenario_dir().glob("*.json"))) >= 12
    assert len(SCENARIOS) >= 12


def test_the_harness_gives_identical_scores_for_the_same_seed_twice():
    for sc in SCENARIOS.values():
        a = run_scenario("model_token", sc, seed=11)
        b = run_scenario("model_token", sc, seed=11)
        assert json.dumps(a.scores, sort_keys=True) == json.dumps(b.scores, sort_keys=True), sc.name


def test_the_harness_scores_can_differ_between_seeds():
    sc = SCENARIOS["slow_background"]
    distinct = {json.dumps(run_scenario("rule", sc, seed=s).scores, sort_keys=True) for s in range(5)}
    assert len(distinct) > 1


def test_every_delegation_of_every_shipped_scenario_settles_exactly_once():
    for sc in SCENARIOS.values():
        for policy in ("always", "model_token"):
            res = run_scenario(policy, sc, seed=0)
            assert res.scores["unsettled"] == 0
            assert len(res.settlements) == res.scores["delegations"], (sc.name, policy)


def test_the_harness_never_sleeps(monkeypatch):
    def no_sleep(*_a, **_k):
        raise AssertionError("the harness slept")

    monkeypatch.setattr(time, "sleep", no_sleep)
    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    res = run_scenario("always", SCENARIOS["long_session"], seed=0)
    assert res.turns > 300


def test_a_result_barged_in_over_is_redelivered_and_still_answers_the_question():
    res = run_scenario("rule", SCENARIOS["barge_in_on_result"], seed=0, trace=True)
    assert res.scores["redeliveries"] >= 1
    assert res.scores["answered_rate"] == 1.0
    assert any(e["event"] == "interrupted" for e in res.trace)


def test_cancelling_a_running_task_settles_it_cancelled_and_counts_its_work_as_wasted():
    res = run_scenario("rule", SCENARIOS["cancel_midway"], seed=0)
    assert list(res.settlements.values()).count("cancelled") == 1
    assert res.scores["cancelled_tasks"] == 1 and res.scores["wasted_background_s"] > 0


def test_the_never_policy_delegates_nothing_and_answers_no_lookup():
    res = run_scenario("never", SCENARIOS["multi_question"], seed=0)
    assert (res.scores["delegations"], res.scores["answered_rate"]) == (0, 0.0)


def test_delegating_small_talk_is_scored_as_unnecessary_wasted_work():
    res = run_scenario("always", SCENARIOS["chit_chat_only"], seed=0)
    assert res.scores["unnecessary_delegations"] == res.scores["delegations"] > 0
    assert res.scores["wasted_background_s"] > 0


def test_an_interrupt_mode_result_is_voiced_over_a_talking_user():
    res = run_scenario("rule", SCENARIOS["timer_alert"], seed=0)
    assert res.scores["voiced_over_user"] >= 1


def test_a_run_reports_every_score_key():
    res = run_scenario("rule", SCENARIOS["weather_simple"], seed=0)
    assert set(SCORE_KEYS) <= set(res.scores)


def test_a_bad_scenario_field_gives_an_error_naming_the_field(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"name": "bad", "utterances": [{"say": "hi", "intent": "dance"}]}))
    with pytest.raises(ScenarioError, match="utterances.0.intent"):
        load_scenario(p)


def test_a_scenario_file_that_is_not_json_gives_a_scenario_error(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{nope")
    with pytest.raises(ScenarioError, match="not valid JSON"):
        load_scenario(p)


def test_utterance_placement_options_are_mutually_exclusive():
    with pytest.raises(ScenarioError, match="at most one"):
        Scenario.from_dict({"name": "x", "utterances": [{"say": "hi", "at": 1, "gap": 2}]})
