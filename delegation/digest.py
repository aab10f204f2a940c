"""Digest: a bounded, extractive account of conversation entries left out of a window.

No model is involved: a digest keeps counts, the time span of what it covers, and *gists* —
each a speaker tag and the first `words` words of an entry — of the oldest entries (the opening,
up to `head_bytes`) and of the newest ones (up to `tail_bytes`; older gists of the tail are
forgotten first). Silences and entries without words are counted but leave no gist.

Two users: the live `ConversationLog` folds every entry that falls out of its window into its
rolling digest (`add`, O(1) amortised, bounded memory whatever the session length), and the
package builder extends a copy of it with the entries the byte budget drops (`fold`, which reads
only the few entries whose gists it keeps) and renders it into `earlier_summary` (`render`: never
longer than the byte cap it is given; the header with counts and span first, then newest gists).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from interplay.v1 import context_pb2 as xpb

LABEL = "Extractive digest (first words of some entries; no model)"


@dataclass
class DigestConfig:
    """Bounds of a digest (the rendered text is further capped by whoever renders it)."""

    head_bytes: int = 256    # gists of the first entries folded (the conversation's opening)
    tail_bytes: int = 1_024  # gists of the newest entries folded (the oldest of them forgotten first)
    words: int = 12          # words kept per gist


def _clip_words(text: str, words: int) -> str:
    parts = text.split(maxsplit=words)
    return " ".join(parts[:words]) + (" …" if len(parts) > words else "")


def gist(e: xpb.TranscriptEntry, words: int = 12) -> str:
    """'user (typed): first words …', '[system delegated: weather]'; '' for a silence or no words."""
    if e.kind == xpb.ENTRY_KIND_SILENCE or not e.text.strip():
        return ""
    who = xpb.Speaker.Name(e.speaker).removeprefix("SPEAKER_").lower()
    body = _clip_words(e.text, words)
    if e.kind == xpb.ENTRY_KIND_EVENT:
        return f"[{who} {body}]"
    marks = "".join(m for m, on in ((" (overlapped)", e.overlapped), (" (interrupted)", e.interrupted),
                                    (" (typed)", e.typed)) if on)
    return f"{who}{marks}: {body}"


def clock(ms: int) -> str:
    """Session time as m:ss (h:mm:ss past an hour)."""
    s = max(0, int(ms)) // 1000
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def _cost(text: str) -> int:
    return len(text.encode()) + 3  # and a " | " separator


@dataclass
class Digest:
    """Counts, span and gists of the entries folded so far (see the module docstring)."""

    config: DigestConfig = field(default_factory=DigestConfig)
    entries: int = 0
    start_ms: int = 0
    end_ms: int = 0
    start_turn: int = 0
    end_turn: int = 0
    head: list[str] = field(default_factory=list)
    head_closed: bool = False  # a gist did not fit in the head: later gists go to the tail
    tail: deque[str] = field(default_factory=deque)
    gap: bool = False  # gists were forgotten between the head and the tail
    _head_used: int = 0
    _tail_used: int = 0

    # ---- folding ---------------------------------------------------------------------------------
    def count(self, e: xpb.TranscriptEntry) -> None:
        """Count `e` and widen the span, without a gist (O(1))."""
        if not self.entries:
            self.start_ms, self.start_turn = e.start_ms, e.start_turn
            self.end_ms, self.end_turn = e.end_ms, e.end_turn
        else:
            self.start_ms, self.start_turn = min(self.start_ms, e.start_ms), min(self.start_turn, e.start_turn)
            self.end_ms, self.end_turn = max(self.end_ms, e.end_ms), max(self.end_turn, e.end_turn)
        self.entries += 1

    def add(self, e: xpb.TranscriptEntry) -> None:
        """Fold one entry, oldest first: counted, and its gist goes to the head while it has room,
        to the tail after that (O(1) amortised)."""
        self.count(e)
        g = gist(e, self.config.words)
        if g and not self._offer_head(g):
            self._push_tail(g)

    def _offer_head(self, g: str) -> bool:
        if self.head_closed:
            return False
        if self._head_used + _cost(g) > self.config.head_bytes:
            self.head_closed = True
            return False
        self.head.append(g)
        self._head_used += _cost(g)
        return True

    def _push_tail(self, g: str) -> None:
        self.tail.append(g)
        self._tail_used += _cost(g)
        while self._tail_used > self.config.tail_bytes and self.tail:
            self._tail_used -= _cost(self.tail.popleft())
            self.gap = True

    def fold(self, n: int, entry: Callable[[int], xpb.TranscriptEntry]) -> None:
        """Fold entries 0..n-1 (oldest first; `entry(i)` makes one) in time linear in n at worst and
        usually far less: the span comes from the first and last entry, and only the entries whose
        gists can be kept are read (the head from the oldest, the tail from the newest)."""
        if n <= 0:
            return
        first, last = entry(0), entry(n - 1)
        self.count(first)
        if n > 1:
            self.count(last)
        self.entries += n - min(n, 2)
        i = 0
        while i < n and not self.head_closed:  # the opening, oldest first
            g = gist(entry(i), self.config.words)
            if g and not self._offer_head(g):
                break
            i += 1
        newest: list[str] = []
        used = 0
        j = n - 1
        while j >= i:  # the newest gists, newest first, until the tail is full
            g = gist(entry(j), self.config.words)
            if g:
                if used + _cost(g) > self.config.tail_bytes:
                    self.gap = True
                    break
                newest.append(g)
                used += _cost(g)
            j -= 1
        for g in reversed(newest):
            self._push_tail(g)

    def copy(self) -> Digest:
        return Digest(config=self.config, entries=self.entries, start_ms=self.start_ms, end_ms=self.end_ms,
                      start_turn=self.start_turn, end_turn=self.end_turn, head=list(self.head),
                      head_closed=self.head_closed, tail=deque(self.tail), gap=self.gap,
                      _head_used=self._head_used, _tail_used=self._tail_used)

    @property
    def size_bytes(self) -> int:
        """Bytes its gists take (bounded by head_bytes + tail_bytes)."""
        return self._head_used + self._tail_used

    # ---- rendering -------------------------------------------------------------------------------
    def header(self, images: int = 0, observations: int = 0) -> str:
        parts = []
        if self.entries:
            parts.append(f"{self.entries} earlier entries, {clock(self.start_ms)}-{clock(self.end_ms)} "
                         f"(turns {self.start_turn}-{self.end_turn})")
        if images:
            parts.append(f"{images} image{'s' * (images != 1)}")
        if observations:
            parts.append(f"{observations} observation{'s' * (observations != 1)}")
        return "Left out: " + "; ".join(parts) + "." if parts else ""

    def render(self, max_bytes: int, images: int = 0, observations: int = 0) -> str:
        """The digest as text of at most `max_bytes` UTF-8 bytes ('' when there is nothing to say).

        Header (counts, span, images/observations left out), then the label and the gists: the
        opening (at most a third of the room left) and the newest gists, which get the rest; when the
        cap binds, the oldest gists of the tail and the last of the head go first, and '…' marks a gap.
        """
        head = self.header(images, observations)
        if not head or max_bytes <= 0:
            return ""
        if len(head.encode()) > max_bytes:
            short = f"Left out: {self.entries} entries, {images} images, {observations} observations."
            return short if len(short.encode()) <= max_bytes else ""
        intro = f" {LABEL}:"
        room = max_bytes - len(head.encode()) - len(intro.encode()) - 6  # and " … |" marks
        if room <= 0 or not (self.head or self.tail):
            return head
        opening: list[str] = []
        used = 0
        for g in self.head:
            if used + _cost(g) > room // 3:
                break
            opening.append(g)
            used += _cost(g)
        latest: list[str] = []
        for g in reversed(self.tail):
            if used + _cost(g) > room:
                break
            latest.append(g)
            used += _cost(g)
        latest.reverse()
        if not opening and not latest:
            return head
        gap = (self.gap or len(opening) < len(self.head) or len(latest) < len(self.tail)) and bool(latest)
        text = " | ".join(opening)
        if latest:
            text = f"{text} | … | " if opening and gap else (f"{text} | " if opening else ("… | " if gap else ""))
            text += " | ".join(latest)
        return f"{head}{intro} {text}"
