"""`interplay bench engine`: the local engine on a fixed prompt set.

`bench_engine(quick)` → {"tokens_per_s", "ttft_ms", "tool_call_success", ...}: decode speed and time to
first token on plain prompts; over the agent loop on fixed arithmetic prompts, the fraction whose first
tool call is the calculator with an expression worth the right number (`tool_call_success`), a
calculator call that ran at all (`tool_call_valid`), and a final answer holding the number
(`answer_uses_result`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import statistics
import time
from typing import Any

from background_actor.agent import AgentConfig, AgentLoop
from background_actor.engine import Engine, GenerateRequest
from background_actor.engines import make_engine
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import context_pb2 as xpb

# (question, expected value): every one needs the calculator to be answered exactly
TOOL_PROMPTS: list[tuple[str, float]] = [
    ("What is 37 times 91?", 3367),
    ("What is 1234 plus 5678?", 6912),
    ("What is 144 divided by 12?", 12),
    ("What is 2 to the power of 10?", 1024),
    ("What is the square root of 169?", 13),
    ("What is 999 minus 123?", 876),
    ("Multiply 12.5 by 8.", 100),
    ("What is (3 + 4) * 5?", 35),
    ("What is 7 factorial?", 5040),
    ("What is 15 percent of 80?", 12),
    ("Add 45, 67 and 89.", 201),
    ("What is 81 divided by 9, times 4?", 36),
]
TEXT_PROMPTS = [
    "Describe the sea in a short paragraph.",
    "Explain what a calendar is for, in a few sentences.",
    "Write three sentences about a walk in the park.",
]


def _pkg(question: str, tools: list[str]) -> xpb.ContextPackage:
    return xpb.ContextPackage(task_id="bench", task=question, allowed_tools=tools)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


async def _speed(engine: Engine, prompts: list[str], max_tokens: int) -> tuple[list[float], list[float]]:
    rates, ttfts = [], []
    for p in prompts:
        req = GenerateRequest(messages=[{"role": "user", "content": p}], max_tokens=max_tokens)
        usage = None
        async for ev in engine.stream(req):
            if ev.kind == "done":
                usage = ev.usage
        if usage and usage.completion_tokens > 1 and usage.total_ms > usage.ttft_ms:
            rates.append((usage.completion_tokens - 1) / ((usage.total_ms - usage.ttft_ms) / 1000.0))
            ttfts.append(usage.ttft_ms)
    return rates, ttfts


async def _tool_calls(engine: Engine, prompts: list[tuple[str, float]], tool_choice: str = "") -> dict[str, Any]:
    """Run the agent loop (the engine's own tool policy) on each prompt; score its first tool call
    (the calculator, with an expression worth the expected number) and its final answer."""
    from tools.builtin import default_registry, evaluate

    reg = default_registry(include=("calculator", "clock"))
    agent = AgentLoop(engine, reg, AgentConfig(max_steps=3, max_tokens=48, first_tool_choice=tool_choice))
    ok = valid = answered = 0
    for question, expected in prompts:
        calls: list[Any] = []
        results: list[Any] = []

        async def emit(kind: int, **fields: Any) -> None:
            if kind == bpb.UPDATE_KIND_TOOL_CALL:
                calls.append(fields["tool_call"])  # noqa: B023 - consumed within this iteration
            elif kind == bpb.UPDATE_KIND_TOOL_RESULT:
                results.append(fields["tool_result"])  # noqa: B023

        answer = await agent.run(_pkg(question, ["calculator", "clock"]), emit)
        if calls and calls[0].name == "calculator" and results and results[0].ok:
            valid += 1
            with contextlib.suppress(Exception):  # a wrong expression is a failed call, not a crash
                ok += _close(float(evaluate(json.loads(calls[0].arguments_json)["expression"])), expected)
        nums = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", answer.replace(",", ""))]
        answered += any(_close(x, expected) for x in nums)
    await reg.aclose()
    n = len(prompts)
    return {"tool_call_success": ok / n, "tool_call_valid": valid / n, "answer_uses_result": answered / n,
            "tool_prompts": n}


async def run_bench(quick: bool = False, engine: str = "local", tool_choice: str = "", **options: Any) -> dict[str, Any]:
    eng = make_engine(engine, **options)
    t0 = time.perf_counter()
    await eng.start()
    load_s = time.perf_counter() - t0
    try:
        texts = TEXT_PROMPTS[:1] if quick else TEXT_PROMPTS
        rates, ttfts = await _speed(eng, texts, 48 if quick else 128)
        tools = await _tool_calls(eng, TOOL_PROMPTS[:3] if quick else TOOL_PROMPTS, tool_choice)
    finally:
        await eng.aclose()
    return {
        "tokens_per_s": round(statistics.median(rates), 1) if rates else 0.0,
        "ttft_ms": round(statistics.median(ttfts), 1) if ttfts else 0.0,
        **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in tools.items()},
        "engine": engine, "tool_choice": tool_choice or eng.default_tool_choice, "load_s": round(load_s, 2),
        "quick": quick,
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def bench_engine(quick: bool = False, engine: str = "local", tool_choice: str = "", **options: Any) -> dict[str, Any]:
    """The figures of `interplay bench engine` (see ../shared/FIGURES.md). `tool_choice` overrides the
    engine's first-step policy ("auto" shows what the model does unprompted); `options` go to the engine."""
    return asyncio.run(run_bench(quick, engine, tool_choice, **options))
