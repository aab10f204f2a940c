"""The worker threads the deterministic kernels spread independent work over (one process-wide pool).

Batch invariance is what makes this free: a row's bits never depend on which rows share its call, so
the rows of a big linear, or the sessions of a batched turn's attention, can be cut into pieces and
run on separate threads (torch and ctypes drop the GIL) with the bits unchanged. The loop turns it on
(LoopConfig.attention_threads); elsewhere the default, 0, means torch.get_num_threads() of the caller.

Contract:
  set_threads(n, initializer=None, initargs=()) -> None      process-wide; 0: the caller's torch threads
  count() -> int                                              threads a run() would use now
  run(jobs) -> None                                           call every job (no arguments), on the pool
      when count() > 1 and there are several jobs (each under the caller's grad and inference modes),
      else in order on this thread; returns when all are done and re-raises the first job's exception.
  submit(jobs) -> futures; wait(futures) -> None              the same in two steps (overlap the caller's work)
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch

_config: dict = {"threads": 0, "initializer": None, "initargs": ()}
_pools: dict[int, ThreadPoolExecutor] = {}


def set_threads(threads: int, initializer: Callable | None = None, initargs: tuple = ()) -> None:
    """Use this many worker threads from now on; `initializer(*initargs)` runs in each new worker (the loop
    gives them its step thread's priority)."""
    _config.update(threads=max(0, int(threads)), initializer=initializer, initargs=tuple(initargs))


def count() -> int:
    return _config["threads"] or torch.get_num_threads()


def run(jobs: list[Callable[[], None]]) -> None:
    if count() < 2 or len(jobs) < 2:
        for job in jobs:
            job()
        return
    wait(submit(jobs))


def submit(jobs: list[Callable[[], None]]) -> list[Future]:
    """Start the jobs on the pool (count() > 1) and return their futures for `wait`; with one thread, run them
    now and return []. Lets a caller prepare the next jobs while these run."""
    threads = count()
    if threads < 2:
        for job in jobs:
            job()
        return []
    pool = _pools.get(threads)
    if pool is None:
        pool = _pools[threads] = ThreadPoolExecutor(threads, "kernels", initializer=_config["initializer"],
                                                    initargs=_config["initargs"])
    modes = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
    return [pool.submit(_as_caller, job, *modes) for job in jobs]


def wait(futures: list[Future]) -> None:
    """Block until every future is done; re-raise the first failure."""
    for f in futures:
        f.result()


def _as_caller(job: Callable[[], None], grad: bool, inference: bool) -> None:
    """Run a job under its caller's autograd modes (thread-local in torch; a worker starts with the defaults)."""
    with torch.inference_mode(inference), torch.set_grad_enabled(grad):
        job()
