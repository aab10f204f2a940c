"""`interplay bench delegation`: hand-off time of a realistic context package, and surfacing delay.

handoff_ms_*: what the interaction side's Delegator does, timed from the delegation decision: a
snapshot of a 10-minute ConversationLog (with images) on the event loop, build_package on a build
thread, serialize, and a real gRPC Background.Delegate over 127.0.0.1 until the first Update (the
acknowledgement) is back. build_ms_60min_p50: the same build from a 60-minute log (six times the
entries), to show that the build does not grow with the session.
The server is a minimal grpc.aio Background servicer started here that only acknowledges (the
real background actor is not imported: `delegation` never imports an actor). surface_turns_*:
turns from an update's arrival to its surfacing, every result in interrupt mode, over the shipped
scenarios through the harness (two interrupt results queue, so the tail includes that wait).
"""

from __future__ import annotations

import asyncio
import io
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from delegation.harness import HarnessConfig, percentile, run_scenario
from delegation.package import PackageConfig, SurfacingMode, UserState, build_package
from delegation.scenario import load_scenarios
from delegation.scheduler import InterleaveScheduler, SchedulerConfig
from delegation.transcript import ConversationLog
from interplay.log import get_logger
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import background_pb2_grpc as bgrpc

log = get_logger("delegation.bench")

WORDS = ("the", "weather", "tomorrow", "in", "Paris", "looks", "like", "rain", "so", "maybe", "bring", "an",
         "umbrella", "and", "we", "could", "check", "the", "museum", "hours", "or", "book", "a", "table")
SERVER_NOTE = "minimal grpc.aio Background servicer started by the bench (acknowledges only; not background_actor)"


class AckBackground(bgrpc.BackgroundServicer):
    """Acknowledges every Delegate with ACCEPTED then FINAL; Steer/Cancel accept. For benchmarks only."""

    async def Delegate(self, request, context):  # noqa: N802 - gRPC method name
        yield bpb.Update(task_id=request.task_id, seq=0, kind=bpb.UPDATE_KIND_ACCEPTED)
        yield bpb.Update(task_id=request.task_id, seq=1, kind=bpb.UPDATE_KIND_FINAL, text="ok")

    async def Steer(self, request, context):  # noqa: N802
        return bpb.SteerResponse(accepted=True)

    async def Cancel(self, request, context):  # noqa: N802
        return bpb.CancelResponse(cancelled=True)


def realistic_log(minutes: float = 10.0, seed: int = 0) -> ConversationLog:
    """A session's log: alternating speech with overlaps, barge-ins, silences, typed text, 4 images."""
    rng = random.Random(seed)
    words = WORDS
    lg = ConversationLog(session_id="bench")
    turns = int(minutes * 60 * 1000 / lg.config.turn_ms)
    speaker, left = "user", rng.randint(5, 30)
    for t in range(turns):
        left -= 1
        if left <= 0:
            speaker = rng.choice(["user", "assistant", "silence"])
            left = rng.randint(3, 30)
        barge = speaker == "user" and left > 2 and rng.random() < 0.01
        lg.record_turn(t, user_text=rng.choice(words) if speaker == "user" else "",
                       assistant_text=rng.choice(words) if speaker == "assistant" or rng.random() < 0.03 else "",
                       typed_text="https://example.org/a" if rng.random() < 0.003 else "", barge_in=barge)
        if t % (turns // 4) == 0:
            lg.observe(f"frame {t}: a desk with a laptop and a cup", t, image=_jpeg(rng), mime_type="image/jpeg")
    return lg


def _jpeg(rng: random.Random, size: int = 64) -> bytes:
    from PIL import Image

    img = Image.frombytes("RGB", (size, size), bytes(rng.randrange(256) for _ in range(size * size * 3)))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=70)
    return buf.getvalue()


