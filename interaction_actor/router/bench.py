"""bench_scale: how many sessions one actor holds, what the router costs, how fast a session moves.

1. Capacity (the loop bench's machinery, interaction_actor/runtime/bench.py): one TurnLoop (real model,
   default `small`, admission off) served on 127.0.0.1, n real gRPC clients in a child process streaming
   audio in real time, n climbing a ladder until a run misses a turn or its compute p99 passes 0.8 of the
   turn; idle, then beside CPU-spinning processes (one per core). `sessions_at_zero_missed` (idle) and
   `sessions_at_zero_missed_busy` are the largest n that passed; `compute_fraction_p99_at_max` is the
   idle run's at that n.
2. The router (Ray, local): two InteractionActors (preset `tiny`: the model is not the subject) behind a
   RouterActor. A session through the router and a direct one on the same actor stream side by side; the
   two chunks of each turn leave the actor together, so the routed one's extra arrival delay is the
   router's hop: `router_overhead_ms_p50/p99`.
3. Failover: the actor holding the routed session is killed (ray.kill); `failover_resume_ms` is kill ->
   the first chunk from the new actor (SESSION_MOVED) at the client (the median over the repeats).

Timing figures depend on what else runs: the result records the 1-minute load average before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid

import torch

from interaction_actor.runtime.bench import _run, busy_processes
from interaction_actor.runtime.metrics import percentile
from interplay.log import get_logger
from interplay.v1 import session_pb2 as spb

log = get_logger("interaction_actor.router.bench")

BUDGET_FRACTION = 0.8  # a count passes when compute p99 stays within this share of the turn (and 0 missed)
QUIET = bytes(6400)  # 200 ms of 16 kHz silence


async def _capacity(preset: str, ladder: tuple[int, ...], seconds: float, turn_ms: int) -> dict:
    from interaction_actor.model.fusion import build_model
    from interaction_actor.runtime.loop import LoopConfig, TurnLoop
    from interaction_actor.runtime.service import serve

    loop = TurnLoop(build_model(preset), LoopConfig(turn_ms=turn_ms, torch_threads=1, max_sessions=max(ladder),
                                                    admission=False))
    loop.start()
    server, address = await serve(loop)
    runs: list[dict] = []
    best = {"idle": 0, "busy": 0}
    try:
        for load in ("idle", "busy"):
            with busy_processes() if load == "busy" else contextlib.nullcontext():
                for n in ladder:
                    r = await _run(loop, address, n, seconds)
                    r["load"] = load
                    r["passed"] = r["missed"] == 0 and r["compute_fraction_p99"] <= BUDGET_FRACTION
                    runs.append(r)
                    log.info("bench_scale_capacity", **r)
                    if not r["passed"]:
                        break
                    best[load] = n
    finally:
        await server.stop(0.5)
        await loop.stop()
    at_max = next((r for r in runs if r["load"] == "idle" and r["n"] == best["idle"]), None)
    return {"sessions_at_zero_missed": best["idle"], "sessions_at_zero_missed_busy": best["busy"],
            "compute_fraction_p99_at_max": at_max["compute_fraction_p99"] if at_max else None, "capacity_runs": runs}


async def _stream(address: str, session_id: str, arrivals: list, stop: asyncio.Event, moved: dict) -> None:
    """One session streaming silence each turn; records (arrival time, chunk) until `stop`."""
    from interplay.client import SessionClient, audio_chunk

    with contextlib.suppress(Exception):  # the direct session dies with its actor: that is expected
        async with SessionClient(address, session_id) as c:
            await c.send(audio_chunk(QUIET))
            async for chunk in c.chunks():
                now = time.monotonic()
                arrivals.append((now, chunk))
                if any(e.kind == spb.EVENT_KIND_SESSION_MOVED for e in chunk.events):
                    moved.setdefault("at", now)
                if stop.is_set():
                    break
                await c.send(audio_chunk(QUIET))


def _pair_delays(routed: list, direct: list, turn_ms: int) -> list[float]:
    """For each routed arrival, its delay after the direct chunk of the same turn (the nearest one
    within half a turn: both left the actor in the same emit)."""
    half = turn_ms / 2000
    times = [t for t, _ in direct]
    out = []
    for t, _ in routed:
        near = min(times, key=lambda d: abs(t - d), default=None)
        if near is not None and abs(t - near) < half:
            out.append((t - near) * 1000)
    return out


async def _router_figures(turns: int, repeats: int) -> dict:
    import ray

    from interaction_actor.router import spawn_router
    from interaction_actor.runtime.actor import spawn

    options = dict(preset="tiny", checkpoint="none", seed=0, policy="never", log_level="warning")
    names = iter(f"bench-scale-{uuid.uuid4().hex[:6]}-{i}" for i in range(100))

    def new_actor() -> tuple[object, str, str]:
        name = next(names)
        return (*spawn(name=name, **options), name)

    def router_for(members):  # by name: a router's constructor holds no handles (Ray restarts it)
        return spawn_router([(name, a) for _, a, name in members], log_level="warning")

    actors = [new_actor(), new_actor()]
    router, address = router_for(actors)
    delays: list[float] = []
    resumes: list[float] = []
    try:
        for i in range(repeats):
            routed, direct, stop, moved = [], [], asyncio.Event(), {}
            r = asyncio.get_running_loop().create_task(_stream(address, f"routed-{i}", routed, stop, moved))
            while not routed:
                await asyncio.sleep(0.05)
            where = await router.where.remote(f"routed-{i}")
            victim = next(h for h, a, _ in actors if a == where)
            d = asyncio.get_running_loop().create_task(_stream(where, f"direct-{i}", direct, stop, {}))
            await asyncio.sleep(turns * 0.2)
            delays += _pair_delays(routed[-turns:], direct, 200)
            ray.kill(victim, no_restart=True)
            killed = time.monotonic()
            async with asyncio.timeout(15):
                while "at" not in moved:
                    await asyncio.sleep(0.01)
            resumes.append((moved["at"] - killed) * 1000)
            stop.set()
            await asyncio.gather(r, d)
            log.info("bench_scale_failover", resume_ms=round(resumes[-1], 1), paired_turns=len(delays))
            if i + 1 < repeats:  # a fresh actor in place of the killed one, behind a fresh router
                actors = [x for x in actors if x[0] is not victim] + [new_actor()]
                ray.kill(router, no_restart=True)
                router, address = router_for(actors)
    finally:
        for h in [router, *(h for h, _, _ in actors)]:
            with contextlib.suppress(Exception):
                ray.kill(h, no_restart=True)
    return {"router_overhead_ms_p50": percentile(delays, 50), "router_overhead_ms_p99": percentile(delays, 99),
            "router_paired_turns": len(delays), "failover_resume_ms": percentile(resumes, 50),
            "failover_resume_ms_all": [round(x, 1) for x in resumes]}


def bench_scale(quick: bool = False, preset: str = "small", turn_ms: int = 200, seconds: float | None = None) -> dict:
    """Run the scale benchmark (see the module docstring); `quick`: a shorter ladder and runs, one failover."""
    from interplay.raylocal import ensure_ray

    seconds = seconds if seconds is not None else (2.0 if quick else 10.0)
    ladder = (1, 4, 8, 16, 24) if quick else (1, 2, 4, 8, 12, 16, 20, 24, 28, 32)
    before = os.getloadavg()[0]
    threads = torch.get_num_threads()
    try:
        figures = asyncio.run(_capacity(preset, ladder, seconds, turn_ms))
    finally:
        torch.set_num_threads(threads)
    ensure_ray(None, num_cpus=2)
    figures.update(asyncio.run(_router_figures(turns=25 if quick else 150, repeats=1 if quick else 3)))
    figures.update({"preset": preset, "turn_ms": turn_ms, "seconds_per_run": seconds,
                    "budget_fraction": BUDGET_FRACTION, "cpus": os.cpu_count(),
                    "load_avg_1m_before": round(before, 2), "load_avg_1m_after": round(os.getloadavg()[0], 2)})
    return figures
