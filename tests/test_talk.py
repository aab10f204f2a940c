"""`interplay talk` as a user runs it (the CLI, in this process): against a real Session service (the
interaction actor's body with the shipped model, in-process on a thread of its own, real gRPC on
127.0.0.1), `--save-wav` writes the assistant's audio and `--json` prints the timeline as JSON
lines; `--mic` / `--play` on a machine without a sound device (this one: no sound card) fail with
one line saying so, before any session opens.
"""

from __future__ import annotations

import asyncio
import json
import threading
import wave
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from interaction_actor.runtime.actor import InteractionActorImpl
from interplay.cli import app

HELLO = Path(__file__).resolve().parent.parent / "examples" / "assets" / "hello.wav"


def has_device(kind: str) -> bool:
    try:
        import sounddevice as sd

        sd.query_devices(kind=kind)
        return True
    except Exception:  # noqa: BLE001 - no PortAudio or no device: either way none
        return False


def _cli_lines(stderr: str) -> list[str]:
    """What the CLI wrote to stderr, without the JSON log records of this module's in-process actor (its
    loop thread shares the process's stderr, and on a loaded machine it logs missed turns there)."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("{")]


@pytest.fixture(scope="module")
def session_address():
    """The interaction actor's body (shipped small model, no ears, no background) served on a thread."""
    ready = threading.Event()
    box: dict = {}

    def run() -> None:
        async def main() -> None:
            actor = InteractionActorImpl(preset="small", log_level="warning", admission=False)
            box["address"] = await actor.start()
            box["stop"] = stop = asyncio.Event()
            box["loop"] = asyncio.get_running_loop()
            ready.set()
            await stop.wait()
            await actor.stop()

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(60), "the interaction actor did not start"
    yield box["address"]
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(30)


def test_talk_saves_the_assistants_audio_and_prints_the_timeline_as_json_lines(session_address, tmp_path):
    out = tmp_path / "out.wav"
    result = CliRunner().invoke(app, ["talk", session_address, "--wav", str(HELLO), "--save-wav", str(out),
                                      "--json", "--tail", "1.5"])
    assert result.exit_code == 0, result.output[-2000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]  # every line is one JSON object
    turns = [r for r in records if r["dir"] == "out"]
    summary = records[-1]
    assert summary["dir"] == "summary" and summary["turns"] == len(turns) >= 10
    assert [r["turn"] for r in turns] == list(range(len(turns)))
    with wave.open(str(HELLO)) as sent:
        assert sum(r["sent"]["audio_samples"] for r in turns) == sent.getnframes()  # every sample, in some turn
    spoken = [r for r in turns if r["audio_samples"]]
    assert spoken, "the assistant said nothing: nothing to save"
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    for r in spoken:  # each turn's audio lies at the turn's time in the file
        at = r.get("time_ms", 0) * 16
        assert np.any(pcm[at:at + r["audio_samples"]] != 0), r["turn"]
    assert summary["audio_s"] == pytest.approx(sum(r["audio_samples"] for r in spoken) / 16000, abs=1e-3)


@pytest.mark.skipif(has_device("input"), reason="this machine has a microphone")
def test_talk_mic_without_an_input_device_says_so_in_one_line():
    result = CliRunner().invoke(app, ["talk", "127.0.0.1:9", "--mic"])
    assert result.exit_code == 2
    lines = _cli_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: no input sound device: ")


@pytest.mark.skipif(has_device("output"), reason="this machine has a speaker")
def test_talk_play_without_an_output_device_says_so_in_one_line():
    result = CliRunner().invoke(app, ["talk", "127.0.0.1:9", "--wav", str(HELLO), "--play"])
    assert result.exit_code == 2
    lines = _cli_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: no output sound device: ")
