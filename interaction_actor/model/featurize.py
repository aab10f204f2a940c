"""The one featurizer: what a turn's raw inputs become in the turn's input slots.

`featurize_turn(streams, inp, cfg, layout, start, lookup)` takes one turn's inputs (audio, frame,
typed text, context) and the input side's streaming state (`InputStreams`: the dMel stream and the
text and context slot queues) and returns `TurnFeatures`: dMel rows and which of them hold audio,
image patches, and the bytes of the text and context slots with their history ids. It registers
those bytes with the copy Lookup at their absolute positions (`start`: the first position of the
turn's block). The streaming session (session.step_batch) and the trainer (train.featurize) both
call it, so training sees exactly what a live session writes; `TurnFeatures.slots()` are the
keyword arguments of layout.turn_chunk, which lays the block out.

Bytes waiting for slots are bounded (MAX_PENDING_BYTES per queue): beyond that the newest bytes of
a message are dropped, counted in `InputStreams.dropped_bytes` and logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from interaction_actor.model import text as T
from interaction_actor.model.config import ModelConfig
from interaction_actor.model.dmel import DMelStream, dmel_stream_push
from interaction_actor.model.hmlp import frame_to_patches
from interaction_actor.model.layout import HIST_START, Lookup, TurnLayout, queue_message, take_slots
from interplay.log import get_logger

log = get_logger("interaction_actor.model.featurize")

MAX_PENDING_BYTES = 65536  # text / context waiting for slots; beyond this the newest bytes are dropped


@dataclass
class InputStreams:
    """The input side's streaming state: the dMel stream and the bytes waiting for text/context slots."""

    dmel: DMelStream = field(default_factory=DMelStream)
    text_queue: list[tuple[int, int, int]] = field(default_factory=list)  # (byte, history ids)
    ctx_queue: list[tuple[int, int, int]] = field(default_factory=list)
    dropped_bytes: int = 0


@dataclass
class TurnFeatures:
    """One turn's input slots, before layout."""

    dmel: torch.Tensor  # [frames, n_mels] long
    has_audio: torch.Tensor  # [frames] bool
    patches: torch.Tensor | None  # [patches, 40, 40, 3] or None (no frame this turn)
    text_ids: list[int]
    text_hist: list[tuple[int, int]]
    ctx_ids: list[int]
    ctx_hist: list[tuple[int, int]]

    def slots(self) -> dict:
        """The input-slot keyword arguments of layout.turn_chunk."""
        return {"dmel": self.dmel, "has_audio": self.has_audio, "patches": self.patches, "text_ids": self.text_ids,
                "context_ids": self.ctx_ids, "text_hist": self.text_hist, "context_hist": self.ctx_hist}


def enqueue(streams: InputStreams, queue: list[tuple[int, int, int]], text: str, session_id: str = "") -> None:
    """Queue one message's bytes for the slots (bounded; see the module docstring)."""
    if not isinstance(text, str):
        raise TypeError("text and context must be str")
    ids = T.encode(text)
    room = MAX_PENDING_BYTES - len(queue)
    if len(ids) > room:
        streams.dropped_bytes += len(ids) - max(room, 0)
        log.warning("session_text_dropped", session_id=session_id, bytes=len(ids) - max(room, 0))
        ids = ids[: max(room, 0)]
    queue_message(queue, ids)


_NO_MARKERS = {ord(c): None for c in T.MODE_MARKERS}


def _strip_markers(text: str) -> str:
    return text.translate(_NO_MARKERS) if text else text


def enqueue_context(streams: InputStreams, context: str, session_id: str = "") -> None:
    """Queue background context, one message per line: its surfacing-mode marker (T.CTX_*; a line
    without one is T.CTX_IDLE, voiced at the next pause) as a message of its own, then the line's text
    as the next message, so that the copy Lookup offers the text, not the marker."""
    for line in context.split("\n"):
        if not line:
            continue
        mark = line[0] if line[0] in T.MODE_MARKERS else T.CTX_IDLE
        body = _strip_markers(line)
        if body.strip():
            enqueue(streams, streams.ctx_queue, mark, session_id)
            enqueue(streams, streams.ctx_queue, body, session_id)


def _ends_here(queue: list[tuple[int, int, int]]) -> bool:
    """After a turn took its slots: the message it took the last bytes of is complete (nothing of it waits)."""
    return not queue or queue[0][1] == HIST_START


def featurize_turn(streams: InputStreams, inp, cfg: ModelConfig, layout: TurnLayout, start: int, lookup: Lookup,
                   session_id: str = "") -> TurnFeatures:
    """One turn's inputs (`inp`: .audio, .frame, .text, .heard, .context) -> its input slots; advances
    `streams`. Typed text and what the ears heard share the text-in slots (typed first)."""
    dm, has_audio = dmel_stream_push(streams.dmel, inp.audio, cfg)
    patches = frame_to_patches(inp.frame, cfg) if inp.frame is not None else None
    enqueue(streams, streams.text_queue, _strip_markers(inp.text), session_id)
    enqueue(streams, streams.text_queue, _strip_markers(inp.heard), session_id)
    if not isinstance(inp.context, str):
        raise TypeError("text and context must be str")
    enqueue_context(streams, inp.context, session_id)
    text_ids, text_hist = take_slots(streams.text_queue, layout.text_in)
    ctx_ids, ctx_hist = take_slots(streams.ctx_queue, layout.context)
    lookup.add(start + layout.text, text_ids, text_hist, context=False, complete=_ends_here(streams.text_queue))
    lookup.add(start + layout.ctx, ctx_ids, ctx_hist, context=True, complete=_ends_here(streams.ctx_queue))
    return TurnFeatures(dm, has_audio, patches, text_ids, text_hist, ctx_ids, ctx_hist)
