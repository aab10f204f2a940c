"""The WebSocket bridge: one browser page ↔ one Session.Converse stream.

Given an accepted-to-be WebSocket (Starlette) and the Session service's address, `Bridge.run(ws)`
opens one Converse stream for the page (interplay.client.SessionClient) and pumps both ways until
either side ends; it returns nothing and never raises on what the page sends.

The page's messages (the wire of interplay/web/static/app.js):
  - binary, first byte a tag: 0x01 + PCM16 little-endian mono 16 kHz samples (a microphone frame),
    0x02 + a JPEG image (a camera frame);
  - text, one JSON object: {"type": "text", "text": "..."} (typed), {"type": "barge_in"},
    {"type": "stop"} (end the session after its next turn).
The bridge's messages to the page: per turn one JSON object {"type": "turn", ...} — the output
chunk as `interplay.demo.chunk_record` writes it (proto field names, enums by name), plus
`audio_samples` and `audio_rate`; when the turn has audio, a binary message follows: 0x01 + PCM16.
Also {"type": "session", "session_id"} first, {"type": "error", "code", "message"} for a frame the
bridge refused, and {"type": "closed", "reason"} before the bridge closes the socket itself.

What it must never do: die on a bad frame (an unknown tag, odd-length or oversize audio, a non-JPEG
image, text that is not JSON or names an unknown type: each is one `bad_frame` error message and the
socket stays open); buffer without bound (the page → session side awaits the client's bounded queue,
so a stalled gRPC stream stops the socket's reads and TCP pushes back on the page; the session → page
side awaits each send, so a page that reads slowly stops the stream's reads and the server's bounded
output queue drops that session's oldest chunks, reported as OUTPUT_DROPPED); outlive the tab (a
closed socket cancels the Converse call at once, which ends the session on the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass

import grpc

from interplay.client import SessionClient, UserError, control, text_chunk
from interplay.log import get_logger
from interplay.v1 import session_pb2 as spb

log = get_logger("interplay.web.bridge")

TAG_AUDIO = 0x01
TAG_JPEG = 0x02
SAMPLE_RATE = 16_000


@dataclass
class BridgeConfig:
    session_address: str
    max_pending: int = 64  # input chunks queued toward the session before the page's reads stop (~1.3 s of mic)
    max_audio_bytes: int = 64_000  # one mic frame: 2 s of 16 kHz PCM16 at most
    max_image_bytes: int = 2_000_000  # one camera frame
    max_text_chars: int = 4_000
    max_message_bytes: int = 16 << 20  # the socket's own limit: above it the WebSocket protocol closes the
    # socket (1009), so it sits far above the per-kind limits, which answer with a bad_frame error instead
    connect_timeout_s: float = 5.0


class BadFrame(ValueError):
    """A message from the page that the bridge refuses; its text goes back to the page."""


def decode(cfg: BridgeConfig, message: dict) -> spb.InputChunk | None:
    """One ASGI `websocket.receive` message → the InputChunk it asks for (None: nothing to send).
    Raises BadFrame for anything else."""
    data = message.get("bytes")
    if data is not None:
        if not data:
            raise BadFrame("empty binary message")
        tag, body = data[0], data[1:]
        if tag == TAG_AUDIO:
            if len(body) % 2:
                raise BadFrame(f"audio frame of {len(body)} bytes: PCM16 needs an even count")
            if not body or len(body) > cfg.max_audio_bytes:
                raise BadFrame(f"audio frame of {len(body)} bytes: give 2..{cfg.max_audio_bytes}")
            return spb.InputChunk(audio=spb.AudioChunk(pcm16=body, sample_rate_hz=SAMPLE_RATE, channels=1))
        if tag == TAG_JPEG:
            if not body.startswith(b"\xff\xd8") or len(body) > cfg.max_image_bytes:
                raise BadFrame(f"camera frame of {len(body)} bytes is not a JPEG under {cfg.max_image_bytes} bytes")
            return spb.InputChunk(video=spb.VideoFrame(data=body, encoding=spb.FRAME_ENCODING_JPEG))
        raise BadFrame(f"unknown binary tag 0x{tag:02x} (0x01 audio, 0x02 jpeg)")
    text = message.get("text")
    if text is None:
        raise BadFrame("a message with neither text nor bytes")
    try:
        obj = json.loads(text)
    except ValueError:
        raise BadFrame("a text message must be one JSON object") from None
    kind = obj.get("type") if isinstance(obj, dict) else None
    if kind == "text":
        said = obj.get("text")
        if not isinstance(said, str) or not said.strip() or len(said) > cfg.max_text_chars:
            raise BadFrame(f"text must be a non-empty string of at most {cfg.max_text_chars} characters")
        return text_chunk(said)
    if kind == "barge_in":
        return control(spb.CONTROL_KIND_BARGE_IN)
    if kind == "stop":
        return control(spb.CONTROL_KIND_STOP)
    raise BadFrame(f"unknown message type {kind!r} (text, barge_in, stop)")


def turn_message(chunk: spb.OutputChunk) -> dict:
    """An output chunk as the page reads it (the timeline.jsonl record, plus the audio's size)."""
    from interplay.demo import chunk_record

    return {"type": "turn", **chunk_record(chunk), "audio_samples": len(chunk.audio.pcm16) // 2,
            "audio_rate": int(chunk.audio.sample_rate_hz or SAMPLE_RATE)}


class Bridge:
    """Bridges pages to one Session service; `open_streams` counts the Converse streams it holds now."""

    def __init__(self, cfg: BridgeConfig) -> None:
        self.cfg = cfg
        self.open_streams = 0
        self.bad_frames = 0
        self.stopping = asyncio.Event()  # set on the bridge's loop: every page is told and let go

    async def run(self, ws) -> None:
        """Serve one page until it goes or its session ends (the caller has not accepted `ws` yet)."""
        await ws.accept()
        send_lock = asyncio.Lock()

        async def send(obj: dict | bytes) -> None:
            async with send_lock:
                if isinstance(obj, bytes):
                    await ws.send_bytes(obj)
                else:
                    await ws.send_text(json.dumps(obj))

        record = str(getattr(ws, "query_params", {}).get("record", "")).lower() in ("1", "true", "yes")
        client = SessionClient(self.cfg.session_address, max_pending=self.cfg.max_pending,
                               connect_timeout_s=self.cfg.connect_timeout_s, record=record)
        try:
            await client.__aenter__()
        except UserError as exc:
            await send({"type": "error", "code": "unavailable", "message": str(exc)})
            await client.close()
            with contextlib.suppress(Exception):
                await ws.close(1011)
            return
        self.open_streams += 1
        log.info("page_connected", session_id=client.session_id, open_streams=self.open_streams)
        await send({"type": "session", "session_id": client.session_id})
        up = asyncio.create_task(self._page_to_session(ws, client, send))
        down = asyncio.create_task(self._session_to_page(client, send))
        stop = asyncio.create_task(self.stopping.wait())
        reason = "page closed"
        try:
            done, _ = await asyncio.wait({up, down, stop}, return_when=asyncio.FIRST_COMPLETED)
            if up in done:
                pass  # the page went (a failed send to it ends `down` too: still the page's doing)
            elif stop in done:
                reason = "the page server is shutting down"
            elif (exc := down.exception()) is None:
                reason = "session ended"
            else:
                detail = f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.aio.AioRpcError) else repr(exc)
                reason = f"session stream failed ({detail})"
        finally:
            for t in (up, down, stop):
                t.cancel()
            await asyncio.gather(up, down, stop, return_exceptions=True)
            await client.close()  # cancels the Converse call: the server ends the session
            self.open_streams -= 1
            log.info("page_disconnected", session_id=client.session_id, reason=reason, open_streams=self.open_streams)
        if reason != "page closed":
            with contextlib.suppress(Exception):
                await send({"type": "closed", "reason": reason})
                await ws.close(1000)

    async def _page_to_session(self, ws, client: SessionClient, send) -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                chunk = decode(self.cfg, message)
            except BadFrame as exc:
                self.bad_frames += 1
                log.warning("bad_frame", session_id=client.session_id, error=str(exc))
                await send({"type": "error", "code": "bad_frame", "message": str(exc)})
                continue
            if chunk is not None:
                await client.send(chunk)  # bounded queue: waits when the stream is behind

    async def _session_to_page(self, client: SessionClient, send) -> None:
        async for chunk in client.chunks():
            await send(turn_message(chunk))
            if chunk.audio.pcm16:
                await send(bytes([TAG_AUDIO]) + chunk.audio.pcm16)
