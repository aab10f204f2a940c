"""`interplay report RUN_DIR`: pictures of a session from its timeline (what `demo` writes).

Reads `timeline.jsonl` (every input and output chunk of one session, as `interplay demo` records it)
and draws one PNG, `report.png`, of two panels over the session's turns:
  1. per-turn compute and turn-start lateness (ms), with missed turns marked;
  2. a Gantt of each delegation: decided (DELEGATION_STARTED), accepted, each tool call and tool
     result, the final answer, and when the result surfaced (with its mode, and whether it was voiced);
     user transcripts and barge-ins as marks on the same time axis.
Everything drawn is read from the timeline; nothing is computed from elsewhere. Returns the PNG's path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TaskMarks:
    task_id: str
    text: str = ""
    started: int | None = None
    marks: list[tuple[int, str]] = field(default_factory=list)  # (turn, label)
    ended: int | None = None


def read_timeline(path: Path) -> list[dict]:
    records = []
    with path.open() as f:
        for line in f:
            line = line.strip()
            if line:
                records.append(json.loads(line))
    return [r for r in records if r.get("dir") == "out"]


def _name(value: str, prefix: str) -> str:
    return str(value).removeprefix(prefix).lower()


def delegations(chunks: list[dict]) -> list[TaskMarks]:
    tasks: dict[str, TaskMarks] = {}
    for c in chunks:
        turn = int(c.get("turn", 0))
        for e in c.get("events", []):
            tid = e.get("task_id")
            if not tid:
                continue
            t = tasks.setdefault(tid, TaskMarks(tid))
            kind = _name(e.get("kind", ""), "EVENT_KIND_")
            update = _name(e.get("update", ""), "EVENT_UPDATE_")
            if kind == "delegation_started":
                t.started, t.text = turn, e.get("text", "")
            elif kind == "result_surfaced":
                mode = _name(e.get("mode", ""), "SURFACING_MODE_")
                label = f"surfaced {mode}" + (" voiced" if e.get("voiced") else "")
                t.marks.append((turn, label))
                if update == "final":
                    t.ended = turn
            elif kind == "error":
                t.marks.append((turn, "error: " + e.get("error", {}).get("code", "")))
                t.ended = turn
            elif kind in ("progress", "tool_call"):
                t.marks.append((turn, update or kind))
    return [t for t in tasks.values() if t.started is not None]


def draw(run_dir: str | Path, out: str | Path | None = None, turn_ms: int = 200) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    chunks = read_timeline(run_dir / "timeline.jsonl")
    if not chunks:
        raise ValueError(f"{run_dir / 'timeline.jsonl'} holds no output chunks")
    turns = [int(c.get("turn", 0)) for c in chunks]
    compute = [float(c.get("timing", {}).get("compute_ms", 0.0)) for c in chunks]
    late = [float(c.get("timing", {}).get("lateness_ms", 0.0)) for c in chunks]
    missed = [t for t, c in zip(turns, chunks, strict=True) if c.get("timing", {}).get("missed")]
    tasks = delegations(chunks)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True,
                                 gridspec_kw={"height_ratios": [1, max(1, len(tasks)) * 0.6 + 0.8]})
    a1.plot(turns, compute, label="compute ms", lw=1)
    a1.plot(turns, late, label="turn-start lateness ms", lw=1)
    a1.axhline(turn_ms, color="grey", ls=":", lw=1, label=f"turn ({turn_ms} ms)")
    for t in missed:
        a1.axvline(t, color="red", alpha=0.4, lw=1)
    a1.set_ylabel("ms")
    a1.set_title(f"{run_dir.name}: {len(chunks)} turns, {len(missed)} missed, {len(tasks)} delegations")
    a1.legend(loc="upper right", fontsize=8)
    for row, t in enumerate(tasks):
        end = t.ended if t.ended is not None else turns[-1]
        a2.barh(row, end - t.started + 1, left=t.started, height=0.5, alpha=0.3)
        a2.text(t.started, row + 0.32, (t.text or t.task_id)[:40], fontsize=7)
        by_turn: dict[int, list[str]] = {}
        for turn, label in t.marks:
            if label not in by_turn.setdefault(turn, []):
                by_turn[turn].append(label)
        for k, (turn, labels) in enumerate(sorted(by_turn.items())):
            a2.plot([turn], [row], "k|", ms=10)
            a2.annotate("\n".join(labels), (turn, row), xytext=(0, -14 - 16 * (k % 3)), textcoords="offset points",
                        fontsize=6, ha="center", va="top")
    heard = [(int(c.get("turn", 0)), e) for c in chunks for e in c.get("events", [])
             if _name(e.get("kind", ""), "EVENT_KIND_") in ("user_transcript", "barge_in")]
    base = len(tasks)
    for turn, _ in heard:
        a2.plot([turn], [base], "bv", ms=5)
    for k, (turn, e) in enumerate(heard):
        a2.annotate(e.get("text", "")[:28], (turn, base), xytext=(0, 6 + 9 * (k % 3)), textcoords="offset points",
                    fontsize=6, ha="center", color="blue")
    a2.set_yticks(list(range(len(tasks))) + [base], [t.task_id[:8] for t in tasks] + ["user"])
    a2.set_ylim(-1, base + 1)
    a2.set_xlabel(f"turn ({turn_ms} ms each)")
    fig.tight_layout()
    path = Path(out) if out else run_dir / "report.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
