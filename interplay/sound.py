"""The terminal's sound devices for `interplay talk --mic / --play` (sounddevice on PortAudio).

`Microphone(loop)` records 16 kHz mono PCM16 in 20 ms blocks from the default input device and
hands them to the asyncio side as AudioChunks (`await mic.get()`); `Speaker()` plays the
assistant's PCM16 through the default output device with a small jitter buffer (`push(pcm, rate)`).
Both are opened by `open()` and closed by `close()`; both check first that a device exists and
raise UserError with one line ("no input sound device: ...", "no output sound device: ...") when
none does or PortAudio itself is missing, so the CLI says so instead of a traceback.

What they must never do: block the event loop (PortAudio calls back on its own thread: the
microphone hands blocks over with call_soon_threadsafe, the speaker reads a locked byte buffer) or
buffer without bound (the microphone's queue drops its newest block when the session is behind,
the speaker drops the oldest audio beyond `max_ahead_s`; both count what they dropped).
"""

from __future__ import annotations

import asyncio
import threading

from interplay.client import UserError, audio_chunk
from interplay.v1 import session_pb2 as spb

RATE = 16_000
BLOCK = 320  # 20 ms at 16 kHz, what a microphone frame of the browser page holds too


def _sounddevice(kind: str):
    """The sounddevice module with a default `kind` ("input" / "output") device, else UserError."""
    try:
        import sounddevice as sd
    except OSError as exc:  # the module imports, then fails to find libportaudio
        raise UserError(f"no {kind} sound device: PortAudio is not installed ({exc}); on Debian "
                        "`apt-get install libportaudio2`") from None
    except ImportError:
        raise UserError(f"no {kind} sound device: the sounddevice package is missing "
                        "(pip install sounddevice)") from None
    try:
        sd.query_devices(kind=kind)
    except sd.PortAudioError as exc:
        other = "--wav FILE to send a recording" if kind == "input" else "--save-wav FILE to keep the audio"
        raise UserError(f"no {kind} sound device: PortAudio finds none ({exc}); use {other}") from None
    return sd


class Microphone:
    """The default input device as a source of 20 ms AudioChunks, `max_blocks` queued at most."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_blocks: int = 50) -> None:
        self._sd = _sounddevice("input")
        self._loop = loop
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(max_blocks)
        self._stream = None
        self.dropped = 0

    def open(self) -> None:
        self._stream = self._sd.RawInputStream(samplerate=RATE, channels=1, dtype="int16", blocksize=BLOCK,
                                               callback=self._callback)
        self._stream.start()

    def _callback(self, indata, _frames, _time, _status) -> None:  # PortAudio's thread
        self._loop.call_soon_threadsafe(self._put, bytes(indata))

    def _put(self, block: bytes) -> None:
        if self._queue.full():
            self.dropped += 1  # the session is behind: lose this block rather than queue without bound
        else:
            self._queue.put_nowait(block)

    async def get(self) -> spb.InputChunk:
        return audio_chunk(await self._queue.get(), RATE, 1)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None


class Speaker:
    """The default output device playing PCM16 chunks gap-free: playback starts (and restarts after an
    underrun) once `lead_s` is buffered; beyond `max_ahead_s` the oldest audio is dropped. The stream
    opens at the first chunk's rate; a chunk at another rate later is dropped (counted)."""

    def __init__(self, lead_s: float = 0.12, max_ahead_s: float = 2.0) -> None:
        self._sd = _sounddevice("output")
        self.rate = 0
        self._lead_s, self._max_ahead_s = lead_s, max_ahead_s
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._playing = False
        self._stream = None
        self.dropped_bytes = 0
        self.underruns = 0

    def open(self, rate: int = RATE) -> None:
        self.rate = rate
        self._stream = self._sd.RawOutputStream(samplerate=rate, channels=1, dtype="int16", callback=self._callback)
        self._stream.start()

    def push(self, pcm16: bytes, rate: int = RATE) -> None:
        if self._stream is None:
            self.open(rate or RATE)
        if rate and rate != self.rate:
            self.dropped_bytes += len(pcm16)
            return
        with self._lock:
            self._buf += pcm16
            over = len(self._buf) - int(self._max_ahead_s * self.rate) * 2
            if over > 0:
                over += over % 2
                del self._buf[:over]
                self.dropped_bytes += over

    def _callback(self, outdata, frames, _time, _status) -> None:  # PortAudio's thread
        need = frames * 2
        with self._lock:
            if not self._playing and len(self._buf) >= int(self._lead_s * self.rate) * 2:
                self._playing = True
            take = min(need, len(self._buf)) if self._playing else 0
            outdata[:take] = self._buf[:take]
            del self._buf[:take]
            if self._playing and take < need:
                self._playing = False
                self.underruns += 1
        outdata[take:need] = b"\x00" * (need - take)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
