"""The policy study through replay (interplay.replay.study): the shipped native model, the real
TurnLoop, scheduler and policies, on the virtual clock, over synthetic sessions of several seeds.
The background is the replay's stand-in (the sessions' planned latencies and answers): the
property under test is what the interaction side and the policy do."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from interaction_actor.model.fusion import build_model
from interaction_actor.model.weights import resolve_checkpoint
from interplay.cli import app
from interplay.replay.study import MEASURES, run_replay_study, score_run


@pytest.fixture(scope="module")
def shipped():
    return build_model("small", resolve_checkpoint("small", None), 0)


def test_the_replay_study_reports_every_measure_with_an_interval_over_seeds_and_draws_them(shipped, tmp_path):
    policies = {"never": "never", "model_token": "model_token"}
    result = run_replay_study(shipped, policies, seeds=(0, 1), phrasings=("training",), requests=1,
                              out_dir=tmp_path, synthetic={"gap_turns": (12, 12), "tail_turns": 10})
    assert set(result["policies"]) == set(policies)
    for scores in result["policies"].values():
        for k in MEASURES:
            assert k in scores and len(scores[k + "_ci95"]) == 2
    assert result["policies"]["never"]["delegations"] == 0.0
    assert (tmp_path / "study_replay.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "study.json").read_text())["policies"] == result["policies"]


@pytest.mark.slow  # 16 s: the CLI over the same study run_replay_study is tested on above
def test_interplay_study_replay_json_ends_with_each_policys_measures_and_intervals(tmp_path):
    res = CliRunner().invoke(app, ["study", "--replay", "--quick", "--json", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output.strip().splitlines()[-1])
    thr = data["policies"]["threshold(model_token,0.5)"]
    assert thr["delegations"] > 0 and thr["correct_delegations"] > 0
    assert not math.isnan(thr["delegations_ci95"][0])
    assert data["policies"]["never"]["delegations"] == 0


def test_a_missing_replay_session_file_is_a_one_line_error_before_any_model_loads(tmp_path):
    res = CliRunner().invoke(app, ["study", "--sessions", str(tmp_path / "none.replay.jsonl")])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [f"error: {tmp_path / 'none.replay.jsonl'}: no such replay file"]


def scored(turns: list[dict]) -> dict[str, float]:
    """score_run over hand-written per-turn records (the shape the loop's Recorder writes)."""
    from interplay.replay.format import ReplaySession, header
    from interplay.replay.player import ReplayRun

    reqs = [{"turn": 1, "text": "weather in Oslo?", "needs_background": True, "answer": "Oslo snow, -3 C"}]
    return score_run(ReplayRun("s", "p", turns, ReplaySession(header("s", 200, requests=reqs), turns)))


def turn(t: int, text: str = "", events: tuple = (), updates: tuple = ()) -> dict:
    return {"turn": t, "in": [], "updates": list(updates),
            "out": {"text": text, "controls": [], "user": "silent", "typed": "", "events": list(events)}}


STARTED = {"kind": "EVENT_KIND_DELEGATION_STARTED", "task_id": "a", "origin_turn": "3"}
FINAL = {"task_id": "a", "kind": "UPDATE_KIND_FINAL", "text": "Oslo snow, -3 C"}
VOICED = {"kind": "EVENT_KIND_RESULT_SURFACED", "task_id": "a", "update": "EVENT_UPDATE_FINAL", "voiced": True}


def test_a_result_voiced_on_two_turns_counts_as_voiced_twice_and_its_answer_spoken_once():
    s = scored([turn(0), turn(1), turn(2), turn(3, events=(STARTED,)), turn(6, updates=(FINAL,), events=(VOICED,)),
                turn(7, "Os"), turn(8, "lo snow"), turn(12, events=(VOICED,))])
    assert (s["correct_delegations"], s["results_voiced"], s["results_voiced_twice"], s["answers_spoken"]) == (1, 1, 1, 1)
    assert s["request_to_voiced_ms"] == (7 - 1) * 200


def test_a_final_result_that_arrived_and_was_never_voiced_counts_as_lost():
    s = scored([turn(0), turn(1), turn(3, events=(STARTED,)), turn(6, updates=(FINAL,)), turn(7)])
    assert (s["results_lost"], s["results_voiced"], s["answers_spoken"]) == (1, 0, 0)


def test_the_replay_study_s_held_out_cities_are_named_by_no_training_episode():
    from interaction_actor.training import spoken
    from interplay.replay.sessions import HELD_OUT_CITIES

    trained = {*spoken.CITIES[spoken.TRAIN], *spoken.TYPED_CITIES[spoken.TRAIN]}
    assert HELD_OUT_CITIES and not trained & set(HELD_OUT_CITIES)
