"""The demo's own tool: `weather(city)` answered from a small forecast table.

It stands where a product team's real weather API would be (this machine has no internet): a real
tool, registered and called through the tool registry by the background agent, whose data is a
fixed table. `demo_registry()` is the demo's tool set: this tool plus the built-in calculator and clock.
"""

from __future__ import annotations

from typing import Literal

from tools import Registry, ToolError, tool

# city -> (condition, temperature in C). The interaction model's synthetic training data uses
# these cities and these one-word conditions, so its voiced answer can repeat them.
FORECAST: dict[str, tuple[str, int]] = {
    "oslo": ("snow", -3),
    "rome": ("sun", 19),
    "lima": ("fog", 16),
    "kyiv": ("rain", 7),
}


# The cities the table knows, declared in the tool's schema: the background model's tool call is
# grammar-constrained to the schema, so it picks one of these instead of inventing a city (the 135M
# model did, "Ogdeneborg", when a follow-up was folded into the task before its first step).
City = Literal["Oslo", "Rome", "Lima", "Kyiv"]


@tool(timeout_s=2.0, idempotent=True)
def weather(city: City) -> str:
    """Today's weather for a city: the condition in one word and the temperature.

    Args:
        city: City name, one of those with a forecast.
    """
    key = city.strip().lower()
    if key not in FORECAST:  # "Oslo, Norway", "oslo norway": the first known city named in it
        key = next((c for c in FORECAST if c in key.replace(",", " ").split()), key)
    if key not in FORECAST:
        known = ", ".join(c.title() for c in FORECAST)
        raise ToolError(f"no forecast for {city!r}; known cities: {known}")
    cond, temp = FORECAST[key]
    return f"{key.title()} {cond}, {temp} C"


def demo_registry() -> Registry:
    """The demo's tools: weather, calculator, clock."""
    from tools.builtin import default_registry

    return default_registry(include=("calculator", "clock")) | Registry([weather], name="demo")
