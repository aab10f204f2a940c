"""The model's tool-call arguments → validated keyword arguments, under size and depth limits.

Contract: `parse_arguments(tool, arguments)` returns the keyword arguments for `tool.run` or raises
`ArgumentError`, whose message is meant for the model (it names the tool, the field or the limit,
and ends with a reminder of the expected shape). Whatever the model sends — text that is not JSON,
JSON that is not an object, an argument of megabytes, nesting thousands deep, an integer of
thousands of digits, a string or a list over its limit — the result is an ArgumentError (→
`invalid_arguments`), never another exception. The limits (`ArgumentLimits`, per tool through
`ToolOptions.argument_limits`) are checked on the raw text before it is parsed (bytes, nesting),
while it is parsed (integer digits) and on the parsed value (strings, items, nodes, depth), so a
hostile argument costs bounded work.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from tools.errors import InvalidArguments

if TYPE_CHECKING:
    from tools.spec import Tool

_LOG10_2 = 0.30103


@dataclass(frozen=True)
class ArgumentLimits:
    """Bounds on one call's arguments (all inclusive)."""

    max_bytes: int = 64_000        # the arguments' JSON text, UTF-8
    max_depth: int = 32            # nesting of objects and arrays (the arguments object is depth 1)
    max_int_digits: int = 64       # decimal digits of any integer
    max_string_chars: int = 32_000  # any one string (keys included)
    max_items: int = 1_000         # entries of any one array or object
    max_nodes: int = 20_000        # values in the whole arguments tree

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_depth", "max_int_digits", "max_string_chars", "max_items", "max_nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"ArgumentLimits.{name} must be >= 1, got {getattr(self, name)!r}")


class ArgumentError(ValueError):
    """Arguments the model sent do not fit the tool; the message is meant for the model."""


class _LimitExceeded(Exception):
    pass


def parse_arguments(tool: Tool, arguments: str | bytes | dict[str, Any] | None) -> dict[str, Any]:
    """Validate raw arguments (JSON text or dict) against the tool's model; ArgumentError on misfit."""
    limits: ArgumentLimits = tool.options.argument_limits
    prefix = f"Invalid arguments for tool '{tool.name}'"
    try:
        if arguments is None or (isinstance(arguments, str | bytes) and not arguments.strip()):
            raw: Any = {}
        elif isinstance(arguments, str | bytes):
            raw = _loads(arguments, limits, prefix, tool)
        else:
            raw = arguments
        if not isinstance(raw, dict):
            raise ArgumentError(
                f"{prefix}: arguments must be a JSON object, got {_json_type(raw)}. {expected_hint(tool)}")
        check_value(raw, limits)
    except _LimitExceeded as exc:
        raise ArgumentError(f"{prefix}: {exc}. Send smaller arguments. {expected_hint(tool)}") from None
    try:
        return tool.validate(raw)
    except ValidationError as exc:
        problems = [_describe_error(tool, err) for err in exc.errors(include_url=False)]
    except InvalidArguments as exc:
        problems = list(exc.problems)
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:  # a validator's own trouble
        problems = [f"the arguments could not be checked ({type(exc).__name__})"]
    raise ArgumentError(f"{prefix}: " + "; ".join(problems[:8]) + f". {expected_hint(tool)}")


