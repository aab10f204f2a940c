"""What `interplay eval` shows and keeps besides its table: a progress bar on stderr while the suite
runs, and eval.json + eval.png in the output folder afterwards.

`StderrProgress(enabled)` is a context manager whose `update(done, total, what)` has the signature of
evaluate.Progress: it draws a rich bar on stderr (stdout stays the table and the --json line). When
stderr is not a terminal rich draws nothing live, so `update` also writes one plain line per stage
there: a log or a CI job sees the suite advance instead of a silent minute.

`write_outputs(result, out_dir)` writes the evaluate() dict as eval.json and plots eval.png: each
task's accuracy for the interaction model (fresh session, and in session when measured) beside the
cascade baseline, with ±1 binomial standard error over the task's episodes as error bars, and the
turn-taking and barge-in stop latencies (p50) of both systems. It returns {"json": path, "png": path}.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any


class StderrProgress:
    """A progress bar for the eval suite on stderr; a no-op when disabled."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._p = None
        self._task = None
        self._live = False
        self._t0 = time.monotonic()

    def __enter__(self) -> StderrProgress:
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(file=sys.stderr)
        self._live = console.is_terminal
        self._p = Progress(TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           TextColumn("{task.description}"), console=console, transient=False)
        self._p.start()
        self._task = self._p.add_task("", total=None)
        return self

    def update(self, done: int, total: int, what: str) -> None:
        if self._p is None:
            return
        self._p.update(self._task, completed=done, total=total, description=what)
        if not self._live:
            print(f"eval {done}/{total} {time.monotonic() - self._t0:6.1f}s {what}", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.stop()


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def _stderr(p: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on n episodes."""
    return math.sqrt(max(p * (1.0 - p), 0.0) / n) if n > 0 and not math.isnan(p) else 0.0


def plot(result: dict, path: Path) -> None:
    """eval.png: per-task accuracy (interaction vs baseline, ±1 s.e.) and the two p50 latencies."""
    from matplotlib.figure import Figure  # the Agg canvas; never touches pyplot's global backend

    tasks = list(result["tasks"])
    n = int(result.get("episodes_per_task", 0))
    series: list[tuple[str, list[float]]] = []
    first = result["tasks"][tasks[0]] if tasks else {}
    if isinstance(first, dict):
        series.append(("interaction (fresh session)", [_num(result["tasks"][t]["interaction"]) for t in tasks]))
    else:
        series.append(("interaction (fresh session)", [_num(result["tasks"][t]) for t in tasks]))
    if "tasks_in_session" in result:
        series.append(("interaction (in session)", [_num(result["tasks_in_session"].get(t)) for t in tasks]))
    if "tasks_deep_session" in result:
        series.append((f"interaction ({result.get('deep_session_turns_before', '?')} turns in)",
                       [_num(result["tasks_deep_session"].get(t)) for t in tasks]))
    if isinstance(first, dict) and "baseline" in first:
        series.append(("cascade baseline", [_num(result["tasks"][t]["baseline"]) for t in tasks]))
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax, lat = fig.subplots(1, 2, width_ratios=[3, 1.3])
    width = 0.8 / len(series)
    for i, (label, vals) in enumerate(series):
        xs = [k + (i - (len(series) - 1) / 2) * width for k in range(len(tasks))]
        ax.bar(xs, [0.0 if math.isnan(v) else v for v in vals], width, label=label, color=f"C{i}",
               yerr=[_stderr(v, n) for v in vals], capsize=3)
    ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (right content at the right turn)")
    ax.set_title(f"per task, {n} held-out episodes each (error bars: ±1 binomial s.e.)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    keys = [("turn_taking_ms_p50", "turn-taking"), ("barge_in_stop_ms_p50", "barge-in stop")]
    systems = [("interaction", result), ("cascade", result.get("baseline") or {})]
    for i, (name, r) in enumerate(systems):
        xs = [k + (i - 0.5) * 0.38 for k in range(len(keys))]
        vals = [_num(r.get(k)) for k, _ in keys]
        lat.bar(xs, [0.0 if math.isnan(v) else v for v in vals], 0.38, label=name, color=f"C{0 if i == 0 else 2}")
    lat.set_xticks(range(len(keys)), [label for _, label in keys])
    lat.set_ylabel("ms (p50; lower is better)")
    lat.set_title("latency", fontsize=10)
    lat.grid(axis="y", alpha=0.3)
    lat.legend(fontsize=8)
    ckpt = Path(result.get("checkpoint") or "random weights").name
    fig.suptitle(f"interplay eval: {ckpt} (data v{result.get('data_version', '?')})")
    fig.savefig(path, dpi=90)


def write_outputs(result: dict, out_dir: Path) -> dict[str, str]:
    """eval.json (the result as returned, with `files`) and eval.png in out_dir; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out_dir / "eval.json"), "png": str(out_dir / "eval.png")}
    plot(result, Path(files["png"]))
    Path(files["json"]).write_text(json.dumps({**result, "files": files}, indent=1) + "\n", encoding="utf-8")
    return files
