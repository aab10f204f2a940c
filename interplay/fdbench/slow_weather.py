"""The delegation scenarios' slow tool: `weather(city)` that takes 3-8 s and answers a line no one can guess.

A real tool (tools.tool), registered and called through the tool registry by each system's own tool
machinery: interplay's background agent (`registry()` is what `--tools interplay.fdbench.slow_weather:registry`
serves) and pipecat's function calling (pipecat_runner.py registers the same table through its own
`register_function`; it cannot import this module, so the job carries `table()`). Each city has its own
delay, drawn once from a named seed (`delay_s`), so a scenario that asks about one city always waits the
same time, and a distinctive answer: the city and its condition ("In Berlin, snow, minus three degrees.").
The condition is what proves the result was voiced: the user never says it, and no two cities share one.

It never touches the network; the sleep is `asyncio.sleep`, so a cancelled call stops at once.
"""

from __future__ import annotations

import asyncio
import random
from typing import Literal

from tools import Registry, ToolError, tool

DELAY_S = (3.0, 8.0)  # each city's delay is drawn from this range
SEED = "fdbench-slow-weather"

# city -> (condition, the temperature as spoken). One condition per city: a transcript that holds it
# names this city's result and no other. Chosen so that Whisper tiny.en hears both words in the cascade's
# voice (espeak-ng en-us+f3): "In Berlin, snow, ..." is heard as said, "Lima fog" as "Lima Phard", "Oslo"
# from a user as "also", "Madrid" live as "the grid" (measured on "In <city>, <condition>, ten degrees." for
# 10 cities x 7 conditions, and in two runs of the scenarios).
FORECAST: dict[str, tuple[str, str]] = {
    "Berlin": ("snow", "minus three"),
    "London": ("rain", "eleven"),
    "Boston": ("clouds", "four"),
    "Chicago": ("sunshine", "nineteen"),
    "Moscow": ("strong wind", "twenty"),
    "Paris": ("storms", "sixteen"),
}
City = Literal["Berlin", "London", "Boston", "Chicago", "Moscow", "Paris"]


def delay_s(city: str) -> float:
    """The city's delay in seconds (DELAY_S, seeded by SEED and the city; the same on every run)."""
    lo, hi = DELAY_S
    return round(random.Random(f"{SEED}:{city}").uniform(lo, hi), 2)


def answer(city: str) -> str:
    cond, temp = FORECAST[city]
    return f"In {city}, {cond}, {temp} degrees."


def known(city: str) -> str | None:
    """The table's spelling of `city` ("berlin", "Berlin, Germany" -> "Berlin"); None when it is not there."""
    words = city.replace(",", " ").lower().split()
    return next((c for c in FORECAST if c.lower() in words), None)


def table() -> dict[str, dict]:
    """What a peer process needs to serve the same tool: city -> answer and delay."""
    return {c: {"answer": answer(c), "delay_s": delay_s(c)} for c in FORECAST}


@tool(timeout_s=15.0, idempotent=True)
async def weather(city: City) -> str:
    """Today's weather for a city: the condition in one word and the temperature.

    Args:
        city: City name, one of those with a forecast.
    """
    name = known(city)
    if name is None:
        raise ToolError(f"no forecast for {city!r}; known cities: {', '.join(FORECAST)}")
    await asyncio.sleep(delay_s(name))
    return answer(name)


def registry() -> Registry:
    """The scenarios' tools: the slow weather alone (a 135M background model picks among few tools best)."""
    return Registry([weather], name="fdbench-slow")
