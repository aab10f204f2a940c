"""ConversationLog: the typed transcript recorder the interaction side appends one turn at a time.

`record_turn` folds per-turn speech of both sides into time-stamped spans: consecutive turns of a
speaker form one utterance; a span that shares a turn with the other side's speech is marked
overlapped; an assistant span cut off by a barge-in is marked interrupted; stretches where nobody
speaks for at least `min_silence_turns` become silence entries. Turns must be recorded in order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from delegation.package import (
    EntryKind,
    Speaker,
    TranscriptEntryModel,
    UserState,
    VisualObservationModel,
)
from interplay.v1 import context_pb2 as xpb


class TranscriptError(ValueError):
    """A turn was recorded out of order or with impossible values."""


@dataclass
class LogConfig:
    turn_ms: int = 200              # length of one micro-turn
    joiner: str = " "               # how per-turn text fragments of one span are joined ("" for byte text)
    min_silence_turns: int = 2      # shorter gaps are not recorded as silence entries
    max_entries: int = 4_096        # closed entries kept (oldest forgotten first; `forgotten` counts)
    max_observations: int = 16      # newest visual observations kept


@dataclass
class _Span:
    speaker: Speaker
    kind: EntryKind
    start_turn: int
    end_turn: int
    texts: list[str] = field(default_factory=list)
    overlapped: bool = False
    interrupted: bool = False
    typed: bool = False
    seq: int = 0


class ConversationLog:
    """Both sides of one session's conversation, as TranscriptEntry spans, oldest first."""

    def __init__(self, session_id: str = "", config: LogConfig | None = None) -> None:
        self.session_id = session_id
        self.config = config or LogConfig()
        self._closed: deque[_Span] = deque()
        self._user: _Span | None = None
        self._assistant: _Span | None = None
        self._silence: _Span | None = None
        self._obs: deque[VisualObservationModel] = deque(maxlen=self.config.max_observations)
        self._last_turn = -1
        self._seq = 0
        self._state = UserState.SILENT
        self.forgotten = 0

    # ---- recording -----------------------------------------------------------------------------
    def record_turn(self, turn: int, *, user_text: str = "", user_speaking: bool | None = None,
                    assistant_text: str = "", assistant_speaking: bool | None = None,
                    typed_text: str = "", barge_in: bool = False) -> None:
        """Record what both sides did in micro-turn `turn` (speaking defaults to 'has text')."""
        if not isinstance(turn, int) or turn < 0:
            raise TranscriptError(f"turn must be a non-negative int, got {turn!r}")
        if turn <= self._last_turn:
            raise TranscriptError(f"turn {turn} recorded after turn {self._last_turn}: turns must increase")
        self._last_turn = turn
        user = bool(user_text) if user_speaking is None else bool(user_speaking)
        assistant = bool(assistant_text) if assistant_speaking is None else bool(assistant_speaking)
        if typed_text:  # typed text is its own one-turn utterance, never merged with speech
            self._add(_Span(Speaker.USER, EntryKind.UTTERANCE, turn, turn, [typed_text], typed=True))
        if barge_in and self._assistant is not None:
            self._assistant.interrupted = True
            self._assistant.end_turn = max(self._assistant.end_turn, turn - 1)
            self._close("_assistant")
            assistant = assistant and bool(assistant_text)
        self._extend("_user", Speaker.USER, user, user_text, turn)
        self._extend("_assistant", Speaker.ASSISTANT, assistant, assistant_text, turn)
        if user and assistant:
            self._user.overlapped = True  # type: ignore[union-attr]
            self._assistant.overlapped = True  # type: ignore[union-attr]
        if user or assistant or typed_text:
            self._close("_silence")
        elif self._silence is None:
            self._silence = _Span(Speaker.SYSTEM, EntryKind.SILENCE, turn, turn, seq=self._next())
        else:
            self._silence.end_turn = turn
        self._state = UserState.INTERRUPTED if barge_in else (UserState.SPEAKING if user else UserState.SILENT)

    def event(self, text: str, turn: int, speaker: Speaker = Speaker.SYSTEM) -> None:
        """A non-verbal event (delegation started, result surfaced, ...) at `turn`."""
        self._add(_Span(speaker, EntryKind.EVENT, turn, turn, [text]))

    def background(self, text: str, turn: int) -> None:
        """A background result woven into the conversation at `turn`."""
        self._add(_Span(Speaker.BACKGROUND, EntryKind.UTTERANCE, turn, turn, [text]))

    def observe(self, description: str, turn: int, image: bytes = b"", mime_type: str = "",
                time_ms: int | None = None) -> None:
        """A visual observation; only the newest `max_observations` are kept."""
        if image and not mime_type:
            raise TranscriptError("an observation with an image needs its mime_type")
        self._obs.append(VisualObservationModel(
            turn=turn, time_ms=turn * self.config.turn_ms if time_ms is None else time_ms,
            description=description, image=image, mime_type=mime_type))

    # ---- reading -------------------------------------------------------------------------------
    @property
    def user_state(self) -> UserState:
        return self._state

    @property
    def last_turn(self) -> int:
        return self._last_turn

    def entries(self) -> list[TranscriptEntryModel]:
        return [self._model(s) for s in self._spans()]

    def to_proto_entries(self) -> list[xpb.TranscriptEntry]:
        return [xpb.TranscriptEntry(**self._kwargs(s)) for s in self._spans()]

    def observations(self) -> list[VisualObservationModel]:
        return list(self._obs)

    def __len__(self) -> int:
        return len(self._spans())

    # ---- internals -----------------------------------------------------------------------------
    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _add(self, span: _Span) -> None:
        span.seq = self._next()
        self._closed.append(span)
        while len(self._closed) > self.config.max_entries:
            self._closed.popleft()
            self.forgotten += 1

    def _extend(self, attr: str, speaker: Speaker, active: bool, text: str, turn: int) -> None:
        span: _Span | None = getattr(self, attr)
        if not active:
            self._close(attr)
            return
        if span is None:
            span = _Span(speaker, EntryKind.UTTERANCE, turn, turn, seq=self._next())
            setattr(self, attr, span)
        span.end_turn = turn
        if text:
            span.texts.append(text)

    def _close(self, attr: str) -> None:
        span: _Span | None = getattr(self, attr)
        if span is None:
            return
        setattr(self, attr, None)
        length = span.end_turn - span.start_turn + 1
        if span.kind == EntryKind.SILENCE and length < self.config.min_silence_turns:
            return
        seq = span.seq
        self._add(span)
        span.seq = seq  # keep the order in which the span began

    def _spans(self) -> list[_Span]:
        spans = list(self._closed)
        spans += [s for s in (self._user, self._assistant, self._silence) if s is not None and not (
            s.kind == EntryKind.SILENCE and s.end_turn - s.start_turn + 1 < self.config.min_silence_turns)]
        spans.sort(key=lambda s: (s.start_turn, s.seq))
        return spans

    def _kwargs(self, s: _Span) -> dict:
        ms = self.config.turn_ms
        text = "" if s.kind == EntryKind.SILENCE else self.config.joiner.join(s.texts)
        return dict(speaker=int(s.speaker), kind=int(s.kind), text=text, start_ms=s.start_turn * ms,
                    end_ms=(s.end_turn + 1) * ms, start_turn=s.start_turn, end_turn=s.end_turn,
                    overlapped=s.overlapped, interrupted=s.interrupted, typed=s.typed)

    def _model(self, s: _Span) -> TranscriptEntryModel:
        return TranscriptEntryModel(**self._kwargs(s))
