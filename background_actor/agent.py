"""The agent loop: context package → prompt → engine step → tool calls through the registry → results
fed back → … until a final answer or the step limit. Every step is reported through `emit(kind, ...)`.

`AgentLoop.run(pkg, emit, steer)` returns the final answer text; it raises on failure (EngineError,
AgentError) or cancellation, and the task manager (service.py) turns that into the one terminal
update. A steer text that arrives mid-generation aborts that generation and restarts the step with
the follow-up in the conversation; one that arrives during tool calls joins at the next step.

Tracing (interplay.tracing, OpenTelemetry GenAI names): each pass of the loop is an `agent_step` span
(interplay.step; interplay.restart counts the steered restarts so far), the parent of what it does:
each engine call is a `chat {model}` span
(gen_ai.operation.name, gen_ai.request.model, gen_ai.usage.input_tokens / output_tokens, time to
first token); each tool call is an `execute_tool {name}` span (gen_ai.tool.name, gen_ai.tool.call.id,
its outcome), a child of the chat span whose answer asked for it. Arguments and results are not
recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from background_actor.engine import (
    Engine,
    EngineError,
    EngineEvent,
    GenerateRequest,
    Message,
    ToolCallRequest,
    Usage,
)
from background_actor.metrics import BackgroundMetrics
from interplay import tracing
from interplay.log import get_logger
from interplay.secrets import SecretStore
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import common_pb2 as cpb
from interplay.v1 import context_pb2 as xpb
from tools import Registry, ToolContext, ToolOutcome

log = get_logger("background_actor.agent")

Emit = Callable[..., Awaitable[None]]  # emit(kind, text=..., tool_call=..., tool_result=..., step=..., progress=...)

class AgentError(EngineError):
    """The loop itself gave up (step limit, steer storm); reported as an ERROR update with `code`."""


SYSTEM_PROMPT = ("You are the background assistant of a live voice assistant. You get a task from the "
                 "conversation below. Be brief and exact: one or two sentences.")


@dataclass
class AgentConfig:
    max_steps: int = 4              # engine calls per task (steer restarts included)
    max_tokens: int = 192           # per engine call
    temperature: float = 0.0
    seed: int = 0
    system_prompt: str = SYSTEM_PROMPT
    transcript_entries: int = 12    # newest transcript entries that enter the prompt
    first_tool_choice: str = ""     # "auto" | "required" | "none"; "" → the engine's default
    followup_tool_choice: str = ""  # the same, for steps after a tool result
    max_restarts: int = 8           # steps redone because a steer arrived mid-generation


def _speaker(e: xpb.TranscriptEntry) -> str:
    return {xpb.SPEAKER_USER: "user", xpb.SPEAKER_ASSISTANT: "assistant",
            xpb.SPEAKER_BACKGROUND: "background", xpb.SPEAKER_SYSTEM: "system"}.get(e.speaker, "someone")


def build_messages(pkg: xpb.ContextPackage, config: AgentConfig) -> list[Message]:
    """System prompt (with the transcript window, state and observations) and the task as the user turn."""
    parts = [config.system_prompt]
    if pkg.earlier_summary:
        parts.append(f"Earlier: {pkg.earlier_summary}")
    lines = []
    # Only entries with words enter the prompt: silences and speech the interaction side heard but has
    # no transcript of say nothing a language model can use, and a small one is thrown off by them.
    worded = [e for e in pkg.transcript if e.kind != xpb.ENTRY_KIND_SILENCE and e.text.strip()]
    for e in worded[-config.transcript_entries:]:
        marks = "".join(m for m, on in ((" (interrupted)", e.interrupted), (" (overlapping)", e.overlapped),
                                        (" (typed)", e.typed)) if on)
        lines.append(f"[{e.start_ms / 1000:.1f}s] {_speaker(e)}{marks}: {e.text}")
    if lines:
        parts.append("Conversation so far:\n" + "\n".join(lines))
    if pkg.user_state in (cpb.USER_STATE_SPEAKING, cpb.USER_STATE_INTERRUPTED):
        parts.append("The user is " + ("speaking" if pkg.user_state == cpb.USER_STATE_SPEAKING
                                       else "interrupting") + " right now.")
    seen = [o.description for o in pkg.observations if o.description]
    if seen:
        parts.append("Seen recently: " + "; ".join(seen))
    return [{"role": "system", "content": "\n\n".join(parts)}, {"role": "user", "content": pkg.task}]


class AgentLoop:
    """One loop object serves many tasks concurrently (it holds no per-task state)."""

    def __init__(self, engine: Engine, registry: Registry, config: AgentConfig | None = None,
                 secrets: SecretStore | None = None, metrics: BackgroundMetrics | None = None) -> None:
        self.engine = engine
        self.metrics = metrics  # tool and LLM request metrics (background_actor/metrics.py), when given
        self.registry = registry
        self.config = config or AgentConfig()
        self.secrets = secrets  # injected into the tools that declare them; tool results come back redacted

    async def run(self, pkg: xpb.ContextPackage, emit: Emit, steer: asyncio.Queue[str] | None = None,
                  usage: list[Usage] | None = None) -> str:
        cfg = self.config
        steer = steer if steer is not None else asyncio.Queue()
        allowed = [n for n in dict.fromkeys(pkg.allowed_tools) if n in self.registry]
        tools = self.registry.schemas(allowed)
        first_choice = pkg.metadata.get("tool_choice") or cfg.first_tool_choice or self.engine.default_tool_choice
        if first_choice not in ("auto", "required", "none"):
            first_choice = "auto"
        followup = cfg.followup_tool_choice or self.engine.followup_tool_choice
        messages = build_messages(pkg, cfg)
        ctx = ToolContext(session_id=pkg.session_id, task_id=pkg.task_id, allow=frozenset(allowed),
                          emit=lambda text: emit(bpb.UPDATE_KIND_PROGRESS, text=text), secret_store=self.secrets)
        used_tools = False
        step = restarts = 0
        model = self.model
        while step < cfg.max_steps:
            with tracing.tracer().start_as_current_span(
                    "agent_step", record_exception=False, set_status_on_exception=False,
                    attributes={"interplay.step": step, "interplay.restart": restarts}):
                await self._apply_steers(steer, messages, emit, step, pkg.task)
                last = step == cfg.max_steps - 1
                choice = "none" if (last or not tools) else (first_choice if not used_tools else followup)
                req = GenerateRequest(messages=list(messages), tools=tools,
                                      tool_choice=choice, max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                      seed=cfg.seed)
                with tracing.tracer().start_as_current_span(
                        f"chat {model}", kind=tracing.SpanKind.CLIENT, record_exception=False,
                        set_status_on_exception=False, attributes=self._chat_attributes(req, step, model)) as span:
                    try:
                        result = await self._step(req, emit, step, steer)
                    except EngineError as exc:
                        span.set_attribute("error.type", exc.code)
                        span.set_status(tracing.Status(tracing.StatusCode.ERROR, exc.code))
                        raise
                    except asyncio.CancelledError:  # the task was cancelled mid-request (not an error of the model)
                        span.set_attribute("interplay.cancelled", True)
                        raise
                    _record_step(span, result)
                if self.metrics is not None and result is not None and result[2] is not None:
                    u = result[2]
                    self.metrics.llm_request(model, u.ttft_ms, u.total_ms, u.prompt_tokens, u.completion_tokens)
                if result is None or (not result[1] and not steer.empty()):
                    # a steer arrived mid-generation (or as an answer ended): redo this step with it; a
                    # restart does not use up a step, but their number is bounded
                    restarts += 1
                    if restarts > cfg.max_restarts:
                        raise AgentError("too_many_steers", f"more than {cfg.max_restarts} steered restarts")
                    continue
                text, calls, step_usage = result
                if usage is not None and step_usage is not None:
                    usage.append(step_usage)
                if not calls:
                    return text.strip()
                used_tools = True
                await self._run_tools(calls, messages, emit, step, ctx, span)
                step += 1
        raise AgentError("step_limit", f"no final answer within {cfg.max_steps} steps")

    async def _apply_steers(self, steer: asyncio.Queue[str], messages: list[Message], emit: Emit, step: int,
                            task: str = "") -> None:
        while not steer.empty():
            text = steer.get_nowait()
            # The follow-up joins the task's own user turn ("weather in Oslo? — in celsius"): as a
            # separate user message the 135M model dropped the task's subject and invented a city.
            first_user = next((m for m in messages if m.get("role") == "user"), None)
            if first_user is not None and len(messages) <= 2:
                first_user["content"] = f"{first_user['content']} — {text}"
            else:  # tool traffic already follows the task: the follow-up comes after it
                messages.append({"role": "user", "content": f"{text} (about: {task})" if task else text})
            await emit(bpb.UPDATE_KIND_STEERED, text=text, step=step)

    async def _step(self, req: GenerateRequest, emit: Emit, step: int, steer: asyncio.Queue[str]
                    ) -> tuple[str, list[ToolCallRequest], Usage | None] | None:
        """One engine call, raced against a steer; None when a steer interrupted it."""
        texts: list[str] = []
        calls: list[ToolCallRequest] = []
        done: list[EngineEvent] = []

        async def consume() -> None:
            async for ev in self.engine.stream(req):
                if ev.kind == "text" and ev.text:
                    texts.append(ev.text)
                    await emit(bpb.UPDATE_KIND_PARTIAL, text=ev.text, step=step)
                elif ev.kind == "tool_call" and ev.tool_call is not None:
                    calls.append(ev.tool_call)
                elif ev.kind == "done":
                    done.append(ev)

        gen = asyncio.ensure_future(consume())
        if steer.empty():
            waiter = asyncio.ensure_future(_wait_nonempty(steer))
            try:
                await asyncio.wait({gen, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not gen.done():
                    gen.cancel()  # a steer (or our own cancellation) stops the generation
                waiter.cancel()
            if gen.cancelled() or not gen.done():
                await asyncio.gather(gen, return_exceptions=True)
                log.info("step_interrupted_by_steer", step=step)
                return None
        else:
            gen.cancel()
            await asyncio.gather(gen, return_exceptions=True)
            return None
        gen.result()  # re-raise engine errors
        return "".join(texts), calls, (done[0].usage if done else None)

    @property
    def model(self) -> str:
        """The engine's model name (its `describe()["model"]`, else the engine's name)."""
        return str(self.engine.describe().get("model") or self.engine.name)

    def _chat_attributes(self, req: GenerateRequest, step: int, model: str) -> dict[str, Any]:
        return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": self.engine.name,
                "gen_ai.request.model": model, "gen_ai.request.max_tokens": req.max_tokens,
                "gen_ai.request.temperature": req.temperature, "interplay.step": step,
                "interplay.tool_choice": req.tool_choice, "interplay.tools_offered": len(req.tools)}

    async def _run_tools(self, calls: list[ToolCallRequest], messages: list[Message], emit: Emit, step: int,
                         ctx: ToolContext, parent: tracing.Span = tracing.INVALID_SPAN) -> None:
        messages.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls]})
        for c in calls:
            await emit(bpb.UPDATE_KIND_TOOL_CALL, step=step,
                       tool_call=cpb.ToolCall(call_id=c.call_id, name=c.name, arguments_json=c.arguments))

        asked_by = tracing.set_span_in_context(parent)

        async def one(c: ToolCallRequest) -> ToolOutcome:
            with tracing.tracer().start_as_current_span(
                    f"execute_tool {c.name}", context=asked_by, kind=tracing.SpanKind.INTERNAL,
                    attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": c.name,
                                "gen_ai.tool.call.id": c.call_id}) as span:
                out = await self.registry.call(c.name, c.arguments, call_id=c.call_id, context=ctx)
                span.set_attributes({"interplay.tool.ok": out.ok, "interplay.tool.duration_ms": out.duration_ms,
                                     "interplay.tool.truncated": out.truncated})
                if not out.ok:
                    span.set_attribute("error.type", out.error_code or "tool_error")
                    span.set_status(tracing.Status(tracing.StatusCode.ERROR, out.error_code or "tool_error"))
            if self.metrics is not None:  # a name the model made up is not a label of its own
                self.metrics.tool_call(c.name if c.name in self.registry else "(unknown)", out.ok, out.error_code,
                                       out.duration_ms)
            await emit(bpb.UPDATE_KIND_TOOL_RESULT, step=step, tool_result=out.to_proto())
            return out

        outcomes = await asyncio.gather(*(one(c) for c in calls))
        for c, out in zip(calls, outcomes, strict=True):
            messages.append({"role": "tool", "tool_call_id": c.call_id, "name": c.name, "content": out.content})
        log.info("tools_settled", task_id=ctx.task_id, step=step,
                 calls=json.dumps([(c.name, o.ok) for c, o in zip(calls, outcomes, strict=True)]))


def _record_step(span: tracing.Span, result: tuple[str, list[ToolCallRequest], Usage | None] | None) -> None:
    """What one engine call came to, on its span: tokens, time to first token, tool calls asked."""
    if result is None:
        span.set_attribute("interplay.interrupted_by_steer", True)
        return
    _text, calls, usage = result
    span.set_attribute("interplay.tool_calls", len(calls))
    if usage is not None:
        span.set_attributes({"gen_ai.usage.output_tokens": usage.completion_tokens,
                             "interplay.ttft_ms": usage.ttft_ms, "interplay.generation_ms": usage.total_ms})
        if usage.prompt_tokens:  # only where the engine counts them (the local engine does not)
            span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)


async def _wait_nonempty(q: asyncio.Queue[Any]) -> None:
    item = await q.get()
    # peek: put it back for _apply_steers; FIFO order holds because the queue was empty when we waited
    # and a cancelled get() never consumes an item
    rest = []
    while not q.empty():
        rest.append(q.get_nowait())
    for x in (item, *rest):
        q.put_nowait(x)
