"""The engine interface: chat messages + tool schemas in, a stream of text deltas and tool calls out.

Every engine (`local`, `openai`, `vllm`) implements `Engine.stream(request)`, an async iterator of
`EngineEvent`s that ends with exactly one `done` event (or raises `EngineError`); breaking out of
the iterator (or cancelling the task that reads it) stops generation promptly.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

Message = dict[str, Any]  # OpenAI chat message: {"role": ..., "content": ..., "tool_calls"?, "tool_call_id"?}
ToolChoice = Literal["auto", "required", "none"]


class EngineError(Exception):
    """An engine failed (server unreachable, model not loadable, bad response); `code` is stable."""

    def __init__(self, code: str, message: str, retryable: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable


@dataclass
class ToolCallRequest:
    """One tool call the model asked for; `arguments` is JSON text after repair."""

    call_id: str
    name: str
    arguments: str


@dataclass
class GenerateRequest:
    """One LLM step. `tools` are OpenAI function-tool entries (from `Registry.schemas`)."""

    messages: list[Message]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float = 0.0       # request start → first generated token (or first byte of output)
    total_ms: float = 0.0


@dataclass
class EngineEvent:
    """`text`: an answer-text delta; `tool_call`: one complete tool call; `done`: end of the step."""

    kind: Literal["text", "tool_call", "done"]
    text: str = ""
    tool_call: ToolCallRequest | None = None
    usage: Usage | None = None
    finish_reason: str = ""


class Engine(abc.ABC):
    """A chat model. Implementations must be safe to call from several asyncio tasks at once
    (they may serialize internally) and must stop generating when the reader stops reading."""

    name: str = "engine"
    # tool_choice of a task's first step when its package allows tools and does not say otherwise
    default_tool_choice: ToolChoice = "auto"
    # tool_choice of the steps after a tool result ("none": answer from the results, no second round)
    followup_tool_choice: ToolChoice = "auto"

    @abc.abstractmethod
    def stream(self, request: GenerateRequest) -> AsyncIterator[EngineEvent]:
        """Generate one step; yields text deltas / tool calls, then one `done` event."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load weights / open connections (idempotent)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources (idempotent)."""

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name}
