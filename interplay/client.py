"""A small Python client of Session.Converse: stream audio / frames / text in real time, read turns.

`SessionClient(address)` opens one bidi stream: `send(chunk)` never blocks the caller's loop for
long, `chunks()` yields OutputChunks. Sources (`wav_source`, `frames_source`, `script_source`)
turn a WAV file, a folder of JPEG/PNG frames or a timed text script into (time_s, InputChunk)
pairs that `stream_sources` sends on their real-time schedule. `Timeline` says per turn what was
sent and what came out; the CLI's `talk` (interplay/talk.py) prints it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import wave
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from interplay.v1 import common_pb2 as cpb
from interplay.v1 import session_pb2 as spb
from interplay.v1 import session_pb2_grpc as sgrpc

CHUNK_MS = 20  # audio is sent in 20 ms pieces, as a microphone would


def control(kind: int, session_id: str = "") -> spb.InputChunk:
    return spb.InputChunk(session_id=session_id, control=spb.Control(kind=kind))


def audio_chunk(pcm16: bytes, sample_rate_hz: int = 16000, channels: int = 1) -> spb.InputChunk:
    return spb.InputChunk(audio=spb.AudioChunk(pcm16=pcm16, sample_rate_hz=sample_rate_hz, channels=channels))


def text_chunk(text: str) -> spb.InputChunk:
    return spb.InputChunk(text=spb.TextInput(text=text))


class UserError(Exception):
    """A mistake the user can fix (a wrong address, a file that is not a WAV): the CLI prints the
    message as one line and exits with code 2."""


def wav_source(path: str | Path, chunk_ms: int = CHUNK_MS) -> list[tuple[float, spb.InputChunk]]:
    """16-bit PCM WAV (any rate, any channels: the server resamples/downmixes) in `chunk_ms` pieces.
    Read whole before anything is sent, so a bad file is reported before a session opens."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise UserError(f"{path}: only 16-bit PCM WAV is supported (got {8 * w.getsampwidth()}-bit)")
            rate, ch = w.getframerate(), w.getnchannels()
            per = max(1, rate * chunk_ms // 1000)
            t, out = 0.0, []
            while data := w.readframes(per):
                out.append((t, audio_chunk(data, rate, ch)))
                t += len(data) / (2 * ch) / rate
            return out
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (wave.Error, EOFError) as exc:
        raise UserError(f"{path}: not a WAV file ({exc or 'too short'}); give a 16-bit PCM WAV") from None


def frames_source(folder: str | Path, fps: float = 5.0) -> Iterator[tuple[float, spb.InputChunk]]:
    """JPEG/PNG files of a folder, in name order, at `fps` frames per second."""
    enc = {".jpg": spb.FRAME_ENCODING_JPEG, ".jpeg": spb.FRAME_ENCODING_JPEG, ".png": spb.FRAME_ENCODING_PNG}
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in enc)
    for i, p in enumerate(files):
        yield i / fps, spb.InputChunk(video=spb.VideoFrame(data=p.read_bytes(), encoding=enc[p.suffix.lower()]))


def script_source(path: str | Path, gap_s: float = 1.0) -> Iterator[tuple[float, spb.InputChunk]]:
    """A text script: one line per message, `SECONDS: text` for a fixed time, else `gap_s` after the last."""
    t = -gap_s
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        head, sep, rest = line.partition(":")
        try:
            t, text = (float(head), rest.strip()) if sep else (t + gap_s, line.strip())
        except ValueError:
            t, text = t + gap_s, line.strip()
        yield t, text_chunk(text)


def merge_sources(*sources: Iterable[tuple[float, spb.InputChunk]]) -> list[tuple[float, spb.InputChunk]]:
    return sorted((item for src in sources for item in src), key=lambda x: x[0])


KEEPALIVE_S = 2.0  # a client that has sent nothing this long sends a START control (the server ends
# sessions idle for LoopConfig.idle_timeout_s, 8 s: a frozen or vanished client sends nothing)


