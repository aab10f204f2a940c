"""The `openai` engine: any OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, hosted APIs)
over httpx — `POST {base_url}/chat/completions` with `stream: true`, read as server-sent events.

`tool_mode="native"` sends `tools` and reads streamed `tool_calls` (arguments repaired when they are
not valid JSON); `tool_mode="json"` asks for the JSON action format of background_actor/parsing.py
under a `response_format` schema, for servers/models without reliable native tool calling.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from background_actor.engine import Engine, EngineError, EngineEvent, GenerateRequest, ToolCallRequest, Usage
from background_actor.parsing import (
    AnswerStreamer,
    action_schema,
    finish_action,
    repair_json,
    to_action_messages,
)
from interplay.log import get_logger

log = get_logger("background_actor.engines.openai")


@dataclass
class OpenAIEngineConfig:
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "default"
    api_key: str = ""                                # sent as a Bearer token when set
    tool_mode: Literal["native", "json"] = "native"
    # how `json` mode asks for the schema: llama.cpp's {"type": "json_object", "schema": ...} or
    # OpenAI's {"type": "json_schema", "json_schema": {...}}
    response_format_style: Literal["json_object", "json_schema"] = "json_object"
    # first-step tool_choice when a package allows tools ("required" suits small models, see local.py)
    default_tool_choice: Literal["auto", "required", "none"] = "auto"
    followup_tool_choice: Literal["auto", "required", "none"] = "auto"   # after a tool result
    # extra request fields for a particular server, e.g. llama.cpp's {"repeat_penalty": 1.0}
    extra_body: dict[str, Any] = field(default_factory=dict)
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0                     # longest silence between two streamed chunks


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(self, config: OpenAIEngineConfig | None = None) -> None:
        self.config = config or OpenAIEngineConfig()
        self.default_tool_choice = self.config.default_tool_choice
        self.followup_tool_choice = self.config.followup_tool_choice
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if self._client is None:
            c = self.config
            headers = {"Authorization": f"Bearer {c.api_key}"} if c.api_key else {}
            self._client = httpx.AsyncClient(
                base_url=c.base_url.rstrip("/"), headers=headers,
                timeout=httpx.Timeout(c.read_timeout_s, connect=c.connect_timeout_s))

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "base_url": self.config.base_url, "model": self.config.model,
                "tool_mode": self.config.tool_mode}

    def _body(self, request: GenerateRequest) -> tuple[dict[str, Any], bool]:
        c = self.config
        use_actions = c.tool_mode == "json" and bool(request.tools)
        body: dict[str, Any] = {"model": c.model, "stream": True, "max_tokens": request.max_tokens,
                                "temperature": request.temperature, "seed": request.seed, **c.extra_body}
        if use_actions:
            body["messages"] = to_action_messages(request.messages, request.tools, request.tool_choice)
            schema = action_schema(request.tools, request.tool_choice)
            body["response_format"] = ({"type": "json_object", "schema": schema}
                                       if c.response_format_style == "json_object" else
                                       {"type": "json_schema", "json_schema": {"name": "action", "schema": schema}})
        else:
            body["messages"] = request.messages
            if request.tools and request.tool_choice != "none":
                body["tools"] = request.tools
                body["tool_choice"] = request.tool_choice
                if request.tool_choice == "required" and len(request.tools) == 1:
                    # the named form means the same and more servers accept it (llama.cpp's does)
                    body["tool_choice"] = {"type": "function",
                                           "function": {"name": request.tools[0]["function"]["name"]}}
        return body, use_actions

    async def stream(self, request: GenerateRequest) -> AsyncIterator[EngineEvent]:
        await self.start()
        assert self._client is not None
        body, use_actions = self._body(request)
        t0 = time.perf_counter()
        ttft = 0.0
        streamer = AnswerStreamer()
        calls: dict[int, dict[str, str]] = {}
        finish = ""
        usage_tokens = prompt_tokens = 0
        chunks = 0
        ended = False
        try:
            async with self._client.stream("POST", "/chat/completions", json=body) as resp:
                if resp.status_code >= 400:
                    detail = (await resp.aread()).decode(errors="replace")[:300]
                    raise EngineError(f"http_{resp.status_code}", detail, retryable=resp.status_code >= 500)
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        ended = True
                        break
                    try:
                        chunk = json.loads(data)
                    except json.JSONDecodeError:
                        log.warning("openai_bad_chunk", data=data[:120])
                        continue
                    if chunk.get("usage"):
                        usage_tokens = int(chunk["usage"].get("completion_tokens") or 0)
                        prompt_tokens = int(chunk["usage"].get("prompt_tokens") or 0)
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        finish = choice.get("finish_reason") or finish
                        text = delta.get("content")
                        if text:
                            chunks += 1
                            if not ttft:
                                ttft = (time.perf_counter() - t0) * 1000.0
                            out = streamer.push(text) if use_actions else text
                            if not use_actions:
                                streamer.raw += text
                            if out:
                                yield EngineEvent("text", text=out)
                        tool_deltas = delta.get("tool_calls") or (
                            [{"index": 0, "function": delta["function_call"]}] if delta.get("function_call") else [])
                        for tc in tool_deltas:
                            if not ttft:
                                ttft = (time.perf_counter() - t0) * 1000.0
                            chunks += 1
                            slot = calls.setdefault(int(tc.get("index") or 0), {"id": "", "name": "", "arguments": ""})
                            slot["id"] = tc.get("id") or slot["id"]
                            fn = tc.get("function") or {}
                            name = fn.get("name") or ""
                            if name and name != slot["name"]:  # OpenAI sends it once; llama.cpp in every chunk
                                slot["name"] += name
                            slot["arguments"] += fn.get("arguments") or ""
            if not ended and not finish:  # the server broke off mid-stream (e.g. an exception behind a 200)
                raise EngineError("incomplete_stream", f"{self.config.base_url} ended the stream early", True)
        except httpx.TimeoutException as exc:
            raise EngineError("engine_timeout", f"{type(exc).__name__} from {self.config.base_url}", True) from exc
        except httpx.HTTPError as exc:
            raise EngineError("engine_unreachable", f"{type(exc).__name__}: {exc}"[:300], True) from exc
        if use_actions:
            for ev in finish_action(streamer, request.tools, "call-" + uuid.uuid4().hex[:8]):
                yield ev
        for i in sorted(calls):
            slot = calls[i]
            args = slot["arguments"] or "{}"
            try:
                json.loads(args)
            except json.JSONDecodeError:
                fixed = repair_json(args)
                args = json.dumps(fixed if isinstance(fixed, dict) else {})
            yield EngineEvent("tool_call", tool_call=ToolCallRequest(slot["id"] or f"call-{uuid.uuid4().hex[:8]}",
                                                                      slot["name"], args))
        yield EngineEvent("done", finish_reason=finish or "stop",
                          usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=usage_tokens or chunks, ttft_ms=ttft,
                                      total_ms=(time.perf_counter() - t0) * 1000.0))

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
