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
