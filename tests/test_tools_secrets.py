"""Secrets: declared by a tool, injected at call time from the background side's store, never in the
schema, and redacted (`[secret:NAME]`) from tool results, error messages, the model's input, the
updates on the wire and the logs. Through a real Background server (gRPC on 127.0.0.1, scripted
engine: tests/scripted_engine.py), plus the registry alone."""

from __future__ import annotations

import json
import time

import pytest
from scripted_engine import make_scripted_engine, script

from background_actor.actor import BackgroundActorImpl
from background_actor.client import BackgroundClient
from background_actor.service import ServerConfig
from interplay.secrets import SecretStore, scrub
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import context_pb2 as xpb
from tools import Registry, ToolContext, ToolDefinitionError, ToolError, tool

KEY = "wk-9f8e7d6c5b4a3921"
REDACTED = "[secret:weather_api_key]"


@tool(secrets=("weather_api_key",))
def weather(city: str, context: ToolContext) -> str:
    """Weather for a city (needs the weather API key)."""
    return f"{city}: sunny" if context.secret("weather_api_key") == KEY else "wrong key"


@tool(secrets=("weather_api_key",))
def echo_key(context: ToolContext) -> str:
    """Careless: returns the key in its result."""
    return f"using key {context.secret('weather_api_key')}"


@tool(secrets=("weather_api_key",))
def leaky(context: ToolContext) -> str:
    """Raises with the key in the exception message."""
    raise ValueError(f"upstream rejected api_key={context.secret('weather_api_key')}")


@tool(secrets=("weather_api_key",))
def picky(context: ToolContext) -> str:
    """Raises a ToolError with the key, control characters and far too much text."""
    raise ToolError(f"bad key {context.secret('weather_api_key')}\x1b[31m\x00\x07 red" + " and more" * 1000)


@tool(secrets=("other_api_key",))
def needs_other(context: ToolContext) -> str:
    """Declares a secret the store does not hold."""
    return "never"


@tool
def undeclared(context: ToolContext) -> str:
    """Reads a secret it did not declare."""
    return context.secret("weather_api_key")


def make_registry() -> Registry:
    return Registry([weather, echo_key, leaky, picky, needs_other, undeclared])


@pytest.fixture(scope="module")
def server():
    cfg = ServerConfig(engine="scripted", secrets={"weather_api_key": KEY})
    impl = BackgroundActorImpl(cfg, make_registry, log_level="info", engine_factory=make_scripted_engine)
    yield impl
    impl.stop()


async def delegate(server, tool_name: str, arguments: dict | None = None) -> list[bpb.Update]:
    pkg = xpb.ContextPackage(task_id=f"t{time.monotonic_ns()}", session_id="s1", task=script(tool_name, arguments or {}),
                             allowed_tools=[tool_name], deadline_ms=30_000, created_unix_ms=int(time.time() * 1000))
    async with BackgroundClient(server.address()) as bg:
        return await bg.run(pkg, timeout_s=30)


def result_of(ups: list[bpb.Update]):
    (res,) = [u.tool_result for u in ups if u.kind == bpb.UPDATE_KIND_TOOL_RESULT]
    return res


def wire_text(ups: list[bpb.Update]) -> str:
    return "".join(u.SerializeToString().decode("utf-8", "replace") for u in ups)


async def test_a_tool_reads_its_declared_secret_at_call_time(server):
    ups = await delegate(server, "weather", {"city": "Oslo"})
    assert result_of(ups).ok and result_of(ups).content == "Oslo: sunny"


def test_a_declared_secret_is_not_in_the_tools_json_schema():
    text = json.dumps(weather.schema())
    assert "weather_api_key" not in text and "context" not in text
    assert list(weather.parameters()["properties"]) == ["city"]


async def test_a_secret_returned_by_a_tool_is_redacted_on_the_wire_and_in_the_model_input(server):
    ups = await delegate(server, "echo_key")
    assert result_of(ups).content == f"using key {REDACTED}"
    assert ups[-1].kind == bpb.UPDATE_KIND_FINAL and ups[-1].text == f"TOOL SAID: using key {REDACTED}"
    assert KEY not in wire_text(ups)


async def test_a_secret_in_an_exception_message_never_reaches_the_logs_or_the_wire(server, capfd):
    ups = await delegate(server, "leaky")
    err = capfd.readouterr().err
    assert "tool_exception" in err and f"api_key={REDACTED}" in err
    assert KEY not in err and KEY not in wire_text(ups)


async def test_a_tool_error_message_is_redacted_stripped_of_control_characters_and_capped(server):
    ups = await delegate(server, "picky")
    content = result_of(ups).content
    assert content.startswith(f"Tool 'picky' failed: bad key {REDACTED}[31m red and more")
    assert KEY not in wire_text(ups)
    assert not any(ord(ch) < 32 for ch in content) and len(content) < 450 and content.endswith("…")


async def test_a_missing_secret_settles_as_a_tool_error_naming_it(server):
    ups = await delegate(server, "needs_other")
    res = result_of(ups)
    assert not res.ok and "'other_api_key'" in res.content and "needs the secret" in res.content


async def test_a_secret_the_tool_did_not_declare_is_not_given_to_it():
    store = SecretStore({"weather_api_key": KEY})
    out = await Registry([undeclared]).call("undeclared", {}, context=ToolContext(secret_store=store))
    assert (out.ok, out.error_code) == (False, "missing_secret")
    assert "'weather_api_key' is not available to this tool" in out.content and KEY not in out.content


def test_a_tool_that_declares_secrets_without_a_context_parameter_is_refused():
    with pytest.raises(ToolDefinitionError, match="no ToolContext parameter"):
        @tool(secrets=("weather_api_key",))
        def bare(city: str) -> str:
            """No context."""
            return city


def test_a_secret_store_never_shows_its_values():
    store = SecretStore({"weather_api_key": KEY})
    assert KEY not in repr(store) and KEY not in str(store) and "weather_api_key" in repr(store)


def test_a_value_that_contains_another_is_redacted_whole():
    store = SecretStore({"short": "abcd1234", "long": "abcd1234-extra"})
    assert store.redact("x abcd1234-extra y abcd1234") == "x [secret:long] y [secret:short]"


def test_scrub_caps_length_and_removes_control_characters():
    assert scrub("a\x00b\nc\x1b[0m" + "z" * 100, 20) == "ab c[0mzzzzzzzzzzzz…"
