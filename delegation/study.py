"""Policy study: run a set of policies over a set of scenarios and write a table and plots.

`run_study(policies, scenarios, out_dir, seed)` replays every scenario `repeats` times (seeds
seed, seed+1, ...) per policy through the harness, and writes `study.csv` (one row per policy ×
scenario, plus an "ALL" row per policy), `study.json` (the returned dict) and two PNG plots whose
error bars are ±1 standard deviation over the seeds. The return value's `policies` maps each
policy's label to its aggregate scores (None: no data), `spread` to the standard deviation of each
score over the seeds (an aggregate over all scenarios per seed). `compact_table(result)` is what
`interplay study` prints: one line per policy with a few headline scores, under 100 columns.

What is real and what is simulated (delegation/harness.py): the policy, the ContextPackage builder,
the conversation log and the InterleaveScheduler are the runtime's own code. The user, the
background side and the interaction model are simulated: the "model" never runs; it emits a
<delegate> token after an utterance with that utterance's scripted probability (`model_p` in the
scenario file, else a default per intent), a seeded draw, and reports the probability itself as the
turn's confidence. So a policy that acts on the model's token or confidence (model_token, threshold
wrappers) is scored against that stand-in, not against the shipped checkpoint; its label says so
(SIMULATED_SUFFIX) in every table, file and plot. The same policies on the shipped model itself, through
replay of recorded and synthetic sessions on the real turn loop: interplay.replay.study
(`interplay study --replay`).
"""

from __future__ import annotations

import csv
import functools
import json
import math
import textwrap
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
HEADLINE = (("answered_rate", "answered", "{:.2f}"), ("latency_ms_p50", "p50 ms", "{:.0f}"),
            ("dead_air_s", "dead air s", "{:.1f}"), ("wasted_background_s", "wasted s", "{:.1f}"),
            ("delegations", "delegations", "{:.1f}"))
SIMULATED_SUFFIX = " (simulated model)"
SIMULATED_NOTE = ("(simulated model): the harness does not run the interaction model; a stand-in emits "
                  "<delegate> after each utterance with the scenario's scripted probability (seeded draw) "
                  "and reports that probability as its confidence. User and background are simulated too; "
                  "policy, package builder and scheduler are real.")


def uses_the_model(policy: Any) -> bool:
    """Whether the policy acts on what the interaction model emits: its <delegate> token (model_token,
    alone or wrapped) or its confidence (a threshold wrapper reads TurnState.confidence)."""
    name = str(getattr(policy, "name", type(policy).__name__))
    return "model_token" in name or name.startswith("threshold(")


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
    out = [(label + SIMULATED_SUFFIX if uses_the_model(factory()) and not label.endswith(SIMULATED_SUFFIX)
             else label, factory) for label, factory in out]
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


def spread(results: list[RunResult], seeds: Iterable[int]) -> dict[str, float]:
    """Sample standard deviation of each aggregate score over the seeds (each seed's runs over all
    scenarios aggregated first); NaN with fewer than two seeds holding the score."""
    per_seed = [aggregate([r for r in results if r.seed == s]) for s in seeds]
    per_seed = [a for a in per_seed if a]
    out: dict[str, float] = {}
    for k in SCORE_KEYS:
        xs = [a[k] for a in per_seed if not math.isnan(a[k])]
        if len(xs) < 2:
            out[k] = math.nan
            continue
        m = sum(xs) / len(xs)
        out[k] = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
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
    sd: dict[str, dict[str, float]] = {}
    seeds = [seed + r for r in range(repeats)]
    for label, factory in specs:
        all_runs: list[RunResult] = []
        for sc in scs:
            runs = [run_scenario(factory(), sc, seed + r, config) for r in range(repeats)]
            all_runs += runs
            rows.append({"policy": label, "scenario": sc.name, **{k: _round(v) for k, v in aggregate(runs).items()}})
        agg[label] = {k: _round(v) for k, v in aggregate(all_runs).items()}
        sd[label] = {k: _round(v) for k, v in spread(all_runs, seeds).items()}
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
        scores_figure(agg, sd, repeats).savefig(files["scores_png"], dpi=90)
        tradeoff_figure(agg, sd, repeats).savefig(files["tradeoff_png"], dpi=90)
    notes = [SIMULATED_NOTE] if any(label.endswith(SIMULATED_SUFFIX) for label in agg) else []
    result = _clean({"policies": agg, "spread": sd, "scenarios": [s.name for s in scs], "seed": seed,
                     "repeats": repeats, "rows": rows, "files": files,
                     "notes": notes})  # NaN (no data, e.g. no latency) becomes None
    Path(files["json"]).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return result


def _cell(mean: Any, sd: Any, fmt: str) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = fmt.format(mean)
    if sd is not None and not (isinstance(sd, float) and math.isnan(sd)):
        text += "±" + fmt.format(sd)
    return text


