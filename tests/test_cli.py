"""The CLI: one entry point whose --help lists only commands that work."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from interplay.cli import app

runner = CliRunner()


def test_help_lists_commands_and_exits_cleanly():
    import typer.main

    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    names = list(typer.main.get_command(app).commands)
    assert "info" in names and all(name in result.output for name in names), result.output


def test_every_listed_command_has_working_help():
    import typer.main

    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, f"`interplay {name} --help` failed: {result.output}"
        sub = getattr(cmd, "commands", None)
        assert sub is None or sub, f"command group {name} lists no working subcommands"


def test_info_reports_versions_and_settings_from_the_environment():
    out = subprocess.run(
        [sys.executable, "-m", "interplay.cli", "info"],
        capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "INTERPLAY_LOOP__TURN_MS": "160"},
    )
    assert out.returncode == 0, out.stderr
    assert "torch 2." in out.stdout
    settings = json.loads(out.stdout[out.stdout.index("{"):])
    assert settings["loop"]["turn_ms"] == 160
