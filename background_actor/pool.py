"""Start a pool of BackgroundActors; delegation.client.BackgroundPool is the client that spreads
tasks over them and fails over (re-exported here)."""

from __future__ import annotations

from typing import Any

from background_actor.actor import start_background
from delegation.client import BackgroundPool

__all__ = ["BackgroundPool", "start_pool"]


def start_pool(n: int, engine: str = "local", **options: Any) -> tuple[list[Any], list[str]]:
    """Start `n` BackgroundActors (Ray must be initialised); returns (handles, addresses)."""
    started = [start_background(engine, **options) for _ in range(n)]
    return [h for h, _ in started], [a for _, a in started]
