"""The policy study writes its table and plots; the bench measures a real gRPC hand-off; no actor imports."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from delegation.bench import SERVER_NOTE, bench_delegation
from delegation.policies import PolicyError
from delegation.scenario import default_scenario_dir
from delegation.study import run_study

TWO = [default_scenario_dir() / "weather_simple.json", default_scenario_dir() / "cancel_midway.json"]


def test_the_study_writes_its_csv_json_and_png_files(tmp_path):
    res = run_study(["never", "rule"], TWO, tmp_path, seed=0, repeats=1)
    for key in ("csv", "json", "scores_png", "tradeoff_png"):
        assert (tmp_path / res["files"][key].split("/")[-1]).stat().st_size > 0
    assert (tmp_path / "study_scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((tmp_path / "study.csv").read_text(encoding="utf-8").splitlines()))
    assert {(r["policy"], r["scenario"]) for r in rows} == {
        (p, s) for p in ("never", "rule") for s in ("weather_simple", "cancel_midway", "ALL")}
    assert set(json.loads((tmp_path / "study.json").read_text())["policies"]) == {"never", "rule"}


def test_the_study_returns_scores_per_policy_label(tmp_path):
    specs = ["model_token", {"label": "confident", "policy": "threshold", "inner": "always", "threshold": 0.6}]
    res = run_study(specs, TWO, tmp_path, seed=1, repeats=2, plots=False)
    assert set(res["policies"]) == {"model_token", "confident"}
    assert res["policies"]["confident"]["runs"] == 4
    json.dumps(res, allow_nan=False)  # plain JSON: no NaN


def test_duplicate_policy_labels_are_refused(tmp_path):
    with pytest.raises(PolicyError):
        run_study(["rule", "rule"], TWO, tmp_path, repeats=1, plots=False)


def test_the_quick_bench_reports_the_figures_over_a_real_grpc_hand_off():
    figs = bench_delegation(quick=True)
    assert {"handoff_ms_p50", "handoff_ms_p99", "surface_turns_p99"} <= set(figs)
    assert 0 < figs["handoff_ms_p50"] <= figs["handoff_ms_p99"]
    assert figs["package_bytes"] <= figs["budget_bytes"] and figs["handoffs"] == 200
    assert figs["background_server"] == SERVER_NOTE
    json.dumps(figs)


def test_the_delegation_package_never_imports_an_actor_package():
    code = ("import sys, delegation, delegation.bench, delegation.study, delegation.harness; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'interaction_actor', 'background_actor'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
