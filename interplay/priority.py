"""CPU priority of interplay's processes and threads (Linux niceness; a no-op where there is none).

The 200 ms clock must win the CPU over everything that is asynchronous by design. On a small host
(2 cores) the ears' Whisper decode and a background engine's reasoning otherwise take a core each
at the loop's own priority, and a turn that needs both cores (the model's big linears on two
threads) waits for them: a turn that takes 110 ms alone took 307 ms in the demo while the ears
transcribed the user's first sentence, and missed its deadline.

- `raise_priority(n)`: the calling thread's niceness down to `n` (the loop's threads; needs
  CAP_SYS_NICE to go below where it is, else a warning and nothing changes).
- `lower_thread(step)`: the calling thread `step` niceness steps below where it is (package builds).
- `yield_cpu(n)`: every thread of this process up to niceness `n` (the ears' and the background
  actors' processes, once built). Threads made later inherit it from the thread that makes them.
  Raising niceness needs no privilege. Returns the threads changed.

Linux keeps niceness per thread: `setpriority(PRIO_PROCESS, tid)` changes one thread, which is
why `yield_cpu` walks /proc/self/task.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from interplay.log import get_logger

log = get_logger("interplay.priority")

ASYNC_NICENESS = 10  # the ears and the background actors: CFS gives a niceness-0 thread ~9x their share


def raise_priority(niceness: int | None) -> int:
    """Lower the calling thread's niceness to `niceness` when it is higher (Linux: per thread).

    Ray starts worker processes at niceness 15 (`worker_niceness`), so without this any ordinary
    CPU-hungry process on the machine starves the clock. Needs CAP_SYS_NICE to go down; without it
    the loop logs a warning (start Ray with RAY_worker_niceness=0 instead). Returns the niceness.
    """
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if niceness is None or current <= niceness:
        return current
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
        return niceness
    except OSError as exc:
        log.warning("loop_priority_unchanged", niceness=current, wanted=niceness, error=str(exc),
                    advice="start Ray with RAY_worker_niceness=0 or grant CAP_SYS_NICE")
        return current


def lower_thread(step: int = 5) -> None:
    """The calling thread `step` niceness steps below where it is (Linux: per thread)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + step))


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # no procfs: the calling thread is all this can reach
        return [0]


def yield_cpu(niceness: int | None = ASYNC_NICENESS) -> int:
    """Raise every thread of this process to niceness `niceness` at least (never lowers one).

    None leaves the process as it is. Returns how many threads changed."""
    if niceness is None:
        return 0
    niceness = max(-20, min(19, int(niceness)))
    changed = 0
    for tid in _threads():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
                changed += 1
    log.info("process_niceness", pid=os.getpid(), niceness=niceness, threads_changed=changed)
    return changed


def niceness_of(tid: int = 0) -> int:
    """The niceness of thread `tid` of this process (0: the calling thread)."""
    return os.getpriority(os.PRIO_PROCESS, tid)


def thread_niceness(pid: int) -> dict[int, int]:
    """{thread id: niceness} of every thread of process `pid` (its /proc/PID/task/*/stat, field 19)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            out[int(tid)] = int(stat[stat.rindex(")") + 2:].split()[16])  # fields after "(comm)" start at 3
    return out
