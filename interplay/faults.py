"""`interplay bench faults`: hostile clients, misbehaving tools and a killed background actor against a
live runtime, with a monitor session beside them that must not lose a turn.

The runtime is the one `serve` runs (interplay.runtime.start: Ray, two background actors, the
interaction actor with the shipped model, JSON logs of every process in a fresh --log-dir), with
two planted parts, both from interplay/fault_kit.py and said plainly: the background engine is the
scripted FaultEngine (the suite needs exact hostile tool calls on demand), and its tools are the
fault tools, one of which holds a planted secret. Each fault runs in its own session while the
monitor streams room tone every turn. Figures (../shared/FIGURES.md): faults_tried, faults_survived,
monitor_turn_fraction, monitor_max_gap_ms, delegations_unsettled, secrets_leaked, faults.
"""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import signal
import tempfile
import threading
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from interplay.client import SessionClient, audio_chunk, text_chunk
from interplay.fault_kit import SECRET_NAME, script
from interplay.log import get_logger
from interplay.v1 import session_pb2 as spb

log = get_logger("interplay.faults")

GAP_BOUND_MS = 400.0  # the monitor's longest silence between two chunks that still counts as no lost turn
TERMINAL_UPDATES = (spb.EVENT_UPDATE_FINAL, spb.EVENT_UPDATE_ERROR, spb.EVENT_UPDATE_CANCELLED)


@dataclass
class Monitor:
    """A session that streams room tone every turn and notes when each chunk arrives. It runs on a
    thread and event loop of its own, so nothing the faults do on the client side delays its clock."""

    address: str
    turn_ms: int
    arrivals: list[float] = field(default_factory=list)
    chunks: list[spb.OutputChunk] = field(default_factory=list)
    _stop: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        ready = threading.Event()

        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            ready.set()
            await self.run()

        self._thread = threading.Thread(target=lambda: asyncio.run(main()), name="fault-monitor", daemon=True)
        self._thread.start()
        ready.wait(10)

    async def run(self) -> None:
        async with SessionClient(self.address, "monitor") as client:
            async def tone() -> None:
                import random

                rng = random.Random(11)
                n = 16000 * self.turn_ms // 1000
                while not self._stop.is_set():
                    pcm = array("h", (max(-32768, min(32767, round(rng.gauss(0.0, 65.5)))) for _ in range(n)))
                    await client.send(audio_chunk(pcm.tobytes(), 16000, 1))
                    await asyncio.sleep(self.turn_ms / 1000)
                await client.finish()

            sender = asyncio.get_running_loop().create_task(tone())
            try:
                async for chunk in client.chunks():
                    self.arrivals.append(time.monotonic())
                    self.chunks.append(chunk)
            finally:
                sender.cancel()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def max_gap_ms(self, t0: float, t1: float) -> float:
        """The monitor's longest wait for a chunk between t0 and t1 (monotonic seconds)."""
        inside = [t for t in self.arrivals if t0 <= t <= t1]
        before = [t for t in self.arrivals if t < t0][-1:]
        after = [t for t in self.arrivals if t > t1][:1]
        points = before + inside + after
        return round(max((1000 * (b - a) for a, b in zip(points, points[1:], strict=False)), default=0.0), 1)

    def figures(self) -> dict:
        gaps = [1000 * (b - a) for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]
        span_turns = (self.arrivals[-1] - self.arrivals[0]) * 1000 / self.turn_ms + 1 if self.arrivals else 1
        turns = [c.turn for c in self.chunks]
        return {"monitor_turns": len(self.chunks),
                "monitor_turn_fraction": round(min(len(self.chunks), span_turns) / span_turns, 4),
                "monitor_max_gap_ms": round(max(gaps, default=0.0), 1),
                "monitor_turn_gaps": sum(1 for a, b in zip(turns, turns[1:], strict=False) if b != a + 1),
                "monitor_missed": sum(int(c.timing.missed) for c in self.chunks)}


