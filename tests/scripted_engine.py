"""A scripted engine for tests whose property is about the tool path, not the model: the task text
is a JSON script `{"tool": NAME, "arguments": TEXT}`; the first step asks for that one tool call with
exactly that arguments text (so a test can send what no model would: 5,000-digit integers, nesting
20,000 deep), and the next step answers with the tool message the engine received, verbatim, so the
final answer shows exactly what went back into the model's input. Anything else is answered "ok".

The one stand-in of these tests: every other part (gRPC server, task manager, agent loop, registry,
worker pool, Ray actor) is the real one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from background_actor.engine import Engine, EngineEvent, GenerateRequest, ToolCallRequest, Usage


class ScriptedEngine(Engine):
    name = "scripted"
    default_tool_choice = "auto"
    followup_tool_choice = "none"

    def __init__(self) -> None:
        self.seen: list[list[dict]] = []  # the messages of every step (in-process tests read them)

    async def stream(self, request: GenerateRequest) -> AsyncIterator[EngineEvent]:
        self.seen.append([dict(m) for m in request.messages])
        tool_msgs = [m for m in request.messages if m.get("role") == "tool"]
        if tool_msgs:
            yield EngineEvent("text", text="TOOL SAID: " + tool_msgs[-1]["content"])
        else:
            task = next((m["content"] for m in request.messages if m.get("role") == "user"), "")
            try:
                script = json.loads(task.split(" — ")[0])
            except ValueError:
                script = None
            if isinstance(script, dict) and "tool" in script:
                yield EngineEvent("tool_call", tool_call=ToolCallRequest(
                    call_id=script.get("call_id", "call-1"), name=script["tool"],
                    arguments=script.get("arguments", "{}")))
            else:
                yield EngineEvent("text", text="ok")
        yield EngineEvent("done", usage=Usage(prompt_tokens=1, completion_tokens=1), finish_reason="stop")


def make_scripted_engine() -> ScriptedEngine:
    return ScriptedEngine()


def script(tool: str, arguments: str | dict) -> str:
    """The task text that makes the engine call `tool` with `arguments` (JSON text sent as is)."""
    return json.dumps({"tool": tool, "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)})
