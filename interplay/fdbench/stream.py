"""Playing one episode to a live Session server in real time, and putting what came back on one clock.

`play(address, episode)` opens a Converse stream (interplay.client.SessionClient) and, once the
session's first turn has come back (the call is up), sends the user's audio as a microphone does — 20 ms PCM16 chunks, each once its 20 ms have been spoken — with the
episode's room tone under everything, and records every OutputChunk with the client's monotonic
receive time. For an interruption episode the interruption is not placed in advance: the client
listens to what comes back, and INTERRUPT_AFTER_S after the assistant is first heard (a 20 ms frame of
its audio above HEARD_RMS, at the moment the chunk arrives) the user starts talking over it; if the
assistant says nothing for INTERRUPT_WAIT_S after the request, the user says it anyway (and the
episode records that the assistant was not speaking). It returns a `Recording`; it never raises for
a server's refusal or a broken stream (the Recording's `error` says what happened), and it ends by
itself: the stream is half-closed after the episode's tail, and the whole play is bounded. A session
the server refuses before its first turn (admission control: the actor is at capacity) is tried again
OPEN_ATTEMPTS times, OPEN_RETRY_S apart, as a client would; the refusals are recorded.

`align(recording)` puts both sides on the session's clock (the turn grid: turn k starts at k x turn
length, its `time_ms`). The session's origin on the client's clock is the median over turns of
(receive time - time_ms - lateness - compute): the moment each turn's output was ready, less the
delivery delay, which `delivery_ms_*` reports (its median is thereby folded into every latency: a
millisecond or two on 127.0.0.1). A user sample's time is the send time of its chunk less the rest of
that chunk. The output track is what a client playing each chunk as it is ready hears: chunk k's
audio starts when its turn's output was ready on the grid, or when the previous chunk has finished
playing, whichever is later. The receive times are the cross-check: `delivery_ms` (receive - grid).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import grpc
import numpy as np

from interplay.client import SessionClient, audio_chunk, control
from interplay.fdbench.episodes import CHUNK, INTERRUPT_AFTER_S, INTERRUPT_WAIT_S, SR, Episode
from interplay.log import get_logger
from interplay.v1 import session_pb2 as spb

log = get_logger("interplay.fdbench.stream")

HEARD_RMS = 0.01  # a 20 ms frame of the assistant's audio above this is the assistant speaking (vad.SPEECH_RMS)
END_GRACE_S = 15.0  # a play that has not ended this long after its planned end is cut (a stuck server)
OPEN_ATTEMPTS = 8  # a session refused before its first turn (admission: the actor at capacity) is tried again
OPEN_RETRY_S = 1.5


@dataclass
class OutTurn:
    turn: int
    time_ms: int
    lateness_ms: float
    compute_ms: float
    missed: bool
    received: float  # client monotonic seconds
    pcm: bytes
    rate: int
    text: str

    @classmethod
    def of(cls, c: spb.OutputChunk, received: float) -> OutTurn:
        """One output chunk of the Session stream, as the client received it at `received`."""
        return cls(turn=c.turn, time_ms=c.time_ms, lateness_ms=c.timing.lateness_ms, compute_ms=c.timing.compute_ms,
                   missed=c.timing.missed, received=received, pcm=c.audio.pcm16, rate=c.audio.sample_rate_hz or SR,
                   text=c.text)


@dataclass
class Recording:
    episode: Episode
    session_id: str
    started: float = 0.0  # client monotonic time of the user's stream sample 0
    sent: list[float] = field(default_factory=list)  # client monotonic time each 20 ms chunk was sent
    turns: list[OutTurn] = field(default_factory=list)
    interrupt_at: int | None = None  # the user's stream sample where the interruption starts
    heard_at: float | None = None  # client time the assistant was first heard after the request
    ended: bool = False  # SESSION_ENDED arrived
    error: str = ""
    refused: list[str] = field(default_factory=list)  # earlier attempts the server refused before a first turn

    @property
    def complete(self) -> bool:
        """Every turn arrived, in order, and the session ended normally."""
        return (self.ended and not self.error and bool(self.turns)
                and all(t.turn == k for k, t in enumerate(self.turns)))


def _pcm16(x: np.ndarray) -> bytes:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2").tobytes()


def _loud_offset(pcm: bytes) -> float | None:
    """Seconds into `pcm` of its first 20 ms frame above HEARD_RMS; None when none is."""
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2").astype(np.float32) / 32768.0
    n = x.size // CHUNK
    if n == 0:
        return None
    rms = np.sqrt(np.mean(x[: n * CHUNK].reshape(n, CHUNK) ** 2, axis=1))
    loud = np.flatnonzero(rms > HEARD_RMS)
    return None if loud.size == 0 else float(loud[0] * CHUNK / SR)


async def play(address: str, ep: Episode, session_id: str, *, barge_in_control: bool = False) -> Recording:
    """Stream `ep` to the Session service at `address` in real time; see the module docstring.
    `barge_in_control`: also send a BARGE_IN control when the interruption starts (a client with its
    own voice detector does; FD-bench's models get the audio alone, the default)."""
    extra = (INTERRUPT_WAIT_S + INTERRUPT_AFTER_S + ep.interrupt.size / SR) if ep.interrupt is not None else 0.0
    planned_s = ep.layer.size / SR + extra + ep.tail_s
    room = ep.room(int((planned_s + 1.0) * SR))
    refused: list[str] = []
    for attempt in range(OPEN_ATTEMPTS):
        rec = Recording(ep, session_id if not attempt else f"{session_id}-{attempt}", refused=refused)
        try:
            await asyncio.wait_for(_converse(address, ep, rec, room, barge_in_control), planned_s + END_GRACE_S)
        except TimeoutError:
            rec.error = rec.error or f"no end within {planned_s + END_GRACE_S:.0f} s"
        except grpc.aio.AioRpcError as exc:
            rec.error = f"{exc.code().name}: {exc.details()}"
        except (grpc.RpcError, OSError) as exc:
            rec.error = f"{type(exc).__name__}: {exc}"
        if rec.turns or not rec.error or attempt == OPEN_ATTEMPTS - 1:
            break
        refused.append(rec.error)  # the session never opened (the actor at capacity): as a client would, try again
        log.info("fdbench_session_refused", episode=ep.name, error=rec.error, attempt=attempt)
        await asyncio.sleep(OPEN_RETRY_S)
    if rec.error:
        log.warning("fdbench_episode_failed", episode=ep.name, session_id=rec.session_id, error=rec.error)
    return rec


async def _converse(address: str, ep: Episode, rec: Recording, room: np.ndarray, barge_in_control: bool) -> None:
    tail = int(ep.tail_s * SR)
    opened = asyncio.Event()
    async with SessionClient(address, rec.session_id) as client:
        async def send() -> None:
            await opened.wait()  # the user starts once the call is up (the session's first turn came back)
            t0 = rec.started = time.monotonic()
            j = 0
            while True:
                i0 = j * CHUNK
                if ep.interrupt is not None and rec.interrupt_at is None:
                    if rec.heard_at is not None:
                        at = (rec.heard_at - t0 + INTERRUPT_AFTER_S) * SR
                        rec.interrupt_at = max(i0, int(np.ceil(at / CHUNK)) * CHUNK)
                    elif i0 >= ep.user_end + int(INTERRUPT_WAIT_S * SR):
                        rec.interrupt_at = i0
                last = ep.layer.size if ep.interrupt is None else (
                    None if rec.interrupt_at is None else rec.interrupt_at + ep.interrupt.size)
                if last is not None and i0 >= last + tail:
                    break
                x = room[i0:i0 + CHUNK].copy()
                if x.size < CHUNK:
                    x = np.pad(x, (0, CHUNK - x.size))
                if i0 < ep.layer.size:
                    part = ep.layer[i0:i0 + CHUNK]
                    x[:part.size] += part
                if rec.interrupt_at is not None and ep.interrupt is not None:
                    a = i0 - rec.interrupt_at
                    if -CHUNK < a < ep.interrupt.size:
                        lo = max(0, a)
                        part = ep.interrupt[lo:a + CHUNK]
                        x[lo - a:lo - a + part.size] += part
                await asyncio.sleep(max(0.0, t0 + (j + 1) * CHUNK / SR - time.monotonic()))
                if barge_in_control and rec.interrupt_at is not None and i0 <= rec.interrupt_at < i0 + CHUNK:
                    await client.send(control(spb.CONTROL_KIND_BARGE_IN))  # with the interruption's first chunk
                rec.sent.append(time.monotonic())
                await client.send(audio_chunk(_pcm16(np.clip(x, -1.0, 1.0))))
                j += 1
            await client.finish()

        sender = asyncio.get_running_loop().create_task(send())
        try:
            async for c in client.chunks():
                now = time.monotonic()
                opened.set()
                rec.turns.append(OutTurn.of(c, now))
                for e in c.events:
                    if e.kind == spb.EVENT_KIND_SESSION_ENDED:
                        rec.ended = True
                    elif e.kind == spb.EVENT_KIND_ERROR and e.error.code in ("turn_failed", "idle_timeout"):
                        rec.error = rec.error or f"{e.error.code}: {e.text}"
                past_request = len(rec.sent) * CHUNK >= ep.user_end
                if rec.heard_at is None and past_request and c.audio.pcm16:
                    off = _loud_offset(c.audio.pcm16)
                    if off is not None:
                        rec.heard_at = now + off
        finally:
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)


