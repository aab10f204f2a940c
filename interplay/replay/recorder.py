"""Recorder: the turn loop's hook that writes each session in the replay format (format.py).

Given, per session and turn, on the loop's asyncio thread: `gathered(live, turn, items, updates,
heard, refused)` — the raw inputs taken into the window, the background updates drained at the
boundary, the ears' events, the overflow count — then `emitted(live, chunk, task, user, typed)` —
the chunk the turn produced, the backend's delegate task and confidence, the user's state and the
typed text; `closed(live)` at the session's end. Returns nothing; keeps the sessions in memory
(`keep=True`: the replay player reads them back from `sessions`) and/or streams each to
`<out_dir>/<session id>.replay.jsonl.gz`, one line per turn as it ends.

It must never stop the clock: it does no blocking work beyond a buffered (compressed) line write,
and a failure to write is logged once per session and recording of that session stops.
A session is recorded from the LoopConfig's `record_dir` (any serve or demo session); a client that
wants its own session saved asks the server to record (see the README's "Replay" section).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

from interplay.log import get_logger
from interplay.replay.format import ReplaySession, encode_item, header, message_dict
from interplay.v1 import session_pb2 as spb

log = get_logger("interplay.replay.recorder")


def policy_label(policy: object, options: dict | None = None) -> object:
    """The policy spec as JSON-able data: a name (with its options: {"policy": name, **options}) or an
    options dict as given, else the object's name."""
    if isinstance(policy, str):
        if options:
            return policy_label({"policy": policy, **options})
        return policy
    if isinstance(policy, dict):
        try:
            json.dumps(policy)
            return policy
        except TypeError:
            pass
    return str(getattr(policy, "name", type(policy).__name__))


def output_record(chunk: spb.OutputChunk, task: tuple[str | None, float | None], user: object,
                  typed: str) -> dict[str, Any]:
    """What one turn produced, as the replay format's `out`."""
    pcm = chunk.audio.pcm16
    conf = task[1]
    return {"text": chunk.text,
            "controls": [spb.ControlToken.Name(c).removeprefix("CONTROL_TOKEN_").lower() for c in chunk.controls],
            "task": task[0], "confidence": None if conf is None else float(conf),
            "user": str(getattr(user, "name", user)).lower(), "typed": typed,
            "audio_samples": len(pcm) // 2, "audio_sha1": hashlib.sha1(pcm).hexdigest() if pcm else "",
            "events": [message_dict(e) for e in chunk.events]}


class Recorder:
    def __init__(self, out_dir: str | Path | None, *, turn_ms: int, backend: object = None,
                 policy: object = None, policy_options: dict | None = None, keep: bool = False,
                 source: str = "live") -> None:
        self.dir = Path(out_dir) if out_dir else None
        self.turn_ms = turn_ms
        self.backend = type(backend).__name__ if backend is not None else ""
        self.policy = policy_label(policy, policy_options) if policy is not None else ""
        self.keep = keep
        self.source = source
        self.sessions: dict[str, ReplaySession] = {}  # every session seen (kept only with keep=True)
        self.paths: dict[str, Path] = {}  # session id -> its file
        self._open: dict[str, ReplaySession] = {}
        self._pending: dict[str, dict[str, Any]] = {}
        self._files: dict[str, Any] = {}
        self._dead: set[str] = set()  # sessions whose recording failed: not recorded again

    # ---- the loop's hooks ----------------------------------------------------------------------
    def gathered(self, live, turn: int, items: list, updates: list, heard: list[spb.Event], refused: int) -> None:
        if live.id in self._dead:
            return
        try:
            if live.id not in self._open:
                self.start(live)
            rec: dict[str, Any] = {"turn": int(turn), "in": [encode_item(i) for i in items]}
            if updates:
                rec["updates"] = [message_dict(u) for u in updates]
            if heard:
                rec["heard"] = [message_dict(e) for e in heard]
            if refused:
                rec["refused"] = int(refused)
            if live.stopping:
                rec["stopping"] = True
                rec["stop_reason"] = live.stop_reason
            self._pending[live.id] = rec
        except Exception as exc:  # noqa: BLE001 - recording never stops the clock
            self._failed(live.id, exc)

    def emitted(self, live, chunk: spb.OutputChunk, task: tuple[str | None, float | None], user: object,
                typed: str) -> None:
        rec = self._pending.pop(live.id, None)
        if rec is None:
            return
        try:
            rec["out"] = output_record(chunk, task, user, typed)
            self._write(live.id, rec)
        except Exception as exc:  # noqa: BLE001
            self._failed(live.id, exc)

    def closed(self, live) -> None:
        self._dead.discard(live.id)
        rec = self._pending.pop(live.id, None)
        if rec is not None:  # gathered, never emitted (its step failed)
            self._write(live.id, rec)
        self._open.pop(live.id, None)
        f = self._files.pop(live.id, None)
        if f is not None:
            try:
                f.close()
                log.info("session_recorded", session_id=live.id, path=str(self.paths[live.id]))
            except OSError as exc:
                log.warning("session_record_failed", session_id=live.id, error=repr(exc))

    def annotate(self, session_id: str, **fields: Any) -> None:
        """Add header fields (e.g. `requests`) to a kept session."""
        self.sessions[session_id].header.update(fields)

    # ---- inside ----------------------------------------------------------------------------------
    def start(self, live) -> Path | None:
        """Begin recording the session (the loop calls it as the session opens; `gathered` does if
        nobody did): its header is written; returns its file (None when only kept in memory)."""
        if live.id in self._open:
            return self.paths.get(live.id)
        s = ReplaySession(header(live.id, self.turn_ms, origin_unix_ms=int(time.time() * 1000), backend=self.backend,
                                 policy=self.policy, source=self.source,
                                 recorded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
        self._open[live.id] = s
        if self.keep:
            self.sessions[live.id] = s
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            stem = re.sub(r"[^A-Za-z0-9_.-]", "_", live.id) or "session"
            path, n = self.dir / f"{stem}.replay.jsonl.gz", 1
            while path.exists():
                n += 1
                path = self.dir / f"{stem}-{n}.replay.jsonl.gz"
            f = gzip.open(path, "wt", encoding="utf-8")  # noqa: SIM115 - open for the session's life, closed in closed()
            f.write(json.dumps(s.header, separators=(",", ":")) + "\n")
            self._files[live.id], self.paths[live.id] = f, path
        return self.paths.get(live.id)

    def _write(self, sid: str, rec: dict[str, Any]) -> None:
        s = self._open.get(sid)
        if s is None:
            return
        if self.keep:
            s.turns.append(rec)
        f = self._files.get(sid)
        if f is not None:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def _failed(self, sid: str, exc: BaseException) -> None:
        log.error("session_record_failed", session_id=sid, error=repr(exc))
        self._dead.add(sid)
        self._open.pop(sid, None)
        self._pending.pop(sid, None)
        f = self._files.pop(sid, None)
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
