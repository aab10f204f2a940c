"""The delegation scenarios of `eval fdbench` (interplay/fdbench/delegation.py): the counting on synthetic
transcripts, the slow tool's table, the user's timing rules and the pipecat tool-call proxy's stream. No
server, no model here except in the test marked slow, which streams real scenarios to the cascade."""

from __future__ import annotations

import json

import pytest

from interplay.fdbench import delegation as D
from interplay.fdbench import slow_weather as W
from interplay.fdbench.tool_proxy import ToolProxy, sse_tool_call
from interplay.fdbench.userplan import SR, Plan


def _heard(*regions: tuple[float, str]) -> list[D.Heard]:
    return [D.Heard(t, t + 2.0, text) for t, text in regions]


def test_a_result_said_once_after_it_came_back_counts_as_voiced_once():
    (got,) = D.outcomes(_heard((3.0, "Let me check."), (9.0, "In Berlin, snow, minus three degrees.")),
                        [("Berlin", 8.0)])
    assert got["voiced_once"] and not got["lost"] and not got["voiced_twice"], got


def test_a_result_said_again_later_counts_as_voiced_twice():
    (got,) = D.outcomes(_heard((9.0, "In Berlin, snow."), (20.0, "The weather in Berlin is snow.")),
                        [("Berlin", 8.0)])
    assert got["voiced_twice"] and got["voiced"] == 2, got


def test_a_result_never_said_is_lost():
    (got,) = D.outcomes(_heard((9.0, "Elephants can not jump."),), [("Berlin", 8.0)])
    assert got["lost"] and got["to_voiced_ms"] is None, got


def test_a_call_that_never_returned_is_a_lost_result():
    (got,) = D.outcomes(_heard((9.0, "In Berlin, snow."),), [("Berlin", None)])
    assert got["lost"] and not got["returned"], got


def test_the_city_and_its_temperature_without_the_condition_count_as_a_voicing():
    assert D.voicings("In Berlin. So minus 3 degrees.", "Berlin") == 1


def test_condition_and_temperature_said_together_are_one_voicing():
    assert D.voicings("The weather in Berlin is snow, minus three degrees.", "Berlin") == 1


def test_a_result_split_over_two_close_regions_is_read_as_one_phrase():
    regions = [D.Heard(23.8, 24.4, "in Paris."), D.Heard(24.6, 26.0, "Storm 16 degrees")]
    (phrase,) = D.phrases(regions, cities=("Paris",))
    assert D.voicings(phrase.text, "Paris") == 1 and phrase.start == 23.8


def test_the_phrase_starts_where_the_result_is_named_not_at_the_acknowledgement_before_it():
    regions = [D.Heard(10.0, 10.6, "Let me check."), D.Heard(10.9, 12.5, "In London, rain.")]
    (phrase,) = D.phrases(regions, cities=("London",))
    assert phrase.start == 10.9


def test_the_city_without_its_condition_is_not_a_voicing():
    (got,) = D.outcomes(_heard((9.0, "Let me check the weather in Berlin for you.")), [("Berlin", 8.0)])
    assert got["lost"], got


def test_a_voicing_belongs_to_the_latest_result_of_its_city_that_was_ready():
    first, second = D.outcomes(_heard((10.0, "In Chicago, sunshine."), (25.0, "In Chicago, sunshine.")),
                               [("Chicago", 9.0), ("Chicago", 23.0)])
    assert first["voiced_once"] and second["voiced_once"], (first, second)


def test_result_to_voiced_is_the_onset_of_the_voicing_minus_the_return():
    (got,) = D.outcomes(_heard((10.25, "In London, rain, eleven degrees.")), [("London", 8.0)])
    assert got["to_voiced_ms"] == 2250.0, got


def test_a_question_asked_while_the_tool_runs_and_left_unanswered_is_a_blocked_turn():
    turns = [(0.6, 2.4, False), (5.0, 7.0, True)]
    blocked, asked = D.blocked_turns(turns, [(3.0, 12.0)], _heard((12.5, "In London, rain.")), ["London"])
    assert (blocked, asked) == (1, 1)


