"""`interplay report RUN_DIR`: pictures of a session from its timeline (what `demo` writes) and its trace.

Reads `timeline.jsonl` (every input and output chunk of one session, as `interplay demo` records it)
and, when given or present as RUN_DIR/trace.jsonl, the run's OpenTelemetry spans (JSON lines, as
`demo --trace FILE` / `serve --trace FILE` write them: interplay.tracing), and draws one PNG,
`report.png`, of two panels over the session's turns:
  1. per-turn compute and turn-start lateness (ms), with missed turns marked;
  2. a Gantt of each delegation: decided, accepted, each tool call, the final answer, and when the
     result surfaced (with its mode, and whether it was voiced); user transcripts and barge-ins as
     marks on the same time axis.
From the trace (`trace_delegations`): each `delegate` span of the session is a row from its start to
its `settled` event, with its accepted / result / surfaced / settled events, and its LLM requests
(`chat ...`) and tool calls (`execute_tool ...`, from the background actors' processes) as bars
beneath; wall-clock times become turns through the turns the delegate spans' events record. Without
a trace (or without the session's spans in it), the rows come from the timeline's events
(`delegations`). Everything drawn is read from those two files. Returns the PNG's path.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


@dataclass
class TaskMarks:
    task_id: str
    text: str = ""
    started: int | None = None
    marks: list[tuple[float, str]] = field(default_factory=list)  # (turn, label)
    ended: float | None = None
    bars: list[tuple[float, float, str]] = field(default_factory=list)  # (from turn, to turn, label): LLM, tools


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


def read_spans(path: Path) -> list[dict]:
    """The spans of a JSON-lines trace file (lines that are not JSON objects are skipped)."""
    spans = []
    with path.open() as f:
        for line in f:
            try:
                s = json.loads(line)
            except ValueError:
                continue
            if isinstance(s, dict) and "name" in s and "context" in s:
                spans.append(s)
    return spans


def _ns(stamp: str) -> int:
    d = datetime.fromisoformat(stamp)
    return int(d.timestamp()) * 1_000_000_000 + d.microsecond * 1000


class TurnClock:
    """Session time (ms) ↔ turn, from the chunks' (turn, time_ms): a turn that overran skips clock slots,
    so turns are not time / turn length. Between two known turns it interpolates; beyond them it goes
    on at one turn per `turn_ms`."""

    def __init__(self, points: list[tuple[int, float]], turn_ms: int) -> None:
        self.turn_ms = turn_ms
        self.points = sorted(dict(points).items()) or [(0, 0.0)]
        self._at = dict(self.points)

    def time_ms(self, turn: int) -> float:
        if turn in self._at:
            return self._at[turn]
        first, last = self.points[0], self.points[-1]
        ref = first if turn < first[0] else last
        return ref[1] + (turn - ref[0]) * self.turn_ms

    def turn(self, ms: float) -> float:
        pts = self.points
        if ms <= pts[0][1] or len(pts) == 1:
            return pts[0][0] + (ms - pts[0][1]) / self.turn_ms
        for (t0, m0), (t1, m1) in zip(pts, pts[1:], strict=False):
            if ms <= m1:
                return t0 + (t1 - t0) * (ms - m0) / max(m1 - m0, 1e-9)
        return pts[-1][0] + (ms - pts[-1][1]) / self.turn_ms


def trace_delegations(spans: list[dict], session_id: str, turn_ms: int = 200,
                      texts: dict[str, str] | None = None, clock: TurnClock | None = None) -> list[TaskMarks]:
    """The session's delegations as the trace recorded them (empty when it holds none). `clock`: the
    session's turns in time (from its chunks; None: one turn per `turn_ms`)."""
    delegates = [s for s in spans if s["name"] == "delegate"
                 and s.get("attributes", {}).get("interplay.session_id") == session_id]
    if not delegates:
        return []
    clock = clock or TurnClock([], turn_ms)
    # wall clock → session time: the surfacing events are stamped in the turn they name (before its
    # step); a delegate span's start only follows the turn it names (a decision after a turn), so it is
    # the anchor only when no event says its turn
    anchors, starts = [], []
    for d in delegates:
        starts.append(_ns(d["start_time"]) - clock.time_ms(int(d["attributes"].get("interplay.turn", 0))) * 1e6)
        for e in d.get("events", []):
            if "interplay.turn" in e.get("attributes", {}):
                anchors.append(_ns(e["timestamp"]) - clock.time_ms(int(e["attributes"]["interplay.turn"])) * 1e6)
    origin = statistics.median(anchors or starts)

    def turn(stamp: str) -> float:
        return clock.turn((_ns(stamp) - origin) / 1e6)

    children: dict[str, list[dict]] = {}
    for s in spans:
        if s.get("parent_id"):
            children.setdefault(s["parent_id"], []).append(s)
    tasks = []
    for d in sorted(delegates, key=lambda s: s["start_time"]):
        a = d["attributes"]
        tid = str(a.get("interplay.task_id", d["context"]["span_id"]))
        t = TaskMarks(tid, (texts or {}).get(tid, ""), started=turn(d["start_time"]))
        for e in d.get("events", []):
            ea, name = e.get("attributes", {}), e["name"]
            if name == "surfaced":
                label = f"surfaced {ea.get('interplay.mode', '')}" + (" voiced" if ea.get("interplay.voiced") else "")
                t.marks.append((turn(e["timestamp"]), label))
            elif name == "result":
                t.marks.append((turn(e["timestamp"]), ea.get("interplay.outcome", "result")))
            elif name in ("accepted", "steered", "voicing_cut"):
                t.marks.append((turn(e["timestamp"]), name.replace("_", " ")))
            elif name == "settled":
                t.marks.append((turn(e["timestamp"]), f"settled {ea.get('interplay.settled', '')}"))
                t.ended = turn(e["timestamp"])
        if t.ended is None and d.get("end_time"):
            t.ended = turn(d["end_time"])
        stack = list(children.get(d["context"]["span_id"], []))
        while stack:  # the background's spans beneath this delegation, whichever process wrote them
            s = stack.pop()
            stack.extend(children.get(s["context"]["span_id"], []))
            sa = s.get("attributes", {})
            if s["name"].startswith("execute_tool "):
                ok = sa.get("interplay.tool.ok")
                label = f"tool {sa.get('gen_ai.tool.name', s['name'][13:])}" + ("" if ok in (None, True) else " failed")
            elif s["name"].startswith("chat "):
                n = sa.get("gen_ai.usage.output_tokens")
                label = f"LLM {n} tok" if n is not None else "LLM (cut)" if s.get("status", {}).get(
                    "status_code") == "ERROR" or sa.get("interplay.interrupted_by_steer") else "LLM"
            else:
                continue
            t.bars.append((turn(s["start_time"]), turn(s["end_time"]), label))
        t.bars.sort()
        tasks.append(t)
    return tasks


