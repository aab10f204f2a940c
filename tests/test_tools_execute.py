"""Safe execution: argument errors, timeouts, isolation of exceptions, truncation, concurrency."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from pydantic import BaseModel
from structlog.testing import capture_logs

from interplay.v1 import common_pb2
from tools import Registry, ToolContext, ToolError, ToolOutcome, tool

SECRET = "sk-live-7f3a9c1e55b2"


class Item(BaseModel):
    sku: str
    qty: int


@tool(timeout_s=2.0)
async def order(item: Item, note: str = "") -> str:
    """Place an order."""
    return f"ordered {item.qty} x {item.sku}"


REG = Registry([order])


async def _wait_for_event(logs: list[dict], name: str, limit_s: float = 3.0) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if any(e["event"] == name for e in logs):
            return True
        await asyncio.sleep(0.01)
    return False


# ----------------------------------------------------------------------------- arguments


async def test_valid_arguments_as_json_text_reach_the_tool_as_typed_values():
    out = await REG.call("order", json.dumps({"item": {"sku": "A1", "qty": 3}}), call_id="c1")
    assert (out.ok, out.content, out.call_id) == (True, "ordered 3 x A1", "c1")


async def test_a_missing_field_is_named_in_the_error():
    out = await REG.call("order", {"item": {"sku": "A1"}})
    assert out.error_code == "invalid_arguments"
    assert "tool 'order'" in out.content and "field 'item.qty' is required" in out.content


async def test_a_wrong_type_is_named_in_the_error():
    out = await REG.call("order", {"item": {"sku": "A1", "qty": "three"}})
    assert out.error_code == "invalid_arguments"
    assert "tool 'order'" in out.content and "field 'item.qty'" in out.content and "integer" in out.content


async def test_an_extra_field_is_named_in_the_error():
    out = await REG.call("order", {"item": {"sku": "A1", "qty": 1}, "coupon": "FREE"})
    assert out.error_code == "invalid_arguments"
    assert "tool 'order'" in out.content and "field 'coupon' is not a parameter" in out.content


async def test_arguments_that_are_not_json_get_a_descriptive_error():
    out = await REG.call("order", '{"item": {"sku": "A1", "qty": 1')
    assert out.error_code == "invalid_arguments"
    assert "tool 'order'" in out.content and "not valid JSON" in out.content and '"item"' in out.content


async def test_arguments_that_are_json_but_not_an_object_are_refused():
    out = await REG.call("order", "[1, 2]")
    assert out.error_code == "invalid_arguments" and "must be a JSON object, got an array" in out.content


async def test_an_unknown_tool_lists_the_available_ones():
    out = await REG.call("nope", "{}")
    assert (out.ok, out.error_code) == (False, "unknown_tool") and "order" in out.content


async def test_a_tool_outside_the_context_allow_list_is_not_run():
    out = await REG.call("order", {"item": {"sku": "A", "qty": 1}}, context=ToolContext(allow=frozenset({"x"})))
    assert (out.ok, out.error_code) == (False, "not_allowed")


async def test_a_tool_needing_a_permission_the_context_lacks_is_refused():
    @tool(permissions=["payments"])
    def pay(amount: int) -> str:
        """Pay."""
        return "paid"

    out = await Registry([pay]).call("pay", {"amount": 1}, context=ToolContext(permissions=frozenset({"read"})))
    assert (out.ok, out.error_code) == (False, "permission_denied") and "payments" in out.content


async def test_a_tool_runs_when_the_context_grants_its_permission():
    @tool(permissions=["payments"])
    def pay(amount: int) -> str:
        """Pay."""
        return "paid"

    out = await Registry([pay]).call("pay", {"amount": 1}, context=ToolContext(permissions=frozenset({"payments"})))
    assert out.ok and out.content == "paid"


# ----------------------------------------------------------------------------- timeouts


async def test_an_async_tool_that_sleeps_forever_is_cancelled_at_its_timeout():
    """Not before its 0.2 s limit, and long before forever: the upper bound leaves half a second for a
    loaded machine (a tool that was not cancelled would never return). The tool runs on a worker
    thread's loop, so it signals through a threading.Event."""
    saw_cancel = threading.Event()

    @tool(timeout_s=0.2)
    async def hang() -> str:
        """Never returns."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            saw_cancel.set()
            raise
        return "never"

    t0 = time.perf_counter()
    out = await Registry([hang]).call("hang", {})
    elapsed = time.perf_counter() - t0
    assert out.error_code == "timeout" and 0.2 <= elapsed < 0.7
    assert await asyncio.to_thread(saw_cancel.wait, 1.0)  # the coroutine saw CancelledError


async def test_a_late_result_of_an_async_tool_that_ignores_cancellation_is_dropped():
    finished = threading.Event()

    @tool(timeout_s=0.1)
    async def stubborn() -> str:
        """Swallows the cancellation and answers late."""
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)
        finished.set()
        return "LATE RESULT"

    with capture_logs() as logs:
        out = await Registry([stubborn]).call("stubborn", {}, call_id="s1")
        assert await asyncio.to_thread(finished.wait, 2.0)
        assert await _wait_for_event(logs, "tool_late_result_dropped")
    assert out.error_code == "timeout" and "LATE" not in out.content


async def test_a_sync_tool_that_blocks_is_abandoned_at_its_timeout():
    """Not before its 0.2 s limit, and well before the 5 s the tool blocks: the upper bound leaves half a
    second for a loaded machine."""
    release = threading.Event()

    @tool(timeout_s=0.2)
    def block() -> str:
        """Blocks its thread."""
        release.wait(5.0)
        return "LATE RESULT"

    try:
        t0 = time.perf_counter()
        out = await Registry([block]).call("block", {})
        elapsed = time.perf_counter() - t0
    finally:
        release.set()
    assert out.error_code == "timeout" and 0.2 <= elapsed < 0.7


async def test_the_late_result_of_an_abandoned_sync_tool_is_dropped():
    release = threading.Event()

    @tool(timeout_s=0.1)
    def block() -> str:
        """Blocks its thread until released."""
        release.wait(5.0)
        return "LATE RESULT"

    with capture_logs() as logs:
        out = await Registry([block]).call("block", {}, call_id="b1")
        release.set()
        assert await _wait_for_event(logs, "tool_late_result_dropped")
    dropped = [e for e in logs if e["event"] == "tool_late_result_dropped"]
    assert out.error_code == "timeout" and "LATE" not in out.content and dropped[0]["call_id"] == "b1"


async def test_cancelling_the_caller_cancels_the_running_tool():
    saw_cancel = threading.Event()

    @tool(timeout_s=5.0)
    async def hang() -> str:
        """Never returns."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            saw_cancel.set()
            raise
        return "never"

    caller = asyncio.ensure_future(Registry([hang]).call("hang", {}))
    await asyncio.sleep(0.05)
    caller.cancel()
    assert await asyncio.to_thread(saw_cancel.wait, 1.0)
    assert caller.cancelled() or isinstance(caller.exception(), asyncio.CancelledError)


