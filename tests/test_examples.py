"""Each example runs as its docstring shows (as a subprocess, the way a user runs it) and does what it says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "RAY_worker_niceness": "0", "PYTHONUNBUFFERED": "1"}


def run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def test_register_tools_example_calls_local_pydantic_and_mcp_tools():
    out = run("examples/register_tools.py", timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "registered: check_stock, book_table, units_convert" in out.stdout  # MCP tools under their prefix
    calls = {m.group(1): m.group(2) for m in re.finditer(r"^(call_\d) \S+\s+(ok|ERR \w+)\s.*$", out.stdout, re.M)}
    assert calls == {"call_1": "ok", "call_2": "ok", "call_3": "ok", "call_4": "ERR invalid_arguments"}, out.stdout
    assert '"confirmed": true' in out.stdout  # the pydantic-typed booking tool ran
    assert "5 km = 3.107 mi" in out.stdout  # the MCP tool ran in the MCP server and answered


def test_delegation_study_example_writes_its_table_and_plots(tmp_path):
    out = run("examples/delegation_study.py", str(tmp_path), "--repeats", "1", timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "study.csv").is_file() and (tmp_path / "study.json").is_file()
    assert list(tmp_path.glob("*.png"))


@pytest.mark.slow  # ~45 s of the real stack; the demo tests cover the live loop's delegation by default
def test_voice_assistant_example_with_its_defaults_delegates_both_requests_and_every_one_comes_back():
    out = run("examples/voice_assistant.py", "--json", timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["policy"] == "first_of"
    assert summary["delegated"] == ["where is my order A17?", "how much is 12 * 7?"]
    # every delegation settled: a result surfaced into the conversation or an error reported
    assert len(summary["surfaced"]) + len([e for e in summary["errors"] if e]) >= 2
    assert summary["turns"] > 50  # ~10 s of live micro-turns at least


@pytest.mark.slow
def test_voice_assistant_example_exits_non_zero_and_says_why_when_its_policy_delegates_nothing():
    out = run("examples/voice_assistant.py", "--policy", "never", "--json", timeout=240)
    assert out.returncode == 1, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["delegated"] == []
    assert "nothing was delegated: policy 'never'" in out.stderr