@dataclass
class Suite:
    """The running runtime and everything the faults saw (every session's chunks, for the final scans)."""

    address: str
    turn_ms: int
    interaction: object  # the interaction actor's handle
    backgrounds: list  # background actor handles
    bg_addresses: list[str]
    seen: dict[str, list[spb.OutputChunk]] = field(default_factory=dict)

    async def session(self, sid: str, sends: list[spb.InputChunk], *, then_turns: int = 5,
                      delegate: str | None = None, settle_s: float = 0.0) -> list[spb.OutputChunk]:
        """A victim session: send `sends`, optionally start a delegation with task `delegate`, then stay
        `then_turns` turns (or until its delegation settles, at most `settle_s`); returns its chunks."""
        import ray

        chunks: list[spb.OutputChunk] = self.seen.setdefault(sid, [])
        async with SessionClient(self.address, sid) as client:
            for item in sends:
                await client.send(item)
            task_id = ""
            deadline = time.monotonic() + max(settle_s, then_turns * self.turn_ms / 1000 + 5)
            async for chunk in client.chunks():
                chunks.append(chunk)
                if delegate is not None and not task_id and len(chunks) >= 2:
                    task_id = await asyncio.to_thread(
                        lambda: ray.get(self.interaction.start_delegation.remote(sid, delegate), timeout=10))
                settled = not delegate or (task_id and task_id in settled_tasks(chunks))
                if (len(chunks) >= then_turns + len(sends) and settled) or time.monotonic() > deadline:
                    break
            await client.finish()
        return chunks


def settled_tasks(chunks: list[spb.OutputChunk]) -> set[str]:
    out = set()
    for c in chunks:
        for e in c.events:
            if e.task_id and (e.update in TERMINAL_UPDATES or e.kind == spb.EVENT_KIND_ERROR):
                out.add(e.task_id)
    return out


def started_tasks(chunks: list[spb.OutputChunk]) -> set[str]:
    return {e.task_id for c in chunks for e in c.events if e.kind == spb.EVENT_KIND_DELEGATION_STARTED}


def _kept_turning(chunks: list[spb.OutputChunk], after: int = 3) -> bool:
    turns = [c.turn for c in chunks]
    return len(turns) > after and all(b == a + 1 for a, b in zip(turns, turns[1:], strict=False))


