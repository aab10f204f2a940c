"""The JSON action format: schema, tolerant parsing of what small models write, streamed answers."""

from __future__ import annotations

import json

from background_actor.parsing import (
    EXAMPLES,
    AnswerStreamer,
    action_schema,
    example_turns,
    parse_action,
    repair_json,
    to_action_messages,
)
from tools.builtin import default_registry

TOOLS = default_registry(include=("calculator", "clock")).schemas()


def test_the_action_schema_offers_each_tool_and_an_answer():
    schema = action_schema(TOOLS)
    consts = [o["properties"].get("tool", {}).get("const") for o in schema["anyOf"]]
    assert consts == ["calculator", "clock", None]
    assert "answer" in schema["anyOf"][-1]["properties"]


def test_tool_choice_required_leaves_no_answer_option():
    schema = action_schema(TOOLS, "required")
    assert all("tool" in o["properties"] for o in schema["anyOf"])


def test_a_strict_tool_call_is_read_as_written():
    act = parse_action('{"tool": "calculator", "arguments": {"expression": "37*91"}}', TOOLS)
    assert act.calls == [("calculator", '{"expression": "37*91"}')] and not act.repaired


def test_a_call_in_a_code_fence_with_a_trailing_comma_is_repaired():
    text = 'Sure!\n```json\n{"tool": "calculator", "arguments": {"expression": "2+2",},}\n```'
    act = parse_action(text, TOOLS)
    assert act.calls == [("calculator", '{"expression": "2+2"}')] and act.repaired


def test_an_unclosed_call_is_closed():
    act = parse_action('{"tool": "calculator", "arguments": {"expression": "3*4', TOOLS)
    assert act.calls == [("calculator", '{"expression": "3*4"}')]


def test_openai_style_name_and_string_arguments_are_accepted():
    text = json.dumps({"name": "Calculator", "parameters": json.dumps({"expression": "1+1"})})
    assert parse_action(text, TOOLS).calls == [("calculator", '{"expression": "1+1"}')]


def test_single_quoted_python_style_json_is_repaired():
    assert repair_json("{'tool': 'calculator', 'arguments': {'expression': '5-1'}}") == {
        "tool": "calculator", "arguments": {"expression": "5-1"}}


def test_bare_arguments_of_the_only_fitting_tool_become_its_call():
    act = parse_action('{"expression": "9/3"}', TOOLS)
    assert act.calls == [("calculator", '{"expression": "9/3"}')]


def test_an_unknown_tool_name_is_not_turned_into_a_call():
    act = parse_action('{"tool": "weather", "arguments": {}}', TOOLS)
    assert act.calls == []


def test_prose_is_an_answer():
    act = parse_action("The answer is 42.", TOOLS)
    assert act.calls == [] and act.answer == "The answer is 42." and act.repaired


def test_the_streamer_emits_answer_text_as_it_grows_and_decodes_escapes():
    s = AnswerStreamer()
    pieces = [s.push(d) for d in ['{"ans', 'wer": "It is', ' 3367', '\\n\\u00e9', '.", ', '}']]
    assert "".join(pieces) == "It is 3367\né."
    assert pieces[0] == "" and s.done


def test_the_streamer_emits_nothing_for_a_tool_call():
    s = AnswerStreamer()
    assert "".join(s.push(d) for d in ['{"tool": "calculator", ', '"arguments": {"expression": "1"}}']) == ""


def test_tool_turns_are_rewritten_as_plain_turns_with_instructions_in_the_system_prompt():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "37*91?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "37*91"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "3367"}]
    out = to_action_messages(msgs, TOOLS)
    n_examples = len(example_turns(TOOLS))
    assert n_examples > 0 and out[1:1 + n_examples] == example_turns(TOOLS)
    tail = out[1 + n_examples:]
    assert [m["role"] for m in tail] == ["user", "assistant", "user"]
    assert out[0]["content"].startswith("Be brief.") and '"tool": "calculator"' in out[0]["content"]
    assert json.loads(tail[1]["content"]) == {"tool": "calculator", "arguments": {"expression": "37*91"}}
    assert tail[2]["content"] == "Result of calculator: 3367"


def test_worked_examples_use_arguments_their_tool_accepts():
    import jsonschema

    schemas = {e["function"]["name"]: e for e in default_registry().schemas()}
    assert EXAMPLES and all(EXAMPLES.values()) and set(EXAMPLES) <= set(schemas)  # examples of built-in tools
    for name, examples in EXAMPLES.items():
        params = schemas[name]["function"]["parameters"]
        for question, args, _result, _answer in examples:
            jsonschema.validate(args, params)  # names, types and required fields, as the tool will check
            assert parse_action(json.dumps({"tool": name, "arguments": args}), [schemas[name]]).calls == [
                (name, json.dumps(args))], question
