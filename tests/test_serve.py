"""`interplay serve` runs the actors as services and prints the endpoint; `interplay talk` streams to it.

Both are run as the user runs them: two subprocesses of the installed CLI, talking over 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-m", "interplay.cli", "--log-level", "warning"]
ENV = {**os.environ, "RAY_worker_niceness": "0", "PYTHONUNBUFFERED": "1"}


def test_serve_prints_an_endpoint_that_talk_streams_a_script_to(tmp_path: Path):
    script = tmp_path / "script.txt"
    script.write_text("0.2: hello there\n1.0: tell me when red\n")
    serve = subprocess.Popen([*CLI, "serve", "--backgrounds", "1", "--seconds", "120"], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        address = None
        deadline = time.monotonic() + 120
        while address is None and time.monotonic() < deadline:
            line = serve.stdout.readline()
            if not line:
                break
            if line.startswith("session endpoint:"):
                address = line.split(":", 1)[1].strip()
        assert address and address.startswith("127.0.0.1:"), "serve printed no endpoint"
        talk = subprocess.run([*CLI, "talk", address, "--script", str(script), "--tail", "0.6"], env=ENV,
                              capture_output=True, text=True, timeout=60)
        assert talk.returncode == 0, talk.stderr[-2000:]
        turns = [ln for ln in talk.stdout.splitlines() if ln.startswith("turn ")]
        assert len(turns) >= 8
        assert any("text 'hello there'" in ln for ln in turns)
        # the closing summary: "session ID: N turns, M missed, ..." ("10 missed" must not pass as "0 missed")
        summary = re.search(r"\b(\d+) turns, (\d+) missed\b", talk.stdout)
        assert summary, talk.stdout[-2000:]
        assert int(summary.group(1)) == len(turns) and int(summary.group(2)) == 0
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