def _png(side: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


# ---- the faults: each returns (survived, detail) ------------------------------------------------

async def typed_16k_weather(s: Suite) -> tuple[bool, str]:
    text = ("weather " * 3000)[:16_380]
    chunks = await s.session("f-typed", [text_chunk(text)], then_turns=8)
    codes = [e.error.code for c in chunks for e in c.events if e.error.code]
    return _kept_turning(chunks), f"{len(chunks)} turns after a 16,380-byte request; errors {codes[:3]}"


async def audio_1mb_8khz(s: Suite) -> tuple[bool, str]:
    pcm = bytes(1_000_000)
    chunks = await s.session("f-audio", [audio_chunk(pcm, 8000, 1)], then_turns=5)
    worst = max((c.timing.compute_ms for c in chunks), default=0.0)
    return _kept_turning(chunks), f"1 MB at 8 kHz: {len(chunks)} turns, worst turn compute {worst:.0f} ms"


async def five_png_frames_4096(s: Suite) -> tuple[bool, str]:
    png = await asyncio.to_thread(_png, 4096)
    frames = [spb.InputChunk(video=spb.VideoFrame(data=png, encoding=spb.FRAME_ENCODING_PNG)) for _ in range(5)]
    chunks = await s.session("f-frames", frames, then_turns=5)
    worst = max((c.timing.compute_ms for c in chunks), default=0.0)
    codes = sorted({e.error.code for c in chunks for e in c.events if e.error.code})
    return _kept_turning(chunks), f"five 4096x4096 PNGs: worst turn compute {worst:.0f} ms; errors {codes}"


async def message_over_4mb(s: Suite) -> tuple[bool, str]:
    raw = spb.InputChunk(video=spb.VideoFrame(data=bytes(5 << 20), encoding=spb.FRAME_ENCODING_RAW_RGB,
                                              width=1024, height=1707))
    chunks = await s.session("f-5mb", [raw], then_turns=5)
    codes = sorted({e.error.code for c in chunks for e in c.events if e.error.code})
    return _kept_turning(chunks) and bool(codes), f"a 5 MB message: the project's own error {codes}, stream alive"


async def malformed_bytes(s: Suite) -> tuple[bool, str]:
    channel = grpc.aio.insecure_channel(s.address)
    call = channel.stream_stream("/interplay.v1.Session/Converse", request_serializer=lambda b: b,
                                 response_deserializer=spb.OutputChunk.FromString)

    async def requests():
        yield spb.InputChunk(session_id="f-bytes").SerializeToString()
        yield b"\xff\xfe not a protobuf \x00\x01"
        for _ in range(6):
            await asyncio.sleep(s.turn_ms / 1000)
            yield spb.InputChunk(session_id="f-bytes").SerializeToString()

    chunks = s.seen.setdefault("f-bytes", [])
    try:
        async for chunk in call(requests()):
            chunks.append(chunk)
    finally:
        await channel.close()
    codes = sorted({e.error.code for c in chunks for e in c.events if e.error.code})
    return _kept_turning(chunks) and bool(codes), f"unparsable bytes: errors {codes}, {len(chunks)} turns"


async def frozen_client(s: Suite) -> tuple[bool, str]:
    """A client that opens a session and then neither reads nor sends (what SIGSTOP does to it)."""
    import ray

    channel = grpc.aio.insecure_channel(s.address)
    call = channel.stream_stream("/interplay.v1.Session/Converse", request_serializer=lambda b: b,
                                 response_deserializer=lambda b: b)
    frozen = asyncio.Event()

    async def requests():
        yield spb.InputChunk(session_id="f-frozen").SerializeToString()
        await frozen.wait()  # never set: the client sends nothing more and reads nothing

    stream = call(requests())
    t0 = time.monotonic()
    reclaimed = None
    while time.monotonic() - t0 < 15:
        await asyncio.sleep(0.5)
        live = await asyncio.to_thread(lambda: ray.get(s.interaction.sessions.remote(), timeout=10))
        if "f-frozen" not in live and time.monotonic() - t0 > 1:
            reclaimed = time.monotonic() - t0
            break
    stream.cancel()
    await channel.close()
    ok = reclaimed is not None and reclaimed <= 10.0
    return ok, f"reclaimed after {reclaimed:.1f} s" if reclaimed is not None else "still held after 15 s"


async def churn(s: Suite, sessions: int = 40) -> tuple[bool, str]:
    import ray

    async def one(i: int) -> None:
        async with SessionClient(s.address, f"f-churn-{i}") as c:
            await c.send(text_chunk("hi"))
            async for _ in c.chunks():
                break  # vanish after the first chunk, without a STOP

    for start in range(0, sessions, 8):
        await asyncio.gather(*(one(i) for i in range(start, min(sessions, start + 8))), return_exceptions=True)
    await asyncio.sleep(2 * s.turn_ms / 1000)
    left = [x for x in await asyncio.to_thread(lambda: ray.get(s.interaction.sessions.remote(), timeout=10))
            if x.startswith("f-churn")]
    return not left, f"{sessions} connects and abrupt disconnects; {len(left)} sessions left behind"


async def _health_ms(address: str) -> float:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(address) as ch:
        t0 = time.monotonic()
        await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        return 1000 * (time.monotonic() - t0)


def _tool_outcomes(chunks: list[spb.OutputChunk]) -> list[str]:
    return [e.text for c in chunks for e in c.events if e.update == spb.EVENT_UPDATE_TOOL_RESULT or
            e.kind == spb.EVENT_KIND_TOOL_CALL]


async def tool_blocks_its_async_loop(s: Suite) -> tuple[bool, str]:
    run = asyncio.get_running_loop().create_task(s.session(
        "f-tool-block", [], delegate=script(("fault_block_async", '{"seconds": 5}')), settle_s=20))
    await asyncio.sleep(1.0)
    health = [await _health_ms(a) for a in s.bg_addresses]
    chunks = await run
    settled = started_tasks(chunks) <= settled_tasks(chunks) and bool(started_tasks(chunks))
    ok = settled and max(health) < 500
    return ok, f"health answered in {max(health):.0f} ms while the tool blocked; settled {settled}"


def _threads(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


async def tool_hangs_many_times(s: Suite, calls: int = 40) -> tuple[bool, str]:
    import ray

    pids = await asyncio.to_thread(lambda: [ray.get(h.pid.remote(), timeout=10) for h in s.backgrounds])
    before = {p: _threads(p) for p in pids}
    task = script(*[("fault_hang_sync", '{"seconds": 6}')] * (calls // 2))
    runs = [asyncio.get_running_loop().create_task(s.session(f"f-tool-hang-{i}", [], delegate=task, settle_s=30))
            for i in range(2)]
    await asyncio.sleep(2.0)
    during = {p: _threads(p) for p in pids}
    chunks = [c for r in runs for c in await r]
    grown = max(during[p] - before[p] for p in pids)
    settled = bool(started_tasks(chunks)) and started_tasks(chunks) <= settled_tasks(chunks)
    return settled and grown <= 34, f"{calls} hung calls: background threads grew by at most {grown}; settled {settled}"


async def tool_leaks_its_secret(s: Suite) -> tuple[bool, str]:
    chunks = await s.session("f-tool-secret", [], delegate=script(("fault_leaky_error", "{}"),
                                                                    ("fault_leaky_result", "{}")), settle_s=20)
    settled = bool(started_tasks(chunks)) and started_tasks(chunks) <= settled_tasks(chunks)
    return settled, "a tool error and a tool result that carry the planted key (scanned at the end)"


async def tool_gets_hostile_arguments(s: Suite) -> tuple[bool, str]:
    big = '{"values": [' + "9" * 5000 + "]}"
    deep = '{"values": ' + "[" * 20_000 + "]" * 20_000 + "}"
    chunks = await s.session("f-tool-args", [], delegate=script(("fault_numbers", big), ("fault_numbers", deep)),
                             settle_s=20)
    said = " ".join(_tool_outcomes(chunks)) + " ".join(c.text for c in chunks)
    internal = "internal_error" in said or any(e.error.code == "internal_error" for c in chunks for e in c.events)
    settled = bool(started_tasks(chunks)) and started_tasks(chunks) <= settled_tasks(chunks)
    return settled and not internal, f"5,000-digit integer and 20,000-deep JSON: settled {settled}, " \
                                     f"internal_error {internal}"


async def background_killed(s: Suite) -> tuple[bool, str]:
    """SIGKILL the background actor that holds a running delegation: the delegation settles (an error
    or a failover), and a new delegation after it is answered."""
    import ray

    pids = await asyncio.to_thread(lambda: [ray.get(h.pid.remote(), timeout=10) for h in s.backgrounds])
    run = asyncio.get_running_loop().create_task(s.session(
        "f-bg-kill", [], delegate=script(("fault_slow", '{"seconds": 4}')), settle_s=40))
    await asyncio.sleep(1.5)
    stats = await asyncio.to_thread(lambda: [ray.get(h.stats.remote(), timeout=10) for h in s.backgrounds])
    busy = next((i for i, st in enumerate(stats) if st.get("running", 0) or st.get("active", 0)), 0)
    os.kill(pids[busy], signal.SIGKILL)
    chunks = await run
    first = bool(started_tasks(chunks)) and started_tasks(chunks) <= settled_tasks(chunks)
    after = await s.session("f-bg-after", [], delegate=script(("fault_slow", '{"seconds": 0.2}')), settle_s=60)
    answered = any(e.update == spb.EVENT_UPDATE_FINAL for c in after for e in c.events)
    return first and answered, f"killed pid {pids[busy]} mid-task: it settled {first}; the next task answered " \
                               f"{answered}"


FAULTS: list[tuple[str, Callable[[Suite], Awaitable[tuple[bool, str]]]]] = [
    ("typed_16k_weather", typed_16k_weather), ("audio_1mb_8khz", audio_1mb_8khz),
    ("five_png_frames_4096", five_png_frames_4096), ("message_over_4mb", message_over_4mb),
    ("malformed_bytes", malformed_bytes), ("frozen_client", frozen_client), ("churn", churn),
    ("tool_blocks_its_async_loop", tool_blocks_its_async_loop), ("tool_leaks_its_secret", tool_leaks_its_secret),
    ("tool_gets_hostile_arguments", tool_gets_hostile_arguments), ("tool_hangs_many_times", tool_hangs_many_times),
    ("background_killed", background_killed),
]


def leaks(secret: str, log_dir: Path, seen: dict[str, list[spb.OutputChunk]], packages: list[bytes]) -> dict:
    """Where the planted secret shows up: log lines (every process's files in log_dir and Ray's worker
    logs), events and results (every chunk any session received), and context packages."""
    found = {"log_lines": 0, "events": 0, "packages": 0}
    files = list(log_dir.glob("*.jsonl"))
    try:
        import ray

        ray_logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # noqa: SLF001
        files += [p for p in ray_logs.glob("worker-*") if p.suffix in (".out", ".err")]
    except Exception:  # noqa: BLE001 - Ray's files are a bonus: ours are in log_dir
        pass
    for f in files:
        found["log_lines"] += sum(1 for line in f.read_text(errors="replace").splitlines() if secret in line)
    needle = secret.encode()
    found["events"] = sum(1 for chunks in seen.values() for c in chunks if needle in c.SerializeToString())
    found["packages"] = sum(1 for p in packages if needle in p)
    return found


def bench_faults(quick: bool = False, progress: Callable[[str], None] | None = None) -> dict:
    """Run the fault suite against a freshly started runtime; returns the figures."""
    import ray

    from interplay.runtime import BackgroundPlan, InteractionPlan, RuntimePlan, check_plan, drain, start

    secret = "sk-fault-" + secrets.token_hex(12)
    log_dir = Path(tempfile.mkdtemp(prefix="interplay-faults-"))
    plan = RuntimePlan(
        interaction=InteractionPlan(turn_ms=200, idle_timeout_s=8.0, policy="first_of",
                                    policy_options={"policies": ["model_token", "rule"]}),
        background=BackgroundPlan(engine="interplay.fault_kit:FaultEngine", registry="interplay.fault_kit:fault_registry",
                                  secrets={SECRET_NAME: secret}, actors=2, max_concurrent=4),
        log_level="info", log_dir=str(log_dir))
    check_plan(plan)
    faults = FAULTS if not quick else [f for f in FAULTS if f[0] not in ("churn", "tool_hangs_many_times")]
    handles, address, bg = start(plan)
    results: dict[str, dict] = {}
    suite = Suite(address, plan.interaction.turn_ms, handles[-1], handles[:-1], bg)
    monitor = Monitor(address, plan.interaction.turn_ms)

    async def run_all() -> None:
        monitor.start()
        await asyncio.sleep(1.0)
        for name, fault in faults:
            if progress:
                progress(name)
            t0 = time.monotonic()
            try:
                ok, detail = await asyncio.wait_for(fault(suite), 90)
            except Exception as exc:  # noqa: BLE001 - a fault that breaks the suite did not survive
                ok, detail = False, f"{type(exc).__name__}: {exc}"[:300]
            gap = monitor.max_gap_ms(t0, time.monotonic())
            results[name] = {"survived": bool(ok) and gap <= GAP_BOUND_MS, "detail": detail,
                             "monitor_max_gap_ms": gap, "seconds": round(time.monotonic() - t0, 1)}
            log.info("fault_done", fault=name, **results[name])
        await asyncio.sleep(1.0)
        await asyncio.to_thread(monitor.stop)

    try:
        asyncio.run(run_all())
        packages = ray.get(handles[-1].recent_packages.remote(), timeout=10)
        seen = {**suite.seen, "monitor": monitor.chunks}
        leaked = leaks(secret, log_dir, seen, packages)
    finally:
        drain(handles, 2.0)
    all_chunks = [c for chunks in seen.values() for c in chunks]
    unsettled = started_tasks(all_chunks) - settled_tasks(all_chunks)
    mon = monitor.figures()
    monitor_ok = mon["monitor_max_gap_ms"] <= GAP_BOUND_MS and mon["monitor_turn_gaps"] == 0
    return {
        "faults_tried": len(results),
        "faults_survived": sum(1 for r in results.values() if r["survived"]),
        **mon,
        "monitor_lost_no_turn": monitor_ok,
        "delegations_started": len(started_tasks(all_chunks)),
        "delegations_unsettled": len(unsettled),
        "secrets_leaked": sum(leaked.values()),
        "secrets_leaked_where": leaked,
        "log_dir": str(log_dir),
        "faults": results,
    }
