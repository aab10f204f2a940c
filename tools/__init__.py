"""Tools for the background model: `@tool`, `Registry`, safe execution, built-ins and MCP.

    from tools import Registry, ToolContext, ToolOutcome, tool, default_registry
    outcome = await Registry([my_tool]).call("my_tool", '{"x": 1}', call_id="c1")

See tools/registry.py (the registry), tools/spec.py (the decorator), tools/execute.py (limits),
tools/arguments.py (argument checks), tools/isolation.py (worker threads), interplay/secrets.py.
"""

from tools.arguments import ArgumentLimits
from tools.errors import DuplicateToolError, ToolDefinitionError, ToolError, ToolsError, UnknownToolError
from tools.outcome import ToolContext, ToolOutcome
from tools.registry import Registry
from tools.spec import Tool, ToolOptions, make_tool, tool

__all__ = [
    "ArgumentLimits",
    "DuplicateToolError",
    "Registry",
    "Tool",
    "ToolContext",
    "ToolDefinitionError",
    "ToolError",
    "ToolOptions",
    "ToolOutcome",
    "ToolsError",
    "UnknownToolError",
    "default_registry",
    "load_mcp_tools",
    "make_tool",
    "tool",
]


def __getattr__(name: str):  # lazy: built-ins pull httpx/sqlite, MCP pulls the mcp SDK
    if name == "default_registry":
        from tools.builtin import default_registry

        return default_registry
    if name == "load_mcp_tools":
        from tools.mcp import load_mcp_tools

        return load_mcp_tools
    raise AttributeError(f"module 'tools' has no attribute {name!r}")
