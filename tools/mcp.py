"""Load the tools of a Model Context Protocol server into a `Registry` (the `mcp` SDK's `Client`).

Stdio (a `StdioServerParameters`, or `stdio(command, *args)`) and streamable HTTP (a URL) are both
supported. The MCP session lives in one background task (anyio scopes must open and close in the
same task); the loaded tools validate arguments against the server's JSON Schema locally, run
under the usual limits, and `await registry.aclose()` shuts the connection (and the process) down.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, TextIO

import jsonschema
import mcp_types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from tools.errors import InvalidArguments, ToolError, ToolsError
from tools.logs import tools_logger
from tools.outcome import ToolContext
from tools.registry import Registry
from tools.spec import Tool, ToolOptions, clean_schema

log = tools_logger("tools.mcp")

MCPServerRef = str | StdioServerParameters
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_MAX_PAGES = 50


class MCPConnectionError(ToolsError, ConnectionError):
    """The MCP server could not be started, reached or initialised in time."""


def stdio(command: str, *args: str, env: dict[str, str] | None = None, cwd: str | None = None) -> StdioServerParameters:
    """Parameters to launch an MCP server as a subprocess spoken to over stdin/stdout."""
    return StdioServerParameters(command=command, args=list(args), env=env, cwd=cwd)


@dataclass
class MCPOptions:
    """How MCP tools are loaded and run."""

    prefix: str = ""  # prepended to every tool name, e.g. "github_"
    include: frozenset[str] | None = None  # server tool names to load; None = all
    # "inline": the MCP session lives on the caller's event loop, and its calls are plain awaits there
    tool_options: ToolOptions = ToolOptions(timeout_s=30.0, max_concurrency=4, max_result_chars=4000,
                                            isolation="inline")
    connect_timeout_s: float = 30.0
    errlog: TextIO | None = None  # where a stdio server's stderr goes (default: this process's stderr)


class MCPConnection:
    """One live MCP client session, owned by a background task until `aclose()`."""

    def __init__(self, server: MCPServerRef, *, connect_timeout_s: float = 30.0, errlog: TextIO | None = None):
        self.server = server
        self.connect_timeout_s = connect_timeout_s
        self.errlog = errlog
        self._client: Client | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    @property
    def label(self) -> str:
        if isinstance(self.server, str):
            return self.server
        return " ".join([self.server.command, *self.server.args])

    @property
    def connected(self) -> bool:
        return self._client is not None and self._task is not None and not self._task.done()

    async def start(self) -> MCPConnection:
        self._task = asyncio.get_running_loop().create_task(self._hold(), name=f"mcp:{self.label}")
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await self._ready.wait()
        except TimeoutError:
            await self.aclose()
            raise MCPConnectionError(f"MCP server {self.label!r} did not initialise within "
                                     f"{self.connect_timeout_s:g} s") from None
        if self._client is None:
            err = self._error
            await self.aclose()
            raise MCPConnectionError(f"cannot connect to MCP server {self.label!r}: {_root_cause(err)!r}") from err
        log.info("mcp_connected", server=self.label, protocol=self._client.protocol_version)
        return self

    async def _hold(self) -> None:
        target: Any = self.server
        if isinstance(target, StdioServerParameters):
            target = stdio_client(target, errlog=self.errlog or sys.stderr)
        try:
            async with Client(target) as client:
                self._client = client
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # noqa: BLE001 - recorded; start()/calls report it
            self._error = exc
            if not isinstance(exc, asyncio.CancelledError):
                log.warning("mcp_connection_ended", server=self.label, error=repr(_root_cause(exc)))
        finally:
            self._client = None
            self._ready.set()

    async def list_tools(self) -> list[mcp_types.Tool]:
        client = self._require()
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        return await self._require().call_tool(name, arguments)

    def _require(self) -> Client:
        if not self.connected or self._client is None:
            raise ToolError(f"the MCP server {self.label!r} is not connected", code="unavailable")
        return self._client

    async def aclose(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            try:
                async with asyncio.timeout(10.0):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        log.info("mcp_closed", server=self.label)

    def make_tools(self, remote: Iterable[mcp_types.Tool], options: MCPOptions) -> list[Tool]:
        out = []
        for t in remote:
            if options.include is not None and t.name not in options.include:
                continue
            out.append(_wrap_remote_tool(self, t, options))
        return out


async def load_mcp_tools(
    server: MCPServerRef,
    *,
    prefix: str = "",
    include: Iterable[str] | None = None,
    tool_options: ToolOptions | None = None,
    connect_timeout_s: float = 30.0,
    errlog: TextIO | None = None,
    registry: Registry | None = None,
) -> Registry:
    """Connect to an MCP server and return a Registry of its tools (or add them to `registry`).

    `server`: a streamable-HTTP URL ("http://127.0.0.1:8000/mcp") or StdioServerParameters
    (see `stdio(...)`). The returned registry owns the connection: `await reg.aclose()`.
    Raises MCPConnectionError when the server cannot be reached in `connect_timeout_s`.
    """
    opts = MCPOptions(prefix=prefix, include=None if include is None else frozenset(include),
                      connect_timeout_s=connect_timeout_s, errlog=errlog)
    if tool_options is not None:
        opts.tool_options = tool_options
    conn = await MCPConnection(server, connect_timeout_s=connect_timeout_s, errlog=errlog).start()
    try:
        async with asyncio.timeout(connect_timeout_s):
            remote = await conn.list_tools()
    except Exception as exc:
        await conn.aclose()
        raise MCPConnectionError(f"listing tools of {conn.label!r} failed: {_root_cause(exc)!r}") from exc
    except BaseException:
        await conn.aclose()
        raise
    reg = registry if registry is not None else Registry(name=f"mcp:{conn.label}")
    for t in conn.make_tools(remote, opts):
        reg.register(t)
    reg.add_closer(conn.aclose)
    log.info("mcp_tools_loaded", server=conn.label, tools=[t.name for t in remote])
    return reg


def _wrap_remote_tool(conn: MCPConnection, remote: mcp_types.Tool, options: MCPOptions) -> Tool:
    name = (options.prefix + _BAD_NAME_CHARS.sub("_", remote.name))[:64]
    schema = clean_schema(dict(remote.input_schema or {"type": "object", "properties": {}}))
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    checker = validator_cls(schema)
    ann = remote.annotations
    tool_opts = options.tool_options
    if tool_opts.isolation != "inline":  # the session is bound to the loop that opened it
        tool_opts = replace(tool_opts, isolation="inline")
    if ann is not None and ann.idempotent_hint and not tool_opts.idempotent:
        tool_opts = replace(tool_opts, idempotent=True)

    def validate(raw: dict[str, Any]) -> dict[str, Any]:
        problems = [_describe(err) for err in sorted(checker.iter_errors(raw), key=lambda e: list(e.absolute_path))]
        if problems:
            raise InvalidArguments(problems)
        return raw

    async def run(args: dict[str, Any], context: ToolContext) -> str:
        result = await conn.call_tool(remote.name, args)
        text = render_call_result(result)
        if result.is_error:
            raise ToolError(text or "the MCP server reported an error", code="tool_error")
        return text

    description = (remote.description or remote.title or remote.name).strip()
    return Tool(name, description, None, run, tool_opts, is_async=True, parameters_schema=schema,
                validator=validate)


def _describe(err: jsonschema.ValidationError) -> str:
    path = ""
    for part in err.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        field = f"{path}.{missing}" if path else missing
        return f"field '{field}' is required but missing"
    got = json.dumps(err.instance, default=str)[:60]
    if err.validator == "type":
        return f"field '{path or '(arguments)'}' should be of type {err.validator_value} (got {got})"
    return f"field '{path or '(arguments)'}': {err.message[:200]}"


def render_call_result(result: mcp_types.CallToolResult) -> str:
    """Text of an MCP tool result: text blocks joined; other blocks summarised; else structured JSON."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        else:
            kind = getattr(block, "type", type(block).__name__)
            mime = getattr(block, "mime_type", "") or ""
            parts.append(f"[{kind}{' ' + mime if mime else ''} content not shown]")
    if not any(parts) and result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False, default=str)
    return "\n".join(parts)


def _root_cause(exc: BaseException | None) -> BaseException | None:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
