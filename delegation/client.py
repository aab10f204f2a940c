"""The one client of the Background service: several servers, least loaded first, with failover.

`BackgroundPool(addresses).delegate(pkg, timeout_s)` yields the task's updates from one server and
always ends with exactly one terminal update (never an exception). Servers are tried least loaded
first (tasks in flight from this pool; round robin among equals). A server that refuses the task as
`overloaded`, cannot be reached, or fails before it has sent anything is skipped for the next one
(`failovers` counts these). Once a server has sent an update, losing it ends the task with one
terminal ERROR `background_died` (work is never run twice) — unless the package is marked
`idempotent`, in which case the task is run again on the next server (its updates then restart at
seq 0 under the same task id, after a PROGRESS update that says so). A task past its deadline ends
with `deadline_exceeded`. Every RPC carries a deadline; a Delegate call also carries the current
trace context as W3C `traceparent` metadata (interplay.tracing; nothing when tracing is off).
The live path (interaction_actor.runtime.delegator)
delegates through this; background_actor.pool.start_pool starts servers to point it at.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator

import grpc

from delegation.scheduler import TERMINAL
from interplay import tracing
from interplay.log import get_logger
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import background_pb2_grpc as bgrpc
from interplay.v1 import common_pb2 as cpb
from interplay.v1 import context_pb2 as xpb

log = get_logger("delegation.client")


def error_update(task_id: str, code: str, message: str, retryable: bool = False) -> bpb.Update:
    """A terminal ERROR update for `task_id`."""
    return bpb.Update(task_id=task_id, kind=bpb.UPDATE_KIND_ERROR, created_unix_ms=int(time.time() * 1000),
                      error=cpb.ErrorInfo(code=code, message=message, retryable=retryable))


class BackgroundPool:
    def __init__(self, addresses: list[str] | str, rpc_timeout_s: float = 5.0) -> None:
        if isinstance(addresses, str):
            addresses = [a.strip() for a in addresses.split(",") if a.strip()]
        if not addresses:
            raise ValueError("a pool needs at least one address")
        self.addresses = list(addresses)
        self.rpc_timeout_s = rpc_timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._rr = itertools.count()
        self.inflight: dict[str, int] = dict.fromkeys(self.addresses, 0)  # tasks running per server
        self.failovers = 0  # tasks handed to the next server before they started
        self.owner: dict[str, str] = {}  # task id → address of the server running it

    def _stub(self, address: str) -> bgrpc.BackgroundStub:
        if address not in self._channels:
            self._channels[address] = grpc.aio.insecure_channel(address)
        return bgrpc.BackgroundStub(self._channels[address])

    def _order(self) -> list[str]:
        """Servers to try, least loaded first (round robin among equals)."""
        k, n = next(self._rr), len(self.addresses)
        rotated = [self.addresses[(k + i) % n] for i in range(n)]
        return sorted(rotated, key=lambda a: self.inflight.get(a, 0))

    async def delegate(self, pkg: xpb.ContextPackage, timeout_s: float = 60.0) -> AsyncIterator[bpb.Update]:
        """The task's updates, ending with exactly one terminal update (never an exception)."""
        deadline = time.monotonic() + timeout_s
        last_error = error_update(pkg.task_id, "background_unavailable", "no background server could be reached",
                                  True)
        for attempt, address in enumerate(self._order()):
            left = deadline - time.monotonic()
            if left <= 0:
                last_error = error_update(pkg.task_id, "deadline_exceeded", "the task ran past its deadline")
                break
            started = False
            failure = ""
            self.owner[pkg.task_id] = address
            self.inflight[address] = self.inflight.get(address, 0) + 1
            call = self._stub(address).Delegate(pkg, timeout=left, metadata=tracing.outgoing_metadata())
            try:
                async for upd in call:
                    if not started and upd.kind == bpb.UPDATE_KIND_ERROR and upd.error.code == "overloaded":
                        last_error = upd
                        failure = "overloaded"
                        break  # refused at the door: try the next server
                    started = True
                    yield upd
                    if upd.kind in TERMINAL:
                        self.owner.pop(pkg.task_id, None)
                        return
                else:
                    failure = "the stream ended without a terminal update"
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    last_error = error_update(pkg.task_id, "deadline_exceeded", "the task ran past its deadline")
                    break
                failure = exc.code().name
            finally:
                call.cancel()
                self.inflight[address] -= 1
            if started and not pkg.idempotent:
                self.owner.pop(pkg.task_id, None)
                yield error_update(pkg.task_id, "background_died",
                                   f"the background server at {address} failed mid-task ({failure})", True)
                return
            self.failovers += 1
            log.warning("pool_failover", task_id=pkg.task_id, address=address, failure=failure,
                        started=started, attempt=attempt)
            if started:
                yield bpb.Update(task_id=pkg.task_id, kind=bpb.UPDATE_KIND_PROGRESS,
                                 text="the background server failed; retrying the task on another one",
                                 created_unix_ms=int(time.time() * 1000))
            if failure != "overloaded":
                last_error = error_update(pkg.task_id, "background_unavailable", f"{address}: {failure}", True)
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
        self._channels = {}