class SessionClient:
    """One Converse stream. Use as `async with SessionClient(addr) as c:`. While the stream is open and
    the caller sends nothing, the client sends a START control every KEEPALIVE_S so that a listening
    client is not taken for a vanished one."""

    def __init__(self, address: str, session_id: str = "", options: list[tuple[str, object]] | None = None,
                 max_pending: int = 1024, keepalive_s: float = KEEPALIVE_S, connect_timeout_s: float = 0.0,
                 record: bool = False) -> None:
        self.address = address
        self.record = record  # ask the server to save the session for replay (call metadata interplay-record)
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self._channel = grpc.aio.insecure_channel(address, options=options or [])
        self._out: asyncio.Queue[spb.InputChunk | None] = asyncio.Queue(max_pending)
        self._seq = 0
        self._call = None
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s  # > 0: UserError when no server answers in this long
        self._last_send = time.monotonic()
        self._finished = False
        self._keepalive: asyncio.Task | None = None

    async def __aenter__(self) -> SessionClient:
        if self.connect_timeout_s:
            await self.wait_ready(self.connect_timeout_s)
        stub = sgrpc.SessionStub(self._channel)
        metadata = (("interplay-record", "1"),) if self.record else None
        self._call = stub.Converse(self._requests(), metadata=metadata)
        await self.send(control(spb.CONTROL_KIND_START))
        if self.keepalive_s > 0:
            self._keepalive = asyncio.get_running_loop().create_task(self._keep_alive())
        return self

    async def wait_ready(self, timeout_s: float = 2.0) -> None:
        """UserError unless a server answers at the address within `timeout_s`."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout_s)
        except TimeoutError:
            raise UserError(f"no Session service answers at {self.address} within {timeout_s:g} s "
                            "(start one with `interplay serve`, which prints its address)") from None

    async def _keep_alive(self) -> None:
        while not self._finished:
            await asyncio.sleep(max(0.05, self._last_send + self.keepalive_s - time.monotonic()))
            if not self._finished and time.monotonic() - self._last_send >= self.keepalive_s:
                await self.send(control(spb.CONTROL_KIND_START))

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _requests(self) -> AsyncIterator[spb.InputChunk]:
        while (item := await self._out.get()) is not None:
            yield item

    async def send(self, chunk: spb.InputChunk) -> None:
        chunk.session_id = self.session_id
        chunk.seq = self._seq
        self._seq += 1
        self._last_send = time.monotonic()
        await self._out.put(chunk)

    async def finish(self) -> None:
        """Half-close the request stream (the server ends the session after its next turn)."""
        self._finished = True
        if self._keepalive is not None:
            self._keepalive.cancel()
        await self._out.put(None)

    async def chunks(self) -> AsyncIterator[spb.OutputChunk]:
        async for chunk in self._call:
            yield chunk

    async def close(self) -> None:
        self._finished = True
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self._call is not None:
            self._call.cancel()
        while not self._out.empty():  # end the request generator too: gRPC may still be waiting on it
            self._out.get_nowait()
        self._out.put_nowait(None)
        await self._channel.close(grace=None)


async def stream_sources(client: SessionClient, items: list[tuple[float, spb.InputChunk]],
                         realtime: bool = True, on_send=None) -> None:
    """Send (time_s, chunk) items at their times relative to now (or as fast as possible)."""
    t0 = time.monotonic()
    for t, chunk in items:
        if realtime:
            delay = t0 + t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if on_send is not None:
            on_send(chunk)
        await client.send(chunk)


def event_label(e: spb.Event) -> str:
    """An event in a few words: its kind, then its typed facts, e.g. `progress:tool_result(Oslo snow)`,
    `result_surfaced:final[when_idle, voiced](Oslo snow, -3 C)`, `error(bad_frame)`."""
    name = spb.EventKind.Name(e.kind).removeprefix("EVENT_KIND_").lower()
    if e.update:
        name += ":" + spb.EventUpdate.Name(e.update).removeprefix("EVENT_UPDATE_").lower()
    if e.kind == spb.EVENT_KIND_RESULT_SURFACED:
        mode = cpb.SurfacingMode.Name(e.mode).removeprefix("SURFACING_MODE_").lower()
        name += f"[{mode}, voiced]" if e.voiced else f"[{mode}]"
    elif e.kind == spb.EVENT_KIND_DELEGATION_STARTED and e.policy:
        name += f"[{e.policy}]"
    detail = e.error.code or e.text
    return f"{name}({detail})" if detail else name


@dataclass
class Timeline:
    """What was sent since the last output chunk, for the per-turn line."""

    samples: int = 0
    frames: int = 0
    texts: list[str] = field(default_factory=list)
    controls: list[str] = field(default_factory=list)

    def sent(self, chunk: spb.InputChunk) -> None:
        kind = chunk.WhichOneof("payload")
        if kind == "audio":
            self.samples += len(chunk.audio.pcm16) // 2 // max(1, chunk.audio.channels)
        elif kind == "video":
            self.frames += 1
        elif kind == "text":
            self.texts.append(chunk.text.text)
        elif kind == "control":
            self.controls.append(spb.ControlKind.Name(chunk.control.kind).removeprefix("CONTROL_KIND_").lower())

    def take(self) -> dict:
        """What was sent since the last output chunk, as a record (and start counting again)."""
        rec = {"audio_samples": self.samples, "frames": self.frames, "texts": self.texts, "controls": self.controls}
        self.samples, self.frames, self.texts, self.controls = 0, 0, [], []
        return rec

    def line(self, c: spb.OutputChunk) -> str:
        ins = []
        if self.samples:
            ins.append(f"audio {self.samples} smp")
        if self.frames:
            ins.append(f"{self.frames} frame")
        ins += [f"text {t!r}" for t in self.texts] + self.controls
        outs = []
        if c.text:
            outs.append(f"text {c.text!r}")
        if c.audio.pcm16:
            outs.append(f"audio {len(c.audio.pcm16) // 2} smp")
        outs += [spb.ControlToken.Name(k).removeprefix("CONTROL_TOKEN_").lower() for k in c.controls]
        if c.HasField("model_state"):
            outs.append(f"state {c.model_state}")
        outs += [event_label(e) for e in c.events]
        self.samples, self.frames, self.texts, self.controls = 0, 0, [], []
        miss = " MISSED" if c.timing.missed else ""
        return (f"turn {c.turn:5d} {c.time_ms / 1000:7.2f}s | in: {', '.join(ins) or '-':<28} | "
                f"out: {', '.join(outs) or '-':<30} | compute {c.timing.compute_ms:6.1f} ms  "
                f"late {c.timing.lateness_ms:5.1f} ms{miss}" + (f"  dropped {c.dropped_chunks}" if c.dropped_chunks
                                                                 else ""))


def __getattr__(name: str):
    """`talk` and `talk_main` live in interplay.talk now; still importable from here."""
    if name in ("talk", "talk_main"):
        from interplay import talk as module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
