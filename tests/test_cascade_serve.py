"""`interplay serve --backend cascade` is a working voice assistant: the installed CLI in a subprocess
(Ray, a background actor, the ears' actor, the cascade in the interaction actor), a spoken question
over real gRPC on 127.0.0.1, a spoken answer back. Slow (~1 min: Ray and four models start)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest
from conftest import converse, stop_serve

from interaction_actor.ears import speech
from interaction_actor.ears.segmenter import windows
from interplay.client import audio_chunk
from interplay.v1 import session_pb2 as spb

CLI = [sys.executable, "-m", "interplay.cli", "--log-level", "warning"]


@pytest.mark.slow
def test_serve_backend_cascade_answers_a_spoken_question_over_grpc(tmp_path):
    (tmp_path / "interplay.toml").write_text("[background]\nactors = 1\n")
    env = {**os.environ, "RAY_worker_niceness": "0", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*CLI, "--config", str(tmp_path / "interplay.toml"), "serve", "--backend", "cascade",
                             "--seconds", "240", "--drain-s", "2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        address = None
        deadline = time.monotonic() + 180
        while address is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("session endpoint:"):
                address = line.split(":", 1)[1].strip()
        assert address, "serve printed its session endpoint"
        user = speech.padded(speech.say("hello how are you", "en-us"), 0.4, 6.0)
        chunks = asyncio.run(asyncio.wait_for(
            converse(address, [audio_chunk(w) for w in windows(user)], 0.4, gap_s=0.2), timeout=60))
    finally:
        stop_serve(proc)
    heard = [e.text for c in chunks for e in c.events
             if e.kind == spb.EVENT_KIND_USER_TRANSCRIPT and e.update == spb.EVENT_UPDATE_FINAL]
    assert any("how are you" in h.lower() for h in heard), heard
    said = "".join(c.text for c in chunks).strip()
    voiced = sum(len(c.audio.pcm16) for c in chunks) / 2 / 16000
    assert said and voiced >= 0.5, (said, voiced)