def draw(run_dir: str | Path, out: str | Path | None = None, turn_ms: int = 200,
         trace: str | Path | None = None) -> Path:
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
    trace = Path(trace) if trace else run_dir / "trace.jsonl"
    source = "timeline"
    if trace.is_file():
        sid = next((c["session_id"] for c in chunks if c.get("session_id")), "")
        clock = TurnClock([(int(c.get("turn", 0)), float(c.get("time_ms", 0))) for c in chunks], turn_ms)
        traced = trace_delegations(read_spans(trace), sid, turn_ms, {t.task_id: t.text for t in tasks}, clock)
        if traced:
            tasks, source = traced, f"trace {trace.name}"
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True,
                                 gridspec_kw={"height_ratios": [1, max(1, len(tasks)) * 0.6 + 0.8]})
    a1.plot(turns, compute, label="compute ms", lw=1)
    a1.plot(turns, late, label="turn-start lateness ms", lw=1)
    a1.axhline(turn_ms, color="grey", ls=":", lw=1, label=f"turn ({turn_ms} ms)")
    for t in missed:
        a1.axvline(t, color="red", alpha=0.4, lw=1)
    a1.set_ylabel("ms")
    a1.set_title(f"{run_dir.name}: {len(chunks)} turns, {len(missed)} missed, {len(tasks)} delegations "
                 f"(from the {source})")
    a1.legend(loc="upper right", fontsize=8)
    for row, t in enumerate(tasks):
        end = t.ended if t.ended is not None else turns[-1]
        a2.barh(row, end - t.started + 1, left=t.started, height=0.5, alpha=0.3)
        a2.text(t.started, row + 0.32, (t.text or t.task_id)[:40], fontsize=7)
        for k, (b0, b1, label) in enumerate(t.bars):
            y = row - 0.18 - 0.1 * (k % 2)
            a2.plot([b0, max(b1, b0 + 0.2)], [y, y], lw=3, color="tab:green" if label.startswith("tool") else "tab:purple",
                    solid_capstyle="butt")
            a2.annotate(label, (b0, y), xytext=(0, -3), textcoords="offset points", fontsize=5, va="top")
        by_turn: dict[float, list[str]] = {}
        for turn, label in t.marks:
            turn = round(turn, 1)
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
