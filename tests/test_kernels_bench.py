"""`bench_kernels(quick=True)`: the FIGURES.md keys of `interplay bench kernels`, measured on this CPU."""

from __future__ import annotations

import math

from kernels.bench import bench_kernels


def test_bench_kernels_quick_reports_every_figures_key_from_measured_times():
    r = bench_kernels(quick=True)
    keys = ["deterministic_over_default"] + [f"moe_grouped_over_gather_t{t}" for t in (1, 4, 16)]
    for key in keys:
        assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, key
    assert r["threads"] == 1 and r["preset"] == "small" and r["quick"] is True
    assert r["default_turn_ms_p50"] > 0 and r["deterministic_turn_ms_p50"] > 0
    assert math.isclose(r["deterministic_over_default"],
                        r["deterministic_turn_ms_p50"] / r["default_turn_ms_p50"], rel_tol=0.01)
    for t in (1, 4, 16):
        assert math.isclose(r[f"moe_grouped_over_gather_t{t}"], r[f"moe_grouped_us_t{t}"] / r[f"moe_gather_us_t{t}"],
                            rel_tol=0.01)
