"""Tool calls from small models: a constrained JSON "action" format plus tolerant parsing.

`action_schema(tools)` is the JSON Schema a grammar-constrained engine decodes under: either
`{"tool": <name>, "arguments": {...}}` or `{"answer": "..."}`. `parse_action(text, tools)` reads
that format — and the usual near-misses (code fences, prose around the JSON, single quotes,
trailing commas, unclosed brackets, `name`/`parameters` spellings, arguments as a string) — into
tool calls or an answer. `AnswerStreamer` turns a growing `{"answer": "...` into text deltas.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from background_actor.engine import EngineEvent, ToolCallRequest

ANSWER_KEYS = ("answer", "response", "final", "final_answer", "text", "content", "reply")
TOOL_KEYS = ("tool", "name", "tool_name", "function")
ARG_KEYS = ("arguments", "args", "parameters", "params", "input")


def _function(entry: dict[str, Any]) -> dict[str, Any]:
    return entry.get("function", entry)


def tool_names(tools: list[dict[str, Any]]) -> list[str]:
    return [_function(t)["name"] for t in tools]


def action_schema(tools: list[dict[str, Any]], tool_choice: str = "auto") -> dict[str, Any]:
    """JSON Schema of one action: a call of one of `tools` (OpenAI entries) or a final answer."""
    options: list[dict[str, Any]] = []
    if tool_choice != "none":
        for entry in tools:
            fn = _function(entry)
            params = dict(fn.get("parameters") or {"type": "object", "properties": {}})
            options.append({"type": "object",
                            "properties": {"tool": {"const": fn["name"]}, "arguments": params},
                            "required": ["tool", "arguments"], "additionalProperties": False})
    if tool_choice != "required" or not options:
        options.append({"type": "object", "properties": {"answer": {"type": "string"}},
                        "required": ["answer"], "additionalProperties": False})
    return options[0] if len(options) == 1 else {"anyOf": options}


def action_instructions(tools: list[dict[str, Any]], tool_choice: str = "auto") -> str:
    """System-prompt text that explains the action format and lists the tools."""
    if not tools or tool_choice == "none":
        return 'Reply with one JSON object: {"answer": "<your answer>"}.'
    lines = ["You can use these tools:"]
    for entry in tools:
        fn = _function(entry)
        props = (fn.get("parameters") or {}).get("properties", {})
        args = ", ".join(f'"{k}": <{v.get("type", "value")}>' for k, v in props.items())
        lines.append(f"- {fn['name']}: {fn.get('description', '').strip().splitlines()[0] if fn.get('description') else ''}"
                     f" Call it as {{\"tool\": \"{fn['name']}\", \"arguments\": {{{args}}}}}")
    lines.append("Reply with exactly one JSON object: a tool call as shown above when a tool can help "
                 "(always use the calculator for arithmetic), or {\"answer\": \"<your answer>\"} once you "
                 "have what you need. After a tool result, answer using that result.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- repair

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.S)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def _close_brackets(text: str) -> str:
    """Close an unterminated string and any open brackets, in order."""
    stack: list[str] = []
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    out = text + ('"' if in_str else "")
    out = re.sub(r",\s*$", "", out)
    return out + "".join(reversed(stack))


def _candidates(text: str) -> list[str]:
    s = text.strip()
    outs = [m.group(1).strip() for m in _FENCE.finditer(s)] if "```" in s else []
    start = s.find("{")
    if start >= 0:
        outs.append(s[start:])
        end = s.rfind("}")
        if end > start:
            outs.append(s[start:end + 1])
    outs.append(s)
    return [c for c in dict.fromkeys(outs) if c]


def repair_json(text: str) -> Any | None:
    """Best-effort parse of JSON a model wrote; None when nothing sensible comes out."""
    for cand in _candidates(text):
        variants = [cand, _TRAILING_COMMA.sub(r"\1", cand)]
        if "'" in cand and '"' not in cand:
            variants.append(cand.replace("'", '"'))
        fixed = re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", re.sub(r"\bNone\b", "null", variants[-1])))
        variants.append(fixed)
        variants.append(_close_brackets(_TRAILING_COMMA.sub(r"\1", fixed)))
        for v in variants:
            try:
                return json.loads(v)
            except (json.JSONDecodeError, ValueError):
                pass
            try:  # JSON followed by chatter: take the first complete value
                return json.JSONDecoder().raw_decode(v)[0]
            except (json.JSONDecodeError, ValueError):
                continue
    return None


# ----------------------------------------------------------------------------- actions

@dataclass
class Action:
    """What one model step decided: tool calls (name, JSON arguments) and/or answer text."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    answer: str = ""
    repaired: bool = False  # the text was not valid JSON of the expected shape as written


