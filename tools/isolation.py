"""Tool calls off the caller's event loop: a bounded pool of worker threads, each with its own loop.

Contract:
- `await pool.run(tool, args, context, call_id, timeout_s)` runs one call on a worker thread — a
  sync function directly, a coroutine function on that thread's own event loop — and returns its
  value or raises its exception. The caller's loop stays free the whole time: a tool that blocks
  (`time.sleep` inside `async def`, a hung socket read) blocks only its worker.
- At `timeout_s` (counted from the call, waiting for a worker included) it raises `CallTimedOut`;
  when the caller is cancelled, CancelledError propagates. Either way the call is *abandoned*: a
  coroutine is cancelled on its own loop; code that cannot be stopped keeps its worker until it
  returns. Its late result is dropped (logged `tool_late_result_dropped`).
- At most `max_workers` threads exist. A call that finds none free waits (within its timeout) for
  one; when every worker is held by an abandoned call that has not returned ("hung"), new calls
  raise `PoolExhausted` at once instead of waiting. `stats()` counts workers, busy, hung, and the
  totals of abandoned and refused calls; every change of the hung count is logged.
- Threads start on demand and exit after `idle_s` without work, or at once after `shutdown()`. A worker's loop is reused from
  call to call; tasks a coroutine tool leaves behind are cancelled when its call ends.
- The tool's ToolContext is passed through; its `emit` is marshalled back to the caller's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import inspect
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tools.logs import tools_logger
from tools.outcome import ToolContext

if TYPE_CHECKING:
    from tools.spec import Tool

log = tools_logger("tools.isolation")

_LEFTOVER_WAIT_S = 1.0


class PoolExhausted(RuntimeError):
    """Every worker of the pool is held by a hung call: the call was not started."""


class CallTimedOut(Exception):
    """The call ran past its limit (distinct from a TimeoutError the tool itself raises)."""


class CallCancelledItself(Exception):
    """A coroutine tool ended cancelled although nobody cancelled it."""


@dataclass(frozen=True)
class PoolConfig:
    max_workers: int = 32  # threads at most; also the most hung calls the process tolerates
    idle_s: float = 30.0   # a worker thread without work for this long exits

    def __post_init__(self) -> None:
        if self.max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {self.max_workers!r}")


class _Job:
    """One call handed to a worker; settled once through `fut` on the caller's loop."""

    def __init__(self, tool: Tool, args: dict[str, Any], context: ToolContext, call_id: str,
                 caller: asyncio.AbstractEventLoop) -> None:
        self.tool, self.args, self.context, self.call_id, self.caller = tool, args, context, call_id, caller
        self.fut: asyncio.Future[Any] = caller.create_future()
        self.ctx = contextvars.copy_context()
        self.lock = threading.Lock()
        self.stopped = False
        self.finished = False
        self.task: asyncio.Task[Any] | None = None
        self.wloop: asyncio.AbstractEventLoop | None = None

    def execute(self, wloop: asyncio.AbstractEventLoop) -> None:
        """On the worker thread: run the tool and hand the outcome to the caller's loop."""
        ok, value = False, None
        try:
            if self.tool.is_async:
                with self.lock:
                    if self.stopped:
                        raise asyncio.CancelledError()
                    coro = self.ctx.run(self.tool.run, self.args, self.context)
                    if not inspect.isawaitable(coro):
                        raise TypeError(f"tool {self.tool.name!r} is async but returned {type(coro).__name__}")
                    self.task = wloop.create_task(_await(coro), context=self.ctx)
                    self.wloop = wloop
                try:
                    value, ok = wloop.run_until_complete(self.task), True
                finally:
                    _cancel_leftovers(wloop)
            else:
                if self.stopped:
                    raise asyncio.CancelledError()
                value, ok = self.ctx.run(self.tool.run, self.args, self.context), True
        except BaseException as exc:  # noqa: BLE001 - delivered to the caller, classified there
            value = exc
        with contextlib.suppress(RuntimeError):  # the caller's loop is gone: the call settled long ago
            self.caller.call_soon_threadsafe(self._deliver, ok, value)

    def _deliver(self, ok: bool, value: Any) -> None:
        if self.fut.done():
            if isinstance(value, asyncio.CancelledError):
                log.debug("tool_call_stopped", tool=self.tool.name, call_id=self.call_id)
            else:
                log.info("tool_late_result_dropped", tool=self.tool.name, call_id=self.call_id, ok=ok,
                         exc_type="" if ok else type(value).__name__, kind="worker")
            return
        if ok:
            self.fut.set_result(value)
        elif isinstance(value, asyncio.CancelledError):
            self.fut.cancel()
        else:
            self.fut.set_exception(value)

    def stop(self) -> None:
        """From the caller's loop: give up on the call (cancel a coroutine; a thread cannot be stopped)."""
        with self.lock:
            self.stopped = True
            task, wloop = self.task, self.wloop
        if not self.fut.done():
            self.fut.cancel()
        if task is not None and wloop is not None:
            with contextlib.suppress(RuntimeError):
                wloop.call_soon_threadsafe(task.cancel)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _cancel_leftovers(wloop: asyncio.AbstractEventLoop) -> None:
    pending = asyncio.all_tasks(wloop)
    if not pending:
        return
    for t in pending:
        t.cancel()
    wloop.run_until_complete(asyncio.wait(pending, timeout=_LEFTOVER_WAIT_S))


