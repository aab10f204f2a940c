"""Every setting changes what `serve` runs: the config file, the environment (which wins over it) and
the command line (which wins over both) reach the plan, and the plan reaches the actors' constructors.

`serve --plan` prints the plan without starting anything; the e2e proof that a running `serve`
follows its settings is in test_serve.py (a config file's port, the environment's turn length)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interaction_actor.runtime.actor import InteractionActorImpl
from interaction_actor.runtime.loop import TurnLoop
from interplay.cli import app
from interplay.runtime import background_kwargs, interaction_kwargs, load_registry, plan_from_settings
from interplay.settings import load_settings, use_config_file


@pytest.fixture(autouse=True)
def _no_config_file(monkeypatch):
    monkeypatch.delenv("INTERPLAY_CONFIG", raising=False)
    yield
    use_config_file(None)


def plan(*args: str) -> dict:
    result = CliRunner().invoke(app, [*args[:2], "serve", "--plan", *args[2:]] if args[:1] == ("--config",)
                                else ["serve", "--plan", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_a_config_file_sets_the_loop_and_the_ports(tmp_path: Path):
    cfg = tmp_path / "interplay.toml"
    cfg.write_text('session_port = 50999\nbackground_port = 51000\n[loop]\nturn_ms = 100\nmax_sessions = 3\n')
    p = plan("--config", str(cfg))
    assert (p["interaction"]["port"], p["background"]["first_port"]) == (50999, 51000)
    assert (p["interaction"]["turn_ms"], p["interaction"]["max_sessions"]) == (100, 3)


def test_the_environment_wins_over_the_config_file(tmp_path: Path, monkeypatch):
    cfg = tmp_path / "interplay.toml"
    cfg.write_text("[loop]\nturn_ms = 100\n")
    monkeypatch.setenv("INTERPLAY_LOOP__TURN_MS", "150")
    assert plan("--config", str(cfg))["interaction"]["turn_ms"] == 150


def test_a_command_line_option_wins_over_its_setting(monkeypatch):
    monkeypatch.setenv("INTERPLAY_DELEGATION__POLICY", "never")
    monkeypatch.setenv("INTERPLAY_SESSION_PORT", "50998")
    p = plan("--policy", "rule", "--port", "50997")
    assert (p["interaction"]["policy"], p["interaction"]["port"]) == ("rule", 50997)


def test_loop_settings_reach_the_interaction_actors_loop(monkeypatch):
    for key, value in {"TURN_MS": "120", "MAX_SESSIONS": "5", "OUTPUT_QUEUE": "7", "IDLE_TIMEOUT_S": "3.5",
                       "ADMISSION_HEADROOM": "0.3"}.items():
        monkeypatch.setenv(f"INTERPLAY_LOOP__{key}", value)
    loop = InteractionActorImpl(**interaction_kwargs(plan_from_settings(load_settings()), ["127.0.0.1:1"])).config
    assert (loop.turn_ms, loop.max_sessions, loop.output_queue, loop.idle_timeout_s, loop.admission_headroom) == \
        (120, 5, 7, 3.5, 0.3)


def test_model_settings_reach_the_interaction_actor(monkeypatch, tmp_path: Path):
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"x")
    monkeypatch.setenv("INTERPLAY_MODEL__CHECKPOINT", str(ckpt))
    monkeypatch.setenv("INTERPLAY_MODEL__DETERMINISTIC", "false")
    monkeypatch.setenv("INTERPLAY_MODEL__BACKEND", "tests.outside_backend:EchoBackend")
    actor = InteractionActorImpl(**interaction_kwargs(plan_from_settings(load_settings()), []))
    assert (actor.checkpoint, actor.config.deterministic, actor.backend_spec) == \
        (str(ckpt), False, "tests.outside_backend:EchoBackend")


def test_the_kv_capacity_setting_reaches_the_native_backend_s_options(monkeypatch):
    monkeypatch.setenv("INTERPLAY_MODEL__KV_CAPACITY", "3072")
    actor = InteractionActorImpl(**interaction_kwargs(plan_from_settings(load_settings()), []))
    assert actor.backend_spec == "native" and actor.backend_options["kv_capacity"] == 3072


def test_the_read_bytes_setting_reaches_the_native_backend_s_options(monkeypatch):
    monkeypatch.setenv("INTERPLAY_MODEL__READ_BYTES", "0")
    actor = InteractionActorImpl(**interaction_kwargs(plan_from_settings(load_settings()), []))
    assert actor.backend_options == {"read_bytes": 0}


def test_delegation_settings_reach_the_loop(monkeypatch):
    monkeypatch.setenv("INTERPLAY_DELEGATION__POLICY", "never")
    monkeypatch.setenv("INTERPLAY_DELEGATION__ALLOWED_TOOLS", '["clock"]')
    monkeypatch.setenv("INTERPLAY_BACKGROUND__TASK_DEADLINE_MS", "4000")
    monkeypatch.setenv("INTERPLAY_DELEGATION__PACKAGE_BUDGET_BYTES", "4096")
    loop = InteractionActorImpl(**interaction_kwargs(plan_from_settings(load_settings()), [])).config
    assert (loop.policy, loop.policy_options, loop.allowed_tools, loop.delegation_deadline_ms) == \
        ("never", {}, ["clock"], 4000)
    assert TurnLoop("tests.outside_backend:EchoBackend", loop).delegator.budget_bytes == 4096


def test_background_settings_reach_each_background_actor(monkeypatch):
    monkeypatch.setenv("INTERPLAY_BACKGROUND__ENGINE", "openai")
    monkeypatch.setenv("INTERPLAY_BACKGROUND__OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("INTERPLAY_BACKGROUND__OPENAI_API_KEY", "sk-test-123")
    monkeypatch.setenv("INTERPLAY_BACKGROUND__MAX_STEPS", "2")
    monkeypatch.setenv("INTERPLAY_BACKGROUND__MAX_CONCURRENT_TASKS", "3")
    monkeypatch.setenv("INTERPLAY_BACKGROUND__SYSTEM_PROMPT", "Answer in French.")
    monkeypatch.setenv("INTERPLAY_BACKGROUND_PORT", "52000")
    kw = background_kwargs(plan_from_settings(load_settings()), index=1)
    assert kw["engine"] == "openai" and kw["engine_options"] == {
        "base_url": "http://127.0.0.1:9/v1", "model": "default", "api_key": "sk-test-123"}
    assert (kw["agent"].max_steps, kw["agent"].system_prompt, kw["max_concurrent"], kw["port"]) == \
        (2, "Answer in French.", 3, 52001)


def test_tool_settings_choose_the_registry_each_background_actor_builds(monkeypatch):
    monkeypatch.setenv("INTERPLAY_TOOLS__BUILTIN", '["clock"]')
    kw = background_kwargs(plan_from_settings(load_settings()))
    assert kw["registry_factory"]().names() == ["clock"]
    monkeypatch.setenv("INTERPLAY_TOOLS__REGISTRY", "interplay.demo_tools:demo_registry")
    kw = background_kwargs(plan_from_settings(load_settings()))
    assert "weather" in kw["registry_factory"]().names()


def test_mcp_servers_and_tool_secrets_from_the_settings_reach_each_background_actor(monkeypatch):
    monkeypatch.setenv("INTERPLAY_TOOLS__MCP", '["python -m my_mcp_server"]')
    monkeypatch.setenv("INTERPLAY_TOOLS__SECRETS", '{"weather_api_key": "wk-1"}')
    kw = background_kwargs(plan_from_settings(load_settings()))
    assert kw["mcp"] == ("python -m my_mcp_server",) and kw["secrets"] == {"weather_api_key": "wk-1"}
    assert background_kwargs(plan_from_settings(load_settings(), mcp=["other"]))["mcp"] == ("other",)


def test_serve_serves_no_demo_tool_unless_asked():
    assert "weather" not in load_registry(None).names()


def test_plan_and_info_never_print_a_secret(monkeypatch):
    monkeypatch.setenv("INTERPLAY_BACKGROUND__ENGINE", "openai")
    monkeypatch.setenv("INTERPLAY_BACKGROUND__OPENAI_API_KEY", "sk-planted-4242")
    monkeypatch.setenv("INTERPLAY_TOOLS__SECRETS", '{"weather_api_key": "wk-planted-4242"}')
    shown = json.dumps(plan()) + CliRunner().invoke(app, ["info"]).output
    assert "planted-4242" not in shown and "**********" in shown


def test_a_misspelt_key_in_the_config_file_is_one_line_naming_it(tmp_path: Path):
    cfg = tmp_path / "interplay.toml"
    cfg.write_text("[loop]\nturnms = 100\n")
    result = CliRunner().invoke(app, ["--config", str(cfg), "serve", "--plan"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "loop.turnms: unknown key" in lines[0], lines


def test_a_config_file_that_is_missing_is_one_line_naming_it(tmp_path: Path):
    result = CliRunner().invoke(app, ["--config", str(tmp_path / "nope.toml"), "info"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "nope.toml: no such file" in lines[0], lines


def test_a_policy_that_does_not_exist_is_one_line_before_anything_starts():
    result = CliRunner().invoke(app, ["serve", "--policy", "nope"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "'nope'" in lines[0], lines


def test_a_tools_registry_that_does_not_load_is_one_line_before_anything_starts():
    result = CliRunner().invoke(app, ["serve", "--tools", "no_such_module:registry"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "no_such_module" in lines[0], lines


def test_debug_shows_the_traceback_behind_a_user_error():
    result = CliRunner().invoke(app, ["--debug", "serve", "--engine", "foo"])
    assert result.exit_code != 0 and result.exception is not None and "unknown engine" in str(result.exception)


def test_study_from_another_folder_finds_the_shipped_scenarios_and_a_bad_policy_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = CliRunner().invoke(app, ["study", "--quick", "--policies", "nope"])
    lines = bad.output.strip().splitlines()
    assert bad.exit_code == 2 and len(lines) == 1 and "unknown policy 'nope'" in lines[0], lines
    ok = CliRunner().invoke(app, ["study", "--quick", "--policies", "never", "--out", str(tmp_path / "s")])
    assert ok.exit_code == 0 and (tmp_path / "s" / "study.csv").is_file(), ok.output[-500:]


def test_ears_settings_reach_the_interaction_actor_and_can_turn_the_ears_off(monkeypatch):
    monkeypatch.setenv("INTERPLAY_EARS__SILENCE_MS", "400")
    monkeypatch.setenv("INTERPLAY_EARS__CPU_THREADS", "2")
    ears = interaction_kwargs(plan_from_settings(load_settings()), [])["ears"]
    assert (ears.segmenter.silence_ms, ears.whisper.cpu_threads, ears.transcriber) == (400, 2, "whisper")
    monkeypatch.setenv("INTERPLAY_EARS__ENABLED", "false")
    assert interaction_kwargs(plan_from_settings(load_settings()), [])["ears"] is None
