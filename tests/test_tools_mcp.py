"""MCP: a real MCP server (tests/mcp_server_fixture.py, the `mcp` SDK) started as a subprocess over
stdio or streamable HTTP; its tools are loaded into a Registry and called like local tools."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tools import Registry, tool
from tools.mcp import MCPConnectionError, load_mcp_tools, stdio

FIXTURE = str(Path(__file__).with_name("mcp_server_fixture.py"))


@pytest.fixture
async def mcp_registry() -> AsyncIterator[Registry]:
    with open(os.devnull, "w") as quiet:
        reg = await load_mcp_tools(stdio(sys.executable, FIXTURE), connect_timeout_s=20, errlog=quiet)
        try:
            yield reg
        finally:
            await reg.aclose()


async def test_tools_of_a_stdio_mcp_server_are_listed_in_the_registry(mcp_registry):
    assert mcp_registry.names() == ["add", "shout", "fail"]


async def test_mcp_tool_schemas_are_exported_as_openai_functions(mcp_registry):
    (entry,) = mcp_registry.schemas(allow=["shout"])
    params = entry["function"]["parameters"]
    assert entry["function"]["description"].startswith("Upper-case")
    assert params["properties"]["times"] == {"default": 1, "type": "integer"} and params["required"] == ["text"]


async def test_a_stdio_mcp_tool_is_called_like_a_local_tool(mcp_registry):
    out = await mcp_registry.call("add", '{"a": 19, "b": 23}', call_id="m1")
    assert (out.ok, out.content, out.call_id) == (True, "42", "m1")


async def test_bad_arguments_to_an_mcp_tool_name_the_tool_and_field(mcp_registry):
    out = await mcp_registry.call("add", {"a": "nineteen"})
    assert out.error_code == "invalid_arguments"
    assert "tool 'add'" in out.content and "field 'b' is required" in out.content and "field 'a'" in out.content


async def test_an_mcp_server_side_error_settles_as_a_failed_outcome(mcp_registry):
    out = await mcp_registry.call("fail", {"reason": "token=abc123"})
    assert (out.ok, out.error_code) == (False, "tool_error") and "abc123" not in out.content


async def test_mcp_tools_compose_with_local_tools(mcp_registry):
    @tool
    async def local_echo(text: str) -> str:
        """Echo."""
        return text

    combined = Registry([local_echo]) | mcp_registry.subset(["shout"])
    outs = await asyncio.gather(combined.call("local_echo", {"text": "hi"}),
                                combined.call("shout", {"text": "hi", "times": 2}))
    assert [o.content for o in outs] == ["hi", "HI HI"]


async def test_closed_mcp_tools_fail_cleanly_instead_of_hanging():
    with open(os.devnull, "w") as quiet:
        reg = await load_mcp_tools(stdio(sys.executable, FIXTURE), prefix="fx_", connect_timeout_s=20, errlog=quiet)
    await reg.aclose()
    out = await reg.call("fx_add", {"a": 1, "b": 2})
    assert (out.ok, out.error_code) == (False, "unavailable") and "not connected" in out.content


async def test_a_server_that_exits_at_once_raises_a_connection_error():
    with open(os.devnull, "w") as quiet, pytest.raises(MCPConnectionError):
        await load_mcp_tools(stdio(sys.executable, "-c", "pass"), connect_timeout_s=5, errlog=quiet)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_mcp_url() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, FIXTURE, "--http", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def test_a_streamable_http_mcp_server_is_loaded_and_called(http_mcp_url):
    reg = await load_mcp_tools(http_mcp_url, connect_timeout_s=15)
    try:
        out = await reg.call("shout", {"text": "over http"})
    finally:
        await reg.aclose()
    assert out.ok and out.content == "OVER HTTP"
