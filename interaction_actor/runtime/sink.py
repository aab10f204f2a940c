"""OutputSink: one client's bounded output queue, between the turn loop and the gRPC writer.

Back-pressure (OutputSink): each client has a bounded queue of `output_queue` chunks; when it is
full the OLDEST chunk is dropped and counted; the next chunk the client receives carries the
running total in `dropped_chunks` and an OUTPUT_DROPPED event with the count since the last one.
`put` never blocks (the loop calls it); `get` waits for the next chunk (the writer calls it).
"""

from __future__ import annotations

import asyncio
from collections import deque

from interaction_actor.runtime.metrics import LoopMetrics
from interaction_actor.runtime.weave import event
from interplay.v1 import session_pb2 as spb


class OutputSink:
    """Bounded per-client output queue: put() never blocks; the oldest chunk is dropped when full."""

    def __init__(self, maxlen: int, metrics: LoopMetrics | None = None) -> None:
        self.maxlen = max(1, maxlen)
        self.q: deque[spb.OutputChunk] = deque()
        self.dropped = 0
        self._reported = 0
        self._wake = asyncio.Event()
        self.closed = False
        self.metrics = metrics

    def put(self, chunk: spb.OutputChunk) -> None:
        if self.closed:
            return
        if len(self.q) >= self.maxlen:
            self.q.popleft()
            self.dropped += 1
            if self.metrics is not None:
                self.metrics.dropped_outputs += 1
        self.q.append(chunk)
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def get(self) -> spb.OutputChunk | None:
        """The next chunk (stamped with the drop count), or None once closed and empty."""
        while not self.q:
            if self.closed:
                return None
            self._wake.clear()
            await self._wake.wait()
        chunk = self.q.popleft()
        chunk.dropped_chunks = self.dropped
        if self.dropped > self._reported:
            chunk.events.append(event(spb.EVENT_KIND_OUTPUT_DROPPED, "client read too slowly; oldest chunks dropped",
                                      dropped=self.dropped - self._reported))  # the total: chunk.dropped_chunks
            self._reported = self.dropped
        return chunk
