"""LLM engines behind background_actor.engine.Engine: local (llama.cpp), openai (httpx), vllm.

`make_engine(kind, **options)` builds one by name. It lives here, above the engines, so that the
interface module (background_actor.engine) imports none of them: imports point one way.
"""

from __future__ import annotations

from typing import Any

from background_actor.engine import Engine


def make_engine(kind: str, **options: Any) -> Engine:
    """Build an engine by name: "local" (llama.cpp, the default), "openai" (any OpenAI-compatible
    server over httpx), "vllm" (in-process vLLM; optional extra)."""
    if kind == "local":
        from background_actor.engines.local import LocalEngine, LocalEngineConfig

        return LocalEngine(LocalEngineConfig(**options))
    if kind == "openai":
        from background_actor.engines.openai import OpenAIEngine, OpenAIEngineConfig

        return OpenAIEngine(OpenAIEngineConfig(**options))
    if kind == "vllm":
        from background_actor.engines.vllm import VLLMEngine, VLLMEngineConfig

        return VLLMEngine(VLLMEngineConfig(**options))
    raise ValueError(f"unknown engine {kind!r}; choose local, openai or vllm")
