"""LLM engines behind background_actor.engine.Engine: local (llama.cpp), openai (httpx), vllm.

`make_engine(kind, **options)` builds one by name. It lives here, above the engines, so that the
interface module (background_actor.engine) imports none of them: imports point one way.
"""

from __future__ import annotations

from typing import Any

from background_actor.engine import Engine


def make_engine(kind: str, **options: Any) -> Engine:
    """Build an engine by name: "local" (llama.cpp, the default), "openai" (any OpenAI-compatible
    server over httpx), "vllm" (in-process vLLM; optional extra), or "module:attr" (an Engine subclass
    or a function returning an Engine, called with `options`)."""
    if kind == "local":
        from background_actor.engines.local import LocalEngine, LocalEngineConfig

        return LocalEngine(LocalEngineConfig(**options))
    if kind == "openai":
        from background_actor.engines.openai import OpenAIEngine, OpenAIEngineConfig

        return OpenAIEngine(OpenAIEngineConfig(**options))
    if kind == "vllm":
        from background_actor.engines.vllm import VLLMEngine, VLLMEngineConfig

        return VLLMEngine(VLLMEngineConfig(**options))
    if ":" in kind:  # module:attr of an Engine class or factory (your own engine, or a fault-injection one)
        import importlib

        module, _, attr = kind.partition(":")
        engine = getattr(importlib.import_module(module), attr)(**options)
        if not isinstance(engine, Engine):
            raise ValueError(f"engine {kind!r} gave {type(engine).__name__}, not a background_actor.engine.Engine")
        return engine
    raise ValueError(f"unknown engine {kind!r}; choose local, openai, vllm or module:attr")
