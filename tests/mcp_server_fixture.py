"""A small real MCP server (the `mcp` SDK's MCPServer) that the tools tests start as a subprocess.

Run: `python tests/mcp_server_fixture.py` (stdio) or `python tests/mcp_server_fixture.py --http PORT`
(streamable HTTP on 127.0.0.1:PORT/mcp). Tools: add, shout, fail.
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer(name="fixture", instructions="A tiny arithmetic and text server for tests.")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def shout(text: str, times: int = 1) -> str:
    """Upper-case `text` and repeat it `times` times."""
    return " ".join([text.upper()] * times)


@server.tool()
def fail(reason: str) -> str:
    """Always fails (for error-path tests)."""
    raise RuntimeError(f"server-side failure: {reason}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