def _match_name(name: Any, names: list[str]) -> str | None:
    if not isinstance(name, str):
        return None
    if name in names:
        return name
    low = {n.lower(): n for n in names}
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    return low.get(key) or low.get(key.removeprefix("functions.")) or None


def _args_json(args: Any) -> str:
    if isinstance(args, str):
        parsed = repair_json(args)
        args = parsed if isinstance(parsed, dict) else {}
    if not isinstance(args, dict):
        args = {}
    return json.dumps(args, ensure_ascii=False)


def _from_object(obj: dict[str, Any], names: list[str], params: dict[str, set[str]]) -> Action | None:
    if "tool_call" in obj and isinstance(obj["tool_call"], dict):
        return _from_object(obj["tool_call"], names, params)
    if "tool_calls" in obj and isinstance(obj["tool_calls"], list):
        calls = [a.calls[0] for c in obj["tool_calls"] if isinstance(c, dict)
                 if (a := _from_object(c, names, params)) and a.calls]
        if calls:
            return Action(calls=calls)
    for key in TOOL_KEYS:
        raw = obj.get(key)
        if isinstance(raw, dict) and "name" in raw:  # {"function": {"name":..., "arguments":...}}
            return _from_object(raw, names, params)
        name = _match_name(raw, names)
        if name:
            args = next((obj[k] for k in ARG_KEYS if k in obj), None)
            if args is None:  # arguments written inline: {"tool": "calculator", "expression": "..."}
                args = {k: v for k, v in obj.items() if k in params.get(name, set())}
            return Action(calls=[(name, _args_json(args))])
    for key in ANSWER_KEYS:
        if isinstance(obj.get(key), str):
            return Action(answer=obj[key])
    # bare arguments of the only tool that takes them: {"expression": "2+2"}
    fits = [n for n in names if params.get(n) and set(obj) and set(obj) <= params[n]]
    if len(fits) == 1:
        return Action(calls=[(fits[0], _args_json(obj))])
    return None


def parse_action(text: str, tools: list[dict[str, Any]]) -> Action:
    """Read a model's step output as tool calls or an answer (see module docstring)."""
    names = tool_names(tools)
    params = {_function(t)["name"]: set((_function(t).get("parameters") or {}).get("properties", {}))
              for t in tools}
    strict = None
    with contextlib.suppress(json.JSONDecodeError, ValueError):
        strict = json.loads(text)
    obj = strict if strict is not None else repair_json(text)
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        obj = {"tool_calls": obj}
    if isinstance(obj, dict):
        act = _from_object(obj, names, params)
        if act is not None:
            act.repaired = strict is None
            return act
    if isinstance(obj, str):
        return Action(answer=obj, repaired=True)
    return Action(answer=text.strip(), repaired=True)


