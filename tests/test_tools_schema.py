"""@tool → pydantic args model → OpenAI function schema, and Registry building/narrowing."""

from __future__ import annotations

import enum
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from tools import (
    DuplicateToolError,
    Registry,
    ToolContext,
    ToolDefinitionError,
    UnknownToolError,
    tool,
)


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Place(BaseModel):
    city: str
    country: str | None = None


class Trip(BaseModel):
    stops: list[Place]
    unit: Unit = Unit.CELSIUS


@tool(timeout_s=3.0)
async def plan(trip: Trip, note: str | None = None, days: int = 2, pace: Literal["slow", "fast"] = "slow") -> str:
    """Plan a trip through some places.

    Longer explanation that is not part of the description.

    Args:
        trip: The places to visit, in order.
        note: Anything the planner should know.
        days: How many days the whole trip lasts.
    """
    return f"{len(trip.stops)} stops over {days} days"


def _params(t) -> dict:
    return t.schema()["function"]["parameters"]


def test_schema_is_in_openai_function_tool_format():
    entry = plan.schema()
    assert entry["type"] == "function"
    assert set(entry["function"]) == {"name", "description", "parameters"}
    assert entry["function"]["name"] == "plan"


def test_description_is_the_first_docstring_paragraph():
    assert plan.schema()["function"]["description"] == "Plan a trip through some places."


def test_parameter_descriptions_come_from_the_docstring_args_section():
    props = _params(plan)["properties"]
    assert props["days"]["description"] == "How many days the whole trip lasts."
    assert props["trip"]["description"] == "The places to visit, in order."


def test_nested_pydantic_types_are_inlined_without_refs():
    stops = _params(plan)["properties"]["trip"]["properties"]["stops"]
    assert stops["type"] == "array"
    assert stops["items"]["properties"]["city"] == {"type": "string"}
    assert "$ref" not in str(_params(plan)) and "$defs" not in _params(plan)


def test_optionals_are_nullable_and_not_required():
    params = _params(plan)
    assert {"type": "null"} in params["properties"]["note"]["anyOf"]
    assert "note" not in params["required"]


def test_enums_list_their_values():
    params = _params(plan)
    assert params["properties"]["trip"]["properties"]["unit"]["enum"] == ["celsius", "fahrenheit"]
    assert params["properties"]["pace"]["enum"] == ["slow", "fast"]


def test_defaults_are_exported_and_only_parameters_without_one_are_required():
    params = _params(plan)
    assert params["properties"]["days"]["default"] == 2
    assert params["properties"]["trip"]["properties"]["unit"]["default"] == "celsius"
    assert params["required"] == ["trip"]


def test_extra_arguments_are_forbidden_in_the_schema():
    assert _params(plan)["additionalProperties"] is False


def test_pydantic_titles_are_dropped_but_a_property_named_title_is_kept():
    @tool
    def book(title: str, author: str = "") -> str:
        """Find a book."""
        return title

    params = _params(book)
    assert "title" in params["properties"]
    assert "title" not in params and "title" not in params["properties"]["author"]


def test_annotated_field_descriptions_are_used():
    @tool
    def scale(factor: Annotated[float, Field(description="Multiplier", gt=0)]) -> float:
        """Scale."""
        return factor

    assert _params(scale)["properties"]["factor"] == {"type": "number", "exclusiveMinimum": 0, "description": "Multiplier"}


def test_a_toolcontext_parameter_is_injected_not_exposed():
    import asyncio

    @tool
    def whoami(context: ToolContext) -> str:
        """Who is asking."""
        return context.session_id

    assert _params(whoami)["properties"] == {}
    out = asyncio.run(Registry([whoami]).call("whoami", {}, context=ToolContext(session_id="s7")))
    assert (out.ok, out.content) == (True, "s7")


def test_recursive_models_keep_their_defs():
    class Node(BaseModel):
        name: str
        children: list[Node] = []

    @tool
    def walk(root: Node) -> int:
        """Count nodes."""
        return 1

    params = _params(walk)
    assert "Node" in params["$defs"]


def test_decorated_tool_stays_callable_like_the_function():
    @tool
    def double(x: int) -> int:
        """Double."""
        return 2 * x

    assert double(21) == 42


def test_retries_on_a_non_idempotent_tool_are_refused_at_definition():
    with pytest.raises(ToolDefinitionError, match="idempotent"):

        @tool(retries=2)
        def charge(amount: int) -> str:
            """Charge."""
            return "ok"


def test_var_args_are_refused_at_definition():
    with pytest.raises(ToolDefinitionError, match=r"\*args"):

        @tool
        def spread(*values: int) -> int:
            """Sum."""
            return sum(values)


def test_duplicate_names_in_a_registry_are_refused():
    with pytest.raises(DuplicateToolError):
        Registry([plan, plan.fn])


def test_registries_compose_with_the_union_operator():
    @tool
    def ping() -> str:
        """Ping."""
        return "pong"

    combined = Registry([plan]) | Registry([ping])
    assert combined.names() == ["plan", "ping"]


def test_subset_keeps_only_the_allow_list():
    @tool
    def ping() -> str:
        """Ping."""
        return "pong"

    reg = Registry([plan, ping])
    assert reg.subset(["ping", "not_there"]).names() == ["ping"]


def test_strict_subset_names_unknown_tools():
    with pytest.raises(UnknownToolError, match="nope"):
        Registry([plan]).subset(["nope"], strict=True)


def test_schemas_respect_an_allow_list():
    @tool
    def ping() -> str:
        """Ping."""
        return "pong"

    names = [s["function"]["name"] for s in Registry([plan, ping]).schemas(allow=["ping"])]
    assert names == ["ping"]


def test_registries_are_independent_objects():
    @tool
    def ping() -> str:
        """Ping."""
        return "pong"

    a, b = Registry([plan]), Registry()
    b.register(ping)
    merged = a | b
    merged.remove("plan")
    narrowed = a.subset(["plan"])
    narrowed.remove("plan")
    assert (a.names(), b.names(), merged.names(), narrowed.names()) == (["plan"], ["ping"], ["ping"], [])
    assert Registry().names() == []  # nothing registered above leaked into a new registry


def test_a_tool_and_its_registry_survive_pickling_for_shipping_to_an_actor():
    import asyncio
    import pickle

    import cloudpickle

    from tools import Registry, tool

    @tool(timeout_s=1.0)
    def shout(word: str) -> str:
        """Say it loud."""
        return word.upper()

    reg = pickle.loads(cloudpickle.dumps(Registry([shout])))
    outcome = asyncio.run(reg.call("shout", '{"word": "hi"}', call_id="c1"))
    assert outcome.ok and outcome.content == "HI"
