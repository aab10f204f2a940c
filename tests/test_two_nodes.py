"""The session router on a two-node Ray cluster started as a user starts one: `ray start --head` and
`ray start --address` (two raylets on this machine, each its own node with a custom resource), so the
two interaction actors land on different nodes. Sessions through the router are placed on both; one
actor is killed (ray.kill: its process dies) and its session goes on on the other node's actor.

Every server binds 127.0.0.1 (both nodes publish 127.0.0.1 as their address here); the nodes are the
test's own processes (`ray start --block` in sessions of their own), ended by their ids at teardown
and never with `ray stop`, which would end every Ray on the machine. Slow: starting the cluster and
two model processes takes ~30 s on 2 cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray

from interplay.client import SessionClient, audio_chunk
from interplay.v1 import session_pb2 as spb

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
QUIET_100MS = bytes(3200)
TURN_MS = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Token authentication off for this cluster: its token would be written to ~/.ray/auth_token, which
# every Ray on this machine shares; the nodes and the driver listen on 127.0.0.1 only.
AUTH = {"RAY_AUTH_MODE": "disabled"}


def ray_node(*args: str, temp_dir: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_worker_niceness": "0", **AUTH}
    return subprocess.Popen([RAY, "start", "--block", "--num-cpus=2", "--node-ip-address=127.0.0.1",
                             "--object-store-memory=80000000", f"--temp-dir={temp_dir}", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def end(proc: subprocess.Popen) -> None:
    """End a node we started: SIGTERM to its `ray start` (it stops its own processes), then its group."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # its raylet and workers share the session it started


@pytest.fixture(scope="module")
def two_nodes():
    if ray.is_initialized():
        ray.shutdown()
    saved = {k: os.environ.get(k) for k in AUTH}
    os.environ.update(AUTH)
    temp = tempfile.mkdtemp(prefix="ray2n", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    head = ray_node("--head", f"--port={port}", "--include-dashboard=false", '--resources={"node_a": 1}',
                    temp_dir=temp)
    nodes = [head]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ray.init(address=f"127.0.0.1:{port}", log_to_driver=False, namespace="two-nodes")
                break
            except Exception:  # noqa: BLE001 - the head is still starting
                if time.monotonic() > deadline or head.poll() is not None:
                    raise
                time.sleep(1)
        nodes.append(ray_node(f"--address=127.0.0.1:{port}", '--resources={"node_b": 1}', temp_dir=temp))
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            assert time.monotonic() < deadline + 30, "the second node did not join"
            time.sleep(0.5)
        yield
    finally:
        ray.shutdown()
        for proc in reversed(nodes):
            end(proc)
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def routed(two_nodes):
    from interaction_actor.router import spawn_router
    from interaction_actor.runtime.actor import spawn

    actors = [spawn(resources={node: 0.1}, preset="tiny", checkpoint="none", seed=0, turn_ms=TURN_MS, policy="never",
                    log_level="warning") for node in ("node_a", "node_b")]
    router, address = spawn_router(actors, resources={"node_a": 0.1}, turn_ms=TURN_MS, log_level="warning")
    yield router, address, actors
    for h in [router, *(h for h, _ in actors)]:
        with contextlib.suppress(Exception):
            ray.kill(h, no_restart=True)


def node_of(handle) -> str:
    return ray.get(handle.__ray_call__.remote(lambda _self: ray.get_runtime_context().get_node_id()), timeout=30)


async def two_sessions(address: str, router, actors, kill: bool) -> dict:
    """Two sessions through the router, streaming silence; with `kill`, the actor holding the second one
    is killed after a few turns. Returns where each ran, the chunks of the second, kill -> moved time."""
    out: dict = {"chunks": []}
    async with SessionClient(address, "first") as a, SessionClient(address, "second") as b:
        await anext(a.chunks())
        await anext(b.chunks())
        out["placed"] = await router.stats.remote()
        victim = next(h for h, addr in actors if addr == out["placed"]["sessions"]["second"])
        async with asyncio.timeout(30):
            async for chunk in b.chunks():
                out["chunks"].append(chunk)
                if kill and len(out["chunks"]) == 5:
                    ray.kill(victim, no_restart=True)
                    out["killed_at"] = time.monotonic()
                if any(e.kind == spb.EVENT_KIND_SESSION_MOVED for e in chunk.events):
                    out["moved_after_s"] = time.monotonic() - out["killed_at"]
                    out["now"] = await router.where.remote("second")
                if not kill and len(out["chunks"]) == 5 or "now" in out and len(out["chunks"]) >= 12:
                    break
                await b.send(audio_chunk(QUIET_100MS))
    return out


def test_sessions_through_the_router_are_placed_on_actors_on_both_nodes(routed):
    router, address, actors = routed
    out = asyncio.run(two_sessions(address, router, actors, kill=False))
    hosts = {addr: node_of(h) for h, addr in actors}
    assert len(set(hosts.values())) == 2  # the two actors are on two different nodes
    assert {hosts[a] for a in out["placed"]["sessions"].values()} == set(hosts.values())


def test_killing_one_nodes_actor_moves_its_session_to_the_other_node_within_2_s(routed):
    router, address, actors = routed
    out = asyncio.run(two_sessions(address, router, actors, kill=True))
    chunks = out["chunks"]
    assert out["moved_after_s"] < 2.0
    assert out["now"] and out["now"] != out["placed"]["sessions"]["second"]
    assert [c.turn for c in chunks] == list(range(chunks[0].turn, chunks[0].turn + len(chunks)))
    assert not [e for c in chunks for e in c.events if e.kind == spb.EVENT_KIND_ERROR]