class _Worker(threading.Thread):
    def __init__(self, pool: WorkerPool, index: int) -> None:
        super().__init__(name=f"tool-worker-{index}", daemon=True)
        self.pool = pool
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()

    def run(self) -> None:
        wloop = asyncio.new_event_loop()
        asyncio.set_event_loop(wloop)
        try:
            while True:
                try:
                    job = self.jobs.get(timeout=self.pool.config.idle_s)
                except queue.Empty:
                    if self.pool._retire(self):
                        return
                    continue
                if job is None:  # the pool was shut down
                    return
                try:
                    job.execute(wloop)
                finally:
                    keep = self.pool._finished(self, job)
                if not keep:
                    return
        finally:
            with contextlib.suppress(Exception):
                wloop.close()


class WorkerPool:
    """A bounded set of worker threads shared by every caller loop of the process (thread-safe)."""

    def __init__(self, config: PoolConfig | None = None) -> None:
        self.config = config or PoolConfig()
        self._lock = threading.Lock()
        self._workers: set[_Worker] = set()
        self._idle: list[_Worker] = []
        self._hung: set[_Job] = set()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._started = 0
        self._abandoned_total = 0
        self._refused_total = 0
        self._closed = False

    def shutdown(self) -> None:
        """Idle workers exit now, busy ones when their call ends; calls made later start new workers."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            for w in idle:
                self._workers.discard(w)
        for w in idle:
            w.jobs.put(None)

    async def run(self, tool: Tool, args: dict[str, Any], context: ToolContext, call_id: str,
                  timeout_s: float) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        worker = await self._acquire(loop, deadline, tool, call_id)
        job = _Job(tool, args, threadsafe_context(context, loop), call_id, loop)
        worker.jobs.put(job)
        try:
            done, _ = await asyncio.wait({job.fut}, timeout=max(0.0, deadline - loop.time()))
        except asyncio.CancelledError:
            self._abandon(job, "caller_cancelled")
            raise
        if not done:
            self._abandon(job, "timeout")
            raise CallTimedOut(f"tool {tool.name!r} ran past {timeout_s:g} s")
        if job.fut.cancelled():  # the coroutine cancelled itself
            raise CallCancelledItself(tool.name)
        return job.fut.result()

    async def _acquire(self, loop: asyncio.AbstractEventLoop, deadline: float, tool: Tool,
                       call_id: str) -> _Worker:
        while True:
            with self._lock:
                if self._idle:
                    return self._idle.pop()
                if len(self._workers) < self.config.max_workers:
                    self._started += 1
                    w = _Worker(self, self._started)
                    self._workers.add(w)
                    w.start()
                    return w
                if len(self._hung) >= self.config.max_workers:
                    self._refused_total += 1
                    hung = len(self._hung)
                    refused = True
                else:
                    refused = False
                    waiter: asyncio.Future[None] = loop.create_future()
                    self._waiters.append((loop, waiter))
            if refused:
                log.warning("tool_pool_exhausted", tool=tool.name, call_id=call_id, hung=hung,
                            max_workers=self.config.max_workers)
                raise PoolExhausted(f"all {hung} tool workers are held by calls that never returned")
            try:
                await asyncio.wait({waiter}, timeout=max(0.0, deadline - loop.time()))
            finally:
                with self._lock, contextlib.suppress(ValueError):
                    self._waiters.remove((loop, waiter))
            if not waiter.done():
                raise CallTimedOut(f"no tool worker became free for {tool.name!r}")

    def _abandon(self, job: _Job, why: str) -> None:
        job.stop()
        with self._lock:
            self._abandoned_total += 1
            if job.finished:
                return
            self._hung.add(job)
            hung = len(self._hung)
            exhausted = hung >= self.config.max_workers
        log.warning("tool_call_abandoned", tool=job.tool.name, call_id=job.call_id, why=why, hung=hung,
                    kind="coroutine" if job.tool.is_async else "thread")
        if exhausted:
            self._wake_all()  # waiters must learn at once that no worker will come

    def _finished(self, worker: _Worker, job: _Job) -> bool:
        """Bookkeeping after a call; False when the worker should exit (the pool was shut down)."""
        with self._lock:
            job.finished = True
            was_hung = job in self._hung
            self._hung.discard(job)
            hung = len(self._hung)
            keep = not self._closed
            if keep:
                self._idle.append(worker)
            else:
                self._workers.discard(worker)
        if was_hung:
            log.info("tool_hung_call_returned", tool=job.tool.name, call_id=job.call_id, hung=hung)
        self._wake_all()
        return keep

    def _retire(self, worker: _Worker) -> bool:
        with self._lock:
            if worker not in self._idle:
                return False  # a job was handed to it meanwhile
            self._idle.remove(worker)
            self._workers.discard(worker)
            return True

    def _wake_all(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, fut)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"workers": len(self._workers), "busy": len(self._workers) - len(self._idle),
                    "hung": len(self._hung), "abandoned_total": self._abandoned_total,
                    "refused_total": self._refused_total, "max_workers": self.config.max_workers}


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def threadsafe_context(context: ToolContext, caller: asyncio.AbstractEventLoop) -> ToolContext:
    """A copy of `context` whose `emit` runs on the caller's loop, whichever thread calls it."""
    emit = context.emit
    if emit is None:
        return context

    async def on_caller(text: str) -> None:
        res = emit(text)
        if inspect.isawaitable(res):
            await res

    def emit_from_worker(text: str) -> Any:
        cf = asyncio.run_coroutine_threadsafe(on_caller(text), caller)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a sync tool: wait here, on its own thread
            return cf.result(10.0)
        return asyncio.wrap_future(cf)

    return dataclasses.replace(context, emit=emit_from_worker)


_default_lock = threading.Lock()
_default: WorkerPool | None = None


def default_pool() -> WorkerPool:
    """The process's shared pool (created on first use with PoolConfig())."""
    global _default
    with _default_lock:
        if _default is None:
            _default = WorkerPool()
        return _default


def configure_default_pool(config: PoolConfig) -> WorkerPool:
    """Replace the shared pool for calls made from now on (workers of the old one finish their calls)."""
    global _default
    with _default_lock:
        old, _default = _default, WorkerPool(config)
    if old is not None:
        old.shutdown()
    return _default
