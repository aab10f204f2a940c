"""The policy study through replay: policies × sessions × seeds on the real model, scheduler and policy.

`run_replay_study(backend, policies, sessions=..., seeds=..., out_dir=...)` replays every session
(recorded files, the synthetic sessions of each seed and phrasing, scenario files converted per seed:
sessions.py) under every policy in ONE batched TurnLoop on the virtual clock (player.py; the stand-in
background), scores each run from its own per-turn records (`score_run`) against the session's
`requests` (which need the background, and the answer a lookup returns), and returns, per policy,
the mean of each measure per session and its 95% t-interval over the seeds (each seed's sessions
averaged first; a recorded session, the same in every seed, counts in each). Writes study.json,
study.csv and study_replay.png (each measure per policy with its interval) into `out_dir`.

Measures (per session):
  delegations            delegations started
  correct_delegations    the first delegation after a request that needs the background (and before
                         the next request)
  unnecessary_delegations every other delegation
  missed_requests        requests that needed the background and got no delegation
  results_voiced         delegations whose final result the scheduler voiced (at least once)
  results_lost           delegations whose final result arrived and was never voiced
  results_voiced_twice   delegations whose final result was voiced more than once
  answers_spoken         requests whose answer the model itself said (its text, after the result
                         was voiced, holds the answer's first word within 15 turns)
  request_to_voiced_ms   from the request's turn to the turn the model began saying the answer
                         (mean over spoken answers; null when none)
  interruptions          times the assistant began to speak in a turn where the user was speaking
                         (speech in the audio, not typed text)
The measures come from what the loop did, never from a script of what it should have done. A session
without `requests` (an unlabelled recording) has no ground truth: the measures that need it are NaN.
"""

from __future__ import annotations

import csv
import json
import math
import re
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from interplay.log import get_logger
from interplay.replay.format import ReplaySession
from interplay.replay.player import STARTED, ReplayRun, replay

log = get_logger("interplay.replay.study")

MEASURES = ("delegations", "correct_delegations", "unnecessary_delegations", "missed_requests", "results_voiced",
            "results_lost", "results_voiced_twice", "answers_spoken", "request_to_voiced_ms", "interruptions")
