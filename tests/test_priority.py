"""interplay.priority: the niceness of a whole process, thread by thread (Linux keeps it per thread).
Each property runs in a child process of its own, so this test process keeps its priority."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")

CHILD = r"""
import json, os, threading, time
from interplay.priority import yield_cpu

stop = threading.Event()
def spin():
    stop.wait()
early = [threading.Thread(target=spin) for _ in range(3)]
for t in early: t.start()
changed = yield_cpu({first})
again = yield_cpu({second})
late = threading.Thread(target=lambda: (out.__setitem__("late", os.getpriority(os.PRIO_PROCESS, 0)), stop.wait()))
out = {{}}
late.start(); time.sleep(0.1)
tasks = {{int(t): os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")}}
stop.set()
print(json.dumps({{"changed": changed, "again": again, "tasks": tasks, "late": out["late"]}}))
"""


def run_child(first, second):
    out = subprocess.run([sys.executable, "-c", CHILD.format(first=first, second=second)], capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_yield_cpu_sets_every_thread_of_the_process_and_the_threads_started_later():
    got = run_child(7, 3)
    assert set(got["tasks"].values()) == {7} and len(got["tasks"]) >= 5  # main, three early, the late one
    assert got["changed"] >= 4 and got["late"] == 7


def test_yield_cpu_never_lowers_a_thread_s_niceness():
    got = run_child(7, 3)
    assert got["again"] == 0 and set(got["tasks"].values()) == {7}


def test_yield_cpu_of_none_leaves_the_process_as_it_was():
    got = run_child("None", "None")
    assert got["changed"] == 0 and len(set(got["tasks"].values())) == 1
