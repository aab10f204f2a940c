"""The `vllm` engine: vLLM's async engine in this process (GPU machines; the optional extra `vllm`).

Tool calls use the JSON action format (background_actor/parsing.py) under vLLM's structured-output
decoding. Importing this module never fails; `VLLMEngine.start()` raises EngineError("engine_missing")
when vLLM is not installed, and `vllm_available()` lets tests skip cleanly.
"""

from __future__ import annotations

import importlib.util
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from background_actor.engine import Engine, EngineError, EngineEvent, GenerateRequest, Usage
from background_actor.parsing import AnswerStreamer, action_schema, finish_action, to_action_messages


def vllm_available() -> bool:
    """vLLM is importable and a CUDA device is visible."""
    if importlib.util.find_spec("vllm") is None:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover
        return False


@dataclass
class VLLMEngineConfig:
    model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    gpu_memory_utilization: float = 0.5
    max_model_len: int = 4096
    dtype: str = "auto"


class VLLMEngine(Engine):  # pragma: no cover - exercised only on GPU machines
    name = "vllm"

    def __init__(self, config: VLLMEngineConfig | None = None) -> None:
        self.config = config or VLLMEngineConfig()
        self._engine: Any = None
        self._tokenizer: Any = None

    async def start(self) -> None:
        if self._engine is not None:
            return
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
        except ImportError as exc:
            raise EngineError("engine_missing", "vLLM is not installed (pip install 'interplay[vllm]')") from exc
        c = self.config
        args = AsyncEngineArgs(model=c.model, gpu_memory_utilization=c.gpu_memory_utilization,
                               max_model_len=c.max_model_len, dtype=c.dtype)
        self._engine = AsyncLLMEngine.from_engine_args(args)
        self._tokenizer = await self._engine.get_tokenizer()

    def _sampling(self, request: GenerateRequest, schema: dict[str, Any] | None) -> Any:
        from vllm import SamplingParams

        kw: dict[str, Any] = {"max_tokens": request.max_tokens, "temperature": request.temperature,
                              "seed": request.seed}
        if schema is not None:
            try:  # newer vLLM
                from vllm.sampling_params import StructuredOutputsParams

                kw["structured_outputs"] = StructuredOutputsParams(json=schema)
            except ImportError:
                from vllm.sampling_params import GuidedDecodingParams

                kw["guided_decoding"] = GuidedDecodingParams(json=schema)
        return SamplingParams(**kw)

    async def stream(self, request: GenerateRequest) -> AsyncIterator[EngineEvent]:
        await self.start()
        use_actions = bool(request.tools) and request.tool_choice != "none"
        messages = (to_action_messages(request.messages, request.tools, request.tool_choice) if use_actions
                    else request.messages)
        prompt = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        schema = action_schema(request.tools, request.tool_choice) if use_actions else None
        rid = uuid.uuid4().hex
        t0 = time.perf_counter()
        ttft, seen, n_tokens, finish = 0.0, "", 0, "stop"
        streamer = AnswerStreamer()
        completed = False
        try:
            async for out in self._engine.generate(prompt, self._sampling(request, schema), rid):
                comp = out.outputs[0]
                delta, seen = comp.text[len(seen):], comp.text
                n_tokens = len(comp.token_ids)
                finish = comp.finish_reason or finish
                if delta:
                    ttft = ttft or (time.perf_counter() - t0) * 1000.0
                    text = streamer.push(delta) if use_actions else delta
                    if not use_actions:
                        streamer.raw += delta
                    if text:
                        yield EngineEvent("text", text=text)
            completed = True
        finally:
            if not completed:  # the reader went away: free the sequence at once
                await self._engine.abort(rid)
        if use_actions:
            for ev in finish_action(streamer, request.tools, "call-" + rid[:8]):
                yield ev
        yield EngineEvent("done", finish_reason=finish,
                          usage=Usage(completion_tokens=n_tokens, ttft_ms=ttft, total_ms=(time.perf_counter() - t0) * 1000))
