"""The worker threads the deterministic kernels spread independent work over (one process-wide pool).

Batch invariance is what makes this free: a row's bits never depend on which rows share its call, so
the rows of a big linear, or the sessions of a batched turn's attention, can be cut into pieces and
run on separate threads (torch and ctypes drop the GIL) with the bits unchanged. The loop turns it on
(LoopConfig.kernel_threads); elsewhere the default, 0, means torch.get_num_threads() of the caller.

Contract:
  set_threads(n, initializer=None, initargs=()) -> None      process-wide; 0: the caller's torch threads
  count() -> int                                              threads a run() would use now
  run(jobs) -> None                                           call every job (no arguments), on the pool
      when count() > 1 and there are several jobs (each under the caller's grad and inference modes),
      else in order on this thread; returns when all are done and re-raises the first job's exception.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

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
    """Build every job before calling this: a worker that needs the GIL to start its C call while the caller
    holds it waits out Python's switch interval (5 ms; measured slower than building first)."""
    threads = count()
    if threads < 2 or len(jobs) < 2:
        for job in jobs:
            job()
        return
    pool = _pools.get(threads)
    if pool is None:
        pool = _pools[threads] = ThreadPoolExecutor(threads, "kernels", initializer=_config["initializer"],
                                                    initargs=_config["initargs"])
    modes = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
    for f in [pool.submit(_as_caller, job, *modes) for job in jobs]:
        f.result()


def _as_caller(job: Callable[[], None], grad: bool, inference: bool) -> None:
    """Run a job under its caller's autograd modes (thread-local in torch; a worker starts with the defaults)."""
    with torch.inference_mode(inference), torch.set_grad_enabled(grad):
        job()