def _loads(text: str | bytes, limits: ArgumentLimits, prefix: str, tool: Tool) -> Any:
    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > limits.max_bytes:
        raise _LimitExceeded(f"the arguments are {size} bytes; at most {limits.max_bytes} are accepted")
    depth = json_nesting(text if isinstance(text, str) else text.decode("utf-8", "replace"))
    if depth > limits.max_depth:
        raise _LimitExceeded(f"the arguments are nested {depth} levels deep; at most {limits.max_depth} are accepted")

    def parse_int(digits: str) -> int:
        n = len(digits.lstrip("-"))
        if n > limits.max_int_digits:
            raise _LimitExceeded(f"an integer has {n} digits; at most {limits.max_int_digits} are accepted")
        return int(digits)

    try:
        return json.loads(text, parse_int=parse_int)
    except json.JSONDecodeError as exc:
        raise ArgumentError(
            f"{prefix}: arguments are not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}). "
            f"Send one JSON object. {expected_hint(tool)}") from None
    except (ValueError, RecursionError) as exc:  # bad UTF-8, a too-long number, etc.
        raise ArgumentError(f"{prefix}: arguments are not valid JSON ({type(exc).__name__}). "
                            f"Send one JSON object. {expected_hint(tool)}") from None


_STRUCT_RE = re.compile(r'[\[\]{}"\\]')


def json_nesting(text: str) -> int:
    """The deepest nesting of arrays/objects in JSON text (strings skipped); linear, no recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for m in _STRUCT_RE.finditer(text):
        ch = m.group(0)
        if in_string:
            if escaped:  # the character after a backslash; only reached when it is itself special
                escaped = False
            elif ch == "\\":
                escaped = m.end() < len(text) and text[m.end()] in '"\\'
                # a backslash before an ordinary character escapes it; those are not matched here
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def check_value(value: Any, limits: ArgumentLimits) -> None:
    """Raise _LimitExceeded when a parsed value breaks a limit (iterative: any depth is safe)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            raise _LimitExceeded(f"the arguments hold more than {limits.max_nodes} values")
        if isinstance(node, bool) or node is None or isinstance(node, float):
            continue
        if isinstance(node, int):
            digits = int(abs(node).bit_length() * _LOG10_2) + 1
            if digits > limits.max_int_digits:
                raise _LimitExceeded(f"an integer has about {digits} digits; at most {limits.max_int_digits} "
                                     "are accepted")
        elif isinstance(node, str):
            if len(node) > limits.max_string_chars:
                raise _LimitExceeded(f"a string is {len(node)} characters long; at most "
                                     f"{limits.max_string_chars} are accepted")
        elif isinstance(node, dict | list | tuple):
            if depth > limits.max_depth:
                raise _LimitExceeded(f"the arguments are nested more than {limits.max_depth} levels deep")
            if len(node) > limits.max_items:
                raise _LimitExceeded(f"an {'object' if isinstance(node, dict) else 'array'} has {len(node)} "
                                     f"entries; at most {limits.max_items} are accepted")
            if isinstance(node, dict):
                for k, v in node.items():
                    stack.append((k, depth + 1))
                    stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in node)


def _describe_error(tool: Tool, err: Any) -> str:
    loc = err.get("loc", ())
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    kind = err.get("type", "")
    if kind == "missing":
        return f"field '{path}' is required but missing"
    if kind == "extra_forbidden":
        allowed = ", ".join(tool.parameter_names()) or "none"
        return f"field '{path}' is not a parameter of this tool (parameters: {allowed})"
    got = err.get("input")
    try:
        got_s = json.dumps(got, default=str)[:60] if not isinstance(got, BaseModel) else type(got).__name__
    except (ValueError, RecursionError):
        got_s = type(got).__name__
    return f"field '{path or '(arguments)'}': {err.get('msg', 'invalid value')} (got {got_s})"


def expected_hint(tool: Tool) -> str:
    """A one-line reminder of the parameters, e.g. `Expected: {"a": integer, "b"?: string}`."""
    params = tool.parameters()
    required = set(params.get("required", []))
    parts = []
    for pname, sch in params.get("properties", {}).items():
        typ = sch.get("type") or ("enum" if "enum" in sch else "any" if not sch.get("anyOf") else "|".join(
            str(s.get("type", "object")) for s in sch["anyOf"]))
        parts.append(f'"{pname}"{"" if pname in required else "?"}: {typ}')
    return "Expected: {" + ", ".join(parts) + "}"


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)
