"""Run one tool call safely and settle it exactly once as a `ToolOutcome`.

Validation errors name the tool and the field; a timeout cancels a coroutine (it sees
CancelledError) or abandons a sync function's thread, and any late result is dropped; exceptions
other than ToolError reach the model only as a short generic message (the log keeps details);
results over the tool's size are cut with a marker; a per-tool semaphore bounds concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import threading
import time
import traceback
import uuid
from typing import Any

from pydantic import BaseModel, ValidationError

from tools import outcome as codes
from tools.errors import InvalidArguments, ToolError
from tools.logs import tools_logger
from tools.outcome import ToolContext, ToolOutcome
from tools.spec import Tool

log = tools_logger("tools")

TRUNCATION_MARKER = "\n[... truncated: showing {shown} of {total} characters]"
_MAX_ERROR_CHARS = 600


class ArgumentError(ValueError):
    """Arguments the model sent do not fit the tool; the message is meant for the model."""


# ----------------------------------------------------------------------------- arguments


def parse_arguments(tool: Tool, arguments: str | bytes | dict[str, Any] | None) -> dict[str, Any]:
    """Validate raw arguments (JSON text or dict) against the tool's model; ArgumentError on misfit."""
    prefix = f"Invalid arguments for tool '{tool.name}'"
    if arguments is None or (isinstance(arguments, str | bytes) and not arguments.strip()):
        raw: Any = {}
    elif isinstance(arguments, str | bytes):
        try:
            raw = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise ArgumentError(
                f"{prefix}: arguments are not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}). "
                f"Send one JSON object. {expected_hint(tool)}"
            ) from None
    else:
        raw = arguments
    if not isinstance(raw, dict):
        raise ArgumentError(
            f"{prefix}: arguments must be a JSON object, got {_json_type(raw)}. {expected_hint(tool)}"
        )
    try:
        return tool.validate(raw)
    except ValidationError as exc:
        problems = [_describe_error(tool, err) for err in exc.errors(include_url=False)]
    except InvalidArguments as exc:
        problems = list(exc.problems)
    raise ArgumentError(f"{prefix}: " + "; ".join(problems) + f". {expected_hint(tool)}")


def _describe_error(tool: Tool, err: Any) -> str:
    loc = err.get("loc", ())
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    kind = err.get("type", "")
    if kind == "missing":
        return f"field '{path}' is required but missing"
    if kind == "extra_forbidden":
        allowed = ", ".join(tool.parameter_names()) or "none"
        return f"field '{path}' is not a parameter of this tool (parameters: {allowed})"
    got = err.get("input")
    got_s = json.dumps(got, default=str)[:60] if not isinstance(got, BaseModel) else type(got).__name__
    return f"field '{path or '(arguments)'}': {err.get('msg', 'invalid value')} (got {got_s})"


def expected_hint(tool: Tool) -> str:
    """A one-line reminder of the parameters, e.g. `Expected: {"a": integer, "b"?: string}`."""
    params = tool.parameters()
    required = set(params.get("required", []))
    parts = []
    for pname, sch in params.get("properties", {}).items():
        typ = sch.get("type") or ("enum" if "enum" in sch else "any" if not sch.get("anyOf") else "|".join(
            str(s.get("type", "object")) for s in sch["anyOf"]))
        parts.append(f'"{pname}"{"" if pname in required else "?"}: {typ}')
    return "Expected: {" + ", ".join(parts) + "}"


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


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
) -> ToolOutcome:
    """Validate, check permissions, run under the tool's limits; returns exactly one outcome.

    Never raises for tool failures. If the *caller* is cancelled, the running call is cancelled
    too and CancelledError propagates (there is then no outcome to deliver).
    """
    context = context or ToolContext()
    t0 = time.perf_counter()

    def settle(ok: bool, content: str, code: str = "", attempts: int = 1) -> ToolOutcome:
        limit = tool.options.max_result_chars if ok else min(tool.options.max_result_chars, _MAX_ERROR_CHARS)
        text, cut = truncate(content, limit)
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
    missing = tool.options.permissions - context.permissions
    if missing:
        return settle(False, f"Tool '{tool.name}' needs permission {', '.join(sorted(missing))}, "
                             "which this conversation does not grant.", codes.PERMISSION_DENIED)

    attempts = 0
    async with tool.semaphore():
        while True:
            attempts += 1
            try:
                ok, content, code = await _attempt(tool, args, context, call_id)
            except Exception as exc:  # a fault in the machinery itself must still settle the call
                ref = uuid.uuid4().hex[:8]
                log.error("tool_execution_fault", tool=tool.name, call_id=call_id, ref=ref, exc_type=type(exc).__name__,
                          exc_message=str(exc), traceback="".join(traceback.format_exception(exc)))
                ok, content, code = False, _hidden_error(tool, exc, ref), codes.INTERNAL_ERROR
            retryable = code in (codes.TIMEOUT, codes.INTERNAL_ERROR) and tool.options.idempotent
            if ok or not retryable or attempts > tool.options.retries:
                return settle(ok, content, code, attempts)
            log.info("tool_call_retry", tool=tool.name, call_id=call_id, attempt=attempts, error_code=code)


