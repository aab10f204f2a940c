"""Settings come from INTERPLAY_* and fail loudly on bad values; logs are key-value JSON
when the stream is not a TTY."""

from __future__ import annotations

import io
import json

import pytest
from pydantic import ValidationError

from interplay.log import configure_logging, get_logger
from interplay.settings import load_settings


def test_environment_overrides_nested_settings(monkeypatch):
    monkeypatch.setenv("INTERPLAY_LOOP__TURN_MS", "100")
    monkeypatch.setenv("INTERPLAY_BACKGROUND__ENGINE", "openai")
    s = load_settings()
    assert s.loop.turn_ms == 100
    assert s.background.engine == "openai"


def test_a_bad_setting_names_the_field(monkeypatch):
    monkeypatch.setenv("INTERPLAY_LOOP__TURN_MS", "-5")
    with pytest.raises(ValidationError, match="turn_ms"):
        load_settings()


def test_servers_bind_loopback_by_default():
    assert load_settings().host == "127.0.0.1"


def test_logs_are_json_key_values_when_not_a_tty():
    buf = io.StringIO()
    configure_logging("info", stream=buf)
    get_logger("test").info("turn", session="s1", compute_ms=12.5)
    event = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert event["event"] == "turn" and event["session"] == "s1" and event["compute_ms"] == 12.5
    assert event["component"] == "test" and event["level"] == "info"


def test_logging_survives_the_stderr_it_was_configured_under_being_closed(monkeypatch, capsys):
    import io

    from interplay.log import configure_logging, get_logger

    temporary = io.StringIO()
    monkeypatch.setattr("sys.stderr", temporary)  # what typer's CliRunner does during invoke()
    configure_logging("info", json=True)
    monkeypatch.undo()
    temporary.close()
    get_logger("test").info("still_logging", ok=True)  # must not raise "I/O operation on closed file"
    assert "still_logging" in capsys.readouterr().err
