"""A small client of the Background service in which every RPC carries a deadline.

    async with BackgroundClient("127.0.0.1:50051") as bg:
        async for upd in bg.delegate(pkg, timeout_s=30): ...
        await bg.steer(task_id, "make it shorter");  await bg.cancel(task_id)

(The interaction side uses interaction_actor/runtime/delegator.py; this one serves tests, benches and tools.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from interplay.v1 import background_pb2 as bpb
from interplay.v1 import background_pb2_grpc as bgrpc
from interplay.v1 import context_pb2 as xpb


class BackgroundClient:
    def __init__(self, address: str, default_timeout_s: float = 5.0) -> None:
        self.address = address
        self.default_timeout_s = default_timeout_s
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = bgrpc.BackgroundStub(self.channel)

    async def delegate(self, pkg: xpb.ContextPackage, timeout_s: float = 60.0) -> AsyncIterator[bpb.Update]:
        """Every update of the task, in order; the last one is terminal (or an AioRpcError is raised)."""
        async for upd in self.stub.Delegate(pkg, timeout=timeout_s):
            yield upd

    async def run(self, pkg: xpb.ContextPackage, timeout_s: float = 60.0) -> list[bpb.Update]:
        return [u async for u in self.delegate(pkg, timeout_s)]

    async def steer(self, task_id: str, text: str, timeout_s: float | None = None) -> bpb.SteerResponse:
        return await self.stub.Steer(bpb.SteerRequest(task_id=task_id, text=text),
                                     timeout=timeout_s or self.default_timeout_s)

    async def cancel(self, task_id: str, reason: str = "", timeout_s: float | None = None) -> bpb.CancelResponse:
        return await self.stub.Cancel(bpb.CancelRequest(task_id=task_id, reason=reason),
                                      timeout=timeout_s or self.default_timeout_s)

    async def close(self) -> None:
        await self.channel.close(grace=None)

    async def __aenter__(self) -> BackgroundClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