class AnswerStreamer:
    """Feeds on the growing raw output of a JSON-action step; `push` returns the new answer text.

    Emits only once the output has started `{"answer": "`; decodes JSON escapes as they complete.
    """

    _HEAD = re.compile(r'^\s*\{\s*"answer"\s*:\s*"')

    def __init__(self) -> None:
        self.raw = ""
        self.emitted = 0
        self.done = False

    def push(self, delta: str) -> str:
        self.raw += delta
        if self.done:
            return ""
        m = self._HEAD.match(self.raw)
        if not m:
            return ""
        body = self.raw[m.end():]
        out: list[str] = []
        i = 0
        while i < len(body):
            ch = body[i]
            if ch == '"':
                self.done = True
                break
            if ch == "\\":
                if i + 1 >= len(body):
                    break
                nxt = body[i + 1]
                if nxt == "u":
                    if i + 6 > len(body):
                        break
                    try:
                        out.append(chr(int(body[i + 2:i + 6], 16)))
                    except ValueError:
                        out.append(body[i:i + 6])
                    i += 6
                    continue
                out.append({"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}.get(nxt, nxt))
                i += 2
                continue
            out.append(ch)
            i += 1
        text = "".join(out)
        new = text[self.emitted:]
        self.emitted = len(text)
        return new


def to_action_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                       tool_choice: str = "auto") -> list[dict[str, str]]:
    """OpenAI chat messages (with tool_calls / tool roles) → plain system/user/assistant messages
    for a model that speaks the JSON action format; the format's instructions join the system text."""
    out: list[dict[str, str]] = []
    names: dict[str, str] = {}
    for m in messages:
        role, content = m.get("role"), m.get("content") or ""
        if role == "assistant" and m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                fn = c.get("function", {})
                names[c.get("id", "")] = fn.get("name", "")
                calls.append(json.dumps({"tool": fn.get("name", ""), "arguments": repair_json(fn.get("arguments") or "{}")
                                         or {}}, ensure_ascii=False))
            out.append({"role": "assistant", "content": "\n".join(calls)})
        elif role == "tool":
            name = names.get(m.get("tool_call_id", ""), m.get("name", "tool"))
            out.append({"role": "user", "content": f"Result of {name}: {content}"})
        elif role == "assistant":
            out.append({"role": "assistant", "content": json.dumps({"answer": content}, ensure_ascii=False)})
        else:
            out.append({"role": str(role), "content": str(content)})
    instructions = action_instructions(tools, tool_choice)
    if out and out[0]["role"] == "system":
        out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + instructions}
    else:
        out.insert(0, {"role": "system", "content": instructions})
    out[1:1] = example_turns(tools)
    return out


# Worked examples per tool (question, arguments, result, answer), shown as earlier turns of the chat.
# Small models copy the shape of a shown exchange far more reliably than they follow a description;
# several tools' examples side by side teach which tool fits which question. None of these questions
# is in the bench's prompt set.
EXAMPLES: dict[str, list[tuple[str, dict[str, Any], str, str]]] = {
    "clock": [("What time is it in Tokyo?", {"timezone": "Asia/Tokyo"},
               "Monday 3 March 2025, 09:30:00 JST", "It is 9:30 in the morning in Tokyo.")],
    "calculator": [
        ("What is the square root of 81?", {"expression": "sqrt(81)"}, "9", "The square root of 81 is 9."),
        ("What is 20 percent of 50?", {"expression": "20 / 100 * 50"}, "10", "20 percent of 50 is 10."),
        ("What is 12 times 12?", {"expression": "12 * 12"}, "144", "12 times 12 is 144."),
    ],
}


def example_turns(tools: list[dict[str, Any]]) -> list[dict[str, str]]:
    turns: list[dict[str, str]] = []
    for name in tool_names(tools):
        for question, args, result, answer in EXAMPLES.get(name, []):
            turns += [{"role": "user", "content": question},
                      {"role": "assistant", "content": json.dumps({"tool": name, "arguments": args})},
                      {"role": "user", "content": f"Result of {name}: {result}"},
                      {"role": "assistant", "content": json.dumps({"answer": answer})}]
    return turns


def finish_action(streamer: AnswerStreamer, tools: list[dict[str, Any]], call_prefix: str) -> list[EngineEvent]:
    """Events that close a JSON-action step: its tool calls, or the answer text not yet streamed."""
    act = parse_action(streamer.raw, tools)
    if act.calls:
        return [EngineEvent("tool_call", tool_call=ToolCallRequest(f"{call_prefix}-{i}", name, args))
                for i, (name, args) in enumerate(act.calls)]
    streamed = AnswerStreamer().push(streamer.raw) if streamer.raw else ""
    if streamed and act.answer.startswith(streamed):
        rest = act.answer[len(streamed):]
    else:
        rest = "" if streamed else act.answer
    return [EngineEvent("text", text=rest)] if rest else []
