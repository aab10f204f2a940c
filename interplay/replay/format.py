"""The replay format: one session as JSON lines, versioned — what the turn loop's step saw and made.

A file (`*.replay.jsonl`, or gzip-compressed `*.replay.jsonl.gz`) holds:

line 1, the header:
    {"format": "interplay.replay", "version": 1, "session_id": str, "turn_ms": int,
     "origin_unix_ms": int (wall clock at turn 0: the scheduler's clock in replay),
     "backend": str, "policy": str | object, "source": "live" | "synthetic" | "scenario",
     "requests": [...], "background": {...}, "meta": {...}}
  `requests` (optional, the study's ground truth): one per user request,
    {"turn": int, "text": str, "needs_background": bool, "answer": str}
  `background` (optional, the stand-in's plan for delegations nothing was recorded for):
    {"latency_turns": [int, ...] (one per request, in order), "accept_turns": int, "failure": [bool, ...]}
lines 2..: one per turn the session stepped, in order:
    {"turn": int,
     "in": [item, ...],            the raw inputs taken into the turn's window, in arrival order:
        {"audio": base64 PCM16 LE, "rate": int, "channels": int}  |  {"silence": bytes, "rate", "channels"}
        (an all-zero chunk, stored as its length) | {"text": str} | {"control": "barge_in"|"stop"|"start"}
        | {"chunk": base64 InputChunk} (any other chunk: frames, raw-encoded text)
        | {"float_audio": base64 float32 LE, "rate": int} | {"malformed": size, "reason": str}
     "updates": [Update, ...],      background updates drained at this turn's boundary (protobuf JSON,
                                    interplay.v1.Update); their task ids are the live ones
     "heard": [Event, ...],         what the ears delivered at this boundary (USER_TRANSCRIPT and
                                    transcriber_failed ERROR events, protobuf JSON)
     "refused": int,                inputs refused for overflow before this window (0: key left out)
     "stopping": bool,              the session was asked to stop before this turn (STOP, half-close)
     "out": {                       what the turn produced (absent in an input-only session):
        "text": str, "controls": [name], "task": str | null, "confidence": float | null,
        "user": "silent"|"speaking"|"interrupted", "typed": str,
        "audio_samples": int, "audio_sha1": hex (of the PCM16 bytes: bit-for-bit comparable),
        "events": [Event, ...]}}

Version 1 is this layout; a reader refuses any other version with a one-line error. Nothing here
touches the loop: `encode_item`/`decode_item` convert one raw input, `write_session`/`read_session`
a whole file. Files stay small: silence is a length, and `.gz` compresses the rest.
"""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from google.protobuf.json_format import MessageToDict, ParseDict

from interplay.v1 import background_pb2 as bpb
from interplay.v1 import session_pb2 as spb

FORMAT = "interplay.replay"
VERSION = 1
_CONTROLS = {spb.CONTROL_KIND_BARGE_IN: "barge_in", spb.CONTROL_KIND_STOP: "stop", spb.CONTROL_KIND_START: "start"}
_CONTROL_KINDS = {v: k for k, v in _CONTROLS.items()}


