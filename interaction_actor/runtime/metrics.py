"""Deadline accounting of the micro-turn loop: counters and histograms, readable in-process.

`LoopMetrics.record_turn` is called once per loop turn (all due sessions together); `snapshot()`
returns plain numbers (percentiles from a bounded window of recent samples, cumulative
Prometheus-style buckets over all turns) for a benchmark, the actor's `metrics()` call, or the
optional HTTP endpoint (`serve_metrics`: JSON at /metrics.json, Prometheus text at /metrics,
bound to 127.0.0.1). Every turn is also a structlog event (`turn`, debug level; misses at warning).
"""

from __future__ import annotations

import asyncio
import bisect
import json
from collections import deque
from dataclasses import dataclass, field

from interplay.log import get_logger

log = get_logger("interaction_actor.runtime.metrics")

BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); 0.0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return float(s[k])


@dataclass
class Histogram:
    """Cumulative buckets over all observations plus a window of recent values for percentiles."""

    window: int = 10000
    buckets: tuple[float, ...] = BUCKETS_MS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0
    max: float = 0.0
    recent: deque = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)
        self.recent = deque(maxlen=self.window)

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, v)] += 1
        self.total += v
        self.n += 1
        self.max = max(self.max, v)
        self.recent.append(v)

    def summary(self) -> dict:
        r = list(self.recent)
        return {"count": self.n, "sum": self.total, "max": self.max, "p50": percentile(r, 50),
                "p99": percentile(r, 99)}


@dataclass
class LoopMetrics:
    turn_ms: float
    turns: int = 0  # loop turns (one per clock slot that ran)
    session_turns: int = 0  # sum over turns of the sessions stepped
    missed: int = 0
    skipped_slots: int = 0
    input_errors: int = 0
    dropped_outputs: int = 0
    delegations: int = 0
    turn_failures: int = 0  # a stage failed for one session (contained: that session got an error event)
    lateness_ms: Histogram = field(default_factory=Histogram)
    compute_ms: Histogram = field(default_factory=Histogram)  # model step (decode + step_batch) per turn
    turn_ms_total: Histogram = field(default_factory=Histogram)  # start -> outputs emitted

    def record_turn(self, *, slot: int, sessions: int, lateness_ms: float, compute_ms: float, total_ms: float,
                    missed: bool, skipped: int) -> None:
        self.turns += 1
        self.session_turns += sessions
        self.missed += int(missed)
        self.skipped_slots += skipped
        self.lateness_ms.observe(lateness_ms)
        self.compute_ms.observe(compute_ms)
        self.turn_ms_total.observe(total_ms)
        ev = log.warning if missed else log.debug
        ev("turn", slot=slot, sessions=sessions, lateness_ms=round(lateness_ms, 3),
           compute_ms=round(compute_ms, 3), total_ms=round(total_ms, 3), missed=missed, skipped=skipped)

    def reset(self) -> None:
        fresh = LoopMetrics(turn_ms=self.turn_ms)
        self.__dict__.update(fresh.__dict__)

    def snapshot(self) -> dict:
        c = self.compute_ms.summary()
        return {
            "turn_ms": self.turn_ms, "turns": self.turns, "session_turns": self.session_turns,
            "missed": self.missed, "skipped_slots": self.skipped_slots, "input_errors": self.input_errors,
            "dropped_outputs": self.dropped_outputs, "delegations": self.delegations,
            "turn_failures": self.turn_failures, "lateness_ms": self.lateness_ms.summary(), "compute_ms": c, "turn_total_ms": self.turn_ms_total.summary(),
            "compute_fraction_p50": c["p50"] / self.turn_ms, "compute_fraction_p99": c["p99"] / self.turn_ms,
        }

    def prometheus(self) -> str:
        """Prometheus text exposition of the counters and histograms."""
        lines = []
        for name in ("turns", "session_turns", "missed", "skipped_slots", "input_errors", "dropped_outputs",
                     "delegations", "turn_failures"):
            lines += [f"# TYPE interplay_loop_{name}_total counter", f"interplay_loop_{name}_total {getattr(self, name)}"]
        for name, h in (("lateness_ms", self.lateness_ms), ("compute_ms", self.compute_ms)):
            metric = f"interplay_loop_{name}"
            lines.append(f"# TYPE {metric} histogram")
            cum = 0
            for b, cnt in zip((*h.buckets, "+Inf"), h.counts, strict=True):
                cum += cnt
                lines.append(f'{metric}_bucket{{le="{b}"}} {cum}')
            lines += [f"{metric}_sum {h.total}", f"{metric}_count {h.n}"]
        return "\n".join(lines) + "\n"


async def serve_metrics(metrics: LoopMetrics, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """A tiny HTTP endpoint: GET /metrics (Prometheus text) or /metrics.json. Returns the server."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            path = line.split()[1].decode() if len(line.split()) > 1 else "/"
            while (await asyncio.wait_for(reader.readline(), 5.0)) not in (b"\r\n", b"\n", b""):
                pass
            if path.startswith("/metrics.json"):
                body, ctype, status = json.dumps(metrics.snapshot()).encode(), "application/json", "200 OK"
            elif path.startswith("/metrics"):
                body, ctype, status = metrics.prometheus().encode(), "text/plain; version=0.0.4", "200 OK"
            else:
                body, ctype, status = b"not found\n", "text/plain", "404 Not Found"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
