"""ConversationLog: the typed transcript recorder the interaction side appends one turn at a time.

`record_turn` folds per-turn speech of both sides into time-stamped spans: consecutive turns of a
speaker form one utterance; a span that shares a turn with the other side's speech is marked
overlapped; an assistant span cut off by a barge-in is marked interrupted; stretches where nobody
speaks for at least `min_silence_turns` become silence entries. Turns must be recorded in order.

Bounded whatever the session length: a span closes (and the speaker's next turn opens a new one)
once it covers `max_span_turns` turns or holds `max_entry_bytes` of text; the window keeps at most
`max_entries` closed entries and `max_window_bytes` of their text, and every entry that falls out
of it, oldest first, is folded into a rolling extractive `Digest` (delegation/digest.py: counts,
span, the opening's and the newest gists, bounded bytes) that goes into every package. Visual
observations: the newest `max_observations` described ones (`observe`) and up to `max_frames`
received video frames (`observe_frame`: a reference, nothing decoded; thumbnailed at build time).

`snapshot()` is what the package builder reads: an immutable view (closed spans are never changed
once closed and are shared; open ones are copied) taken on the recording thread in O(window) pointer
copies, so the build itself can run on another thread while recording goes on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from delegation.digest import Digest, DigestConfig
from delegation.frames import FrameConfig, FrameObservation
from delegation.mirror import EntryKind, Speaker, TranscriptEntryModel, UserState, VisualObservationModel
from interplay.v1 import context_pb2 as xpb


class TranscriptError(ValueError):
    """A turn was recorded out of order or with impossible values."""


@dataclass
class LogConfig:
    turn_ms: int = 200              # length of one micro-turn
    joiner: str = " "               # how per-turn text fragments of one span are joined ("" for byte text)
    min_silence_turns: int = 2      # shorter gaps are not recorded as silence entries
    max_entries: int = 4_096        # closed entries in the window (older ones are folded into the digest)
    max_window_bytes: int = 262_144  # text bytes of the window's closed entries (the same)
    max_entry_bytes: int = 2_048    # a speaker's span closes at this much text; the next turn starts another
    max_span_turns: int = 300       # ... or at this many turns (60 s at 200 ms)
    max_observations: int = 16      # newest described observations kept
    max_frames: int = 2             # newest received video frames kept, at least frame_gap_turns apart
    frame_gap_turns: int = 10
    digest: DigestConfig = field(default_factory=DigestConfig)
    frames: FrameConfig = field(default_factory=FrameConfig)


@dataclass
class _Span:
    speaker: Speaker
    kind: EntryKind
    start_turn: int
    end_turn: int
    texts: list[str] = field(default_factory=list)  # fragments while open; joined into `text` at close
    overlapped: bool = False
    interrupted: bool = False
    typed: bool = False
    confidence: float | None = None  # heard speech: the recogniser's; None: 1 when it has words, else 0
    seq: int = 0  # order of opening: breaks ties between spans that start in the same turn
    text: str = ""
    nbytes: int = 0  # UTF-8 bytes of the text

    @property
    def key(self) -> tuple[int, int]:
        return (self.start_turn, self.seq)


@dataclass(frozen=True)
class LogSnapshot:
    """An immutable view of a ConversationLog at one moment (what build_package reads)."""

    session_id: str
    user_state: UserState
    last_turn: int
    spans: list[_Span]  # the window, oldest first
    digest: Digest      # the entries folded out of the window before it
    observed: list[Any]  # VisualObservationModel and FrameObservation, oldest first
    turn_ms: int

    def __len__(self) -> int:
        return len(self.spans)

    def snapshot(self) -> LogSnapshot:
        return self

    def entry(self, i: int) -> xpb.TranscriptEntry:
        """The i-th entry of the window (oldest first), as a proto."""
        return xpb.TranscriptEntry(**_kwargs(self.spans[i], self.turn_ms))

    def to_proto_entries(self) -> list[xpb.TranscriptEntry]:
        return [self.entry(i) for i in range(len(self.spans))]

    def observations(self) -> list[Any]:
        return list(self.observed)


def _kwargs(s: _Span, ms: int) -> dict:
    return dict(speaker=int(s.speaker), kind=int(s.kind), text="" if s.kind == EntryKind.SILENCE else s.text,
                start_ms=s.start_turn * ms, end_ms=(s.end_turn + 1) * ms, start_turn=s.start_turn,
                end_turn=s.end_turn, overlapped=s.overlapped, interrupted=s.interrupted, typed=s.typed,
                confidence=s.confidence if s.confidence is not None else (1.0 if s.text else 0.0))


class ConversationLog:
    """Both sides of one session's conversation, as TranscriptEntry spans, oldest first."""

    def __init__(self, session_id: str = "", config: LogConfig | None = None) -> None:
        self.session_id = session_id
        self.config = config or LogConfig()
        self._closed: deque[_Span] = deque()  # sorted by (start_turn, seq)
        self._closed_bytes = 0
        self._user: _Span | None = None
        self._assistant: _Span | None = None
        self._silence: _Span | None = None
        self._obs: deque[VisualObservationModel] = deque(maxlen=self.config.max_observations)
        self._frames: deque[FrameObservation] = deque(maxlen=2 * max(0, self.config.max_frames))
        self._digest = Digest(self.config.digest)
        self._last_turn = -1
        self._seq = 0
        self._state = UserState.SILENT

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
        for attr in ("_user", "_assistant"):  # a span at its bound closes; the next turn opens another
            s = getattr(self, attr)
            if s is not None and (s.nbytes >= self.config.max_entry_bytes
                                  or s.end_turn - s.start_turn + 1 >= self.config.max_span_turns):
                self._close(attr)
        self._state = UserState.INTERRUPTED if barge_in else (UserState.SPEAKING if user else UserState.SILENT)

    def heard(self, text: str, start_turn: int, end_turn: int, confidence: float) -> None:
        """What the user said in turns start..end as the speech recogniser heard it. It arrives after
        those turns were recorded (as speech without words), so it stands as a span of its own, in
        order, spoken (typed False) with the recogniser's confidence."""
        if not text.strip() or start_turn < 0 or end_turn < start_turn:
            return
        self._add(_Span(Speaker.USER, EntryKind.UTTERANCE, start_turn, end_turn, [text],
                        confidence=float(confidence), seq=self._next()))

    def carry_over(self, entries: list[xpb.TranscriptEntry], summary: str = "") -> int:
        """The conversation of this session before it came here (another actor served it: the session
        router moved it). `entries` (oldest first, in the old numbering) enter the window before
        everything recorded here: shifted so that the newest ends at turn -1 (negative turns and times
        are before this log's turn 0); `summary` (what the sender had already folded away) becomes a
        system event before them. Call it before the first `record_turn`. Returns the entries added."""
        if self._last_turn >= 0:
            raise TranscriptError("carry_over must come before the first recorded turn")
        if not entries and not summary:
            return 0
        shift = -1 - max((e.end_turn for e in entries), default=-1)
        first = min((e.start_turn for e in entries), default=0) + shift
        if summary:
            self._add(_Span(Speaker.SYSTEM, EntryKind.EVENT, first - 1, first - 1, [summary]))
        for e in entries:
            self._add(_Span(Speaker(e.speaker), EntryKind(e.kind), e.start_turn + shift, e.end_turn + shift,
                            [e.text] if e.text else [], overlapped=e.overlapped, interrupted=e.interrupted,
                            typed=e.typed, confidence=e.confidence))
        return len(entries)

    def event(self, text: str, turn: int, speaker: Speaker = Speaker.SYSTEM) -> None:
        """A non-verbal event (delegation started, result surfaced, ...) at `turn`."""
        self._add(_Span(speaker, EntryKind.EVENT, turn, turn, [text]))

    def background(self, text: str, turn: int) -> None:
        """A background result woven into the conversation at `turn`."""
        self._add(_Span(Speaker.BACKGROUND, EntryKind.UTTERANCE, turn, turn, [text]))

    def observe(self, description: str, turn: int, image: bytes = b"", mime_type: str = "",
                time_ms: int | None = None) -> None:
        """A described visual observation; only the newest `max_observations` are kept."""
        if image and not mime_type:
            raise TranscriptError("an observation with an image needs its mime_type")
        self._obs.append(VisualObservationModel(
            turn=turn, time_ms=turn * self.config.turn_ms if time_ms is None else time_ms,
            description=description, image=image, mime_type=mime_type))

    def observe_frame(self, turn: int, frame: Any, time_ms: int | None = None) -> None:
        """A video frame the session received in `turn` (an interplay.v1.VideoFrame that decoded).

        O(1) and nothing is decoded or copied: the newest frame of each `frame_gap_turns` stretch is
        kept by reference; it becomes an observation (thumbnail + description) when a package is built."""
        if self.config.max_frames <= 0:
            return
        obs = FrameObservation(turn=turn, time_ms=turn * self.config.turn_ms if time_ms is None else time_ms,
                               frame=frame, config=self.config.frames)
        gap = max(1, self.config.frame_gap_turns)
        if self._frames and self._frames[-1].turn // gap == turn // gap:
            self._frames[-1] = obs
        else:
            self._frames.append(obs)

    # ---- reading -------------------------------------------------------------------------------
    @property
    def user_state(self) -> UserState:
        return self._state

    @property
    def last_turn(self) -> int:
        return self._last_turn

    @property
    def digest(self) -> Digest:
        """The rolling digest of entries folded out of the window (read it, do not change it)."""
        return self._digest

    @property
    def forgotten(self) -> int:
        """Entries folded out of the window into the digest so far."""
        return self._digest.entries

    @property
    def window_bytes(self) -> int:
        """Text bytes held by the window's closed entries (at most max_window_bytes)."""
        return self._closed_bytes

    def snapshot(self) -> LogSnapshot:
        """An immutable view for the package builder (O(window) pointer copies; see the module doc)."""
        spans = list(self._closed)
        for o in sorted((s for s in (self._user, self._assistant, self._silence) if s is not None and not (
                s.kind == EntryKind.SILENCE and s.end_turn - s.start_turn + 1 < self.config.min_silence_turns)),
                key=lambda s: s.key):
            o = replace(o, texts=[], text=self.config.joiner.join(o.texts))
            pos = len(spans)
            while pos > 0 and spans[pos - 1].key > o.key:  # open spans are recent: a short walk
                pos -= 1
            spans.insert(pos, o)
        observed = sorted([*self._obs, *self._newest_frames()], key=lambda o: (o.turn, o.time_ms))
        return LogSnapshot(session_id=self.session_id, user_state=self._state, last_turn=self._last_turn,
                           spans=spans, digest=self._digest.copy(), observed=observed, turn_ms=self.config.turn_ms)

    def entries(self) -> list[TranscriptEntryModel]:
        return [TranscriptEntryModel.from_proto(e) for e in self.to_proto_entries()]

    def to_proto_entries(self) -> list[xpb.TranscriptEntry]:
        return self.snapshot().to_proto_entries()

    def observations(self) -> list[Any]:
        return self.snapshot().observations()

    def __len__(self) -> int:
        return len(self._closed) + sum(1 for s in (self._user, self._assistant, self._silence) if s is not None and not (
            s.kind == EntryKind.SILENCE and s.end_turn - s.start_turn + 1 < self.config.min_silence_turns))

    # ---- internals -----------------------------------------------------------------------------
    def _newest_frames(self) -> list[FrameObservation]:
        out: list[FrameObservation] = []
        for f in reversed(list(self._frames)):  # a copy first: the recording thread may be appending
            if len(out) >= self.config.max_frames:
                break
            if not out or out[-1].turn - f.turn >= self.config.frame_gap_turns:
                out.append(f)
        return out

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _add(self, span: _Span) -> None:
        """Close `span` into the window (sorted by start), then fold what exceeds the window's bounds."""
        if not span.seq:
            span.seq = self._next()
        span.text = self.config.joiner.join(span.texts) if span.texts else span.text
        span.texts = []
        span.nbytes = len(span.text.encode())
        pos = len(self._closed)
        while pos > 0 and self._closed[pos - 1].key > span.key:
            pos -= 1
        self._closed.insert(pos, span)
        self._closed_bytes += span.nbytes
        c = self.config
        while self._closed and (len(self._closed) > c.max_entries or self._closed_bytes > c.max_window_bytes):
            old = self._closed.popleft()
            self._closed_bytes -= old.nbytes
            self._digest.add(xpb.TranscriptEntry(**_kwargs(old, c.turn_ms)))

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
            span.nbytes += len(text.encode()) + len(self.config.joiner)

    def _close(self, attr: str) -> None:
        span: _Span | None = getattr(self, attr)
        if span is None:
            return
        setattr(self, attr, None)
        length = span.end_turn - span.start_turn + 1
        if span.kind == EntryKind.SILENCE and length < self.config.min_silence_turns:
            return
        self._add(span)
