"""What `interplay bench faults` plants in the background side: misbehaving tools and a scripted engine.

The tools misbehave the way real ones do: an `async def` that blocks its thread (`time.sleep`), a
sync function that hangs past its timeout, a tool whose upstream error carries its API key, a tool
that returns its key, a tool that takes numbers (the engine sends it what no schema expects).

`FaultEngine` stands in for the LLM, and only for this bench: the fault suite needs exact, hostile
tool calls on demand (a 5,000-digit integer, JSON nested 20,000 deep, the same hung tool 20 times),
which no model produces reliably. A task whose text holds a JSON object `{"calls": [{"tool": NAME,
"arguments": TEXT}, ...]}` gets those calls as its first step; the next step answers with what the
tools said. Any other task is answered "ok". Every other part of the runtime under test is real.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from background_actor.engine import Engine, EngineEvent, GenerateRequest, ToolCallRequest, Usage
from tools import Registry, ToolContext, tool

SECRET_NAME = "fault_api_key"


@tool(timeout_s=1.0)
async def fault_block_async(seconds: float = 5.0) -> str:
    """An async tool that blocks its thread (a sync client inside async code).

    Args:
        seconds: How long it blocks.
    """
    time.sleep(min(seconds, 30.0))  # noqa: ASYNC251 - the fault under test
    return "unblocked"


@tool(timeout_s=0.5, max_concurrency=32)
def fault_hang_sync(seconds: float = 5.0) -> str:
    """A sync tool that hangs past its timeout (a socket read that never returns).

    Args:
        seconds: How long it hangs.
    """
    time.sleep(min(seconds, 30.0))
    return "woke up"


@tool(secrets=(SECRET_NAME,))
def fault_leaky_error(context: ToolContext) -> str:
    """A tool whose upstream error message carries the API key it sent."""
    key = context.secret(SECRET_NAME)
    raise RuntimeError(f"upstream said 401 for Authorization: Bearer {key}")


@tool(secrets=(SECRET_NAME,))
def fault_leaky_result(context: ToolContext) -> str:
    """A tool that returns the API key it used inside its result."""
    return f"used key {context.secret(SECRET_NAME)} to fetch: 21 C"


@tool
def fault_numbers(values: list[int]) -> str:
    """Add numbers.

    Args:
        values: The numbers.
    """
    return str(sum(values))


@tool(timeout_s=5.0)
async def fault_slow(seconds: float = 1.0) -> str:
    """A well-behaved slow tool (awaits; used while a background actor is killed).

    Args:
        seconds: How long it takes.
    """
    await asyncio.sleep(min(seconds, 30.0))
    return "slow answer"


def fault_registry() -> Registry:
    return Registry([fault_block_async, fault_hang_sync, fault_leaky_error, fault_leaky_result, fault_numbers,
                     fault_slow], name="faults")


def script(*calls: tuple[str, str]) -> str:
    """A task text that makes FaultEngine call these (tool, arguments text) pairs."""
    return json.dumps({"calls": [{"tool": t, "arguments": a} for t, a in calls]})


def _calls(text: str) -> list[dict]:
    start = text.find("{")
    if start < 0:
        return []
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        return []
    return list(obj.get("calls", [])) if isinstance(obj, dict) else []


class FaultEngine(Engine):
    """The scripted stand-in for the LLM (see the module docstring)."""

    name = "faults"
    default_tool_choice = "auto"
    followup_tool_choice = "none"

    def __init__(self, **_options: object) -> None:
        pass

    async def stream(self, request: GenerateRequest) -> AsyncIterator[EngineEvent]:
        said = [m.get("content") or "" for m in request.messages if m.get("role") == "tool"]
        if said:
            yield EngineEvent("text", text="tools said: " + " | ".join(s[:200] for s in said))
        else:
            task = next((m.get("content") or "" for m in request.messages if m.get("role") == "user"), "")
            calls = _calls(task)
            for i, call in enumerate(calls):
                yield EngineEvent("tool_call", tool_call=ToolCallRequest(
                    call_id=f"call-{i}", name=str(call.get("tool", "")), arguments=str(call.get("arguments", "{}"))))
            if not calls:
                yield EngineEvent("text", text="ok")
        yield EngineEvent("done", usage=Usage(prompt_tokens=1, completion_tokens=1), finish_reason="stop")

    def describe(self) -> dict:
        return {"engine": self.name}