# ----------------------------------------------------------------------------- failures


@tool
def leaky(user: str) -> str:
    """Raises with a secret in the message."""
    raise ValueError(f"upstream rejected api_key={SECRET} for {user}")


async def test_an_exception_message_with_a_secret_never_reaches_the_model():
    out = await Registry([leaky]).call("leaky", {"user": "ann"})
    assert out.error_code == "internal_error" and not out.ok
    assert SECRET not in out.content and "api_key" not in out.content
    assert SECRET not in out.to_proto().SerializeToString().decode("utf-8", "replace")


async def test_the_log_keeps_the_details_of_a_hidden_exception():
    with capture_logs() as logs:
        out = await Registry([leaky]).call("leaky", {"user": "ann"}, call_id="L1")
    event = next(e for e in logs if e["event"] == "tool_exception")
    assert SECRET in event["exc_message"] and "ValueError" in event["traceback"]
    assert event["ref"] in out.content  # the model-side message points at the log entry


async def test_a_tool_error_message_is_shown_to_the_model():
    @tool
    def picky(n: int) -> str:
        """Refuses odd numbers."""
        raise ToolError(f"{n} is odd; give an even number")

    out = await Registry([picky]).call("picky", {"n": 3})
    assert (out.ok, out.error_code) == (False, "tool_error") and "3 is odd; give an even number" in out.content


async def test_an_idempotent_tool_is_retried_after_a_failure():
    attempts = []

    @tool(idempotent=True, retries=2)
    def flaky() -> str:
        """Fails twice then works."""
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("transient")
        return "fine"

    out = await Registry([flaky]).call("flaky", {})
    assert (out.ok, out.content, out.attempts) == (True, "fine", 3)


async def test_a_non_idempotent_tool_is_never_retried():
    attempts = []

    @tool
    def once() -> str:
        """Fails."""
        attempts.append(1)
        raise ConnectionError("transient")

    out = await Registry([once]).call("once", {})
    assert not out.ok and len(attempts) == 1


# ----------------------------------------------------------------------------- results


async def test_an_oversize_result_is_truncated_with_a_marker():
    @tool(max_result_chars=100)
    def big() -> str:
        """Too much text."""
        return "x" * 5000

    out = await Registry([big]).call("big", {})
    assert out.ok and out.truncated and len(out.content) <= 100
    assert "truncated" in out.content and "of 5000 characters" in out.content