SHIPPED = Path(__file__).resolve().parent.parent.parent / "examples" / "replay"  # recorded demo sessions
SURFACED = "EVENT_KIND_RESULT_SURFACED"
FINAL_UPDATE = "EVENT_UPDATE_FINAL"
SPOKEN_WITHIN = 15  # turns after the result is voiced in which the model must begin saying it
# two-sided 95% t quantiles by degrees of freedom (1..30); above 30 the normal 1.96
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def _first_word(text: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", text)
    return words[0].lower() if words else ""


def score_run(run: ReplayRun) -> dict[str, float]:
    """The measures of one replayed session (see the module docstring); `request_to_voiced_ms` is
    the mean over its spoken answers (NaN when none)."""
    turns = run.turns
    turn_ms = run.session.turn_ms
    reqs = sorted(run.session.requests, key=lambda r: int(r["turn"]))
    started: list[tuple[str, int]] = []  # (task id, origin turn)
    voiced: dict[str, list[int]] = {}  # task id -> turns its final was voiced
    finals: set[str] = set()  # task ids whose final arrived
    text_at: dict[int, str] = {}
    interruptions = 0
    speaking_before = False
    for rec in turns:
        out = rec.get("out") or {}
        t = int(rec["turn"])
        for u in rec.get("updates", []):
            if u.get("kind") == "UPDATE_KIND_FINAL":
                finals.add(u.get("task_id", ""))
        for e in out.get("events", []):
            if e.get("kind") == STARTED:
                started.append((e.get("task_id", ""), int(e.get("origin_turn", t))))
            elif e.get("kind") == SURFACED and e.get("voiced") and e.get("update") == FINAL_UPDATE:
                voiced.setdefault(e.get("task_id", ""), []).append(t)
        text = out.get("text", "")
        text_at[t] = text
        speaks = bool(text) or "start_speaking" in out.get("controls", [])
        if speaks and not speaking_before and out.get("user") == "speaking" and not out.get("typed"):
            interruptions += 1
        speaking_before = bool(text)
    correct, unnecessary, served = 0, 0, {}
    for task_id, origin in started:
        idx = None
        for i, r in enumerate(reqs):
            nxt = int(reqs[i + 1]["turn"]) if i + 1 < len(reqs) else math.inf
            if int(r["turn"]) < origin <= nxt:
                idx = i
        if idx is not None and reqs[idx].get("needs_background") and idx not in served:
            served[idx] = task_id
            correct += 1
        else:
            unnecessary += 1
    spoken, latencies = 0, []
    for idx, task_id in served.items():
        word = _first_word(reqs[idx].get("answer", ""))
        for v in voiced.get(task_id, [])[:1]:
            said = ""
            for t in range(v, v + SPOKEN_WITHIN):
                said += text_at.get(t, "")
                if word and word in said.lower():
                    spoken += 1
                    first = next((k for k in range(v, t + 1) if text_at.get(k)), t)
                    latencies.append((first - int(reqs[idx]["turn"])) * turn_ms)
                    break
    needed = sum(1 for r in reqs if r.get("needs_background"))
    ids = [tid for tid, _ in started]
    unknown = math.nan if not reqs else None  # no ground truth (an unlabelled recording): those measures are NaN
    out = {"delegations": float(len(started)), "correct_delegations": float(correct),
           "unnecessary_delegations": float(unnecessary), "missed_requests": float(needed - len(served)),
           "results_voiced": float(sum(1 for k in ids if voiced.get(k))),
           "results_lost": float(sum(1 for k in ids if k in finals and not voiced.get(k))),
           "results_voiced_twice": float(sum(1 for k in ids if len(voiced.get(k, [])) > 1)),
           "answers_spoken": float(spoken),
           "request_to_voiced_ms": sum(latencies) / len(latencies) if latencies else math.nan,
           "interruptions": float(interruptions)}
    if unknown is not None:
        out.update(dict.fromkeys(("correct_delegations", "unnecessary_delegations", "missed_requests",
                                  "answers_spoken", "request_to_voiced_ms"), unknown))
    return out


def interval(xs: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t-interval of the mean; NaN bounds with fewer than two values."""
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return math.nan, math.nan, math.nan
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, math.nan, math.nan
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    q = T975[len(xs) - 2] if len(xs) - 1 <= len(T975) else 1.96
    h = q * sd / math.sqrt(len(xs))
    return m, m - h, m + h


def aggregate(scores_by_seed: Mapping[int, list[dict[str, float]]]) -> dict[str, Any]:
    """Per measure: the mean per session over all seeds and its 95% interval over the per-seed means."""
    out: dict[str, Any] = {}
    for k in MEASURES:
        per_seed = []
        for runs in scores_by_seed.values():
            xs = [r[k] for r in runs if not math.isnan(r[k])]
            per_seed.append(sum(xs) / len(xs) if xs else math.nan)
        m, lo, hi = interval(per_seed)
        out[k] = _r(m)
        out[k + "_ci95"] = [_r(lo), _r(hi)]
    out["sessions"] = sum(len(v) for v in scores_by_seed.values())
    return out


def _r(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 3)


def run_replay_study(backend: object, policies: Mapping[str, object], *, seeds: Iterable[int] = (0, 1, 2),
                     phrasings: Iterable[str] = ("training", "held_out"), recorded: Iterable[ReplaySession] = (),
                     scenarios: Iterable[Any] = (), requests: int = 5, out_dir: str | Path | None = None,
                     plots: bool = True, synthetic: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run the study (see the module docstring); returns {"policies": label → measures, ...}.
    `synthetic`: more options for sessions.synthetic_session (tail_turns, gap_turns, ...)."""
    from interplay.replay.sessions import scenario_session, synthetic_session  # noqa: PLC0415

    seeds, recorded, scenarios = list(seeds), list(recorded), list(scenarios)
    sessions: list[tuple[int, ReplaySession]] = []
    for s in seeds:
        sessions += [(s, synthetic_session(s, p, requests=requests, **dict(synthetic or {}))) for p in phrasings]
        sessions += [(s, scenario_session(sc, s)) for sc in scenarios]
    wall = 0.0
    runs: list[tuple[int, ReplayRun]] = []
    by_ms: dict[int, list[tuple[int, ReplaySession]]] = {}
    for seed, s in sessions:
        by_ms.setdefault(s.turn_ms, []).append((seed, s))
    for group in by_ms.values():
        got = replay(backend, [s for _, s in group], policies)
        seed_of = {id(s): seed for seed, s in group}
        runs += [(seed_of[id(r.session)], r) for r in got]
        wall += got[0].wall_s if got else 0.0
    rec_runs = replay(backend, recorded, policies) if recorded else []
    wall += rec_runs[0].wall_s if rec_runs else 0.0
    result: dict[str, Any] = {"policies": {}, "seeds": seeds, "phrasings": list(phrasings),
                              "recorded": [s.session_id for s in recorded],
                              "scenarios": [getattr(sc, "name", str(sc)) for sc in scenarios],
                              "sessions_per_seed": len(sessions) // max(1, len(seeds)) + len(recorded),
                              "runs": len(runs) + len(rec_runs), "wall_s": round(wall, 2),
                              "turns": sum(len(r.turns) for _, r in runs) + sum(len(r.turns) for r in rec_runs),
                              "mode": "replay"}
    per_run: list[dict[str, Any]] = []
    for label in policies:
        by_seed: dict[int, list[dict[str, float]]] = {s: [] for s in seeds}
        for seed, r in runs:
            if r.policy == label:
                sc = score_run(r)
                by_seed[seed].append(sc)
                per_run.append({"policy": label, "session": r.session_id, "seed": seed, **sc})
        for r in rec_runs:
            if r.policy == label:
                sc = score_run(r)
                for s in seeds:
                    by_seed[s].append(sc)
                per_run.append({"policy": label, "session": r.session_id, "seed": "", **sc})
        result["policies"][label] = aggregate(by_seed)
    if out_dir is not None:
        result["files"] = write_outputs(result, per_run, Path(out_dir), plots)
    return result


def write_outputs(result: dict[str, Any], per_run: list[dict[str, Any]], out: Path, plots: bool) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "study.json"), "csv": str(out / "study.csv")}
    with open(files["csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["policy", "session", "seed", *MEASURES])
        w.writeheader()
        for row in per_run:
            w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    if plots:
        files["png"] = str(out / "study_replay.png")
        figure(result).savefig(files["png"], dpi=90)
    Path(files["json"]).write_text(json.dumps({**result, "files": files}, indent=2) + "\n", encoding="utf-8")
    return files


def figure(result: Mapping[str, Any]) -> Any:
    """Each measure per policy: the mean per session, the 95% interval over seeds as an error bar."""
    from matplotlib.figure import Figure  # noqa: PLC0415 - the Agg canvas, never pyplot's global state

    labels = list(result["policies"])
    fig = Figure(figsize=(15, 6.5), layout="constrained")
    axes = fig.subplots(2, 5).ravel()
    for ax, key in zip(axes, MEASURES, strict=True):
        vals, errs = [], [[], []]
        for p in labels:
            s = result["policies"][p]
            m = s.get(key)
            lo, hi = s.get(key + "_ci95", [None, None])
            vals.append(0.0 if m is None else m)
            errs[0].append(0.0 if m is None or lo is None else m - max(lo, 0.0))  # every measure is >= 0
            errs[1].append(0.0 if m is None or hi is None else hi - m)
        ax.bar(range(len(labels)), vals, color=[f"C{i}" for i in range(len(labels))], yerr=errs, capsize=3)
        ax.set_title(key, fontsize=10)
        ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    n = len(result.get("seeds", []))
    fig.suptitle(f"Delegation policies replayed on the real model ({result.get('runs')} runs; per-session means, "
                 f"95% t-interval over {n} seeds)")
    return fig


def table(result: Mapping[str, Any], width: int = 100) -> str:
    """What `interplay study --replay` prints: one line per policy, headline measures with intervals."""
    heads = (("delegations", "deleg"), ("correct_delegations", "correct"), ("unnecessary_delegations", "unneeded"),
             ("results_voiced", "voiced"), ("results_lost", "lost"), ("answers_spoken", "spoken"),
             ("request_to_voiced_ms", "req→voice ms"), ("interruptions", "interrupt"))

    def cell(s: Mapping[str, Any], k: str) -> str:
        m = s.get(k)
        if m is None:
            return "-"
        lo, hi = s.get(k + "_ci95", [None, None])
        fmt = "{:.0f}" if k.endswith("_ms") else "{:.1f}"
        return fmt.format(m) + ("" if lo is None else "±" + fmt.format((hi - lo) / 2))

    def short(label: str) -> str:  # the table's label; the JSON and CSV keep the full one
        return label.replace("threshold(", "thr(").replace("model_token", "model")

    rows = [[short(p), *[cell(s, k) for k, _ in heads]] for p, s in result["policies"].items()]
    cols = ["policy", *[h for _, h in heads]]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    widths[0] = min(widths[0], max(8, width - sum(widths[1:]) - 2 * len(heads)))

    def line(cells: list[str]) -> str:
        first = cells[0] if len(cells[0]) <= widths[0] else cells[0][: widths[0] - 1] + "…"
        return "  ".join([first.ljust(widths[0]), *[c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]])

    out = textwrap.wrap(f"replay on the real model: {result.get('runs')} runs, {result.get('turns')} turns in "
                        f"{result.get('wall_s')} s; per-session means ±95% t-interval half-width over "
                        f"{len(result.get('seeds', []))} seeds (thr: threshold)", width)
    out += [line(cols), "  ".join("-" * w for w in widths), *[line(r) for r in rows]]
    files = result.get("files", {})
    if files.get("csv"):
        out.append(f"every run's measures: {files['csv']}; plot: {files.get('png', '-')}")
    return "\n".join(out)


DEFAULT_POLICIES: dict[str, object] = {
    "never": "never", "always": "always", "rule": "rule", "model_token": "model_token",
    "threshold(model_token,0.5)": {"policy": "threshold", "inner": "model_token", "threshold": 0.5},
    "threshold(always,0.6)": {"policy": "threshold", "inner": "always", "threshold": 0.6},
}


def policy_specs(names: list[str] | None) -> dict[str, object]:
    """label → spec: the defaults, or the named ones (a default's label, or any registered policy name)."""
    if not names:
        return dict(DEFAULT_POLICIES)
    from delegation.policies import load_policy  # noqa: PLC0415

    out: dict[str, object] = {}
    for n in names:
        spec = DEFAULT_POLICIES.get(n, n)
        load_policy(dict(spec) if isinstance(spec, dict) else spec)  # PolicyError now, not mid-replay
        out[n] = spec
    return out


def study_main(*, policies: list[str] | None, sessions: str | None, scenarios: str | None, out: str, seed: int,
               repeats: int, quick: bool, checkpoint: str | None = None, backend: str = "native") -> dict[str, Any]:
    """`interplay study --replay`: the shipped native model (or `backend`), the named policies, the
    synthetic sessions of `repeats` seeds from `seed` (training and held-out phrasing; --quick: two seeds,
    mixed phrasing, three requests closer together), the recorded sessions under `sessions` (None: the shipped
    examples/replay, except with --quick) and, when given, the harness scenarios converted per seed."""
    from interaction_actor.runtime.backend import NativeBackend, load_backend  # noqa: PLC0415
    from interplay.replay.format import read_sessions  # noqa: PLC0415

    specs = policy_specs(policies)
    if sessions is None and not quick and SHIPPED.is_dir():
        sessions = str(SHIPPED)
    recorded = read_sessions(sessions) if sessions else []
    scs = []
    if scenarios:
        from delegation.scenario import load_scenarios  # noqa: PLC0415

        scs = load_scenarios(scenarios)
    model = NativeBackend(preset="small", checkpoint=checkpoint) if backend == "native" else load_backend(backend)
    n = 2 if quick else max(2, repeats)
    return run_replay_study(model, specs, seeds=range(seed, seed + n),
                            phrasings=("mixed",) if quick else ("training", "held_out"), recorded=recorded,
                            scenarios=scs, requests=3 if quick else 5, out_dir=out,
                            synthetic={"gap_turns": (12, 16), "latency_turns": (3, 10), "tail_turns": 14} if quick else None)


__all__ = ["DEFAULT_POLICIES", "MEASURES", "aggregate", "figure", "interval", "policy_specs", "run_replay_study",
           "score_run", "study_main", "table"]
