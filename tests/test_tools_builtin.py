"""Built-in tools: calculator, clock, timer, http_fetch (against a real server on 127.0.0.1), memory."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tools import Registry, ToolContext, default_registry
from tools.builtin import HttpFetchConfig, MemoryConfig, MemoryStore, make_http_fetch_tool, make_memory_tool
from tools.builtin.calculator import CalculatorError, evaluate

# ----------------------------------------------------------------------------- calculator


@pytest.mark.parametrize("expr", ["(2 + 3) * 4 ** 2 / 8", "7 // 2 - 7 % 3", "-(1.5e3) + +2", "2 ** -2"])
def test_calculator_evaluates_arithmetic_like_python_does(expr):
    assert evaluate(expr) == eval(expr)  # noqa: S307 - the reference, on a fixed literal


def test_calculator_knows_math_functions_and_constants():
    assert evaluate("sqrt(16) + sin(pi / 2) + log(e)") == pytest.approx(4 + 1 + 1)


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("x + 1", "name 'x' is not allowed"),
        ("__import__('os')", "function '__import__' is not allowed"),
        ("__import__('os').system('true')", "attribute access ('.system')"),
        ("(1).__class__", "attribute access"),
        ("math.pi", "attribute access"),
        ("9 ** 99999", "exponent 99999 is too large"),
        ("123456789 ** 9999", "is too large"),
        ("'a' * 3", "only numbers are allowed"),
        ("[1, 2][0]", "not allowed"),
        ("lambda: 1", "not allowed"),
        ("1 / 0", "division by zero"),
        ("10.0 ** 400", "too large"),
    ],
)
def test_calculator_refuses_non_arithmetic_with_a_clear_error(expr, reason):
    with pytest.raises(CalculatorError, match=re.escape(reason)):
        evaluate(expr)


async def test_calculator_refusal_reaches_the_model_as_a_tool_error():
    async with default_registry(include=["calculator"]) as reg:
        out = await reg.call("calculator", {"expression": "open('/etc/passwd')"})
    assert (out.ok, out.error_code) == (False, "tool_error") and "function 'open' is not allowed" in out.content


# ----------------------------------------------------------------------------- clock and timer


async def test_clock_tells_the_time_in_the_requested_zone():
    async with default_registry(include=["clock"]) as reg:
        out = await reg.call("clock", {"timezone": "Asia/Tokyo"})
    stamp = dt.datetime.fromisoformat(out.content.rsplit("(", 1)[1].rstrip(")"))
    assert stamp.utcoffset() == dt.timedelta(hours=9)
    assert abs((stamp - dt.datetime.now(dt.UTC)).total_seconds()) < 5


async def test_clock_refuses_an_unknown_zone_by_name():
    async with default_registry(include=["clock"]) as reg:
        out = await reg.call("clock", {"timezone": "Mars/Olympus"})
    assert not out.ok and "unknown time zone 'Mars/Olympus'" in out.content


async def test_timer_emits_its_reminder_when_due():
    updates: list[tuple[float, str]] = []
    due = asyncio.Event()

    def emit(text: str) -> None:
        updates.append((time.perf_counter(), text))
        due.set()

    async with default_registry(include=["timer"]) as reg:
        t0 = time.perf_counter()
        out = await reg.call("timer", {"seconds": 0.15, "message": "take the tea out"},
                             context=ToolContext(session_id="s1", emit=emit))
        assert out.ok and not updates  # returns at once; nothing emitted yet
        await asyncio.wait_for(due.wait(), 2.0)
    (when, text), = updates
    assert when - t0 >= 0.15 and "take the tea out" in text


async def test_timer_without_an_update_channel_is_refused():
    async with default_registry(include=["timer"]) as reg:
        out = await reg.call("timer", {"seconds": 1, "message": "x"}, context=ToolContext(session_id="s1"))
    assert not out.ok and "no channel" in out.content


async def test_closing_the_registry_cancels_pending_timers():
    fired: list[str] = []
    reg = default_registry(include=["timer"])
    await reg.call("timer", {"seconds": 0.1, "message": "x"}, context=ToolContext(session_id="s", emit=fired.append))
    await reg.aclose()
    await asyncio.sleep(0.2)
    assert fired == []


# ----------------------------------------------------------------------------- http_fetch


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server API
        if self.path == "/hello":
            self._send(200, b"hello from the test server", "text/plain; charset=utf-8")
        elif self.path == "/big":
            self._send(200, b"a" * 50_000, "text/plain")
        elif self.path == "/to-hello":
            self._redirect("/hello")
        elif self.path == "/to-elsewhere":
            self._redirect("http://not-allowed.invalid/secret")
        elif self.path == "/slow":
            time.sleep(3.0)
            self._send(200, b"slow", "text/plain")
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("location", location)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(2.0)


def _fetch_registry(**cfg) -> Registry:
    return Registry([make_http_fetch_tool(HttpFetchConfig(**{"allow_hosts": ("127.0.0.1",), **cfg}))])


async def test_http_fetch_refuses_a_host_not_on_the_allow_list():
    out = await _fetch_registry().call("http_fetch", {"url": "http://example.com/"})
    assert (out.ok, out.error_code) == (False, "not_allowed") and "'example.com' is not on the allow-list" in out.content


async def test_http_fetch_reads_a_page_from_an_allowed_local_server(http_server):
    out = await _fetch_registry().call("http_fetch", {"url": f"{http_server}/hello"})
    assert out.ok and out.content.startswith("HTTP 200") and "hello from the test server" in out.content


async def test_http_fetch_follows_a_redirect_that_stays_on_the_allow_list(http_server):
    out = await _fetch_registry().call("http_fetch", {"url": f"{http_server}/to-hello"})
    assert out.ok and "hello from the test server" in out.content


async def test_http_fetch_refuses_a_redirect_to_a_host_off_the_allow_list(http_server):
    out = await _fetch_registry().call("http_fetch", {"url": f"{http_server}/to-elsewhere"})
    assert not out.ok and "'not-allowed.invalid' is not on the allow-list" in out.content


async def test_http_fetch_cuts_the_body_at_its_byte_limit(http_server):
    out = await _fetch_registry(max_bytes=1000).call("http_fetch", {"url": f"{http_server}/big"})
    assert out.ok and out.content.count("a") >= 1000 and "[body cut at 1000 bytes]" in out.content
    assert len(out.content) < 1400


async def test_http_fetch_gives_up_at_its_time_limit(http_server):
    """The page takes 3 s; a 0.3 s limit ends the fetch after 0.3 s and well before the page (the upper
    bound leaves room for a loaded machine)."""
    t0 = time.perf_counter()
    out = await _fetch_registry(timeout_s=0.3).call("http_fetch", {"url": f"{http_server}/slow"})
    elapsed = time.perf_counter() - t0
    assert (out.ok, out.error_code) == (False, "timeout") and 0.3 <= elapsed < 1.5


async def test_http_fetch_refuses_a_non_http_scheme():
    out = await _fetch_registry().call("http_fetch", {"url": "file:///etc/passwd"})
    assert not out.ok and "scheme 'file' is not allowed" in out.content


# ----------------------------------------------------------------------------- memory


async def test_memory_persists_a_sessions_values_across_restarts(tmp_path):
    path = str(tmp_path / "mem.sqlite")
    first = MemoryStore(MemoryConfig(path=path))
    await Registry([make_memory_tool(first)]).call(
        "memory", {"action": "set", "key": "colour", "value": "teal"}, context=ToolContext(session_id="s1"))
    first.close()
    second = MemoryStore(MemoryConfig(path=path))
    out = await Registry([make_memory_tool(second)]).call(
        "memory", {"action": "get", "key": "colour"}, context=ToolContext(session_id="s1"))
    second.close()
    assert out.content == "teal"


async def test_memory_isolates_sessions():
    async with default_registry(include=["memory"]) as reg:
        await reg.call("memory", {"action": "set", "key": "pin", "value": "1234"}, context=ToolContext(session_id="a"))
        other = await reg.call("memory", {"action": "get", "key": "pin"}, context=ToolContext(session_id="b"))
        listing = await reg.call("memory", {"action": "list"}, context=ToolContext(session_id="b"))
    assert "1234" not in other.content and "Nothing is stored" in other.content
    assert "pin" not in listing.content


async def test_memory_needs_a_session():
    async with default_registry(include=["memory"]) as reg:
        out = await reg.call("memory", {"action": "list"})
    assert not out.ok and "only available inside a session" in out.content


def test_memory_bounds_the_keys_per_session():
    store = MemoryStore(MemoryConfig(max_keys_per_session=3))
    for i in range(3):
        store.set("s", f"k{i}", "v")
    with pytest.raises(Exception, match="memory is full"):
        store.set("s", "k3", "v")
    store.close()


# ----------------------------------------------------------------------------- default registry


def test_default_registry_holds_the_five_builtins():
    reg = default_registry()
    assert reg.names() == ["calculator", "clock", "timer", "http_fetch", "memory"]


def test_every_builtin_schema_is_a_valid_openai_function():
    from jsonschema import Draft202012Validator

    for entry in default_registry().schemas():
        fn = entry["function"]
        assert entry["type"] == "function" and fn["description"] and fn["parameters"]["type"] == "object"
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", fn["name"]), fn["name"]  # OpenAI's rule for function names
        Draft202012Validator.check_schema(fn["parameters"])  # the parameters are a valid JSON Schema
        assert set(fn["parameters"].get("required", [])) <= set(fn["parameters"]["properties"]), fn["name"]


def test_calculator_reads_a_caret_as_power_the_way_people_write_it():
    assert evaluate("2^10") == 1024 and evaluate("(3+4)^2") == 49


def test_clock_names_a_tzdata_folder_an_unknown_time_zone():
    from tools.builtin.clock import zone
    from tools.errors import ToolError

    with pytest.raises(ToolError, match="unknown time zone 'US'"):
        zone("US")