@dataclass
class Aligned:
    """One recording on the session's clock (seconds from the session's first turn)."""

    user_spans: list[tuple[float, float]]  # what the user said, in order (the interruption last)
    track: np.ndarray  # the assistant's audio as heard, float32 16 kHz from session time 0
    delivery_ms: list[float]  # per turn: receive time - the grid's ready time (the cross-check)
    lateness_ms: list[float]
    missed: int
    gaps: int  # turns missing from the sequence
    send_late_ms: list[float]  # per chunk: how late the client sent it (its own real-time check)


async def staggered(items: list, start, concurrency: int, stagger_s: float) -> list:
    """`await start(item)` for every item, at most `concurrency` at once, each started at least `stagger_s`
    after the previous one (so no two users finish speaking together); the results in the items' order."""
    slots = asyncio.Semaphore(concurrency)
    tasks: list[asyncio.Task] = []
    last = -float("inf")

    async def one(item):
        try:
            return await start(item)
        finally:
            slots.release()

    for item in items:
        await slots.acquire()
        await asyncio.sleep(max(0.0, last + stagger_s - time.monotonic()))
        last = time.monotonic()
        tasks.append(asyncio.get_running_loop().create_task(one(item)))
    return list(await asyncio.gather(*tasks))


def _resampled(pcm: bytes, rate: int) -> np.ndarray:
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2").astype(np.float32) / 32768.0
    if rate == SR or x.size == 0:
        return x
    n = int(round(x.size * SR / rate))
    return np.interp(np.arange(n) * rate / SR, np.arange(x.size), x).astype(np.float32)


