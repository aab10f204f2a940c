"""Run one tool call safely and settle it exactly once as a `ToolOutcome`.

Contract: `await execute(tool, arguments, call_id=..., context=...)` never raises for a tool's
failure; it returns one outcome. In order: the arguments are parsed and checked against the tool's
model and its size/depth limits (tools/arguments.py → `invalid_arguments`); the context must hold
the tool's permissions (`permission_denied`) and its store every secret the tool declares
(`missing_secret`, naming it); then the call runs under its timeout, isolated as the tool says
(tools/isolation.py: by default on a worker thread, off the caller's event loop): a timeout settles
`timeout` at its limit whatever the tool does, a pool held by hung calls settles `unavailable` at
once. A ToolError's message reaches the model scrubbed (redacted, control characters removed,
capped); any other exception only as its type and a log reference (the log keeps the details,
redacted). Every text that leaves — content, log fields — has the secret values of the caller's
store replaced by `[secret:NAME]`. Results over the tool's size are cut with a marker; a per-tool
semaphore bounds concurrency; idempotent tools are retried after a timeout or internal error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import traceback
import uuid
from typing import Any

from pydantic import BaseModel

from interplay.secrets import SecretStore, redact_text, scrub
from tools import outcome as codes
from tools.arguments import ArgumentError, expected_hint, parse_arguments
from tools.errors import ToolError
from tools.isolation import CallCancelledItself, CallTimedOut, PoolExhausted, WorkerPool, default_pool
from tools.logs import tools_logger
from tools.outcome import ToolContext, ToolOutcome
from tools.spec import Tool

log = tools_logger("tools")

TRUNCATION_MARKER = "\n[... truncated: showing {shown} of {total} characters]"
_MAX_ERROR_CHARS = 600
MAX_TOOL_ERROR_MESSAGE_CHARS = 400  # a ToolError's own message, before "Tool 'x' failed: " is added

__all__ = ["ArgumentError", "execute", "expected_hint", "parse_arguments", "render_result", "truncate"]


# ----------------------------------------------------------------------------- results


def render_result(value: Any) -> str:
    """Text the model sees for a tool's return value."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if value is None:
        return "null"
    try:
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError):
        return str(value)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    return str(obj)


def truncate(text: str, limit: int) -> tuple[str, bool]:
    """Cut `text` to at most `limit` characters, ending with a marker that says so."""
    if len(text) <= limit:
        return text, False
    shown = limit
    for _ in range(3):  # the marker's own length depends on `shown`
        marker = TRUNCATION_MARKER.format(shown=shown, total=len(text))
        shown = max(0, limit - len(marker))
    marker = TRUNCATION_MARKER.format(shown=shown, total=len(text))
    return text[:shown] + marker, True


# ----------------------------------------------------------------------------- execution


async def execute(
    tool: Tool,
    arguments: str | bytes | dict[str, Any] | None,
    *,
    call_id: str = "",
    context: ToolContext | None = None,
    pool: WorkerPool | None = None,
) -> ToolOutcome:
    """Validate, check permissions and secrets, run under the tool's limits; returns exactly one outcome.

    Never raises for tool failures. If the *caller* is cancelled, the running call is cancelled
    (or abandoned, see tools/isolation.py) and CancelledError propagates (there is then no outcome).
    """
    context = context or ToolContext()
    store = context.secret_store
    t0 = time.perf_counter()

    def settle(ok: bool, content: str, code: str = "", attempts: int = 1) -> ToolOutcome:
        limit = tool.options.max_result_chars if ok else min(tool.options.max_result_chars, _MAX_ERROR_CHARS)
        text, cut = truncate(_redact(content, store), limit)
        out = ToolOutcome(call_id=call_id, name=tool.name, ok=ok, content=text, truncated=cut,
                          duration_ms=(time.perf_counter() - t0) * 1000.0, error_code=code, attempts=attempts)
        log.info("tool_call_settled", tool=tool.name, call_id=call_id, ok=ok, error_code=code,
                 truncated=cut, duration_ms=round(out.duration_ms, 2), attempts=attempts,
                 session_id=context.session_id, task_id=context.task_id)
        return out

    try:
        args = parse_arguments(tool, arguments)
    except ArgumentError as exc:
        return settle(False, str(exc), codes.INVALID_ARGUMENTS)
    except Exception as exc:  # a validator's own fault: still the model's arguments that did not fit
        ref = _log_exception("tool_argument_check_fault", tool, call_id, exc, store)
        return settle(False, f"Invalid arguments for tool '{tool.name}': they could not be checked "
                             f"(ref {ref}). {expected_hint(tool)}", codes.INVALID_ARGUMENTS)
    missing = tool.options.permissions - context.permissions
    if missing:
        return settle(False, f"Tool '{tool.name}' needs permission {', '.join(sorted(missing))}, "
                             "which this conversation does not grant.", codes.PERMISSION_DENIED)
    absent = [n for n in tool.options.secrets if store is None or store.get(n) is None]
    if absent:
        log.warning("tool_secret_missing", tool=tool.name, call_id=call_id, secrets=absent)
        return settle(False, f"Tool '{tool.name}' needs the secret {', '.join(repr(n) for n in absent)}, "
                             "which the background side was not given.", codes.MISSING_SECRET)
    granted = {n: store.get(n) for n in tool.options.secrets} if store is not None else {}
    call_context = dataclasses.replace(context, granted_secrets=granted)

    attempts = 0
    async with tool.semaphore():
        while True:
            attempts += 1
            try:
                ok, content, code = await _attempt(tool, args, call_context, call_id, pool)
            except Exception as exc:  # a fault in the machinery itself must still settle the call
                ref = _log_exception("tool_execution_fault", tool, call_id, exc, store)
                ok, content, code = False, _hidden_error(tool, exc, ref), codes.INTERNAL_ERROR
            retryable = code in (codes.TIMEOUT, codes.INTERNAL_ERROR) and tool.options.idempotent
            if ok or not retryable or attempts > tool.options.retries:
                return settle(ok, content, code, attempts)
            log.info("tool_call_retry", tool=tool.name, call_id=call_id, attempt=attempts, error_code=code)


