"""The `openai` engine against a real OpenAI-compatible server: llama-cpp-python's own server
(`python -m llama_cpp.server`) with the same SmolLM2 GGUF, started on 127.0.0.1 by this module."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx
import pytest

from background_actor.agent import AgentConfig, AgentLoop
from background_actor.engine import EngineError, GenerateRequest
from background_actor.engines.local import default_model_path
from background_actor.engines.openai import OpenAIEngine, OpenAIEngineConfig
from background_actor.engines.vllm import vllm_available
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import context_pb2 as xpb
from tools.builtin import default_registry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp_path_factory, *extra: str):
    """Start llama_cpp.server on a free 127.0.0.1 port; yields its /v1 base URL, stops it after."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", default_model_path(), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "4096", "--n_threads", "1", "--n_threads_batch", "1", "--model_alias", "smollm2",
           "--verbose", "False", *extra]
    log_file = tmp_path_factory.mktemp("llama_server") / "server.log"
    log = log_file.open("wb")  # noqa: SIM115 - a file, not a pipe: an unread pipe fills up and stalls the server
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{base}/models", timeout=1.0).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"llama_cpp.server did not start: {log_file.read_bytes().decode(errors='replace')[-2000:]}")
        time.sleep(0.2)
    yield base
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """The server with the GGUF's own chat template (plain chat; JSON-schema response_format)."""
    yield from start_server(tmp_path_factory)


@pytest.fixture(scope="module")
def llama_tools_server(tmp_path_factory):
    """The server with llama-cpp-python's native tool calling (`chatml-function-calling`; SmolLM2 is ChatML)."""
    yield from start_server(tmp_path_factory, "--chat_format", "chatml-function-calling")


async def test_the_openai_engine_streams_a_reply_from_a_real_llama_cpp_server(llama_server):
    eng = OpenAIEngine(OpenAIEngineConfig(base_url=llama_server, model="smollm2"))
    req = GenerateRequest(messages=[{"role": "user", "content": "Describe the sea in two sentences."}], max_tokens=40)
    events = [ev async for ev in eng.stream(req)]
    await eng.aclose()
    texts = [e.text for e in events if e.kind == "text"]
    assert len(texts) > 5 and "".join(texts).strip()
    assert events[-1].kind == "done" and events[-1].usage.ttft_ms > 0 and events[-1].usage.completion_tokens > 5


async def test_the_openai_engine_in_json_mode_calls_the_calculator_and_uses_the_result(llama_server):
    eng = OpenAIEngine(OpenAIEngineConfig(base_url=llama_server, model="smollm2", tool_mode="json",
                                          default_tool_choice="required", followup_tool_choice="none",
                                          # the server's default 1.1 makes this model miscopy numbers
                                          extra_body={"repeat_penalty": 1.0}))
    reg = default_registry(include=("calculator",))
    agent = AgentLoop(eng, reg, AgentConfig(max_steps=2, max_tokens=40))
    seen: list[tuple[int, dict]] = []

    async def emit(kind: int, **fields) -> None:
        seen.append((kind, fields))

    pkg = xpb.ContextPackage(task_id="o1", task="What is 37 times 91?", allowed_tools=["calculator"])
    answer = await agent.run(pkg, emit)
    await eng.aclose()
    calls = [f["tool_call"] for k, f in seen if k == bpb.UPDATE_KIND_TOOL_CALL]
    results = [f["tool_result"] for k, f in seen if k == bpb.UPDATE_KIND_TOOL_RESULT]
    assert calls and calls[0].name == "calculator"
    assert results[0].ok and results[0].content == "3367"
    assert "3367" in answer.replace(",", "")


async def test_an_unreachable_server_is_a_retryable_engine_error():
    eng = OpenAIEngine(OpenAIEngineConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", connect_timeout_s=1.0))
    with pytest.raises(EngineError) as err:
        async for _ in eng.stream(GenerateRequest(messages=[{"role": "user", "content": "hi"}])):
            pass
    await eng.aclose()
    assert err.value.code == "engine_unreachable" and err.value.retryable


async def test_native_tool_calls_streamed_by_a_real_server_arrive_as_one_call_with_json_arguments(llama_tools_server):
    eng = OpenAIEngine(OpenAIEngineConfig(base_url=llama_tools_server, model="smollm2",
                                          extra_body={"repeat_penalty": 1.0}))
    reg = default_registry(include=("calculator",))
    req = GenerateRequest(messages=[{"role": "user", "content": "What is 37 times 91?"}], tools=reg.schemas(),
                          tool_choice="required", max_tokens=40)
    events = [ev async for ev in eng.stream(req)]
    await eng.aclose()
    calls = [e.tool_call for e in events if e.kind == "tool_call"]
    # this server repeats the name in every chunk and the 135M model's arguments need repair
    assert len(calls) == 1 and calls[0].name == "calculator" and calls[0].call_id
    assert isinstance(json.loads(calls[0].arguments), dict)


async def test_a_stream_the_server_breaks_off_is_a_retryable_engine_error(llama_tools_server):
    # this server answers 200, then fails inside the stream ("Automatic streaming tool choice is not supported")
    eng = OpenAIEngine(OpenAIEngineConfig(base_url=llama_tools_server, model="smollm2"))
    reg = default_registry(include=("calculator",))
    req = GenerateRequest(messages=[{"role": "user", "content": "What is 37 times 91?"}], tools=reg.schemas(),
                          tool_choice="auto", max_tokens=16)
    with pytest.raises(EngineError) as err:
        async for _ in eng.stream(req):
            pass
    await eng.aclose()
    assert err.value.code == "incomplete_stream" and err.value.retryable


@pytest.mark.gpu
@pytest.mark.skipif(not vllm_available(), reason="vLLM with a CUDA device is not available here")
async def test_the_vllm_engine_streams_a_reply_on_a_gpu():  # pragma: no cover - GPU machines only
    from background_actor.engines.vllm import VLLMEngine

    eng = VLLMEngine()
    events = [ev async for ev in eng.stream(GenerateRequest(messages=[{"role": "user", "content": "Hi"}], max_tokens=16))]
    assert events[-1].kind == "done" and any(e.kind == "text" for e in events)

