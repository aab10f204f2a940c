"""The reply model: the cascade's language model — the conversation so far in, a short spoken reply out.

Contract. `ReplyModel.reply(messages, stop)` is given OpenAI-style chat messages (the system prompt,
its examples and the session's conversation, newest last) and yields `ReplyEvent`s on the caller's
thread as they come: `text` deltas of the reply, at most one `delegate` with the task the model
handed to the background model (the `delegate(task)` tool), then exactly one `done` (or one `error`).
It blocks its caller — the cascade's reply worker thread, never the turn path — and must stop within
a token or so once `stop` is set. `start()` loads the model (once per backend); `close()` frees it.

`EngineReply` is the implementation: any background engine (background_actor/engines: `local`,
SmolLM2-135M through llama-cpp-python, loaded once; `openai`, any OpenAI-compatible server at a
base_url) driven on a private asyncio loop in a thread of its own, so the engines' streaming,
tool-call parsing (the JSON action format under a grammar for the local model, native tool calls for
a server) and cancellation are the background's own code, not a copy.

Delegation is the model's choice, made with the `delegate` tool under tool_choice "auto". A 135M
model does not choose it from a description alone (measured on this CPU: 0 of 3 weather questions
delegated, and "what is your name" did): the prompt therefore carries a few worked examples
(`EXAMPLES`: other cities, other timers, other chit-chat than any test or bench sentence), after
which it delegates held-out weather requests and answers chit-chat itself (measured: 20 of 20
`measure.HELDOUT_WEATHER` delegated, 0 of 10 `HELDOUT_CHAT`; `measure.delegation_rate`). No pattern on the user's words decides anything here;
the loop's rule policy (delegation/policies.py) remains a separate, explicit opt-in.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from interplay.log import get_logger

log = get_logger("interaction_actor.cascade.reply")

SYSTEM_PROMPT = ("You are a friendly voice assistant. Your words are spoken aloud: answer in one short "
                 "sentence, no lists, no markup. For weather, timers, alarms, arithmetic, the time, or "
                 "anything that needs live data or a tool, call the delegate tool with the user's request "
                 "as the task; a background assistant does it and you tell the user the result later.")

DELEGATE_TOOL = {"type": "function", "function": {
    "name": "delegate",
    "description": "Hand a task that needs live data or tools (weather, timers, arithmetic, looking things up) "
                   "to the background assistant.",
    "parameters": {"type": "object", "properties": {"task": {"type": "string"}}, "required": ["task"]}}}

ACK = "Let me check."  # what the assistant says when it hands a task over (the examples teach it too)

# (user, None: delegate the request as said | the assistant's answer). No sentence here is in the ears'
# TEST_SENTENCES or HELDOUT_SENTENCES, nor in measure.py's held-out requests.
EXAMPLES: tuple[tuple[str, str | None], ...] = (
    ("what's the weather in Rome", None),
    ("hi there", "Hi! How can I help?"),
    ("set a timer for three minutes", None),
    ("thanks a lot", "You're welcome."),
    ("will it be sunny in Lisbon tomorrow", None),
    ("who are you", "I'm your voice assistant."),
)


def example_messages() -> list[dict[str, Any]]:
    """EXAMPLES as chat turns: a delegation is a `delegate` tool call, its acknowledgement, then ACK."""
    out: list[dict[str, Any]] = []
    for i, (user, answer) in enumerate(EXAMPLES):
        out.append({"role": "user", "content": user})
        if answer is None:
            out.extend(delegation_messages(user, f"example-{i}"))
        else:
            out.append({"role": "assistant", "content": answer})
    return out


def delegation_messages(task: str, call_id: str) -> list[dict[str, Any]]:
    """How a delegation is written in the conversation the reply model reads."""
    return [{"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function",
                 "function": {"name": "delegate", "arguments": json.dumps({"task": task})}}]},
            {"role": "tool", "tool_call_id": call_id, "content": "delegated"},
            {"role": "assistant", "content": ACK}]


@dataclass
class ReplyEvent:
    kind: Literal["text", "delegate", "done", "error"]
    text: str = ""  # a text delta, the delegated task, or the error


@runtime_checkable
class ReplyModel(Protocol):
    def start(self) -> None:
        """Load the model (blocking; once)."""
        ...

    def reply(self, messages: list[dict[str, Any]], stop: threading.Event) -> Iterator[ReplyEvent]:
        """Stream one reply (see the module docstring); blocks the calling worker thread."""
        ...

    def close(self) -> None:
        ...


@dataclass
class ReplyConfig:
    engine: str = "local"  # "local" (SmolLM2-135M, llama-cpp) | "openai" (an OpenAI-compatible server)
    engine_options: dict[str, Any] = field(default_factory=dict)  # e.g. base_url, model, api_key for openai
    max_tokens: int = 48  # a spoken reply is a sentence or two
    temperature: float = 0.0
    timeout_s: float = 30.0  # a reply that has produced nothing for this long ends with an error


class EngineReply:
    """A background engine behind the ReplyModel seam, on its own event loop thread."""

    def __init__(self, config: ReplyConfig | None = None) -> None:
        self.config = config or ReplyConfig()
        self._engine: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._engine is not None:
            return
        from background_actor.engines import make_engine

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cascade-reply-engine", daemon=True)
        self._thread.start()
        engine = make_engine(self.config.engine, **self.config.engine_options)
        asyncio.run_coroutine_threadsafe(engine.start(), self._loop).result(timeout=120)
        self._engine = engine

    def reply(self, messages: list[dict[str, Any]], stop: threading.Event) -> Iterator[ReplyEvent]:
        from background_actor.engine import EngineError, GenerateRequest

        if self._engine is None:
            self.start()
        assert self._loop is not None
        cfg = self.config
        request = GenerateRequest(messages=messages, tools=[DELEGATE_TOOL], tool_choice="auto",
                                  max_tokens=cfg.max_tokens, temperature=cfg.temperature)
        events: queue.Queue[ReplyEvent] = queue.Queue()

        async def run() -> None:
            delegated = False
            try:
                async for ev in self._engine.stream(request):
                    if ev.kind == "text" and ev.text:
                        events.put(ReplyEvent("text", ev.text))
                    elif ev.kind == "tool_call" and ev.tool_call is not None and not delegated:
                        task = _task_of(ev.tool_call.arguments)
                        if ev.tool_call.name == "delegate" and task:
                            delegated = True
                            events.put(ReplyEvent("delegate", task))
                events.put(ReplyEvent("done"))
            except EngineError as exc:
                events.put(ReplyEvent("error", str(exc)))

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            while True:
                if stop.is_set():
                    return
                try:
                    ev = events.get(timeout=0.02)
                except queue.Empty:
                    if future.done() and events.empty():
                        exc = future.exception()
                        yield ReplyEvent("error", repr(exc) if exc else "the reply ended without a result")
                        return
                    continue
                yield ev
                if ev.kind in ("done", "error"):
                    return
        finally:
            future.cancel()  # cancels the engine's stream: generation stops within a token

    def close(self) -> None:
        engine, self._engine = self._engine, None
        if self._loop is None:
            return
        if engine is not None:
            try:
                asyncio.run_coroutine_threadsafe(engine.aclose(), self._loop).result(timeout=30)
            except Exception as exc:  # noqa: BLE001 - best effort at shutdown
                log.warning("reply_engine_close_failed", error=repr(exc))
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = None


def _task_of(arguments: str) -> str:
    try:
        args = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return ""
    task = args.get("task") if isinstance(args, dict) else None
    return task.strip() if isinstance(task, str) else ""
