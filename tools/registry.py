"""`Registry`: a plain object holding named tools — composable (`a | b`), narrowed by allow-lists
(`subset`), exported as OpenAI function schemas, and called by name with `await reg.call(...)`,
which never raises for tool failures and settles every call exactly once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from tools import outcome as codes
from tools.errors import DuplicateToolError, UnknownToolError
from tools.execute import execute
from tools.logs import tools_logger
from tools.outcome import ToolContext, ToolOutcome
from tools.spec import Tool, make_tool

log = tools_logger("tools")

ToolLike = Tool | Callable[..., Any]


class Registry:
    """Named tools. No hidden global state: build as many as you like, combine them freely.

    Accepts `Tool`s (from `@tool`), plain functions/coroutines (wrapped with default options)
    and other registries (their tools are added). Names are unique within a registry.
    """

    def __init__(self, tools: Iterable[ToolLike | Registry] = (), *, name: str = "") -> None:
        self.name = name
        self._tools: dict[str, Tool] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []
        for item in tools:
            if isinstance(item, Registry):
                self.include(item)
            else:
                self.register(item)

    # ------------------------------------------------------------------ building

    def register(self, fn: ToolLike, *, replace: bool = False) -> Tool:
        """Add a tool (or a plain function, wrapped with default options); returns the Tool.

        Usable as a decorator: `@reg.register` above a function or an `@tool(...)` function.
        """
        t = make_tool(fn)
        if t.name in self._tools and not replace and self._tools[t.name] is not t:
            raise DuplicateToolError(f"registry already has a tool named {t.name!r}; pass replace=True")
        self._tools[t.name] = t
        return t

    def include(self, other: Registry, *, prefix: str = "", replace: bool = False) -> Registry:
        """Add every tool of `other` (optionally renamed `prefix + name`); returns self."""
        for t in other:
            if prefix:
                t = _renamed(t, prefix + t.name)
            self.register(t, replace=replace)
        self._closers.extend(other._closers)
        return self

    def remove(self, name: str) -> Tool:
        try:
            return self._tools.pop(name)
        except KeyError:
            raise UnknownToolError(f"no tool named {name!r}") from None

    def add_closer(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Register an async clean-up (e.g. an MCP connection) run by `aclose()`."""
        self._closers.append(closer)

    async def aclose(self) -> None:
        """Run clean-ups (MCP sessions, timers) in reverse order; safe to call twice."""
        closers, self._closers = self._closers[::-1], []
        for closer in closers:
            try:
                await closer()
            except Exception as exc:  # clean-up must not fail the caller
                log.warning("registry_close_failed", error=repr(exc))

    async def __aenter__(self) -> Registry:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __or__(self, other: Registry) -> Registry:
        """`a | b`: a new registry with the tools of both (names must not clash)."""
        merged = Registry(name=self.name or other.name)
        merged.include(self)
        merged.include(other)
        return merged

    # ------------------------------------------------------------------ looking up

    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownToolError(f"no tool named {name!r}; available: {', '.join(self._tools) or 'none'}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"Registry({self.names()!r})"

    def subset(self, names: Iterable[str], *, strict: bool = False) -> Registry:
        """A registry with only `names` (an allow-list). Unknown names are skipped and logged,
        or raise UnknownToolError when `strict`. The tools are shared, so are their limits."""
        wanted = list(dict.fromkeys(names))
        unknown = [n for n in wanted if n not in self._tools]
        if unknown:
            if strict:
                raise UnknownToolError(f"unknown tool(s) in allow-list: {', '.join(unknown)}")
            log.warning("allow_list_unknown_tools", unknown=unknown)
        sub = Registry(name=self.name)
        for n in wanted:
            if n in self._tools:
                sub._tools[n] = self._tools[n]
        return sub

    def schemas(self, allow: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """OpenAI function-tool entries ({"type": "function", "function": {...}}), in order."""
        allowed = None if allow is None else set(allow)
        return [t.schema() for n, t in self._tools.items() if allowed is None or n in allowed]

    # ------------------------------------------------------------------ calling

    async def call(
        self,
        name: str,
        arguments: str | bytes | dict[str, Any] | None = None,
        *,
        call_id: str = "",
        context: ToolContext | None = None,
    ) -> ToolOutcome:
        """Run tool `name` with the model's `arguments` (JSON text or dict).

        Never raises for tool failures (unknown tool, bad arguments, permission, timeout,
        exception): every call returns exactly one ToolOutcome. `context.allow`, when set, is the
        delegation's allow-list.
        """
        t = self._tools.get(name)
        if t is None or (context is not None and context.allow is not None and name not in context.allow):
            visible = [n for n in self._tools if context is None or context.allow is None or n in context.allow]
            code = codes.UNKNOWN_TOOL if t is None else codes.NOT_ALLOWED
            text = (f"Unknown tool '{name}'." if t is None else f"Tool '{name}' is not allowed here.")
            log.info("tool_call_settled", tool=name, call_id=call_id, ok=False, error_code=code)
            return ToolOutcome(call_id=call_id, name=name, ok=False, error_code=code,
                               content=f"{text} Available tools: {', '.join(visible) or 'none'}.")
        return await execute(t, arguments, call_id=call_id, context=context)


def _renamed(t: Tool, new_name: str) -> Tool:
    clone = Tool(new_name, t.description, t.args_model, t.run, t.options, is_async=t.is_async,
                 parameters_schema=t.parameters(), fn=None, validator=t.validator)
    clone.fn = t.fn
    clone._semaphores = t._semaphores  # one concurrency gate for both names
    return clone
