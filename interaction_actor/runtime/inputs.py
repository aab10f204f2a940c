"""Decode and validate client input into one micro-turn window per session.

`WindowBuilder.add(item)` takes an `InputChunk` (or a `Malformed` marker, or float samples from an
in-process caller) and either adds it to the open window or raises `InputError` with a stable
code; a refused item changes nothing else. `take()` closes the window into a `TurnInput`.
Audio: PCM16 16 kHz mono is native; other rates in [min_rate, max_rate] are resampled by a
streaming band-limited (windowed-sinc) resampler, multi-channel audio up to `max_channels` is
averaged to mono. Frames: JPEG/PNG (Pillow, size checked before decoding) or raw RGB.

Cost is bounded before expensive work: a chunk's size and its resampled length are checked against
the window's sample budget before it is resampled; a frame's encoded size and pixel count are
checked from its header, and only the newest frame of a window is decoded (at `take`), so a client
that sends many frames in one window pays for one decode.
"""

from __future__ import annotations

import codecs
import io
import math
from dataclasses import dataclass, field

import torch
from PIL import Image

from interaction_actor.model.session import TurnInput
from interplay.v1 import session_pb2 as spb

NATIVE_RATE = 16000


class InputError(Exception):
    """A refused input: `code` is stable and machine-readable, the message is safe to show."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Malformed:
    """Bytes that did not parse as an InputChunk (the service's safe deserializer returns this)."""

    size: int
    reason: str


@dataclass(frozen=True)
class FloatAudio:
    """In-process float audio path: mono samples in [-1, 1] at `sample_rate_hz` (checked for NaN/inf)."""

    samples: torch.Tensor
    sample_rate_hz: int = NATIVE_RATE


@dataclass(frozen=True)
class InputLimits:
    min_rate: int = 8000
    max_rate: int = 96000
    max_channels: int = 8
    max_audio_bytes: int = 1 << 20  # per chunk (~32 s of 16 kHz mono)
    max_frame_bytes: int = 4 << 20  # encoded size of one frame
    max_frame_pixels: int = 1920 * 1080  # a noisy PNG this size decodes in ~40 ms here; 4096x4096 took 600 ms
    max_text_bytes: int = 16384  # per chunk
    max_window_samples: int = NATIVE_RATE * 5  # audio held in one window before it is refused


def safe_parse(data: bytes) -> spb.InputChunk | Malformed:
    """InputChunk.FromString that never raises: a parse failure becomes a Malformed marker."""
    try:
        return spb.InputChunk.FromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
        return Malformed(size=len(data), reason=type(exc).__name__)


class StreamResampler:
    """Band-limited streaming resampler (Hann-windowed sinc, linear in time), state kept per stream."""

    def __init__(self, in_rate: int, out_rate: int = NATIVE_RATE, half_width: int = 16) -> None:
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self.step = self.in_rate / self.out_rate  # input samples per output sample
        self.cutoff = min(1.0, 1.0 / self.step)  # relative to the input Nyquist
        self.w = int(math.ceil(half_width / self.cutoff))
        self.buf = torch.zeros(self.w)  # history; buf[0] is absolute input index `base`
        self.base = -self.w
        self.t = 0.0  # absolute input time of the next output sample

    def push(self, x: torch.Tensor) -> torch.Tensor:
        self.buf = torch.cat([self.buf, x.to(torch.float32)])
        end = self.base + self.buf.numel()  # absolute index one past the newest sample
        last = end - 1 - self.w  # the latest output time whose taps are all here
        n = math.floor((last - self.t) / self.step) + 1 if last >= self.t else 0
        if n == 0:
            return torch.zeros(0)
        times = self.t + torch.arange(n, dtype=torch.float64) * self.step
        left = torch.floor(times).long() - self.w + 1
        taps = torch.arange(2 * self.w)
        idx = left[:, None] + taps[None, :]  # absolute indices
        d = (times[:, None] - idx.double()).float()
        win = 0.5 + 0.5 * torch.cos(math.pi * d.clamp(-self.w, self.w) / self.w)
        kern = self.cutoff * torch.special.sinc(self.cutoff * d) * win
        y = (self.buf[(idx - self.base).clamp(0, self.buf.numel() - 1)] * kern).sum(-1)
        self.t += n * self.step
        keep_from = math.floor(self.t) - self.w  # oldest sample any future output may need
        drop = max(0, keep_from - self.base)
        self.buf, self.base = self.buf[drop:], self.base + drop
        return y.clamp(-1.0, 1.0)


def pcm16_to_float(data: bytes, channels: int) -> torch.Tensor:
    """Little-endian PCM16 (interleaved) -> float32 mono in [-1, 1] (channels averaged)."""
    if len(data) % (2 * channels):
        raise InputError("bad_pcm_length", f"{len(data)} bytes is not a whole number of {channels}-channel "
                         "16-bit samples")
    x = torch.frombuffer(bytearray(data), dtype=torch.int16).to(torch.float32) / 32768.0
    if channels > 1:
        x = x.view(-1, channels).mean(dim=1)
    return x


def check_frame(frame: spb.VideoFrame, limits: InputLimits) -> None:
    """The checks that need no decoding: encoded size, encoding, and the pixel count in the header."""
    if len(frame.data) > limits.max_frame_bytes:
        raise InputError("oversize_frame", f"frame of {len(frame.data)} bytes exceeds {limits.max_frame_bytes}")
    if frame.encoding == spb.FRAME_ENCODING_RAW_RGB:
        w, h = int(frame.width), int(frame.height)
        if w < 1 or h < 1:
            raise InputError("bad_frame", "raw RGB frame needs width and height")
        if w * h > limits.max_frame_pixels:
            raise InputError("oversize_frame", f"frame {w}x{h} exceeds {limits.max_frame_pixels} pixels")
        if len(frame.data) != w * h * 3:
            raise InputError("bad_frame", f"raw RGB {w}x{h} needs {w * h * 3} bytes, got {len(frame.data)}")
        return
    if frame.encoding not in (spb.FRAME_ENCODING_JPEG, spb.FRAME_ENCODING_PNG):
        raise InputError("bad_frame", "frame encoding must be JPEG, PNG or RAW_RGB")
    try:
        img = Image.open(io.BytesIO(frame.data))  # lazy: reads the header only
        w, h = img.size
        fmt = img.format
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt data
        raise InputError("bad_frame", f"frame could not be decoded ({type(exc).__name__})") from None
    if w * h > limits.max_frame_pixels:
        raise InputError("oversize_frame", f"frame {w}x{h} exceeds {limits.max_frame_pixels} pixels")
    want = {spb.FRAME_ENCODING_JPEG: "JPEG", spb.FRAME_ENCODING_PNG: "PNG"}[frame.encoding]
    if fmt != want:
        raise InputError("bad_frame", f"frame declared {want} but holds {fmt}")


def decode_frame(frame: spb.VideoFrame, limits: InputLimits) -> torch.Tensor:
    """VideoFrame -> uint8 [H, W, 3] RGB, or InputError (size checked before any decoding)."""
    check_frame(frame, limits)
    if frame.encoding == spb.FRAME_ENCODING_RAW_RGB:
        w, h = int(frame.width), int(frame.height)
        return torch.frombuffer(bytearray(frame.data), dtype=torch.uint8).view(h, w, 3).clone()
    try:
        img = Image.open(io.BytesIO(frame.data))
        w, h = img.size
        rgb = img.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt data
        raise InputError("bad_frame", f"frame could not be decoded ({type(exc).__name__})") from None
    return torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(h, w, 3).clone()


def decode_text(t: spb.TextInput, limits: InputLimits) -> str:
    """TextInput -> str: the UTF-8 `text`, or `raw` decoded in its named text encoding."""
    if t.raw:
        if len(t.raw) > limits.max_text_bytes:
            raise InputError("oversize_text", f"text of {len(t.raw)} bytes exceeds {limits.max_text_bytes}")
        name = t.encoding or "utf-8"
        try:
            info = codecs.lookup(name)
        except LookupError:
            raise InputError("unknown_text_encoding", f"unknown text encoding {name!r}") from None
        if not info._is_text_encoding:  # e.g. base64, zlib: bytes-to-bytes codecs
            raise InputError("unknown_text_encoding", f"{name!r} is not a text encoding")
        try:
            text = t.raw.decode(info.name)
        except UnicodeDecodeError:
            raise InputError("bad_text_encoding", f"text is not valid {info.name}") from None
        return t.text + text
    if len(t.text.encode()) > limits.max_text_bytes:
        raise InputError("oversize_text", f"text exceeds {limits.max_text_bytes} bytes")
    return t.text


@dataclass
class WindowBuilder:
    """Inputs of one session's open turn window; survives refused items untouched."""

    limits: InputLimits = field(default_factory=InputLimits)
    audio: list[torch.Tensor] = field(default_factory=list)
    samples: int = 0
    frame: spb.VideoFrame | None = None  # the newest frame, checked but not decoded until `take`
    text: list[str] = field(default_factory=list)
    barge_in: bool = False
    stop: bool = False
    resamplers: dict[int, StreamResampler] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # what arrived this window, for the timeline
    refused: list[InputError] = field(default_factory=list)  # refused at `take` (a frame that failed to decode)

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def _add_audio(self, x: torch.Tensor, rate: int) -> None:
        lim = self.limits
        if rate != NATIVE_RATE:
            if not lim.min_rate <= rate <= lim.max_rate:
                raise InputError("bad_sample_rate", f"sample rate {rate} Hz is outside the supported "
                                 f"{lim.min_rate}..{lim.max_rate} Hz (16000 is native)")
            out = math.ceil(x.numel() * NATIVE_RATE / rate)  # what resampling would add: checked first
            if self.samples + out > lim.max_window_samples:
                raise InputError("input_overflow", f"more than {lim.max_window_samples} samples in one turn window")
            rs = self.resamplers.get(rate)
            if rs is None:
                rs = self.resamplers.setdefault(rate, StreamResampler(rate))
            x = rs.push(x)
        if self.samples + x.numel() > lim.max_window_samples:
            raise InputError("input_overflow", f"more than {lim.max_window_samples} samples in one turn window")
        self.audio.append(x)
        self.samples += x.numel()
        self._count("audio")

    def add(self, item: object) -> None:
        """Add one item to the window or raise InputError (the window is unchanged then)."""
        lim = self.limits
        if isinstance(item, Malformed):
            raise InputError("malformed_message", f"{item.size} bytes did not parse as an InputChunk ({item.reason})")
        if isinstance(item, FloatAudio):
            s = item.samples
            if not isinstance(s, torch.Tensor) or s.dim() != 1 or not s.is_floating_point():
                raise InputError("bad_audio", "float audio must be a 1-D float tensor")
            if not bool(torch.isfinite(s).all()):
                raise InputError("nan_samples", "audio contains NaN or infinite samples")
            self._add_audio(s.to(torch.float32).clamp(-1.0, 1.0), int(item.sample_rate_hz))
            return
        if not isinstance(item, spb.InputChunk):
            raise InputError("malformed_message", f"unexpected input of type {type(item).__name__}")
        kind = item.WhichOneof("payload")
        if kind is None:
            raise InputError("malformed_message", "InputChunk carries no payload")
        if kind == "audio":
            a = item.audio
            ch = a.channels or 1
            if ch > lim.max_channels:
                raise InputError("bad_channels", f"{ch} channels; at most {lim.max_channels} are downmixed")
            if len(a.pcm16) > lim.max_audio_bytes:
                raise InputError("oversize_audio", f"audio chunk of {len(a.pcm16)} bytes exceeds {lim.max_audio_bytes}")
            self._add_audio(pcm16_to_float(a.pcm16, ch), int(a.sample_rate_hz or NATIVE_RATE))
        elif kind == "video":
            check_frame(item.video, lim)  # header only; the newest frame is decoded at `take`
            self.frame = item.video
            self._count("frame")
        elif kind == "text":
            self.text.append(decode_text(item.text, lim))
            self._count("text")
        else:
            c = item.control.kind
            if c == spb.CONTROL_KIND_BARGE_IN:
                self.barge_in = True
            elif c == spb.CONTROL_KIND_STOP:
                self.stop = True
            elif c != spb.CONTROL_KIND_START:
                raise InputError("bad_control", f"unknown control kind {c}")
            self._count(spb.ControlKind.Name(c).removeprefix("CONTROL_KIND_").lower())

    def take(self, context: str = "") -> tuple[TurnInput, dict[str, int]]:
        """Close the window into a TurnInput (+ what arrived) and open an empty one."""
        audio = torch.cat(self.audio) if self.audio else None
        frame = None
        if self.frame is not None:
            try:
                frame = decode_frame(self.frame, self.limits)
            except InputError as exc:  # the header looked right, the data did not decode
                self.refused.append(exc)
            self.frame = None
        inp = TurnInput(audio=audio, frame=frame, text="".join(self.text), context=context,
                        barge_in=self.barge_in)
        counts = dict(self.counts)
        if audio is not None:
            counts["samples"] = int(audio.numel())
        self.audio, self.samples, self.frame, self.text, self.barge_in = [], 0, None, [], False
        self.counts = {}
        return inp, counts