async def _handoffs(n: int, lg: ConversationLog, cfg: PackageConfig) -> dict[str, list[float]]:
    server = grpc.aio.server()
    bgrpc.add_BackgroundServicer_to_server(AckBackground(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    out: dict[str, list[float]] = {"handoff": [], "build": [], "serialize": [], "bytes": [], "dropped": [],
                                   "images": [], "images_left_out": [], "summary": []}
    builds = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-build")
    loop = asyncio.get_running_loop()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            delegate = ch.unary_stream("/interplay.v1.Background/Delegate", request_serializer=lambda b: b,
                                       response_deserializer=bpb.Update.FromString)
            for i in range(n + 5):  # the first 5 warm the channel up
                t0 = time.perf_counter()
                snap = lg.snapshot()  # on the event loop, as the Delegator does; the build on its thread
                pkg = await loop.run_in_executor(builds, lambda i=i, snap=snap: build_package(
                    "find a table for four near the river tonight", task_id=f"bench-{i}", transcript=snap,
                    allowed_tools=["http_fetch", "calculator", "clock"], origin_turn=snap.last_turn, config=cfg))
                t1 = time.perf_counter()
                data = pkg.SerializeToString()
                t2 = time.perf_counter()
                call = delegate(data, timeout=10.0)
                first = await call.read()
                t3 = time.perf_counter()
                if first is grpc.aio.EOF or first.kind != bpb.UPDATE_KIND_ACCEPTED:
                    raise RuntimeError(f"the acknowledging server answered {first!r}")
                while await call.read() is not grpc.aio.EOF:  # drain the stream outside the timed span
                    pass
                if i >= 5:
                    out["handoff"].append((t3 - t0) * 1e3)
                    out["build"].append((t1 - t0) * 1e3)
                    out["serialize"].append((t2 - t1) * 1e3)
                    out["bytes"].append(len(data))
                    out["dropped"].append(pkg.dropped_entries)
                    out["images"].append(sum(1 for o in pkg.observations if o.image))
                    out["images_left_out"].append(pkg.omitted.images)
                    out["summary"].append(len(pkg.earlier_summary.encode()))
    finally:
        builds.shutdown(wait=False)
        await server.stop(grace=None)
    return out


def _long_build(cfg: PackageConfig, minutes: float, n: int) -> tuple[float, int, int]:
    """p50 build ms from a `minutes`-long log; its window entries and digest entries."""
    lg = realistic_log(minutes=minutes, seed=1)
    ms = []
    for i in range(n):
        t0 = time.perf_counter()
        build_package("what did we decide about the table", task_id=f"long-{i}", transcript=lg, config=cfg)
        ms.append((time.perf_counter() - t0) * 1e3)
    return percentile(ms, 50), len(lg), lg.forgotten


def _surface_turns(quick: bool) -> dict[str, float]:
    """Arrival → surfacing in turns, every result forced to INTERRUPT, over the shipped scenarios."""
    cfg = HarnessConfig(scheduler=SchedulerConfig(result_mode=SurfacingMode.INTERRUPT))
    turns: list[float] = []
    for sc in load_scenarios():
        for seed in range(1 if quick else 5):
            res = run_scenario("model_token", sc, seed, cfg)
            turns += [float(s.surfaced_turn - s.received_turn) for s in res.surfaced
                      if s.voiced and s.mode == SurfacingMode.INTERRUPT and s.redelivery == 0]
    return {"surface_turns_p50": percentile(turns, 50), "surface_turns_p99": percentile(turns, 99),
            "surface_turns_max": max(turns) if turns else float("nan"), "surface_samples": len(turns)}


def _surface_uncontended(n: int) -> float:
    """p99 turns to surface one INTERRUPT update arriving at a random turn, over user speech and a
    WHEN_IDLE result being voiced (no other INTERRUPT update competing)."""
    rng = random.Random(1)
    out: list[float] = []
    for k in range(n):
        sched = InterleaveScheduler(clock=lambda: 0.0)
        sched.offer(bpb.Update(task_id="idle", seq=0, kind=bpb.UPDATE_KIND_FINAL, text="y" * 90,
                               surfacing=SurfacingMode.WHEN_IDLE), 0)
        arrive = rng.randint(0, 20)
        for t in range(60):
            d = sched.step(t, rng.choice([UserState.SPEAKING, UserState.SILENT]))
            if any(v.task_id == f"u{k}" for v in d.voice):
                out.append(float(t - arrive))
                break
            if t == arrive:  # it arrives during turn t, after that turn's boundary
                sched.offer(bpb.Update(task_id=f"u{k}", seq=0, kind=bpb.UPDATE_KIND_FINAL, text="now",
                                       surfacing=SurfacingMode.INTERRUPT), t)
    return percentile(out, 99)


def _step_cost(n: int) -> dict[str, float]:
    """Wall time of offer + step for a session with a few updates in flight per turn."""
    rng = random.Random(0)
    sched = InterleaveScheduler(clock=lambda: 0.0)
    costs: list[float] = []
    seqs: dict[str, int] = {}
    for t in range(n):
        t0 = time.perf_counter()
        for _ in range(rng.randint(0, 3)):
            task = f"t{rng.randint(0, 5)}"
            seqs[task] = seqs.get(task, -1) + 1
            kind = rng.choice([bpb.UPDATE_KIND_PROGRESS] * 4 + [bpb.UPDATE_KIND_FINAL])
            sched.offer(bpb.Update(task_id=task, seq=seqs[task], kind=kind, text="x" * 30), t)
        sched.step(t, rng.choice([UserState.SPEAKING, UserState.SILENT, UserState.SILENT, UserState.INTERRUPTED]))
        costs.append((time.perf_counter() - t0) * 1e6)
    return {"scheduler_step_us_p50": percentile(costs, 50), "scheduler_step_us_p99": percentile(costs, 99)}


def bench_delegation(quick: bool = False) -> dict[str, Any]:
    """Figures of `interplay bench delegation` (FIGURES.md keys first)."""
    n = 200 if quick else 2000
    lg = realistic_log()
    cfg = PackageConfig()
    h = asyncio.run(_handoffs(n, lg, cfg))
    long_ms, long_window, long_folded = _long_build(cfg, 60.0, 20 if quick else 100)
    s = _surface_turns(quick)
    figures: dict[str, Any] = {
        "handoff_ms_p50": percentile(h["handoff"], 50),
        "handoff_ms_p99": percentile(h["handoff"], 99),
        "surface_turns_p99": s["surface_turns_p99"],
        "surface_turns_p50": s["surface_turns_p50"],
        "surface_turns_max": s["surface_turns_max"],
        "surface_samples": s["surface_samples"],
        "surface_turns_p99_uncontended": _surface_uncontended(200 if quick else 1000),
        "build_ms_p50": percentile(h["build"], 50),
        "serialize_ms_p50": percentile(h["serialize"], 50),
        "package_bytes": int(percentile(h["bytes"], 50)),
        "budget_bytes": cfg.budget_bytes,
        "log_entries": len(lg),
        "dropped_entries": int(percentile(h["dropped"], 50)),
        "images_kept": int(percentile(h["images"], 50)),
        "images_left_out": int(percentile(h["images_left_out"], 50)),
        "summary_bytes": int(percentile(h["summary"], 50)),
        "build_ms_60min_p50": long_ms,
        "log_entries_60min": long_window,
        "digest_entries_60min": long_folded,
        "handoffs": len(h["handoff"]),
        **_step_cost(500 if quick else 5000),
        "background_server": SERVER_NOTE,
    }
    log.info("bench_delegation", **{k: v for k, v in figures.items() if k != "background_server"})
    return figures