async def _attempt(tool: Tool, args: dict[str, Any], context: ToolContext, call_id: str,
                   pool: WorkerPool | None) -> tuple[bool, str, str]:
    """One run of the tool under its timeout: (ok, content, error_code)."""
    timeout = tool.options.timeout_s
    timed_out = (f"Tool '{tool.name}' timed out after {timeout:g} s and was cancelled; "
                 "no result was produced.")
    inline = tool.options.isolation == "inline"
    try:
        value = await (_run_inline(tool, args, context, call_id, timeout) if inline
                       else (pool or default_pool()).run(tool, args, context, call_id, timeout))
    except CallTimedOut:
        log.warning("tool_timeout", tool=tool.name, call_id=call_id, timeout_s=timeout,
                    kind="inline" if inline else "coroutine" if tool.is_async else "thread")
        return False, timed_out, codes.TIMEOUT
    except PoolExhausted:
        return False, (f"Tool '{tool.name}' could not start: every tool worker is held by an earlier call "
                       "that never returned. Try again later."), codes.UNAVAILABLE
    except CallCancelledItself:
        log.warning("tool_cancelled_itself", tool=tool.name, call_id=call_id)
        return False, f"Tool '{tool.name}' was cancelled before it finished.", codes.INTERNAL_ERROR
    except Exception as exc:
        return _failed(tool, call_id, exc, context.secret_store)
    return True, render_result(value), ""


async def _run_inline(tool: Tool, args: dict[str, Any], context: ToolContext, call_id: str, timeout: float) -> Any:
    """A coroutine tool on the caller's own loop (for tools bound to it); cancelled at the timeout."""
    loop = asyncio.get_running_loop()
    try:
        fut: asyncio.Future[Any] = asyncio.ensure_future(tool.run(args, context))
    except Exception as exc:  # run() raised before producing an awaitable
        fut = loop.create_future()
        fut.set_exception(exc)
    try:
        done, _ = await asyncio.wait({fut}, timeout=timeout)
    except asyncio.CancelledError:  # the caller gave up: stop the work, then propagate
        fut.cancel()
        fut.add_done_callback(_late_observer(tool, call_id, "caller_cancelled"))
        raise
    if not done:
        fut.cancel()
        fut.add_done_callback(_late_observer(tool, call_id, "timeout"))
        log.warning("tool_timeout", tool=tool.name, call_id=call_id, timeout_s=timeout, kind="inline")
        raise CallTimedOut(tool.name)
    if fut.cancelled():
        raise CallCancelledItself(tool.name)
    return fut.result()


def _failed(tool: Tool, call_id: str, exc: BaseException, store: SecretStore | None) -> tuple[bool, str, str]:
    if isinstance(exc, ToolError):
        message = scrub(exc.message, MAX_TOOL_ERROR_MESSAGE_CHARS, store) or "no reason given"
        code = scrub(exc.code or codes.TOOL_ERROR, 64)
        log.info("tool_error", tool=tool.name, call_id=call_id, code=code, message=message)
        return False, f"Tool '{tool.name}' failed: {message}", code or codes.TOOL_ERROR
    ref = _log_exception("tool_exception", tool, call_id, exc, store)
    return False, _hidden_error(tool, exc, ref), codes.INTERNAL_ERROR


def _log_exception(event: str, tool: Tool, call_id: str, exc: BaseException, store: SecretStore | None) -> str:
    """Log an unexpected exception in full (secret values redacted); returns its reference."""
    ref = uuid.uuid4().hex[:8]
    log.error(event, tool=tool.name, call_id=call_id, ref=ref, exc_type=type(exc).__name__,
              exc_message=_redact(str(exc), store),
              traceback=_redact("".join(traceback.format_exception(exc)), store))
    return ref


def _redact(text: str, store: SecretStore | None) -> str:
    return redact_text(store.redact(text) if store is not None else text)


def _hidden_error(tool: Tool, exc: BaseException, ref: str) -> str:
    """What the model sees for an unexpected exception: its type, never its message."""
    return (f"Tool '{tool.name}' failed with an internal error ({type(exc).__name__}); "
            f"details were logged under ref {ref}.")


def _late_observer(tool: Tool, call_id: str, why: str):
    """Done-callback for a call that already settled: log (and drop) whatever it ends with."""

    def observe(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            log.debug("tool_call_stopped", tool=tool.name, call_id=call_id, why=why)
            return
        exc = fut.exception()
        log.info("tool_late_result_dropped", tool=tool.name, call_id=call_id, why=why,
                 ok=exc is None, exc_type=type(exc).__name__ if exc else "")

    return observe
