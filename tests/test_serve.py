"""`interplay serve` runs the actors as services, as its settings say; `interplay talk` streams to it;
SIGTERM drains it: every live session is told, and the process exits cleanly.

Run as the user runs them: subprocesses of the installed CLI, talking over 127.0.0.1. One `serve`
is shared by the module (starting Ray and the models costs ~20 s); it reads a config file (its
Session port) and the environment (its turn length). The SIGTERM test ends it, so it runs last.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import stop_serve

from interplay.client import SessionClient, text_chunk
from interplay.v1 import session_pb2 as spb

CLI = [sys.executable, "-m", "interplay.cli", "--log-level", "warning"]
TURN_MS = 160  # from the environment: not the default 200 (at 100 the admission check refused the first session)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    port = free_port()
    (folder / "interplay.toml").write_text(f"session_port = {port}\n[background]\nactors = 1\n")
    env = {**os.environ, "RAY_worker_niceness": "0", "PYTHONUNBUFFERED": "1", "INTERPLAY_LOOP__TURN_MS": str(TURN_MS)}
    proc = subprocess.Popen([*CLI, "--config", str(folder / "interplay.toml"), "serve", "--seconds", "240",
                             "--drain-s", "3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    address = metrics = None
    deadline = time.monotonic() + 120
    while metrics is None and time.monotonic() < deadline:  # "metrics:" follows "session endpoint:"
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("session endpoint:"):
            address = line.split(":", 1)[1].strip()
        elif line.startswith("metrics: http://"):
            metrics = line.split(" ", 1)[1].strip()
    try:
        yield proc, address, port, env, metrics
    finally:
        stop_serve(proc)


def test_serve_listens_on_the_session_port_its_config_file_names(served):
    _, address, port, _, _ = served
    assert address == f"127.0.0.1:{port}"


def test_serve_runs_the_turn_length_the_environment_sets(served):
    _, address, _, _, _ = served

    async def turns() -> list[spb.OutputChunk]:
        got: list[spb.OutputChunk] = []
        async with SessionClient(address, connect_timeout_s=5) as c:
            await c.send(text_chunk("hello"))
            async for chunk in c.chunks():
                got.append(chunk)
                if len(got) == 6:
                    break
        return got

    chunks = asyncio.run(asyncio.wait_for(turns(), 30))
    gaps = [b.time_ms - a.time_ms for a, b in zip(chunks, chunks[1:], strict=False)]
    # the grid is TURN_MS; a turn the loaded CI host misses shows as one gap of 2 * TURN_MS (it flaked
    # once so: [320, 160, 160, 160, 160]). Missed turns are other tests' business (bench, the demo).
    assert all(g % TURN_MS == 0 for g in gaps) and gaps.count(TURN_MS) >= 4, gaps


def test_talk_streams_a_script_to_serve_and_prints_every_turn(served, tmp_path: Path):
    _, address, _, env, _ = served
    script = tmp_path / "script.txt"
    script.write_text("0.2: hello there\n1.0: tell me when red\n")
    talk = subprocess.run([*CLI, "talk", address, "--script", str(script), "--tail", "0.6"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert talk.returncode == 0, talk.stderr[-2000:]
    turns = [ln for ln in talk.stdout.splitlines() if ln.startswith("turn ")]
    assert len(turns) >= 8
    assert any("text 'hello there'" in ln for ln in turns)
    # the closing summary: "session ID: N turns, M missed, ..." ("10 missed" must not pass as "0 missed")
    summary = re.search(r"\b(\d+) turns, (\d+) missed\b", talk.stdout)
    assert summary, talk.stdout[-2000:]
    # missed turns are the host's (a loaded CI host overran some); the property is the summary's count
    assert int(summary.group(1)) == len(turns) and int(summary.group(2)) <= max(1, len(turns) // 10)


def test_serve_prints_where_its_prometheus_metrics_are_and_they_count_its_turns(served):
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    _, _, _, _, metrics = served
    assert metrics and metrics.startswith("http://127.0.0.1:") and metrics.endswith("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(metrics, timeout=10).text)}
    (turns,) = families["interplay_loop_turns"].samples
    assert turns.value > 0 and "interplay_loop_lateness_ms" in families


def test_a_session_moves_the_named_metrics_serve_exposes_and_leaves_no_live_session(served):
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    _, address, _, _, metrics = served

    def scrape() -> dict[str, float]:
        text = httpx.get(metrics, timeout=10).text
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}

    async def session() -> int:
        got = 0
        async with SessionClient(address, connect_timeout_s=5) as c:
            await c.send(text_chunk("hello"))
            async for _chunk in c.chunks():
                got += 1
                if got == 5:
                    break
        return got

    before = scrape()
    assert asyncio.run(asyncio.wait_for(session(), 30)) == 5
    time.sleep(3 * TURN_MS / 1000)  # the session closes at the loop's next turn
    after = scrape()
    assert after["interplay_loop_session_turns_total"] >= before["interplay_loop_session_turns_total"] + 5
    for name in ("interplay_loop_turns_total", "interplay_loop_lateness_ms_count", "interplay_loop_compute_ms_count"):
        assert after[name] > before[name], name
    assert after["interplay_loop_live_sessions"] == 0


def test_sigterm_ends_each_live_session_with_session_ended_and_serve_exits_cleanly(served):
    proc, address, _, _, _ = served

    async def live_until_the_end() -> list[spb.OutputChunk]:
        got: list[spb.OutputChunk] = []
        async with SessionClient(address, connect_timeout_s=5) as c:
            async for chunk in c.chunks():
                got.append(chunk)
                if len(got) == 3:
                    proc.send_signal(signal.SIGTERM)
        return got

    chunks = asyncio.run(asyncio.wait_for(live_until_the_end(), 60))
    ended = [e for e in chunks[-1].events if e.kind == spb.EVENT_KIND_SESSION_ENDED]
    assert ended and "shutting down" in ended[0].text
    assert proc.wait(timeout=60) == 0