def test_a_question_answered_while_the_tool_runs_is_not_blocked():
    turns = [(0.6, 2.4, False), (5.0, 7.0, True)]
    blocked, asked = D.blocked_turns(turns, [(3.0, 12.0)], _heard((8.0, "Elephants can swim.")), ["London"])
    assert (blocked, asked) == (0, 1)


def test_the_cancelled_result_is_kept_out_of_the_voiced_and_lost_counts():
    scored = [{"name": "user_speaking", "cities": ["Berlin"], "complete": True,
               "results": D.outcomes(_heard((9.0, "In Berlin, snow.")), [("Berlin", 8.0)])},
              {"name": "cancel", "cities": ["Moscow"], "complete": True,
               "results": D.outcomes(_heard((9.0, "In Moscow, strong wind.")), [("Moscow", 8.0)])}]
    got = D.summarize(scored)
    assert (got["results_voiced_once"], got["results_lost"], got["cancel_voiced"]) == (1, 0, 1), got


def test_every_city_has_its_own_condition_and_a_delay_of_three_to_eight_seconds():
    conditions = [c for c, _ in W.FORECAST.values()]
    assert len(set(conditions)) == len(conditions)
    assert all(3.0 <= W.delay_s(c) <= 8.0 for c in W.FORECAST)


def test_the_slow_tool_waits_its_citys_delay_and_answers_with_city_and_condition():
    import asyncio
    import time

    async def call() -> tuple[str, float]:
        t0 = time.monotonic()
        out = await W.registry().call("weather", json.dumps({"city": "Berlin"}), call_id="c1")
        return out.content, time.monotonic() - t0

    content, took = asyncio.run(call())
    assert "Berlin" in content and "snow" in content and took >= W.delay_s("Berlin") - 0.05, (content, took)


def test_the_story_is_placed_to_start_before_the_tool_is_due_back():
    plan = Plan(request_end=SR * 2, steps=[("due", -1.5, SR * 4)], delay_s=4.0, tool_wait_s=10.0,
                barge_wait_s=4.0, tail_s=12.0)
    plan.tool_seen(SR * 3, 4.0)
    assert plan.next_start(SR * 3) == SR * 3 + int(2.5 * SR)


def test_without_a_tool_call_the_user_goes_on_after_the_wait():
    plan = Plan(request_end=SR * 2, steps=[("start", 1.0, SR)], delay_s=4.0, tool_wait_s=10.0,
                barge_wait_s=4.0, tail_s=12.0)
    assert plan.next_start(SR * 5) is None and plan.next_start(SR * 12) == SR * 13


