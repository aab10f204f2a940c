"""`interplay talk`: one conversation with a running Session service from the terminal.

Given the service's address and what to send — a WAV, a folder of frames, a text script (each on
its real-time schedule) and/or the microphone (`mic=True`) — `talk(...)` opens one Converse stream,
sends, and reads every turn until the inputs end (plus `tail_s`), `seconds` pass, or Ctrl-C. What
comes back goes to: the console, one human line per turn (or, with `as_json`, one JSON object per
line: the timeline.jsonl records that `interplay demo` writes and `interplay report` draws, then a
`{"dir": "summary", ...}` line); the speaker (`play=True`, a jitter buffer, interplay.sound); and a
WAV file (`save_wav`): the assistant's audio on the session's clock, silence where it said nothing.
It returns a summary dict. Sound devices are checked before the session opens: without one, the
user gets one line (UserError), not a half-started session. It never sends faster than real time
unless `realtime=False`, and never buffers audio without bound (interplay.sound).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
import wave
from pathlib import Path
from typing import TextIO

from interplay.client import (
    SessionClient,
    Timeline,
    UserError,
    frames_source,
    merge_sources,
    script_source,
    stream_sources,
    wav_source,
)
from interplay.v1 import session_pb2 as spb


class AudioFile:
    """The assistant's audio as a 16-bit mono WAV, each turn's audio placed at the turn's time
    (`time_ms`), silence between. Opened at the first chunk's rate (16 kHz when none spoke)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._w: wave.Wave_write | None = None
        self.rate = 0
        self.frames = 0  # samples written
        self.spoken = 0  # samples of the assistant's own audio

    def _open(self, rate: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._w = wave.open(str(self.path), "wb")  # noqa: SIM115 - written turn by turn, closed by close()
        except OSError as exc:
            raise UserError(f"--save-wav {self.path}: cannot write it ({exc.strerror or exc})") from None
        self._w.setnchannels(1)
        self._w.setsampwidth(2)
        self._w.setframerate(rate)
        self.rate = rate

    def add(self, chunk: spb.OutputChunk) -> None:
        pcm = chunk.audio.pcm16
        if self._w is None:
            self._open(int(chunk.audio.sample_rate_hz or 16000))
        at = int(chunk.time_ms) * self.rate // 1000
        if at > self.frames:  # the turns before this one said nothing
            self._w.writeframes(b"\x00\x00" * (at - self.frames))
            self.frames = at
        if pcm:
            self._w.writeframes(pcm)
            self.frames += len(pcm) // 2
            self.spoken += len(pcm) // 2

    def close(self) -> None:
        if self._w is None:
            self._open(16000)
        self._w.close()


def _input_record(chunk: spb.InputChunk, t_s: float) -> dict | None:
    """A timeline.jsonl record of what was sent (audio is summed per turn on the output record instead)."""
    kind = chunk.WhichOneof("payload")
    if kind == "text":
        return {"t_s": t_s, "dir": "in", "kind": "text", "value": chunk.text.text}
    if kind == "video":
        return {"t_s": t_s, "dir": "in", "kind": "frame", "value": spb.FrameEncoding.Name(chunk.video.encoding)}
    if kind == "control":
        return {"t_s": t_s, "dir": "in", "kind": spb.ControlKind.Name(chunk.control.kind).removeprefix("CONTROL_KIND_")
                .lower()}
    return None


async def talk(address: str, wav: str | None = None, frames_dir: str | None = None, script: str | None = None,
               fps: float = 5.0, tail_s: float = 1.0, realtime: bool = True, session_id: str = "",
               out: TextIO | None = None, *, mic: bool = False, play: bool = False, save_wav: str | None = None,
               as_json: bool = False, seconds: float = 0.0, record: bool = False) -> dict:
    """Stream the given sources (and the microphone) to a running actor; show, play and save what comes
    back; return a summary. With `mic`, runs until `seconds` (0: until Ctrl-C). With `record`, the server
    saves the session for replay (interplay.replay) and the summary's `replay_file` says where, or
    `record_error` why not."""
    from interplay.demo import chunk_record
    from interplay.sound import Microphone, Speaker

    out = out or sys.stdout  # the stdout of now, not of import time (a test runner swaps and closes it)

    sources = []
    if wav:
        sources.append(wav_source(wav))
    if frames_dir:
        sources.append(frames_source(frames_dir, fps))
    if script:
        sources.append(script_source(script))
    items = merge_sources(*sources)
    loop = asyncio.get_running_loop()
    microphone = Microphone(loop) if mic else None  # device checks first: a UserError before any session
    speaker = Speaker() if play else None
    recording = AudioFile(save_wav) if save_wav else None
    tl = Timeline()
    turns, missed, texts, compute = 0, 0, [], []
    saved: dict[str, str] = {}  # replay_file (where the server saves the session) or record_error
    stop = asyncio.Event()
    t0 = time.monotonic()

    def emit(obj: dict) -> None:
        print(json.dumps(obj), file=out, flush=True)

    def sent(chunk: spb.InputChunk) -> None:
        tl.sent(chunk)
        if as_json and (rec := _input_record(chunk, round(time.monotonic() - t0, 3))) is not None:
            emit(rec)

    with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread: Ctrl-C stops it the hard way
        loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        async with SessionClient(address, session_id, connect_timeout_s=1.5, record=record) as client:
            sent(spb.InputChunk(control=spb.Control(kind=spb.CONTROL_KIND_START)))

            async def produce() -> None:
                feeders = [loop.create_task(stream_sources(client, items, realtime, on_send=sent))]
                if microphone is not None:
                    microphone.open()

                    async def listen() -> None:
                        while True:
                            chunk = await microphone.get()
                            sent(chunk)
                            await client.send(chunk)

                    feeders.append(loop.create_task(listen()))
                try:
                    if microphone is not None:  # the microphone has no end of its own
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), seconds or None)
                    else:
                        stopped = loop.create_task(stop.wait())
                        feeders.append(stopped)
                        await asyncio.wait({feeders[0], stopped}, return_when=asyncio.FIRST_COMPLETED)
                        if not stop.is_set():
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(stop.wait(), tail_s)
                finally:
                    for f in feeders:
                        f.cancel()
                    await client.finish()

            producer = loop.create_task(produce())
            try:
                async for c in client.chunks():
                    turns += 1
                    missed += int(c.timing.missed)
                    for e in c.events if record and not saved else ():
                        if e.kind == spb.EVENT_KIND_SESSION_STARTED and e.attrs.get("replay_file"):
                            saved["replay_file"] = e.attrs["replay_file"]
                        elif e.kind == spb.EVENT_KIND_ERROR and e.error.code == "recording_unavailable":
                            saved["record_error"] = e.text
                    compute.append(c.timing.compute_ms)
                    if c.text:
                        texts.append(c.text)
                    if speaker is not None and c.audio.pcm16:
                        speaker.push(c.audio.pcm16, int(c.audio.sample_rate_hz))
                    if recording is not None:
                        recording.add(c)
                    if as_json:
                        emit({"t_s": round(time.monotonic() - t0, 3), "dir": "out", **chunk_record(c),
                              "audio_samples": len(c.audio.pcm16) // 2, "sent": tl.take()})
                    else:
                        print(tl.line(c), file=out, flush=True)
            finally:
                producer.cancel()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        for device in (microphone, speaker):
            if device is not None:
                device.close()
        if recording is not None:
            recording.close()
    compute.sort()
    summary = {"session_id": client.session_id, "turns": turns, "missed": missed, "text": "".join(texts),
               "compute_ms_p50": compute[len(compute) // 2] if compute else 0.0}
    if recording is not None:
        summary.update(save_wav=str(recording.path), audio_s=round(recording.spoken / (recording.rate or 16000), 3))
    if microphone is not None:
        summary["mic_blocks_dropped"] = microphone.dropped
    summary.update(saved)
    if as_json:
        emit({"dir": "summary", **summary})
    else:
        print(f"session {client.session_id}: {turns} turns, {missed} missed, compute p50 "
              f"{summary['compute_ms_p50']:.1f} ms" + (f"; assistant audio {summary['audio_s']} s in {recording.path}"
                                                       if recording is not None else "")
              + (f"; saved for replay: {saved['replay_file']}" if "replay_file" in saved else "")
              + (f"; not saved for replay: {saved['record_error']}" if "record_error" in saved else ""),
              file=out, flush=True)
    return summary


def talk_main(address: str, wav: str | None = None, frames_dir: str | None = None, script: str | None = None,
              fps: float = 5.0, tail_s: float = 1.0, realtime: bool = True, session_id: str = "",
              out: TextIO | None = None, **options: object) -> dict:
    """CLI entry: `interplay talk ADDRESS [--wav F] [--frames DIR] [--script F] [--mic] [--play]
    [--save-wav F] [--json]`; `options` are talk's keyword-only ones."""
    return asyncio.run(talk(address, wav, frames_dir, script, fps, tail_s, realtime, session_id, out, **options))
