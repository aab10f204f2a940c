"""`interplay serve --actors 2` as a user runs it (the installed CLI in a subprocess, a local Ray, the
shipped model in two interaction actors, one background actor): one session endpoint (the router)
in front of two actors; sessions through it get their turns; SIGTERM drains both actors through the
router and serve exits cleanly. Slow: two model processes start (~40 s on 2 cores).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import stop_serve

from interplay.client import SessionClient, text_chunk

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "interplay.cli", "--log-level", "warning"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    err = tmp_path_factory.mktemp("router_serve") / "stderr.txt"  # a file: a full pipe would block serve
    env = {**os.environ, "RAY_worker_niceness": "0", "PYTHONUNBUFFERED": "1", "INTERPLAY_EARS__ENABLED": "false",
           "INTERPLAY_WEB_PORT": "-1"}
    proc = subprocess.Popen([*CLI, "serve", "--actors", "2", "--backgrounds", "1", "--seconds", "240", "--drain-s",
                             "2"], env=env, stdout=subprocess.PIPE, stderr=err.open("w"), text=True)
    lines: dict[str, str] = {}
    deadline = time.monotonic() + 180
    while "background pool" not in lines and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        key, _, value = line.partition(": ")
        lines[key] = value.strip()
    try:
        yield proc, lines, err
    finally:
        stop_serve(proc)


def test_serve_with_two_actors_puts_one_session_endpoint_in_front_of_two_interaction_actors(served):
    _, lines, _ = served
    actors = lines["interaction actors"].split(" (")[0].split(", ")
    assert len(set(actors)) == 2 and lines["session endpoint"] not in actors


def test_a_session_through_serves_router_gets_its_turns_in_order(served):
    _, lines, _ = served

    async def turns() -> list:
        got = []
        async with SessionClient(lines["session endpoint"], connect_timeout_s=5) as c:
            await c.send(text_chunk("hello"))
            async for chunk in c.chunks():
                got.append(chunk)
                if len(got) == 6:
                    break
        return got

    chunks = asyncio.run(asyncio.wait_for(turns(), 60))
    assert [c.turn for c in chunks] == list(range(6))


def test_sigterm_drains_both_actors_through_the_router_and_serve_exits_cleanly(served):
    proc, _, err = served
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 0
    stopped = [ln for ln in err.read_text().splitlines() if ln.startswith("stopped: ")]
    assert stopped and '"actors": 2' in stopped[0] and '"actors_failed": 0' in stopped[0]
