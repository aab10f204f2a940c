"""Registering tools for the background model: one async tool, one pydantic-typed tool, and the
tools of an MCP server — then calling them the way the background agent does.

Run (finishes in a couple of seconds):

    .venv/bin/python examples/register_tools.py

What it shows:
  * `@tool` turns a function or coroutine into a tool: the name, description and JSON Schema
    come from the signature, type hints and docstring; options (timeout, concurrency, result
    size, retries for idempotent tools, permissions) are explicit.
  * `load_mcp_tools(...)` starts an MCP server (here this very file, relaunched with
    `--mcp-server`, speaking MCP over stdio through the `mcp` SDK) and puts its tools into a
    Registry, where they are called exactly like local tools.
  * The registries compose (`a | b`) and narrow to a delegation's allow-list (`subset`).

How it plugs into the background agent: the agent loop (background_actor/) holds a
`Registry`; for each delegated task it sends `registry.schemas(allow=package.tool_allow_list)`
to the LLM as its `tools=[...]`, and for every tool call the LLM makes it awaits
`registry.call(name, arguments_json, call_id=..., context=ToolContext(session_id=...,
task_id=..., emit=<send a background update>))`. The returned ToolOutcome never raises,
settles exactly once, and `outcome.to_proto()` is the `interplay.v1.ToolResult` streamed to the
interaction actor. The calls below are exactly those calls, with the LLM's tool calls written
out by hand.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Literal

from pydantic import BaseModel, Field

from interplay.log import configure_logging
from tools import Registry, ToolContext, tool
from tools.mcp import load_mcp_tools, stdio


# 1. An async tool. Coroutines run on a worker thread's own event loop (never the caller's) and are
#    cancelled at their timeout.
@tool(timeout_s=2.0, idempotent=True, retries=1, max_concurrency=8)
async def check_stock(product: str, store: str = "central") -> str:
    """Check how many units of a product a store has.

    Args:
        product: Product name, e.g. "oat milk".
        store: Which store to ask.
    """
    await asyncio.sleep(0.01)  # stands in for an async API call
    return f"{store} has {len(product) * 3} units of {product}"


# 2. A pydantic-typed tool: nested models, enums and defaults become JSON Schema.
class Guest(BaseModel):
    name: str
    dietary: Literal["none", "vegetarian", "vegan", "gluten-free"] = "none"


class Booking(BaseModel):
    restaurant: str
    time: str = Field(description="Local time, HH:MM")
    guests: list[Guest] = Field(min_length=1, max_length=12)


@tool(timeout_s=3.0, max_result_chars=500, permissions=["bookings"])
def book_table(booking: Booking, note: str | None = None) -> dict:
    """Book a restaurant table for a group."""
    diets = sorted({g.dietary for g in booking.guests} - {"none"})
    return {"confirmed": True, "restaurant": booking.restaurant, "time": booking.time,
            "party": len(booking.guests), "dietary": diets, "note": note}


async def main() -> None:
    local = Registry([check_stock, book_table], name="local")
    # 3. The tools of an MCP server: this file relaunched as one, over stdio.
    with open(os.devnull, "w") as quiet:
        mcp_tools = await load_mcp_tools(stdio(sys.executable, __file__, "--mcp-server"), prefix="units_",
                                         errlog=quiet)
    tools = local | mcp_tools  # composable; closing `tools` closes the MCP connection too
    try:
        print("registered:", ", ".join(tools.names()))
        allow = ["check_stock", "book_table", "units_convert"]  # a delegation's allow-list
        print("schemas sent to the LLM:", json.dumps([s["function"]["name"] for s in tools.schemas(allow)]))

        updates: list[str] = []
        ctx = ToolContext(session_id="demo-session", task_id="task-1", permissions=frozenset({"bookings"}),
                          emit=updates.append, allow=frozenset(allow))
        calls = [  # (call_id, name, arguments JSON as an LLM would produce it)
            ("call_1", "check_stock", '{"product": "oat milk"}'),
            ("call_2", "book_table", json.dumps({"booking": {"restaurant": "Luna", "time": "19:30", "guests": [
                {"name": "Ada", "dietary": "vegan"}, {"name": "Lin"}]}})),
            ("call_3", "units_convert", '{"value": 5, "unit_from": "km", "unit_to": "mi"}'),
            ("call_4", "book_table", '{"booking": {"restaurant": "Luna", "guests": []}}'),  # bad arguments
        ]
        outcomes = await asyncio.gather(*(tools.call(name, args, call_id=cid, context=ctx) for cid, name, args in calls))
        for out in outcomes:
            status = "ok " if out.ok else f"ERR {out.error_code}"
            print(f"{out.call_id} {out.name:<14} {status:<22} {out.duration_ms:6.1f} ms  {out.content}")
        wire = outcomes[0].to_proto()
        print("wire ToolResult:", type(wire).__name__, {"call_id": wire.call_id, "ok": wire.ok})
    finally:
        await tools.aclose()


def run_mcp_server() -> None:
    """The MCP server side: any MCP server works; this one uses the `mcp` SDK's MCPServer."""
    from mcp.server.mcpserver import MCPServer

    server = MCPServer(name="units")
    factors = {"km": 1000.0, "mi": 1609.344, "m": 1.0, "ft": 0.3048}

    @server.tool()
    def convert(value: float, unit_from: str, unit_to: str) -> str:
        """Convert a length between km, mi, m and ft."""
        return f"{value:g} {unit_from} = {value * factors[unit_from] / factors[unit_to]:.3f} {unit_to}"

    server.run("stdio")


if __name__ == "__main__":
    if "--mcp-server" in sys.argv:
        run_mcp_server()
    else:
        configure_logging("warning")  # tool-call events go to stderr; keep the demo output readable
        asyncio.run(main())