async def test_structured_results_are_rendered_as_json():
    @tool
    def info() -> dict:
        """Structured."""
        return {"a": 1, "b": [1, 2]}

    out = await Registry([info]).call("info", {})
    assert json.loads(out.content) == {"a": 1, "b": [1, 2]}


async def test_an_outcome_converts_to_the_wire_tool_result():
    out = await REG.call("order", {"item": {"sku": "Z", "qty": 2}}, call_id="w1")
    pb = out.to_proto()
    assert isinstance(pb, common_pb2.ToolResult)
    assert (pb.call_id, pb.name, pb.ok, pb.content) == ("w1", "order", True, "ordered 2 x Z")


# ----------------------------------------------------------------------------- concurrency


async def test_one_hundred_concurrent_calls_never_exceed_the_concurrency_limit():
    active = 0
    peak = 0
    lock = threading.Lock()  # calls run on worker threads

    @tool(max_concurrency=4, timeout_s=5.0)
    async def work(i: int) -> int:
        """Track how many run at once."""
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        await asyncio.sleep(0.005)
        with lock:
            active -= 1
        return i

    reg = Registry([work])
    outs = await asyncio.gather(*(reg.call("work", {"i": i}, call_id=f"c{i}") for i in range(100)))
    assert peak == 4
    assert all(o.ok for o in outs)


async def test_every_concurrent_call_settles_exactly_once_with_its_own_id():
    @tool(max_concurrency=3)
    async def echo(i: int) -> int:
        """Echo."""
        await asyncio.sleep(0.001)
        return i

    reg = Registry([echo])
    outs: list[ToolOutcome] = await asyncio.gather(*(reg.call("echo", {"i": i}, call_id=f"c{i}") for i in range(100)))
    assert [(o.call_id, o.content) for o in outs] == [(f"c{i}", str(i)) for i in range(100)]


async def test_a_tool_receives_the_callers_context():
    @tool
    async def who(context: ToolContext) -> str:
        """Session id."""
        return f"{context.session_id}/{context.task_id}"

    out = await Registry([who]).call("who", {}, context=ToolContext(session_id="s9", task_id="t3"))
    assert out.content == "s9/t3"


# ----------------------------------------------------------------------------- argument limits


@tool
def take(n: int = 0, text: str = "", items: list[int] | None = None, data: dict | None = None) -> str:
    """Accepts a few kinds of argument."""
    return "taken"


async def _take(arguments) -> ToolOutcome:
    return await Registry([take]).call("take", arguments)


async def test_an_integer_with_too_many_digits_is_invalid_arguments_naming_the_limit():
    out = await _take('{"n": ' + "9" * 5000 + "}")
    assert out.error_code == "invalid_arguments" and "5000 digits; at most 64" in out.content


async def test_a_huge_integer_passed_as_a_python_value_is_invalid_arguments():
    out = await _take({"n": 10 ** 5000})
    assert out.error_code == "invalid_arguments" and "digits" in out.content


async def test_arguments_nested_too_deep_are_invalid_arguments_even_as_a_python_value():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    out = await _take({"data": {"x": deep}})
    assert out.error_code == "invalid_arguments" and "nested more than 32 levels" in out.content


async def test_arguments_over_the_byte_limit_are_invalid_arguments():
    out = await _take(json.dumps({"text": "x" * 70_000}))
    assert out.error_code == "invalid_arguments" and "at most 64000 are accepted" in out.content


async def test_an_oversized_string_is_invalid_arguments():
    out = await _take({"text": "x" * 40_000})
    assert out.error_code == "invalid_arguments" and "a string is 40000 characters long" in out.content


async def test_an_oversized_list_is_invalid_arguments():
    out = await _take({"items": list(range(5000))})
    assert out.error_code == "invalid_arguments" and "an array has 5000 entries" in out.content


async def test_invalid_utf8_arguments_are_invalid_arguments():
    out = await _take(b'{"text": "\xff\xfe"}')
    assert out.error_code == "invalid_arguments" and "not valid JSON" in out.content


async def test_brackets_inside_strings_do_not_count_as_nesting():
    out = await _take(json.dumps({"text": "[" * 100 + '\\"{' * 50}))
    assert out.ok and out.content == "taken"


async def test_a_tool_can_raise_its_own_argument_limits():
    from tools.arguments import ArgumentLimits

    @tool(argument_limits=ArgumentLimits(max_int_digits=200))
    def big(n: int) -> str:
        """Takes long integers."""
        return str(n % 97)

    out = await Registry([big]).call("big", '{"n": ' + "1" * 150 + "}")
    assert out.ok and out.content == str(int("1" * 150) % 97)
