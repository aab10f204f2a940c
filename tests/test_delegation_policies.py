"""Delegation policies: one interface, loaded by name or as objects; each built-in decides as documented."""

from __future__ import annotations

import pytest

from delegation import (
    Delegation,
    ModelTokenPolicy,
    PolicyError,
    RulePolicy,
    ThresholdPolicy,
    TurnState,
    load_policy,
    policy_names,
)


class Recorder:
    """A user's own policy: delegates everything it sees, records hooks."""

    def __init__(self, tag: str = "") -> None:
        self.tag, self.steers, self.cancels = tag, [], []

    def decide(self, state):
        return Delegation(task=state.utterance or "x", confidence=0.9)

    def on_steer(self, task_id, text):
        self.steers.append((task_id, text))

    def on_cancel(self, task_id, reason):
        self.cancels.append((task_id, reason))


def final(text: str, **kw) -> TurnState:
    return TurnState(turn=kw.pop("turn", 5), utterance=text, utterance_final=True, **kw)


def test_every_registered_name_loads_a_policy_with_decide_and_hooks():
    for name in policy_names():
        p = load_policy(name)
        assert all(callable(getattr(p, m)) for m in ("decide", "on_steer", "on_cancel"))


def test_a_ready_policy_object_is_used_as_is():
    r = Recorder()
    assert load_policy(r) is r


def test_a_policy_class_and_a_module_path_load_with_their_options():
    assert load_policy(Recorder, tag="a").tag == "a"
    assert load_policy("test_delegation_policies:Recorder", tag="b").tag == "b"


def test_an_unknown_policy_name_raises_a_policy_error_listing_the_known_ones():
    with pytest.raises(PolicyError, match="telepathy") as err:
        load_policy("telepathy")
    assert policy_names() and all(name in str(err.value) for name in policy_names())


def test_options_given_with_a_ready_object_are_refused():
    with pytest.raises(PolicyError):
        load_policy(Recorder(), tag="x")


def test_model_token_policy_delegates_only_when_the_model_emitted_the_token():
    p = ModelTokenPolicy()
    assert p.decide(final("what's the weather")) is None
    d = p.decide(final("what's the weather", controls=["delegate"], delegate_task="weather in Paris"))
    assert d is not None and d.task == "weather in Paris"


def test_model_token_policy_does_not_repeat_a_task_on_adjacent_turns():
    p = ModelTokenPolicy(dedupe_turns=10)
    s = dict(controls=["delegate"], delegate_task="weather")
    got = [p.decide(final("", turn=t, **s)) is not None for t in (1, 2, 11)]
    assert got == [True, False, True]


def test_rule_policy_delegates_matching_completed_utterances_only():
    p = RulePolicy()
    assert p.decide(final("please look up the opening hours")) is not None
    assert p.decide(TurnState(utterance="please look up the opening hours", utterance_final=False)) is None
    assert p.decide(final("I had a lovely day")) is None


def test_a_bad_intent_pattern_is_refused_with_a_policy_error():
    with pytest.raises(PolicyError):
        RulePolicy(patterns=["(unclosed"])


def test_never_refuses_and_always_delegates_every_completed_utterance():
    never, always = load_policy("never"), load_policy("always")
    states = [final("hello"), final("book a flight"), TurnState(utterance="half", utterance_final=False)]
    assert [never.decide(s) for s in states] == [None, None, None]
    assert [always.decide(s) is not None for s in states] == [True, True, False]


def test_threshold_wrapper_drops_decisions_below_the_confidence():
    p = load_policy("threshold", inner="always", threshold=0.6)
    assert p.decide(final("x", confidence=0.59)) is None
    assert p.decide(final("x", confidence=0.6)).confidence == 0.6
    assert p.decide(final("x")) is None  # no confidence known: conservative


def test_threshold_wrapper_passes_steer_and_cancel_to_the_wrapped_policy():
    inner = Recorder()
    p = ThresholdPolicy(inner=inner, threshold=0.1)
    p.on_steer("t1", "in celsius")
    p.on_cancel("t1", "user")
    assert (inner.steers, inner.cancels) == ([("t1", "in celsius")], [("t1", "user")])


def test_a_policy_spec_can_be_a_mapping_with_its_options():
    p = load_policy({"policy": "threshold", "inner": "rule", "threshold": 0.3})
    assert p.name == "threshold(rule,0.3)"


def test_first_of_lets_the_model_decide_and_a_rule_back_it_up_once_per_request():
    p = load_policy("first_of", policies=["model_token", "rule"])
    backup = p.decide(final("what's the weather in Oslo?", turn=3))
    assert backup is not None and backup.reason.startswith("rule")
    # the model emits its own <delegate> for the same request two turns later: not sent twice
    again = p.decide(TurnState(turn=5, controls=["delegate"], delegate_task="weather Oslo", active_tasks=["t1"]))
    assert again is None
    model = p.decide(TurnState(turn=30, controls=["delegate"], delegate_task="weather Rome"))
    assert model is not None and model.task == "weather Rome"


def test_first_of_drops_the_models_late_token_for_a_request_the_rule_already_answered():
    p = load_policy("first_of", policies=["model_token", "rule"])
    ask = "what's the weather in Oslo?"
    assert p.decide(final(ask, turn=3)) is not None  # the rule, when the transcript arrives
    late = TurnState(turn=29, utterance=ask, controls=["delegate"], delegate_task="weather Oslo")  # its task done
    assert p.decide(late) is None
    later = TurnState(turn=60, utterance="and in Rome?", controls=["delegate"], delegate_task="weather Rome")
    assert p.decide(later) is not None


def test_the_model_token_policy_forgets_tasks_older_than_its_dedupe_window():
    from delegation import ModelTokenPolicy, TurnState

    p = ModelTokenPolicy(dedupe_turns=10)
    for turn in range(0, 2000, 20):  # 100 distinct tasks, each long past the window by the next
        assert p.decide(TurnState(turn=turn, controls=["delegate"], delegate_task=f"task {turn}")) is not None
    assert len(p._recent) <= 65
    assert p.decide(TurnState(turn=1985, controls=["delegate"], delegate_task="task 1980")) is None  # still deduped
