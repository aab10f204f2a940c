"""Typed errors of the tools package.

`ToolError` is the one exception whose message a tool *means* the model to see; every other
exception raised inside a tool is hidden behind a short generic message (details go to the log).
"""

from __future__ import annotations


class ToolsError(Exception):
    """Base class of errors raised by the tools package itself (never by Registry.call)."""


class ToolDefinitionError(ToolsError, TypeError):
    """A function cannot become a tool (bad name, *args, unresolvable hints, bad options)."""


class DuplicateToolError(ToolsError, ValueError):
    """A registry already holds a tool of that name."""


class UnknownToolError(ToolsError, KeyError):
    """A name that the registry does not hold (raised by strict look-ups, never by call())."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the sentence readable
        return str(self.args[0]) if self.args else "unknown tool"


class ToolError(Exception):
    """Raise inside a tool to fail the call with a message that is safe to show the model.

    `code` lands in ToolOutcome.error_code (default "tool_error").
    """

    def __init__(self, message: str, *, code: str = "tool_error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class InvalidArguments(ToolsError, ValueError):
    """Raised by a Tool's custom validator; each problem names its field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
