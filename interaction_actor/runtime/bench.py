"""bench_loop: turn-start lateness, compute as a fraction of the budget, and misses under load.

For n in 1, 4, 16 concurrent sessions and load in idle / busy, n real gRPC clients (in a child
process, as remote clients would be) stream 16 kHz audio in real time to a TurnLoop (real model,
default `small`) served on 127.0.0.1. "busy" runs
CPU-hungry processes (one per core, each spinning torch matmuls) beside it. Each run reports
lateness_ms_p50/p99/max, compute_fraction_p99 (model step p99 / turn length), missed, turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import subprocess
import sys
import time

import torch

from interaction_actor.runtime.loop import LoopConfig, TurnLoop
from interaction_actor.runtime.metrics import percentile
from interplay.log import get_logger

log = get_logger("interaction_actor.runtime.bench")

SPIN = """
import sys, time, torch
torch.set_num_threads(1)
a = torch.randn(384, 384)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    a = torch.tanh(a @ a)
"""


@contextlib.contextmanager
def busy_processes(count: int | None = None, max_s: float = 600.0):
    """Start `count` (default: one per core) CPU-spinning processes; they end on exit or after max_s."""
    count = count or os.cpu_count() or 1
    procs = [subprocess.Popen([sys.executable, "-c", SPIN, str(max_s)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(count)]
    try:
        time.sleep(0.5)  # let them start spinning
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def _client(address: str, seconds: float, turn_ms: int, ready: asyncio.Event) -> int:
    from interplay.client import SessionClient, audio_chunk

    n = 16000 * turn_ms // 1000
    t = torch.arange(n) / 16000.0
    pcm = (torch.sin(2 * torch.pi * 220 * t) * 6000).to(torch.int16).numpy().tobytes()
    got = 0
    async with SessionClient(address) as c:
        async def produce() -> None:
            t0 = time.monotonic()
            k = 0
            while time.monotonic() - t0 < seconds:
                await c.send(audio_chunk(pcm))
                k += 1
                await asyncio.sleep(max(0.0, t0 + k * turn_ms / 1000 - time.monotonic()))
            await c.finish()

        task = asyncio.get_running_loop().create_task(produce())
        async for _ in c.chunks():
            got += 1
            if got == 3:
                ready.set()
        task.cancel()
    return got


def _clients_process(address: str, n: int, seconds: float, turn_ms: int, ready) -> None:
    """Child process: n streaming clients (kept out of the server's process and GIL, as real clients are)."""
    torch.set_num_threads(1)

    async def main() -> None:
        events = [asyncio.Event() for _ in range(n)]
        tasks = [asyncio.get_running_loop().create_task(_client(address, seconds, turn_ms, e)) for e in events]
        await asyncio.gather(*(e.wait() for e in events))
        ready.put("ready")
        await asyncio.gather(*tasks)

    asyncio.run(main())


async def _run(loop: TurnLoop, address: str, n: int, seconds: float) -> dict:
    turn_ms = loop.config.turn_ms
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    proc = ctx.Process(target=_clients_process, args=(address, n, seconds + 1.0, turn_ms, ready), daemon=True)
    proc.start()
    try:
        await asyncio.get_running_loop().run_in_executor(None, ready.get, True, 120.0)
        loop.metrics.reset()
        await asyncio.sleep(seconds)
        m = loop.metrics
        late = list(m.lateness_ms.recent)
        comp = list(m.compute_ms.recent)
        run = {"n": n, "turns": m.turns, "missed": m.missed, "lateness_ms_p50": percentile(late, 50),
               "lateness_ms_p99": percentile(late, 99), "lateness_ms_max": max(late, default=0.0),
               "compute_ms_p50": percentile(comp, 50), "compute_ms_p99": percentile(comp, 99),
               "compute_fraction_p50": percentile(comp, 50) / turn_ms,
               "compute_fraction_p99": percentile(comp, 99) / turn_ms,
               "skipped_slots": m.skipped_slots, "dropped_outputs": m.dropped_outputs}
        await asyncio.get_running_loop().run_in_executor(None, proc.join, 30.0)
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
    return run


async def _bench(quick: bool, preset: str, sizes: tuple[int, ...], seconds: float, turn_ms: int,
                 busy_count: int | None) -> dict:
    from interaction_actor.model.fusion import build_model
    from interaction_actor.runtime.service import serve

    model = build_model(preset)
    # admission off: the bench measures what happens past capacity on purpose
    loop = TurnLoop(model, LoopConfig(turn_ms=turn_ms, torch_threads=1, max_sessions=max(sizes), admission=False))
    loop.start()
    server, address = await serve(loop)
    runs = []
    try:
        for load in ("idle", "busy"):
            ctx = busy_processes(busy_count) if load == "busy" else contextlib.nullcontext()
            with ctx:
                for n in sizes:
                    r = await _run(loop, address, n, seconds)
                    r["load"] = load
                    runs.append(r)
                    log.info("bench_loop_run", **r)
    finally:
        await server.stop(0.5)
        await loop.stop()
    return {"preset": preset, "turn_ms": turn_ms, "seconds_per_run": seconds, "busy_processes": busy_count
            or os.cpu_count(), "runs": runs}


def bench_loop(quick: bool = False, preset: str = "small", sizes: tuple[int, ...] = (1, 4, 16),
               seconds: float | None = None, turn_ms: int = 200, busy_count: int | None = None) -> dict:
    """Run the loop benchmark; `quick` runs 3 s per configuration (about 40 s in all)."""
    seconds = seconds if seconds is not None else (3.0 if quick else 20.0)
    threads = torch.get_num_threads()
    try:
        return asyncio.run(_bench(quick, preset, tuple(sizes), seconds, turn_ms, busy_count))
    finally:
        torch.set_num_threads(threads)