def align(rec: Recording) -> Aligned:
    """See the module docstring."""
    turns = rec.turns
    if not turns:
        return Aligned([], np.zeros(0, np.float32), [], [], 0, 0, [])
    ready = [(t.time_ms + t.lateness_ms + t.compute_ms) / 1000.0 for t in turns]
    origin = statistics.median(t.received - r for t, r in zip(turns, ready, strict=True))

    def at(sample: int) -> float:
        j = min(sample // CHUNK, len(rec.sent) - 1)
        return rec.sent[j] - origin - ((j + 1) * CHUNK - sample) / SR if rec.sent else sample / SR

    ep = rec.episode
    spans = [(at(a), at(b)) for a, b in ep.spans]
    if ep.interrupt is not None and rec.interrupt_at is not None:
        spans.append((at(rec.interrupt_at), at(rec.interrupt_at + ep.interrupt.size)))
    placed, cursor = [], 0
    for t, r in zip(turns, ready, strict=True):
        if t.pcm:
            x = _resampled(t.pcm, t.rate)
            start = max(int(round(max(0.0, r) * SR)), cursor)
            placed.append((start, x))
            cursor = start + x.size
    track = np.zeros(max(cursor, int((ready[-1] + 0.2) * SR)) + SR // 2, np.float32)
    for start, x in placed:
        track[start:start + x.size] = x
    send_late = [1000.0 * (s - (rec.started + (j + 1) * CHUNK / SR)) for j, s in enumerate(rec.sent)]
    return Aligned(user_spans=spans, track=track,
                   delivery_ms=[1000.0 * (t.received - origin - r) for t, r in zip(turns, ready, strict=True)],
                   lateness_ms=[t.lateness_ms for t in turns], missed=sum(t.missed for t in turns),
                   gaps=sum(1 for k, t in enumerate(turns) if t.turn != k), send_late_ms=send_late)
