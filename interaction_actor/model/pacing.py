"""Reading pace: a voiced background message longer than the model reads whole reaches it in pieces.

Contract. `ReadPacer.feed(context, barge_in)` takes one turn's context lines (each led by its
surfacing-mode marker, text.CTX_*; a line without one is CTX_IDLE) and returns the lines that enter
the context slots this turn; `after(tokens)` reads the turn's output tokens. With `read_bytes` 0 it
passes every line through unchanged (the trainer's and the evaluation's sessions). Otherwise:

  - a voiced line (CTX_NOW, CTX_IDLE) whose text is longer than `read_bytes` UTF-8 bytes is cut into
    `pieces` of at most that many, each led by the line's marker: the first enters now, the others
    wait; a SILENT line always enters whole (it is never read aloud);
  - a voiced line arriving while pieces wait queues behind them (the order is the background's);
  - the next piece enters the turn after the model ends an utterance (<stop_speaking>), or after
    `wait_turns` turns without one (the model passed a piece over; the rest must not wait forever);
  - a barge-in hint drops the waiting pieces: the loop's scheduler redelivers a cut result whole at
    the next pause (delegation/scheduler.py, rule 1), and it is cut again then.

Why: the shipped model reads a context message aloud only up to the length its training held, and
of a longer one it often says nothing at all (no <start_speaking>). Measured 2026-12-02 with the
shipped checkpoint, scripts /tmp/h/pace3.py and pace6.py (not kept), whole answers said word for word:

  - fresh sessions, 42 training-style sentences of 16-79 bytes arriving at turn 3: unpaced 29; in
    pieces of at most 48 bytes 38, 28 bytes 41, 24 bytes 40, 20 bytes 39;
  - after a typed weather request the model delegated (48 answers: the held-out template "The weather
    in C is W, with a temperature of T C.", "C W, T C", a longer sentence, a reading-vocabulary
    sentence; training and held-out cities): unpaced 28; pieces of 48 bytes 43, 32: 42, 24: 44,
    20: 44, 16: 43;
  - the demo's answer "The weather in Oslo is quite snowy, with a temperature of -3 C." after that
    request, 12 sessions: unpaced 0, pieces of 48 bytes 0, 24 bytes 4, 20 bytes 12. The model stops
    after "Oslo " when more follows in the same piece: "Oslo snow, -3 C" is a training string.

So READ_BYTES is 20, about the length of the delegation results the model trained on ("Lima hail,
7 C"). The model still decides whether and when to say each piece (CTX_IDLE: at the user's pause);
the pacer only decides when the next one reaches its slots. A piece boundary costs a turn or two
of silence (200-400 ms), about a comma's pause.

`pieces` cuts at word boundaries into near-equal parts, preferring a cut after a comma or semicolon
within ten bytes before the even point, and drops that trailing comma or semicolon: a message the
model trained on ends in a word or a full stop, and pieces ending in a comma made it run on past
the piece's end ("Remained simple, 2").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from interaction_actor.model import text as T

READ_BYTES = 20  # the piece size the shipped model reads best (see the module doc)
WAIT_TURNS = 30  # turns a waiting piece waits for the model's <stop_speaking> before it enters anyway
_CLAUSE = ",;"


def _size(s: str) -> int:
    return len(s.encode("utf-8"))


def pieces(text: str, read_bytes: int = READ_BYTES) -> list[str]:
    """`text` cut at spaces into ceil(bytes / read_bytes) near-equal pieces (see the module doc); a
    word longer than `read_bytes` stays whole (a piece never splits a word). Text that fits comes back
    as it came; blank text: []."""
    if not text.strip():
        return []
    if read_bytes <= 0 or _size(text) <= read_bytes:
        return [text]  # as it came
    text = text.strip()
    total = _size(text)
    k = -(-total // read_bytes)
    out: list[str] = []
    cur: list[str] = []
    done = 0  # bytes of the finished pieces, each with the space after it
    for w in text.split(" "):
        if cur and _size(" ".join([*cur, w])) > read_bytes:
            out.append(" ".join(cur))  # the next word would overfill this piece
            done += _size(out[-1]) + 1
            cur = []
        cur.append(w)
        size = done + _size(" ".join(cur))
        even = total * (len(out) + 1) / k
        if len(out) < k - 1 and (size >= even or (w[-1:] in _CLAUSE and size >= even - 10)):
            out.append(" ".join(cur))
            done += _size(out[-1]) + 1
            cur = []
    if cur:
        out.append(" ".join(cur))
    return [p[:-1] if p[-1:] in _CLAUSE and i < len(out) - 1 else p for i, p in enumerate(out) if p]


@dataclass
class ReadPacer:
    """One session's pieces waiting for the context slots (see the module doc)."""

    read_bytes: int = 0  # 0: off (every line passes through whole)
    wait_turns: int = WAIT_TURNS
    waiting: list[str] = field(default_factory=list)  # marker + piece, in the order they enter
    waited: int = 0  # turns the first waiting piece has waited
    release: bool = False  # the model ended an utterance: the next piece enters next turn

    def feed(self, context: str, barge_in: bool = False) -> str:
        """This turn's context lines -> the lines that enter the context slots this turn."""
        if self.read_bytes <= 0:
            return context
        if barge_in and self.waiting:
            self.waiting.clear()
            self.release = False
        now: list[str] = []
        entered = False  # a piece entered with its message this turn: the wait starts next turn
        for line in context.split("\n"):
            if not line:
                continue
            mark = line[0] if line[0] in T.MODE_MARKERS else T.CTX_IDLE
            body = line[1:] if line[0] in T.MODE_MARKERS else line
            if mark == T.CTX_SILENT:
                now.append(line)
                continue
            parts = [mark + p for p in pieces(body, self.read_bytes)]
            if not self.waiting and parts:
                now.append(parts.pop(0))
                self.waited, entered = 0, True
            self.waiting.extend(parts)
        if self.waiting and not entered:
            self.waited += 1
            if self.release or self.waited > self.wait_turns:
                now.append(self.waiting.pop(0))
                self.waited = 0
        self.release = False
        return "\n".join(now)

    def after(self, tokens: list[int]) -> None:
        """The turn's output tokens: an utterance's end releases the next waiting piece."""
        if self.waiting and T.STOP_SPEAKING in tokens:
            self.release = True