def compact_table(result: Mapping[str, Any], width: int = 100) -> str:
    """One line per policy: its label and the HEADLINE scores (mean over all runs, ±1 s.d. over the
    seeds when there are two or more), then notes; every line at most `width` characters (a label
    too long is cut with "…"; only a file path longer than `width` is left whole). The full table is
    in study.csv / study.json."""
    heads = ["policy", *[h for _, h, _ in HEADLINE]]
    lines_ = []
    for label, scores in result["policies"].items():
        sd = result.get("spread", {}).get(label, {})
        lines_.append([label, *[_cell(scores.get(k), sd.get(k), fmt) for k, _, fmt in HEADLINE]])
    widths = [max(len(h), *(len(r[i]) for r in lines_)) if lines_ else len(h) for i, h in enumerate(heads)]
    room = width - sum(widths[1:]) - 2 * (len(heads) - 1)
    widths[0] = max(8, min(widths[0], room))

    def fit(cell: str, w: int) -> str:
        return cell if len(cell) <= w else cell[: w - 1] + "…"

    def fmt_row(cells: list[str]) -> str:
        first = fit(cells[0], widths[0]).ljust(widths[0])
        return "  ".join([first, *[fit(c, w).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]]).rstrip()

    n_sc, reps = len(result.get("scenarios", [])), result.get("repeats", 1)
    out = [f"{n_sc} scenario{'s' * (n_sc != 1)} x {reps} seed{'s' * (reps != 1)}; per-session means over all runs"
           + (", ±1 s.d. over the seeds" if reps > 1 else ""),
           fmt_row(heads), "  ".join("-" * w for w in widths)]
    out += [fmt_row(r) for r in lines_]
    notes = list(result.get("notes", []))
    files = result.get("files", {})
    if files.get("csv"):
        notes.append(f"all {len(SCORE_KEYS)} scores per policy and scenario: {files['csv']} (and study.json)")
    for note in notes:
        out += textwrap.wrap(note, width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)
    return "\n".join(out)


def _bars(agg: dict[str, dict[str, float]], sd: dict[str, dict[str, float]], key: str) -> tuple[list, list]:
    labels = list(agg)
    vals = [0.0 if math.isnan(agg[p].get(key, math.nan)) else agg[p][key] for p in labels]
    errs = [0.0 if math.isnan(sd.get(p, {}).get(key, math.nan)) else sd[p][key] for p in labels]
    return vals, errs


def scores_figure(agg: dict[str, dict[str, float]], sd: dict[str, dict[str, float]], repeats: int) -> Any:
    """The PLOT_KEYS as bar charts, one per score, ±1 s.d. over the seeds (a matplotlib Figure)."""
    from matplotlib.figure import Figure  # the Agg canvas; never touches pyplot's global backend

    labels = list(agg)
    fig = Figure(figsize=(14, 6.5), layout="constrained")
    axes = fig.subplots(2, 4).ravel()
    colors = [f"C{i}" for i in range(len(labels))]
    for ax, key in zip(axes, PLOT_KEYS, strict=True):
        vals, errs = _bars(agg, sd, key)
        ax.bar(range(len(labels)), vals, color=colors, yerr=errs if repeats > 1 else None, capsize=3)
        ax.set_title(key, fontsize=10)
        ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    bars = f"error bars: ±1 s.d. over {repeats} seeds" if repeats > 1 else "one seed: no error bars"
    fig.suptitle(f"Delegation policies over the scenarios (per session means; latency pooled; {bars})")
    if any(label.endswith(SIMULATED_SUFFIX) for label in labels):
        fig.supxlabel("\n".join(textwrap.wrap(SIMULATED_NOTE, 160)), fontsize=7)  # the layout makes room
    return fig


def tradeoff_figure(agg: dict[str, dict[str, float]], sd: dict[str, dict[str, float]], repeats: int) -> Any:
    """Answer rate against wasted background work per policy, ±1 s.d. over the seeds both ways."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5.4), layout="constrained")
    ax = fig.subplots()
    xs, xerr = _bars(agg, sd, "wasted_background_s")
    ys, yerr = _bars(agg, sd, "answered_rate")
    for i, (label, s) in enumerate(agg.items()):
        x, y = xs[i], ys[i]
        if repeats > 1:
            ax.errorbar([x], [y], xerr=[xerr[i]], yerr=[yerr[i]], color=f"C{i}", capsize=3, fmt="none")
        ax.scatter([x], [y], s=60 + 20 * s.get("dead_air_s", 0.0), color=f"C{i}", label=label)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("wasted background work per session (s)")
    ax.set_ylabel("questions answered (fraction)")
    bars = f"±1 s.d. over {repeats} seeds" if repeats > 1 else "one seed"
    ax.set_title(f"Answer rate vs wasted work (marker size: dead air; {bars})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if any(label.endswith(SIMULATED_SUFFIX) for label in agg):
        fig.supxlabel("\n".join(textwrap.wrap(SIMULATED_NOTE, 110)), fontsize=6)
    return fig
