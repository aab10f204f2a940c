"""Policy study: run a set of policies over a set of scenarios and write a table and plots.

`run_study(policies, scenarios, out_dir, seed)` replays every scenario `repeats` times (seeds
seed, seed+1, ...) per policy through the harness, and writes `study.csv` (one row per policy ×
scenario, plus an "ALL" row per policy), `study.json` (the returned dict) and two PNG plots.
The return value's `policies` maps each policy's label to its aggregate scores (None: no data).
"""

from __future__ import annotations

import csv
import functools
import json
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from delegation.harness import SCORE_KEYS, HarnessConfig, RunResult, percentile, run_scenario
from delegation.policies import PolicyError, load_policy
from delegation.scenario import Scenario, load_scenarios
from interplay.log import get_logger

log = get_logger("delegation.study")

DEFAULT_POLICIES: list[Any] = [
    "never", "always", "rule", "model_token",
    {"label": "threshold(always,0.6)", "policy": "threshold", "inner": "always", "threshold": 0.6},
]
PLOT_KEYS = ("answered_rate", "latency_ms_p50", "dead_air_s", "voiced_over_user", "stale_results",
             "wasted_background_s", "delegations", "redeliveries")
SUM_KEYS = ("questions",)


def _specs(policies: Iterable[Any] | None) -> list[tuple[str, Callable[[], Any]]]:
    """(label, factory) per policy spec: a name, a {"label", "policy", **opts} dict, (label, spec[, opts]), an object."""
    out: list[tuple[str, Callable[[], Any]]] = []
    for spec in (DEFAULT_POLICIES if policies is None else policies):
        if isinstance(spec, str):
            out.append((spec, lambda s=spec: load_policy(s)))
        elif isinstance(spec, Mapping):
            d = dict(spec)
            label = d.pop("label", None)
            factory: Callable[[], Any] = functools.partial(load_policy, d)
            out.append((label or str(getattr(factory(), "name", d.get("policy"))), factory))
        elif isinstance(spec, tuple) and len(spec) in (2, 3) and isinstance(spec[0], str):
            opts = spec[2] if len(spec) == 3 else {}
            out.append((spec[0], lambda s=spec[1], o=opts: load_policy(s, **o)))
        else:
            obj = load_policy(spec)
            out.append((str(getattr(obj, "name", type(obj).__name__)), lambda o=obj: o))
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        raise PolicyError(f"policy labels must be unique, got {labels}")
    return out


def aggregate(results: list[RunResult]) -> dict[str, float]:
    """Scores over many runs: counts are means per session, latency percentiles pool all answers."""
    if not results:
        return {}
    n = len(results)
    lat = [x for r in results for x in r.latencies_ms]
    questions = sum(r.scores["questions"] for r in results)
    answered = sum(r.scores["answered_rate"] * r.scores["questions"] for r in results if r.scores["questions"])
    out: dict[str, float] = {}
    for k in SCORE_KEYS:
        if k in SUM_KEYS:
            out[k] = float(sum(r.scores[k] for r in results))
        elif k == "answered_rate":
            out[k] = answered / questions if questions else math.nan
        elif k == "latency_ms_p50":
            out[k] = percentile(lat, 50)
        elif k == "latency_ms_p90":
            out[k] = percentile(lat, 90)
        elif k == "latency_ms_mean":
            out[k] = sum(lat) / len(lat) if lat else math.nan
        else:
            out[k] = sum(r.scores[k] for r in results) / n
    out["runs"] = float(n)
    return out


def _clean(x: Any) -> Any:
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, Mapping):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _round(x: float) -> float:
    return x if math.isnan(x) else round(x, 4)


def run_study(policies: Iterable[Any] | None = None, scenarios: Any = None, out_dir: str | Path = "runs/study",
              seed: int = 0, repeats: int = 3, config: HarnessConfig | None = None,
              plots: bool = True) -> dict[str, Any]:
    """Run policies × scenarios × repeats; write study.csv, study.json and PNG plots into out_dir."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    specs = _specs(policies)
    scs: list[Scenario] = load_scenarios(scenarios)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    agg: dict[str, dict[str, float]] = {}
    for label, factory in specs:
        all_runs: list[RunResult] = []
        for sc in scs:
            runs = [run_scenario(factory(), sc, seed + r, config) for r in range(repeats)]
            all_runs += runs
            rows.append({"policy": label, "scenario": sc.name, **{k: _round(v) for k, v in aggregate(runs).items()}})
        agg[label] = {k: _round(v) for k, v in aggregate(all_runs).items()}
        rows.append({"policy": label, "scenario": "ALL", **agg[label]})
        log.info("study_policy_done", policy=label, runs=len(all_runs))
    files = {"csv": str(out / "study.csv"), "json": str(out / "study.json")}
    cols = ["policy", "scenario", *SCORE_KEYS, "runs"]
    with open(files["csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    if plots:
        files["scores_png"] = str(out / "study_scores.png")
        files["tradeoff_png"] = str(out / "study_tradeoff.png")
        _plot_scores(agg, Path(files["scores_png"]))
        _plot_tradeoff(agg, Path(files["tradeoff_png"]))
    result = _clean({"policies": agg, "scenarios": [s.name for s in scs], "seed": seed, "repeats": repeats,
                     "rows": rows, "files": files})  # NaN (no data, e.g. no latency) becomes None
    Path(files["json"]).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return result


def _plot_scores(agg: dict[str, dict[str, float]], path: Path) -> None:
    from matplotlib.figure import Figure  # the Agg canvas; never touches pyplot's global backend

    labels = list(agg)
    fig = Figure(figsize=(14, 6.5), layout="constrained")
    axes = fig.subplots(2, 4).ravel()
    colors = [f"C{i}" for i in range(len(labels))]
    for ax, key in zip(axes, PLOT_KEYS, strict=True):
        vals = [0.0 if math.isnan(agg[p].get(key, math.nan)) else agg[p][key] for p in labels]
        ax.bar(range(len(labels)), vals, color=colors)
        ax.set_title(key, fontsize=10)
        ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Delegation policies over the scenarios (per session means; latency pooled)")
    fig.savefig(path, dpi=90)


def _plot_tradeoff(agg: dict[str, dict[str, float]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    for i, (label, s) in enumerate(agg.items()):
        x = s.get("wasted_background_s", 0.0)
        y = s.get("answered_rate", math.nan)
        y = 0.0 if math.isnan(y) else y
        ax.scatter([x], [y], s=60 + 20 * s.get("dead_air_s", 0.0), color=f"C{i}", label=label)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("wasted background work per session (s)")
    ax.set_ylabel("questions answered (fraction)")
    ax.set_title("Answer rate vs wasted work (marker size: dead air)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=90)