async def _attempt(tool: Tool, args: dict[str, Any], context: ToolContext, call_id: str) -> tuple[bool, str, str]:
    """One run of the tool under its timeout: (ok, content, error_code)."""
    loop = asyncio.get_running_loop()
    timeout = tool.options.timeout_s
    if tool.is_async:
        try:
            fut: asyncio.Future[Any] = asyncio.ensure_future(tool.run(args, context))
        except Exception as exc:  # run() raised before producing an awaitable
            fut = loop.create_future()
            fut.set_exception(exc)
    else:
        fut = _run_in_thread(tool, args, context, call_id, loop)
    try:
        done, _ = await asyncio.wait({fut}, timeout=timeout)
    except asyncio.CancelledError:  # the caller gave up: stop the work, then propagate
        fut.cancel()
        fut.add_done_callback(_late_observer(tool, call_id, "caller_cancelled"))
        raise
    if not done:
        fut.cancel()  # a coroutine sees CancelledError; a thread is abandoned
        fut.add_done_callback(_late_observer(tool, call_id, "timeout"))
        log.warning("tool_timeout", tool=tool.name, call_id=call_id, timeout_s=timeout,
                    kind="coroutine" if tool.is_async else "thread")
        return False, (f"Tool '{tool.name}' timed out after {timeout:g} s and was cancelled; "
                       "no result was produced."), codes.TIMEOUT
    if fut.cancelled():
        log.warning("tool_cancelled_itself", tool=tool.name, call_id=call_id)
        return False, f"Tool '{tool.name}' was cancelled before it finished.", codes.INTERNAL_ERROR
    exc = fut.exception()
    if exc is None:
        return True, render_result(fut.result()), ""
    if isinstance(exc, ToolError):
        log.info("tool_error", tool=tool.name, call_id=call_id, code=exc.code, message=exc.message)
        return False, f"Tool '{tool.name}' failed: {exc.message}", exc.code or codes.TOOL_ERROR
    ref = uuid.uuid4().hex[:8]
    log.error("tool_exception", tool=tool.name, call_id=call_id, ref=ref, exc_type=type(exc).__name__,
              exc_message=str(exc), traceback="".join(traceback.format_exception(exc)))
    return False, _hidden_error(tool, exc, ref), codes.INTERNAL_ERROR


def _hidden_error(tool: Tool, exc: BaseException, ref: str) -> str:
    """What the model sees for an unexpected exception: its type, never its message."""
    return (f"Tool '{tool.name}' failed with an internal error ({type(exc).__name__}); "
            f"details were logged under ref {ref}.")


def _run_in_thread(tool: Tool, args: dict[str, Any], context: ToolContext, call_id: str,
                   loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
    """Run a sync tool on its own daemon thread so that a hung call can be abandoned.

    (The default executor has few workers; hung tools would starve it.) The future is resolved
    through the loop; if it was already cancelled (timeout) the late result is dropped.
    """
    fut: asyncio.Future[Any] = loop.create_future()
    ctx = contextvars.copy_context()

    def deliver(ok: bool, value: Any) -> None:
        if fut.done():
            log.info("tool_late_result_dropped", tool=tool.name, call_id=call_id, ok=ok, kind="thread")
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def target() -> None:
        try:
            value, ok = ctx.run(tool.run, args, context), True
        except BaseException as exc:  # noqa: BLE001 - delivered to the loop, classified there
            value, ok = exc, False
        with contextlib.suppress(RuntimeError):  # the loop is gone: the call settled long ago
            loop.call_soon_threadsafe(deliver, ok, value)

    threading.Thread(target=target, name=f"tool-{tool.name}", daemon=True).start()
    return fut


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
