"""pipecat as the peer system of `eval fdbench` (interplay/fdbench/pipecat_peer.py, pipecat_runner.py).

Real pipecat 1.14 (its Silero VAD, its Whisper STT on our tiny.en, its OpenAI LLM service) in its own
virtualenv (`make peers`), against a real llama.cpp server with the local engine's GGUF; the output is
scored by the same Scorer as the Session backends. Without .venv-peers the live test skips with its reason.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from interplay.cli import app
from interplay.fdbench import episodes as E
from interplay.fdbench import pipecat_peer
from interplay.fdbench.scoring import Scorer
from interplay.fdbench.stream import align


def test_eval_fdbench_with_pipecat_but_no_peer_virtualenv_is_one_line_telling_to_run_make_peers(tmp_path, monkeypatch):
    monkeypatch.setattr(pipecat_peer, "VENV", tmp_path / "no-venv-here")
    result = CliRunner().invoke(app, ["eval", "fdbench", "--backends", "pipecat"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "make peers" in lines[0], lines


def test_the_default_backends_leave_pipecat_out_when_its_virtualenv_is_missing(tmp_path, monkeypatch):
    from interplay.fdbench.run import default_backends

    monkeypatch.setattr(pipecat_peer, "VENV", tmp_path / "no-venv-here")
    assert "pipecat" not in default_backends() and default_backends()


@pytest.mark.skipif(not pipecat_peer.available(), reason="no .venv-peers: `make peers` installs pipecat")
def test_pipecat_answers_a_spoken_question_with_speech_the_fdbench_scorer_hears():
    ep = E.turn_episode(0)  # "what is the capital city of Australia", then 6 s of listening
    recs, facts = pipecat_peer.stream_pipecat([ep], concurrency=1)
    rec = recs[0]
    assert rec.complete, rec.error
    assert facts["pipecat_version"] == "1.14.0" and facts["transcribed"][ep.name], facts
    scored = Scorer().score(rec, align(rec))
    assert scored["tor"] == 1 and scored["words"] >= 3 and scored["latency_ms"] > 0, scored
