"""Several background actors behind one client: spread delegations, fail over, retry idempotent tasks.

`BackgroundPool(addresses).delegate(pkg)` yields the task's updates from one actor (round robin,
skipping ones that refuse with "overloaded" or cannot be reached before the task starts). When an
actor dies mid-task the caller gets one terminal ERROR ("background_died") — unless the package is
marked `idempotent`, in which case the task is run again on the next actor (its updates then restart
at seq 0 under the same task id, after a PROGRESS update that says so). `start_pool(n, ...)` starts n
BackgroundActors and returns (handles, addresses).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from background_actor.actor import start_background
from background_actor.tasks import TERMINAL
from interplay.log import get_logger
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import background_pb2_grpc as bgrpc
from interplay.v1 import common_pb2 as cpb
from interplay.v1 import context_pb2 as xpb

log = get_logger("background_actor.pool")


def _error(task_id: str, code: str, message: str, retryable: bool) -> bpb.Update:
    return bpb.Update(task_id=task_id, kind=bpb.UPDATE_KIND_ERROR, created_unix_ms=int(time.time() * 1000),
                      error=cpb.ErrorInfo(code=code, message=message, retryable=retryable))


class BackgroundPool:
    def __init__(self, addresses: list[str], rpc_timeout_s: float = 5.0) -> None:
        if not addresses:
            raise ValueError("a pool needs at least one address")
        self.addresses = list(addresses)
        self.rpc_timeout_s = rpc_timeout_s
        self._channels = {a: grpc.aio.insecure_channel(a) for a in self.addresses}
        self._next = itertools.cycle(range(len(self.addresses)))
        self.owner: dict[str, str] = {}  # task id → address of the actor running it

    def _stub(self, address: str) -> bgrpc.BackgroundStub:
        return bgrpc.BackgroundStub(self._channels[address])

    async def delegate(self, pkg: xpb.ContextPackage, timeout_s: float = 60.0) -> AsyncIterator[bpb.Update]:
        """The task's updates, ending with exactly one terminal update (never an exception)."""
        deadline = time.monotonic() + timeout_s
        start = next(self._next)
        order = [self.addresses[(start + i) % len(self.addresses)] for i in range(len(self.addresses))]
        last_error = _error(pkg.task_id, "background_unavailable", "no background actor could be reached", True)
        for attempt, address in enumerate(order):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            started = False
            failure = ""
            self.owner[pkg.task_id] = address
            call = self._stub(address).Delegate(pkg, timeout=left)
            try:
                async for upd in call:
                    if not started and upd.kind == bpb.UPDATE_KIND_ERROR and upd.error.code == "overloaded":
                        last_error = upd
                        break  # refused at the door: try the next actor
                    started = True
                    yield upd
                    if upd.kind in TERMINAL:
                        self.owner.pop(pkg.task_id, None)
                        return
                else:
                    failure = "the stream ended without a terminal update"
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    last_error = _error(pkg.task_id, "deadline_exceeded", "the task ran past its deadline", False)
                    break
                failure = exc.code().name
            finally:
                call.cancel()
            if not failure:
                continue
            if started and not pkg.idempotent:
                self.owner.pop(pkg.task_id, None)
                yield _error(pkg.task_id, "background_died",
                             f"the background actor at {address} failed mid-task ({failure})", True)
                return
            log.warning("pool_failover", task_id=pkg.task_id, address=address, failure=failure,
                        started=started, attempt=attempt)
            if started:
                yield bpb.Update(task_id=pkg.task_id, kind=bpb.UPDATE_KIND_PROGRESS,
                                 text="the background actor failed; retrying the task on another one",
                                 created_unix_ms=int(time.time() * 1000))
            last_error = _error(pkg.task_id, "background_unavailable", f"{address}: {failure}", True)
        self.owner.pop(pkg.task_id, None)
        yield last_error

    async def steer(self, task_id: str, text: str) -> bpb.SteerResponse:
        address = self.owner.get(task_id)
        if address is None:
            return bpb.SteerResponse(accepted=False, reason="unknown_task")
        return await self._stub(address).Steer(bpb.SteerRequest(task_id=task_id, text=text),
                                               timeout=self.rpc_timeout_s)

    async def cancel(self, task_id: str, reason: str = "") -> bpb.CancelResponse:
        address = self.owner.get(task_id)
        if address is None:
            return bpb.CancelResponse(cancelled=False, reason="unknown_task")
        return await self._stub(address).Cancel(bpb.CancelRequest(task_id=task_id, reason=reason),
                                                timeout=self.rpc_timeout_s)

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close(grace=None)


def start_pool(n: int, engine: str = "local", **options: Any) -> tuple[list[Any], list[str]]:
    """Start `n` BackgroundActors (Ray must be initialised); returns (handles, addresses)."""
    started = [start_background(engine, **options) for _ in range(n)]
    return [h for h, _ in started], [a for _, a in started]
