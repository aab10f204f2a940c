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
from delegation.study import SIMULATED_NOTE, compact_table, run_study, scores_figure, tradeoff_figure

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
    # both act on the harness's stand-in model (its token; its confidence), and their labels say so
    assert set(res["policies"]) == {"model_token (simulated model)", "confident (simulated model)"}
    assert res["policies"]["confident (simulated model)"]["runs"] == 4
    json.dumps(res, allow_nan=False)  # plain JSON: no NaN


def test_the_study_table_fits_in_100_columns(tmp_path):
    res = run_study(None, TWO, tmp_path, seed=0, repeats=2, plots=False)  # the default five policies
    table = compact_table(res)
    assert all(len(line) <= 100 for line in table.splitlines()), table
    assert all(label in table for label in res["policies"])  # no row was cut


def test_the_study_table_shows_each_headline_score_with_its_spread_over_seeds(tmp_path):
    res = run_study(["rule"], TWO, tmp_path, seed=0, repeats=2, plots=False)
    row = next(line for line in compact_table(res).splitlines() if line.startswith("rule"))
    assert row.split()[1] == f"{res['policies']['rule']['answered_rate']:.2f}±{res['spread']['rule']['answered_rate']:.2f}"


def test_the_study_table_cuts_a_label_too_long_to_fit_and_still_fits_in_100_columns(tmp_path):
    res = run_study([("x" * 120, "rule")], TWO, tmp_path, seed=0, repeats=1, plots=False)
    assert max(len(line) for line in compact_table(res).splitlines()) <= 100


def test_the_model_token_row_is_labelled_a_simulated_model_in_the_csv_and_json(tmp_path):
    res = run_study(["model_token", "rule"], TWO, tmp_path, seed=0, repeats=1, plots=False)
    rows = list(csv.DictReader((tmp_path / "study.csv").read_text(encoding="utf-8").splitlines()))
    assert {r["policy"] for r in rows} == {"model_token (simulated model)", "rule"}
    assert "model_token (simulated model)" in json.loads((tmp_path / "study.json").read_text())["policies"]
    assert res["notes"] == [SIMULATED_NOTE]


def test_policies_that_ignore_the_model_are_not_labelled_simulated(tmp_path):
    res = run_study(["never", "always", "rule"], TWO, tmp_path, seed=0, repeats=1, plots=False)
    assert set(res["policies"]) == {"never", "always", "rule"} and res["notes"] == []


def test_the_spread_is_the_standard_deviation_over_the_seeds(tmp_path):
    """Seeds 0 and 1 (named): the spread of answered_rate is that of the two per-seed study results."""
    both = run_study(["rule"], TWO, tmp_path / "both", seed=0, repeats=2, plots=False)
    a = run_study(["rule"], TWO, tmp_path / "a", seed=0, repeats=1, plots=False)["policies"]["rule"]
    b = run_study(["rule"], TWO, tmp_path / "b", seed=1, repeats=1, plots=False)["policies"]["rule"]
    for key in ("answered_rate", "dead_air_s", "delegations"):
        assert both["spread"]["rule"][key] == pytest.approx(abs(a[key] - b[key]) / 2 ** 0.5, abs=1e-3)
    assert a.keys() and run_study(["rule"], TWO, tmp_path / "one", repeats=1, plots=False)["spread"]["rule"][
        "answered_rate"] is None  # one seed: no spread


def test_the_score_plots_draw_error_bars_over_the_seeds(tmp_path):
    res = run_study(["always", "rule"], TWO, tmp_path, seed=0, repeats=2, plots=False)
    from matplotlib.container import BarContainer

    nan = float("nan")
    agg = {p: {k: nan if v is None else v for k, v in s.items()} for p, s in res["policies"].items()}
    sd = {p: {k: nan if v is None else v for k, v in s.items()} for p, s in res["spread"].items()}
    fig = scores_figure(agg, sd, 2)
    bars = [next(c for c in ax.containers if isinstance(c, BarContainer)) for ax in fig.axes]
    assert len(bars) == 8 and all(b.errorbar is not None for b in bars)
    fig = tradeoff_figure(agg, sd, 2)
    assert len([c for c in fig.axes[0].containers if type(c).__name__ == "ErrorbarContainer"]) == 2


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


def test_interplay_study_prints_the_compact_table_with_the_simulated_model_labelled(tmp_path):
    from typer.testing import CliRunner

    from interplay.cli import app

    result = CliRunner().invoke(app, ["study", "--quick", "--policies", "model_token,rule", "--out", str(tmp_path),
                                      "--scenarios", str(TWO[0])])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if not line.startswith("{")]  # JSON log lines on stderr
    assert all(len(line) <= 100 for line in lines), result.output
    assert any(line.startswith("model_token (simulated model) ") for line in lines)
    assert (tmp_path / "study.csv").is_file()
