"""Deadline accounting of the micro-turn loop: counters and histograms, readable in-process and scraped
by Prometheus.

`LoopMetrics.record_turn` is called once per loop turn (all due sessions together); `snapshot()`
returns plain numbers (percentiles from a bounded window of recent samples, cumulative buckets over
all turns) for a benchmark or the actor's `metrics()` call. `LoopMetrics` stays the one place the
numbers live: `LoopCollector` (a prometheus_client collector) reads them at scrape time, and
`serve_metrics(metrics, host, port)` serves them with prometheus_client's HTTP server (a daemon
thread) bound to `host`, at /metrics. Exposed there: turns, missed deadlines, skipped slots, turn
failures, live sessions (gauge), input errors by `code`, dropped outputs, delegations started and
settled by `outcome` (final, error, cancelled) and error `code`, histograms of turn lateness and
compute (ms), of delegation latency (ms, start → its terminal update) and of a final result's
surfacing (ms, the result created → it entered the model's context; `results_surfaced`, with a count
by mode and voiced), the transcriber's latency (ms, the window holding the speech's end was fed → the
transcript reached the loop; `transcribed`, hearing.py) with failures by code, and speech synthesis
time (ms; `tts`, for a backend with a TTS: the loop sets a backend's `metrics` attribute when it has
one set to None). Every turn is also a structlog event (`turn`, debug level; misses at warning).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from interplay.log import get_logger
from interplay.v1 import common_pb2 as cpb
from interplay.v1 import session_pb2 as spb

log = get_logger("interaction_actor.runtime.metrics")

BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
DELEGATION_BUCKETS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000)
SPEECH_BUCKETS_MS = (50, 100, 200, 300, 500, 700, 1000, 1500, 2000, 3000, 5000, 10_000)
SURFACE_BUCKETS_MS = (10, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000)


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

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        """These observations as a Prometheus histogram (cumulative buckets, sum, count)."""
        cum, buckets = 0, []
        for b, cnt in zip((*self.buckets, "+Inf"), list(self.counts), strict=True):
            cum += cnt
            buckets.append((str(b), cum))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.total)


def _delegation_histogram() -> Histogram:
    return Histogram(buckets=DELEGATION_BUCKETS_MS)


def _speech_histogram() -> Histogram:
    return Histogram(window=2000, buckets=SPEECH_BUCKETS_MS)


def _surface_histogram() -> Histogram:
    return Histogram(window=2000, buckets=SURFACE_BUCKETS_MS)


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
    live_sessions: int = 0  # set by the loop as sessions open and close (kept across reset())
    input_errors_by_code: dict[str, int] = field(default_factory=dict)
    delegations_settled: dict[tuple[str, str], int] = field(default_factory=dict)  # (outcome, code) → count
    lateness_ms: Histogram = field(default_factory=Histogram)
    compute_ms: Histogram = field(default_factory=Histogram)  # model step (decode + step_batch) per turn
    turn_ms_total: Histogram = field(default_factory=Histogram)  # start -> outputs emitted
    delegation_ms: Histogram = field(default_factory=_delegation_histogram)  # start -> terminal update
    surfaced_by_mode: dict[tuple[str, bool], int] = field(default_factory=dict)  # (mode, voiced) → final results
    surface_ms: Histogram = field(default_factory=_surface_histogram)  # a final result created -> surfaced
    transcriber_ms: Histogram = field(default_factory=_speech_histogram)  # speech end fed -> transcript at the loop
    transcriber_errors: dict[str, int] = field(default_factory=dict)  # by the Heard's error code
    tts_ms: Histogram = field(default_factory=_speech_histogram)  # one synthesis (a backend with a TTS)

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

    def input_error(self, code: str) -> None:
        """One refused input (`code`: the ERROR event's code the client gets)."""
        self.input_errors += 1
        self.input_errors_by_code[code] = self.input_errors_by_code.get(code, 0) + 1

    def delegation_settled(self, outcome: str, code: str, ms: float) -> None:
        """A delegation reached its terminal update: `outcome` final | error | cancelled, `code` the
        error's code ("" otherwise), `ms` since it started."""
        key = (outcome, code)
        self.delegations_settled[key] = self.delegations_settled.get(key, 0) + 1
        self.delegation_ms.observe(ms)

    def results_surfaced(self, events: list[spb.Event]) -> None:
        """The RESULT_SURFACED events of a turn: each final result's first surfacing is counted by mode
        and voiced, and its age (created → surfaced) observed."""
        for e in events:
            if (e.kind == spb.EVENT_KIND_RESULT_SURFACED and e.update == spb.EVENT_UPDATE_FINAL
                    and not e.redelivery):
                key = (mode_name(e.mode), bool(e.voiced))
                self.surfaced_by_mode[key] = self.surfaced_by_mode.get(key, 0) + 1
                self.surface_ms.observe(float(e.age_ms))

    def transcribed(self, ms: float, error: str = "") -> None:
        """A transcript (or a transcriber failure, `error` its code) reached the loop `ms` after the
        window holding the speech's end was fed to the ears."""
        if error:
            self.transcriber_errors[error] = self.transcriber_errors.get(error, 0) + 1
        else:
            self.transcriber_ms.observe(ms)

    def tts(self, ms: float) -> None:
        """One speech synthesis took `ms` (text in → audio out)."""
        self.tts_ms.observe(ms)

    def reset(self) -> None:
        fresh = LoopMetrics(turn_ms=self.turn_ms, live_sessions=self.live_sessions)
        self.__dict__.update(fresh.__dict__)

    def snapshot(self) -> dict:
        c = self.compute_ms.summary()
        return {
            "turn_ms": self.turn_ms, "turns": self.turns, "session_turns": self.session_turns,
            "missed": self.missed, "skipped_slots": self.skipped_slots, "input_errors": self.input_errors,
            "dropped_outputs": self.dropped_outputs, "delegations": self.delegations,
            "turn_failures": self.turn_failures, "live_sessions": self.live_sessions,
            "lateness_ms": self.lateness_ms.summary(), "compute_ms": c, "turn_total_ms": self.turn_ms_total.summary(),
            "delegation_ms": self.delegation_ms.summary(), "surface_ms": self.surface_ms.summary(),
            "transcriber_ms": self.transcriber_ms.summary(), "tts_ms": self.tts_ms.summary(),
            "compute_fraction_p50": c["p50"] / self.turn_ms, "compute_fraction_p99": c["p99"] / self.turn_ms,
        }


COUNTERS = {
    "turns": "Loop turns run (one per clock slot that ran).",
    "session_turns": "Session turns stepped (sum over loop turns of the sessions stepped).",
    "missed": "Turns that missed their deadline.",
    "skipped_slots": "Clock slots skipped because a turn overran.",
    "dropped_outputs": "Output chunks dropped because a client's queue was full.",
    "delegations": "Delegations started.",
    "turn_failures": "Turn stages that failed for one session (that session got an error event).",
}


def mode_name(mode: int) -> str:
    """"interrupt", "when_idle", "silent" ("unspecified" for 0)."""
    try:
        return cpb.SurfacingMode.Name(mode).removeprefix("SURFACING_MODE_").lower()
    except ValueError:
        return str(mode)


class LoopCollector(Collector):
    """Reads a LoopMetrics at scrape time (on the HTTP server's thread: plain reads of numbers)."""

    def __init__(self, metrics: LoopMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        for name, doc in COUNTERS.items():
            yield CounterMetricFamily(f"interplay_loop_{name}", doc, value=getattr(m, name))
        yield GaugeMetricFamily("interplay_loop_live_sessions", "Sessions live on this actor.", value=m.live_sessions)
        errors = CounterMetricFamily("interplay_loop_input_errors", "Inputs refused, by error code.", labels=["code"])
        for code, n in sorted(dict(m.input_errors_by_code).items()):
            errors.add_metric([code], n)
        yield errors
        settled = CounterMetricFamily("interplay_delegations_settled",
                                      "Delegations settled, by outcome (final, error, cancelled) and error code.",
                                      labels=["outcome", "code"])
        for (outcome, code), n in sorted(dict(m.delegations_settled).items()):
            settled.add_metric([outcome, code], n)
        yield settled
        yield m.lateness_ms.family("interplay_loop_lateness_ms", "How late each turn started after its slot (ms).")
        yield m.compute_ms.family("interplay_loop_compute_ms", "Model step time per turn, all sessions (ms).")
        yield m.delegation_ms.family("interplay_delegation_latency_ms",
                                     "Delegation start to its terminal update (ms).")
        surfaced = CounterMetricFamily("interplay_results_surfaced", "Final results surfaced (first delivery), "
                                       "by mode and whether they were voiced.", labels=["mode", "voiced"])
        for (mode, voiced), n in sorted(dict(m.surfaced_by_mode).items()):
            surfaced.add_metric([mode, str(voiced).lower()], n)
        yield surfaced
        yield m.surface_ms.family("interplay_result_surface_ms",
                                  "A final result created to it entering the model's context (ms).")
        yield m.transcriber_ms.family("interplay_transcriber_latency_ms",
                                      "Speech end (its window fed to the ears) to the transcript at the loop (ms).")
        failed = CounterMetricFamily("interplay_transcriber_errors", "Transcriber failures, by code.",
                                     labels=["code"])
        for code, n in sorted(dict(m.transcriber_errors).items()):
            failed.add_metric([code], n)
        yield failed
        yield m.tts_ms.family("interplay_tts_latency_ms", "Speech synthesis time, text in to audio out (ms).")


class MetricsServer:
    """prometheus_client's HTTP server on a daemon thread; `address` is "host:port"."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.httpd, self.thread = start_http_server(port, addr=host, registry=registry)
        h, p = self.httpd.server_address[:2]
        self.host, self.port = h, p
        self.address = f"{h}:{p}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def serve_metrics(metrics: LoopMetrics, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
    """Serve `metrics` at http://host:port/metrics (port 0: a free one, see `.address`)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(LoopCollector(metrics))
    return MetricsServer(registry, host, port)
