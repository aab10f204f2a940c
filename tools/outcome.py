"""What goes into a tool call (`ToolContext`) and what comes out (`ToolOutcome`).

A ToolOutcome is the single settlement of one call; `.to_proto()` gives the wire ToolResult.
A ToolContext carries the caller's secret store; a call sees only the secrets its tool declared,
through `context.secret(name)`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from interplay.secrets import SecretStore
from interplay.v1 import common_pb2
from tools.errors import ToolError

# error_code values a ToolOutcome may carry ("" when ok).
INVALID_ARGUMENTS = "invalid_arguments"
UNKNOWN_TOOL = "unknown_tool"
PERMISSION_DENIED = "permission_denied"
TIMEOUT = "timeout"
TOOL_ERROR = "tool_error"  # the tool raised ToolError: its message is shown
INTERNAL_ERROR = "internal_error"  # anything else: a generic message is shown, details logged
NOT_ALLOWED = "not_allowed"  # the tool exists but is outside the call's allow-list
MISSING_SECRET = "missing_secret"  # the tool declares a secret the caller's store does not hold
UNAVAILABLE = "unavailable"  # no worker could take the call (every one is held by a hung call)


@dataclass
class ToolContext:
    """Who is calling and what they may do; passed to tools that declare a ToolContext parameter."""

    session_id: str = ""
    task_id: str = ""
    permissions: frozenset[str] = frozenset()
    # A tool (e.g. a timer) may push a background update (text) through this, now or later.
    emit: Callable[[str], Awaitable[None] | None] | None = None
    # Tool names this call may use; None = everything in the registry.
    allow: frozenset[str] | None = None
    # Where declared secrets come from (the background side's store); never shown.
    secret_store: SecretStore | None = field(default=None, repr=False, compare=False)
    # The secrets of this one call (set by the executor from the tool's declaration).
    granted_secrets: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def secret(self, name: str) -> str:
        """The value of a secret the tool declared (`@tool(secrets=(name,))`); ToolError otherwise."""
        value = self.granted_secrets.get(name)
        if value is None:
            raise ToolError(f"secret '{name}' is not available to this tool (declare it with "
                            f"@tool(secrets=('{name}',)) and provide it to the background side)",
                            code=MISSING_SECRET)
        return value

    def __post_init__(self) -> None:
        self.permissions = frozenset(self.permissions)
        if self.allow is not None:
            self.allow = frozenset(self.allow)

    async def send(self, text: str) -> bool:
        """Emit `text` through `emit` (sync or async); False when there is no emitter."""
        if self.emit is None:
            return False
        res = self.emit(text)
        if inspect.isawaitable(res):
            await res
        return True


@dataclass
class ToolOutcome:
    """The settled result of one call: what the model sees plus bookkeeping."""

    call_id: str
    name: str
    ok: bool
    content: str
    truncated: bool = False
    duration_ms: float = 0.0
    error_code: str = ""
    attempts: int = field(default=1, compare=False)

    def to_proto(self) -> common_pb2.ToolResult:
        return common_pb2.ToolResult(
            call_id=self.call_id,
            name=self.name,
            content=self.content,
            ok=self.ok,
            truncated=self.truncated,
            duration_ms=self.duration_ms,
        )
