"""Where observability is switched: `serve`'s metrics are on by default and off with --metrics-port -1;
the OTLP collector comes from the `otlp_endpoint` setting or the standard OTEL_EXPORTER_OTLP_ENDPOINT,
and reaches every actor `serve` starts. Read from the plan `serve --plan` prints and the keyword
arguments interplay.runtime hands each actor (nothing is started here)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from interplay.cli import app
from interplay.runtime import background_kwargs, interaction_kwargs, plan_from_settings
from interplay.settings import load_settings


def plan_printed(*args: str) -> dict:
    result = CliRunner().invoke(app, ["serve", "--plan", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_serve_serves_metrics_on_a_free_port_unless_told_otherwise():
    assert plan_printed()["interaction"]["metrics_port"] == 0


def test_metrics_port_minus_one_turns_metrics_off_for_the_interaction_and_background_actors():
    assert plan_printed("--metrics-port", "-1")["interaction"]["metrics_port"] is None
    plan = plan_from_settings(load_settings(metrics_port=-1))
    assert interaction_kwargs(plan, [])["metrics_port"] is None and background_kwargs(plan)["metrics_port"] is None


def test_the_standard_otlp_environment_variable_sends_every_actor_s_spans_to_that_collector(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    plan = plan_from_settings(load_settings())
    assert interaction_kwargs(plan, [])["otlp_endpoint"] == "http://127.0.0.1:4317"
    assert background_kwargs(plan)["otlp_endpoint"] == "http://127.0.0.1:4317"


def test_the_otlp_endpoint_setting_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("INTERPLAY_OTLP_ENDPOINT", "http://127.0.0.1:14317")
    assert plan_from_settings(load_settings()).otlp_endpoint == "http://127.0.0.1:14317"


def test_without_a_collector_configured_no_actor_is_given_one(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    plan = plan_from_settings(load_settings())
    assert plan.otlp_endpoint is None and "otlp_endpoint" not in background_kwargs(plan)
