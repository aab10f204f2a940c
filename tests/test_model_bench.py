"""`interplay bench model --quick` reports the FIGURES.md keys with plausible values."""

from __future__ import annotations

from interaction_actor.model.bench import bench_model


def test_bench_model_quick_reports_every_figures_key_with_measured_values():
    out = bench_model(quick=True)
    for key in ("turn_ms_p50", "turn_ms_p99", "budget_fraction_p99", "late_over_early", "reprefill_over_append"):
        assert isinstance(out[key], float) and out[key] > 0, key
    assert out["turn_ms_p99"] >= out["turn_ms_p50"]
    assert abs(out["budget_fraction_p99"] - out["turn_ms_p99"] / 200.0) < 1e-3
    assert out["reprefill_positions"] <= out["capacity"]