class ReplayFormatError(ValueError):
    """A file that is not a replay session of a version this reader knows (the message says why)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_item(item: object) -> dict[str, Any]:
    """One raw loop input as a JSON-able dict (see the module docstring)."""
    if isinstance(item, spb.InputChunk):
        kind = item.WhichOneof("payload")
        if kind == "audio":
            a = item.audio
            base = {"rate": int(a.sample_rate_hz), "channels": int(a.channels)}
            if a.pcm16 and not a.pcm16.strip(b"\x00"):
                return {"silence": len(a.pcm16), **base}
            return {"audio": _b64(a.pcm16), **base}
        if kind == "text" and not item.text.raw:
            return {"text": item.text.text}
        if kind == "control" and item.control.kind in _CONTROLS:
            return {"control": _CONTROLS[item.control.kind]}
        return {"chunk": _b64(item.SerializeToString())}
    samples = getattr(item, "samples", None)
    if isinstance(samples, torch.Tensor):  # inputs.FloatAudio
        return {"float_audio": _b64(samples.detach().to(torch.float32).contiguous().numpy().tobytes()),
                "rate": int(item.sample_rate_hz)}
    if hasattr(item, "size") and hasattr(item, "reason"):  # inputs.Malformed
        return {"malformed": int(item.size), "reason": str(item.reason)}
    return {"malformed": 0, "reason": f"unrecordable {type(item).__name__}"}


def decode_item(d: dict[str, Any]) -> object:
    """The raw loop input a dict of `encode_item` stands for."""
    from interaction_actor.runtime.inputs import FloatAudio, Malformed  # noqa: PLC0415 - the loop's own types

    if "audio" in d or "silence" in d:
        pcm = base64.b64decode(d["audio"]) if "audio" in d else bytes(int(d["silence"]))
        return spb.InputChunk(audio=spb.AudioChunk(pcm16=pcm, sample_rate_hz=d.get("rate", 0),
                                                   channels=d.get("channels", 0)))
    if "text" in d:
        return spb.InputChunk(text=spb.TextInput(text=d["text"]))
    if "control" in d:
        return spb.InputChunk(control=spb.Control(kind=_CONTROL_KINDS[d["control"]]))
    if "chunk" in d:
        return spb.InputChunk.FromString(base64.b64decode(d["chunk"]))
    if "float_audio" in d:
        x = torch.frombuffer(bytearray(base64.b64decode(d["float_audio"])), dtype=torch.float32).clone()
        return FloatAudio(x, int(d.get("rate", 16000)))
    if "malformed" in d:
        return Malformed(size=int(d["malformed"]), reason=str(d.get("reason", "")))
    raise ReplayFormatError(f"unknown input item with keys {sorted(d)}")


def message_dict(msg: Any) -> dict[str, Any]:
    return MessageToDict(msg, preserving_proto_field_name=True)


def update_of(d: dict[str, Any]) -> bpb.Update:
    return ParseDict(d, bpb.Update())


def event_of(d: dict[str, Any]) -> spb.Event:
    return ParseDict(d, spb.Event())


@dataclass
class ReplaySession:
    """A session read from (or about to be written to) a replay file."""

    header: dict[str, Any]
    turns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return str(self.header.get("session_id", ""))

    @property
    def turn_ms(self) -> int:
        return int(self.header.get("turn_ms", 200))

    @property
    def requests(self) -> list[dict[str, Any]]:
        return list(self.header.get("requests", []))

    def outputs(self) -> list[dict[str, Any] | None]:
        return [t.get("out") for t in self.turns]


def header(session_id: str, turn_ms: int, **more: Any) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "session_id": session_id, "turn_ms": int(turn_ms), **more}


def _open(path: Path, mode: str):
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def write_session(session: ReplaySession, path: str | Path) -> Path:
    """Write a whole session (header, then one line per turn); `.gz` paths are compressed."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with _open(p, "w") as f:
        f.write(json.dumps(session.header, separators=(",", ":")) + "\n")
        for t in session.turns:
            f.write(json.dumps(t, separators=(",", ":")) + "\n")
    return p


def check_header(h: Any, source: str) -> dict[str, Any]:
    if not isinstance(h, dict) or h.get("format") != FORMAT:
        raise ReplayFormatError(f"{source}: not an interplay replay session (no '{FORMAT}' header)")
    if h.get("version") != VERSION:
        raise ReplayFormatError(f"{source}: replay format version {h.get('version')!r}; this reader knows {VERSION}")
    return h


def read_session(path: str | Path) -> ReplaySession:
    """A session from its file; ReplayFormatError names the file and what is wrong."""
    p = Path(path)
    try:
        with _open(p, "r") as f:
            lines = [ln for ln in f if ln.strip()]
    except FileNotFoundError as exc:
        raise ReplayFormatError(f"{p}: no such replay file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ReplayFormatError(f"{p}: not readable as a replay file: {exc}") from exc
    if not lines:
        raise ReplayFormatError(f"{p}: empty file")
    try:
        rows = [json.loads(ln) for ln in lines]
    except json.JSONDecodeError as exc:
        raise ReplayFormatError(f"{p}: line {exc.lineno}: not JSON") from exc
    return ReplaySession(check_header(rows[0], str(p)), rows[1:])


def annotate(path: str | Path, **fields: Any) -> Path:
    """Add or replace header fields of a session file (e.g. the `requests` a recorder could not know)."""
    s = read_session(path)
    s.header.update(fields)
    return write_session(s, path)


def read_sessions(spec: str | Path | list) -> list[ReplaySession]:
    """Sessions from a file, a folder (every *.replay.jsonl[.gz], sorted) or a list of these."""
    if isinstance(spec, (list, tuple)):
        return [s for item in spec for s in read_sessions(item)]
    p = Path(spec)
    if p.is_dir():
        files = sorted([*p.glob("*.replay.jsonl"), *p.glob("*.replay.jsonl.gz")])
        if not files:
            raise ReplayFormatError(f"{p}: no *.replay.jsonl[.gz] files")
        return [read_session(f) for f in files]
    return [read_session(p)]


__all__ = ["FORMAT", "VERSION", "ReplayFormatError", "ReplaySession", "annotate", "decode_item", "encode_item", "event_of",
           "header", "message_dict", "read_session", "read_sessions", "update_of", "write_session"]
