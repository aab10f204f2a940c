"""Built-in tools and `default_registry(**opts)`: calculator, clock, timer, http_fetch, memory.

Each call builds fresh state (its own timers, SQLite store, HTTP allow-list); `await reg.aclose()`
cancels pending timers and closes the store.
"""

from __future__ import annotations

from collections.abc import Iterable

from tools.builtin.calculator import calculator, evaluate
from tools.builtin.clock import TimerConfig, Timers, clock, make_timer_tool
from tools.builtin.http_fetch import HttpFetchConfig, HttpFetcher, make_http_fetch_tool
from tools.builtin.memory import MemoryConfig, MemoryStore, make_memory_tool
from tools.registry import Registry

BUILTIN_NAMES = ("calculator", "clock", "timer", "http_fetch", "memory")


def default_registry(
    *,
    http_allow_hosts: Iterable[str] = (),
    http_max_bytes: int = 200_000,
    http_timeout_s: float = 8.0,
    memory_path: str = ":memory:",
    timer_max_seconds: float = 24 * 3600.0,
    include: Iterable[str] | None = None,
) -> Registry:
    """A registry with the built-in tools (or the `include` subset of BUILTIN_NAMES).

    http_fetch refuses every host unless `http_allow_hosts` names it ("example.com",
    "*.example.com", "127.0.0.1:8080"); memory lives in SQLite at `memory_path`.
    """
    wanted = set(BUILTIN_NAMES if include is None else include)
    unknown = wanted - set(BUILTIN_NAMES)
    if unknown:
        raise ValueError(f"unknown built-in tool(s): {', '.join(sorted(unknown))}; choose from {BUILTIN_NAMES}")
    reg = Registry(name="builtin")
    if "calculator" in wanted:
        reg.register(calculator)
    if "clock" in wanted:
        reg.register(clock)
    if "timer" in wanted:
        timers = Timers(TimerConfig(max_seconds=timer_max_seconds))
        reg.register(make_timer_tool(timers))
        reg.add_closer(timers.aclose)
    if "http_fetch" in wanted:
        cfg = HttpFetchConfig(allow_hosts=tuple(http_allow_hosts), max_bytes=http_max_bytes, timeout_s=http_timeout_s)
        reg.register(make_http_fetch_tool(cfg))
    if "memory" in wanted:
        store = MemoryStore(MemoryConfig(path=memory_path))
        reg.register(make_memory_tool(store))

        async def close_store() -> None:
            store.close()

        reg.add_closer(close_store)
    return reg


__all__ = [
    "BUILTIN_NAMES",
    "HttpFetchConfig",
    "HttpFetcher",
    "MemoryConfig",
    "MemoryStore",
    "TimerConfig",
    "Timers",
    "calculator",
    "clock",
    "default_registry",
    "evaluate",
    "make_http_fetch_tool",
    "make_memory_tool",
    "make_timer_tool",
]