def test_the_proxy_streams_a_tool_call_with_its_name_once_and_the_arguments_as_deltas():
    call = {"id": "call_1", "function": {"name": "weather", "arguments": '{"city": "Berlin"}'}}
    chunks = [json.loads(c[len(b"data: "):]) for c in sse_tool_call(call, "m", 1) if c != b"data: [DONE]\n\n"]
    deltas = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    names = [d["function"]["name"] for d in deltas if "name" in d["function"]]
    args = "".join(d["function"].get("arguments", "") for d in deltas)
    assert names == ["weather"] and json.loads(args) == {"city": "Berlin"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_the_proxy_asks_for_a_choice_only_when_tools_are_offered_and_no_result_just_came():
    proxy = ToolProxy("http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1")
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    user = [{"role": "user", "content": "what is the weather in Berlin"}]
    result = [*user, {"role": "tool", "tool_call_id": "c", "content": "In Berlin, snow."}]
    assert [proxy.route({"messages": user, "tools": tools}), proxy.route({"messages": user}),
            proxy.route({"messages": result, "tools": tools})] == ["choose", "talk", "talk"]


def test_quick_leaves_the_delegation_scenarios_out_and_the_full_run_has_all_five():
    from interplay.fdbench.run import FdbenchConfig, scenario_names

    assert scenario_names(FdbenchConfig(quick=True)) == ()
    assert scenario_names(FdbenchConfig()) == tuple(D.SCENARIOS) and len(D.SCENARIOS) == 5


@pytest.mark.slow
def test_the_cascade_voices_the_slow_tools_result_in_the_live_scenario(tmp_path):
    from interplay.fdbench.run import FdbenchConfig, evaluate

    result, _ = evaluate(FdbenchConfig(backends=("cascade",), categories=(), delegation=("follow_up",),
                                       concurrency=1, out_dir=None))
    figures = result["backends"]["cascade"]
    assert figures["results_ready"] >= 1 and figures["results_voiced_once"] + figures["results_voiced_twice"] >= 1, \
        figures


# ---- fdbench.png's delegation panel and the repeated scenarios ----------------------------------------------
def _figures(once: int, twice: int, lost: int, p50: float | None, blocked: int, asked: int) -> dict:
    return {"results_voiced_once": once, "results_voiced_twice": twice, "results_lost": lost,
            "result_to_voiced_ms_p50": p50, "blocked_turns": blocked, "delegation_turns_asked_during_call": asked}


def _result(delegation: bool = True, repeats: int = 1) -> dict:
    """run.evaluate's result as outputs.plot reads it: native, cascade and pipecat with its two tool settings."""
    timing = {"pause_takeover_rate": 0.5, "turn_taking_takeover_rate": 1.0, "interruption_takeover_rate": 0.5,
              "turn_taking_latency_ms_p50": 800.0, "interruption_stop_ms_p50": 300.0,
              "interruption_response_ms_p50": None}
    backends = {"native": {**timing}, "cascade": {**timing},
                "pipecat": {**timing, "pipecat_version": "1.14.0"}}
    if delegation:
        backends["native"].update(_figures(0, 0, 7, None, 0, 4))
        backends["cascade"].update(_figures(5, 1, 0, 5688.0, 2, 3))
        backends["pipecat"].update(_figures(0, 0, 8, None, 0, 0), delegation_setting="sync",
                                   delegation_start_s=3.2, delegation_async=_figures(1, 2, 8, 6080.0, 4, 4))
    return {"backends": backends, "episodes_per_category": 2, "concurrency": 3,
            "delegation_scenarios": D.about(list(D.SCENARIOS) if delegation else [], quick=not delegation,
                                            repeats=repeats)}


def _delegation_axes(fig):
    return next(ax for ax in fig.axes if ax.get_title().startswith("delegation scenarios"))


def test_the_plot_shows_delegation_counts_per_system_when_the_scenarios_ran(tmp_path):
    from interplay.fdbench.outputs import plot

    fig = plot(_result(), tmp_path / "fdbench.png")
    ax = _delegation_axes(fig)
    heights = [p.get_height() for p in ax.patches]  # bottom up: once per system, then twice, then lost
    assert (tmp_path / "fdbench.png").stat().st_size > 0 and len(fig.axes) == 3
    assert heights == [0, 5, 0, 1, 0, 1, 0, 2, 7, 0, 8, 8], heights


def test_pipecats_second_tool_setting_is_its_own_bar_labelled_with_the_setting(tmp_path):
    from interplay.fdbench.outputs import plot

    ax = _delegation_axes(plot(_result(), tmp_path / "fdbench.png"))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["native", "cascade", "pipecat 1.14.0 sync",
                                                            "pipecat 1.14.0 async"]


def test_each_bar_carries_its_result_to_voiced_p50_and_blocked_turns_and_na_when_none_was_heard(tmp_path):
    from interplay.fdbench.outputs import plot

    ax = _delegation_axes(plot(_result(), tmp_path / "fdbench.png"))
    assert [t.get_text() for t in ax.texts] == ["p50 n/a\nblocked 0 / 4", "p50 5688 ms\nblocked 2 / 3",
                                                "p50 n/a\nblocked 0 / 0", "p50 6080 ms\nblocked 4 / 4"]


def test_the_delegation_panel_says_how_many_times_each_scenario_ran(tmp_path):
    from interplay.fdbench.outputs import plot

    ax = _delegation_axes(plot(_result(repeats=3), tmp_path / "fdbench.png"))
    assert "(each run 3x)" in ax.get_title()


def test_the_quick_result_without_delegation_figures_plots_the_two_panels_and_no_empty_bar(tmp_path):
    from interplay.fdbench.outputs import plot

    result = _result(delegation=False)
    for b in result["backends"].values():  # as the table reads them: the keys there, null
        b.update(dict.fromkeys(("results_voiced_once", "results_lost", "results_voiced_twice",
                                "result_to_voiced_ms_p50", "blocked_turns")))
    fig = plot(result, tmp_path / "fdbench.png")
    assert (tmp_path / "fdbench.png").stat().st_size > 0 and len(fig.axes) == 2
    assert not any(ax.get_title().startswith("delegation") for ax in fig.axes)


def _scenario(name: str) -> D.Scenario:
    import numpy as np

    return D.Scenario(name, D.SCENARIOS[name], np.zeros(SR // 10, np.float32), [],
                      seed=4000 + list(D.SCENARIOS).index(name))


def test_repeats_run_every_scenario_n_times_round_by_round():
    scs = D.repeated([_scenario(n) for n in D.SCENARIOS], 3)
    assert [s.name for s in scs] == list(D.SCENARIOS) * 3
    assert [s.repeat for s in scs] == [1] * 5 + [2] * 5 + [3] * 5


def test_repeated_runs_have_distinct_session_names_output_folders_and_room_tone():
    scs = D.repeated([_scenario(n) for n in D.SCENARIOS], 3)
    assert len({s.run_name for s in scs}) == len({s.episode().name for s in scs}) == len({s.seed for s in scs}) == 15
    assert scs[5].run_name == "user_speaking-r2" and scs[5].episode().name == "delegation-user_speaking-r2"


def test_one_repeat_leaves_the_scenarios_names_and_seeds_as_they_were():
    scs = [_scenario(n) for n in D.SCENARIOS]
    assert D.repeated(scs, 1) == scs and [s.episode().name for s in scs] == [f"delegation-{n}" for n in D.SCENARIOS]


def test_a_repeated_scenario_is_scored_as_its_kind_so_the_counts_cover_every_run():
    scs = D.repeated([_scenario("user_speaking"), _scenario("cancel")], 2)
    scored = [{**sc.describe(), "complete": True,
               "results": D.outcomes(_heard((9.0, f"In {sc.cities[0]}, {W.FORECAST[sc.cities[0]][0]}.")),
                                     [(sc.cities[0], 8.0)])} for sc in scs]
    got = D.summarize(scored)
    assert (got["results_voiced_once"], got["cancels"], got["cancel_voiced"], got["delegation_scenarios"]) == \
        (2, 2, 2, 4), got


def test_the_repeat_count_is_recorded_beside_the_scenarios_in_the_json():
    about = D.about(list(D.SCENARIOS), repeats=4)
    assert about["repeats"] == 4 and about["scenarios"] == list(D.SCENARIOS)


def test_fewer_than_one_repeat_is_refused_before_anything_starts():
    from interplay.client import UserError
    from interplay.fdbench.run import FdbenchConfig, check

    with pytest.raises(UserError, match="--delegation-repeats"):
        check(FdbenchConfig(backends=("cascade",), delegation_repeats=0))


def test_the_cli_passes_delegation_repeats_to_the_run(monkeypatch):
    from typer.testing import CliRunner

    from interplay import cli
    from interplay.fdbench import run

    seen = []

    def fake_main(cfg, progress=None):
        seen.append(cfg)
        return {"backends": {}, "episodes_per_category": 0, "concurrency": 3, "native_over_cascade_latency": None}

    monkeypatch.setattr(run, "fdbench_main", fake_main)
    got = CliRunner().invoke(cli.app, ["eval", "fdbench", "--delegation-repeats", "3", "--out", "x"])
    assert got.exit_code == 0, got.output
    assert [c.delegation_repeats for c in seen] == [3]
