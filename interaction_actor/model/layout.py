"""The micro-turn slot layout, and SlotChunk: what stands at each position of the sequence.

A sequence is position 0 = <bos>, then one fixed block of `turn_len` slots per 200 ms turn
(turn k starts at position 1 + k * turn_len). Offsets within a block:

  0                        <turn> | <turn:barge_in>          turn marker: time is always in the sequence
  1 .. 16                  audio frames: <audio> + dMel bag-of-embeddings, or <silence>
  17 .. 17+P-1             image patches (P = rows*cols): <image> + hMLP token, or <no_frame>
  next T_in                text in: UTF-8 bytes of typed text, or <pad>
  next C                   context injection: bytes of background context, or <ctx_pad>
  next 16                  mel out: <mel:voiced>|<mel:quiet> (voiced at the turn's start), + a
                           projection of the previous turn's mel frame j when that turn was voiced:
                           the model hears what it said. The turn's own 16 mel frames (80 frames/s)
                           come from the flow head, which reads the tokens (model/reader.py)
  `out`                    <out>: its logits predict y_0
  out+1 .. out+K           y_0 .. y_{K-1}: output tokens (bytes, <empty>, controls); the logits at
                           <out> and y_0..y_{K-2} predict y_0..y_{K-1} (teacher forcing = shift by 1)

Text or context longer than its slots waits in the session and continues next turn. The streaming
session computes turn k as: one chunk [previous position (<bos> or y_{K-1} of turn k-1), <turn> ..
<out>], then K-1 one-token decode steps; y_{K-1} is written at the start of the next turn's chunk.
The training forward sees the same positions all at once.

Besides its token, a position may carry byte-history ids (`hist`: the two bytes before a text/context
byte in its message, or the last two bytes said at an output position) and, at output positions,
copy candidates (`cand`, from `Lookup`): the byte that followed the current history in the slots.
They turn "read the answer out of the context" into a lookup the model learns to trust, instead of
an attention circuit it would have to discover (it did not, in 15 minutes of CPU training).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from interaction_actor.model import text as T
from interaction_actor.model.config import ModelConfig

IGNORE = -100

# Byte history (SlotChunk.hist): a byte in the text-in or context slots carries the two bytes before it
# in its message; an output position (<out>, y_i) carries the last two bytes the model has said in
# the utterance (or <delegate> task) it is in. Equal histories mark "the byte to say next is here":
# one attention match copies content out of the slots. HIST_START stands before a message's first
# byte / right after <start_speaking> or <delegate>; HIST_NONE (no embedding) everywhere else.
HIST_NONE = -1
HIST_START = 256
HIST_SIZE = 257
NO_HIST = (HIST_NONE, HIST_NONE)
# a copy candidate that is not a byte: the message being copied has ended (SlotChunk.cand, Lookup)
CAND_END = 256
CAND_SIZE = 257
_END = -2  # Lookup's reference for CAND_END
_MARKERS = frozenset(T.encode(T.MODE_MARKERS))
_SILENT = T.encode(T.CTX_SILENT)[0]


def message_hist(ids: Sequence[int]) -> list[tuple[int, int]]:
    """(previous byte, the one before) of each byte of one message, HIST_START before its start."""
    pad = [HIST_START, HIST_START, *ids]
    return [(pad[i + 1], pad[i]) for i in range(len(ids))]


def queue_message(queue: list[tuple[int, int, int]], ids: Sequence[int]) -> None:
    """Append one message's bytes, each with its history ids, to a text or context slot queue."""
    queue.extend((b, h1, h2) for b, (h1, h2) in zip(ids, message_hist(ids), strict=True))


def take_slots(queue: list[tuple[int, int, int]], n: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Pop up to n queued bytes: (byte ids, their history ids) for one turn's slots."""
    out = queue[:n]
    del queue[:n]
    return [b for b, _, _ in out], [(h1, h2) for _, h1, h2 in out]


@dataclass
class History:
    """What the model has said in its current utterance or delegate task, driven by its own tokens
    (the streaming session and the trainer push the same tokens, so they write the same ids)."""

    active: bool = False
    last: tuple[int, int] = NO_HIST

    def push(self, token: int) -> None:
        if token in (T.START_SPEAKING, T.DELEGATE):
            self.active, self.last = True, (HIST_START, HIST_START)
        elif token in (T.STOP_SPEAKING, T.DELEGATE_END):
            self.active, self.last = False, NO_HIST
        elif self.active and 0 <= token < T.N_BYTES:
            self.last = (token, self.last[0])

    def ids(self) -> tuple[int, int]:
        return self.last if self.active else NO_HIST


def first_name(text: str) -> str:
    """The name Lookup offers a delegate task in `text`: its first word after a space that starts with
    a capital letter A-Z, else its first word when that starts with one ("Oslo." heard after a pause),
    else ""."""
    words = text.split(" ")
    return next((w for w in words[1:] if "A" <= w[:1] <= "Z"), words[0] if "A" <= words[0][:1] <= "Z" else "")


@dataclass
class Lookup:
    """Copy candidates (SlotChunk.cand) for an output position with history (h1, h2): two bytes from the
    text-in/context slots the model may say next (HIST_NONE where there is none).

    - First: while the model is copying (it said a candidate byte), the byte after that one in the same
      message: a pointer that follows one message, so a repeated pair ("lo" in "Oslo clouds") cannot
      send it elsewhere. At the message's end, CAND_END once the message is known complete (its
      stream's queue held no more of it when its last byte took a slot, or the next message began),
      HIST_NONE while more may arrive. Without CAND_END the copy ran on past a name's end: "weather
      Oslok," for "tell me the weather in Oslo". Otherwise the byte that most recently followed (h1, h2).
    - Second: the byte that most recently followed h1 alone.
    - Except inside a <delegate> task, right after a space: there the first candidate is the first
      letter of the first name (a capitalised word after a space: "Denver" in "Tell me the weather
      in Denver.", "Paris" in "Give me the Paris Weather") of the newest typed or heard message, else
      that message's first word when it is capitalised ("Oslo." heard after a pause), else what the
      newest earlier message that had one offered ("keep it short" typed after the request), and the
      second is what the pointer offered: the task carries what the user named (`first_name`). The name
      stands first because "say the first candidate" is the habit every copy trains; as the second
      candidate, the shipped model mostly copied the request on ("weather in Denver": typed
      delegation 2 of 17 held-out requests; with the name first, 12 of 17, the same weights).
    - Inside a task that is copying that name, where the name's letters end (the next byte of its
      message is known and is not a letter), CAND_END first and that byte second: the task is the
      name, and the model had copied on past it from heard transcripts ("weather Oslo, Osl").
    - Never a SILENT result's text (its message after a CTX_SILENT marker) nor a mode marker: a
      SILENT result is context only, and a marker is not content. Offered as a reply's first byte, a
      SILENT result that came in at the end of one request was voiced in the next ("Lima fog, ..." as the
      reply to chit-chat: 5 of 22 held-out sessions with the synth-14 checkpoint).

    For an utterance's first byte (HIST_START) the first candidate is the start of the newest context
    message (the assistant voices what the background sent; it does not parrot the user's typing)
    and the second the newest start of either a context message or the argument of a typed command
    (its text after the first word, as in "say go in 2s"). With no context message on offer, the
    typed argument stands first and the second is empty: as the second candidate, the shipped
    model said the eight training words it had memorised instead ("de" for "say wait in 1s": 0.54
    of held-out time_speak; with it first, 1.00, the same weights). Whether to say it at all ("me"
    of "tell me when red" is offered too) is the model's to learn. Only what arrived since the model's last
    utterance ended is offered by (h1, h2) and h1 (`push`), except that the newest context
    message, while the model has said none of it, keeps its start on offer for the next utterance's
    first byte (a result owed to the user: a WHEN_IDLE result that came while the model said "red!");
    the name is offered whatever came after it. Sources are registered with their positions so that compaction can forget the dropped
    ones. Session and trainer register the same bytes and push the same tokens in the same order."""

    sources: list[tuple[int, int, int, int, bool]] = field(default_factory=list)  # (pos, byte, h1, h2, ctx)
    after_pair: dict[tuple[int, int], int] = field(default_factory=dict)  # (h1, h2) -> index of the byte after
    after_byte: dict[int, int] = field(default_factory=dict)  # h1 -> index of the byte that followed it
    in_command_word: bool = False  # reading the first word of the newest typed message ("say" of "say go in 2s")
    spent: int = 0  # sources[:spent] came before the end of an utterance: they offer nothing by history
    pointer: int | None = None  # index of the source byte the model said last while copying
    in_task: bool = False  # between <delegate> and </delegate>
    name: int | None = None  # index of the first letter of the first name in the newest typed message
    opening: int | None = None  # index of the newest typed message's first byte when it is a capital
    earlier: int | None = None  # what an earlier typed message offered (the newest one that offered a name)
    ends: set[int] = field(default_factory=set)  # positions of sources known to end their message
    mute: set[int] = field(default_factory=set)  # positions of sources that offer nothing (markers, SILENT text)
    ctx_mark: int = -1  # a context mode marker (text.CTX_*) whose message has not started yet
    ctx_silent: bool = False  # the newest context message is a SILENT result
    on_name: bool = False  # the model is copying the offered name in a task (the pointer follows it)
    copied: set[int] = field(default_factory=set)  # positions of context bytes the model has said (copying)
    owed: int | None = None  # position of an unsaid context message's start, offered past an utterance's end

    def add(self, position: int, ids: Sequence[int], hist: Sequence[tuple[int, int]], context: bool,
            complete: bool = False) -> None:
        """Register one turn's bytes of one stream (typed/heard text or context); `complete`: the last of
        them ends its message (the stream's queue holds no more of it)."""
        for k, (b, (h1, h2)) in enumerate(zip(ids, hist, strict=True)):
            if h1 == HIST_START:
                last = next((j for j in range(len(self.sources) - 1, -1, -1) if self.sources[j][4] == context), None)
                if last is not None:
                    self.ends.add(self.sources[last][0])
            if context and h1 == HIST_START:
                marker = b in _MARKERS
                if marker:
                    self.ctx_mark = b
                else:  # a message starts: it is in the mode of the marker just before it, if any
                    self.ctx_silent, self.ctx_mark = self.ctx_mark == _SILENT, -1
                if marker or self.ctx_silent:
                    self.mute.add(position + k)
            elif context and self.ctx_silent:
                self.mute.add(position + k)
            self.sources.append((position + k, b, h1, h2, context))
            self._index(len(self.sources) - 1, offer=position + k not in self.mute)
        if complete and ids:
            self.ends.add(position + len(ids) - 1)

    def _index(self, i: int, offer: bool) -> None:
        _, b, h1, h2, context = self.sources[i]
        if not context:
            capital = ord("A") <= b <= ord("Z")
            if h1 == HIST_START:
                self.earlier = self._offered()
                self.name, self.opening = None, i if capital else None
            elif h1 == ord(" ") and capital and self.name is None:
                self.name = i
        if not context and h1 == HIST_START:
            self.in_command_word = True
            return  # a typed message's first byte offers nothing
        if not context and self._typed_command_argument(h1) and offer:
            self.after_byte[HIST_START] = i  # an utterance may start with the typed command's argument
        if offer:
            self.after_pair[(h1, h2)] = i
            self.after_byte[h1] = i

    def _typed_command_argument(self, h1: int) -> bool:
        """The command heuristic, in one place: a typed message's first word is a command ("say",
        "tell"), and the byte after its first space starts the argument the reply may copy ("go")."""
        if self.in_command_word and h1 == ord(" "):
            self.in_command_word = False
            return True
        return False

    def _next(self, i: int) -> int | None:
        """Index of the byte after source i in the same message, _END at the message's known end, None
        where the next byte has not arrived yet."""
        if self.sources[i][0] in self.ends:
            return _END
        ctx = self.sources[i][4]
        for j in range(i + 1, len(self.sources)):
            if self.sources[j][4] == ctx:
                return _END if self.sources[j][2] == HIST_START else j
        return None

    def _offered(self) -> int | None:
        """The name a task is offered: the newest typed message's, else its capitalised opening, else
        an earlier message's (a request, then "keep it short": the task still names the city)."""
        return next((i for i in (self.name, self.opening, self.earlier) if i is not None), None)

    def _naming(self, hist: tuple[int, int]) -> bool:
        """At a task's position after a space, with a name on offer: the name is the first candidate."""
        return self.in_task and hist[0] == ord(" ") and self._offered() is not None

    def _refs(self, hist: tuple[int, int]) -> tuple[int | None, int | None]:
        if hist[0] < 0:
            return None, None
        first = self._next(self.pointer) if self.pointer is not None else self.after_pair.get(tuple(hist))
        if self._naming(hist):
            return self._offered(), first
        if self.on_name and first is not None and first >= 0 and not bytes((self.sources[first][1],)).isalpha():
            return _END, first  # the name's letters end here: the task is the name
        second = self.after_byte.get(hist[0])
        if first is None and hist[0] == HIST_START:  # no context to voice: a typed command's argument first
            return second, None
        return first, second

    def cand(self, hist: tuple[int, int]) -> tuple[int, int]:
        return tuple(HIST_NONE if i is None else CAND_END if i == _END else self.sources[i][1]
                     for i in self._refs(hist))

    def push(self, token: int, hist: tuple[int, int] = NO_HIST) -> None:
        """The model emitted `token` at a position with History ids `hist` (those it was chosen under).
        Saying a candidate byte moves the pointer to it; any other token drops the pointer. Once an
        utterance ends (<stop_speaking>), what is already in the slots stops offering candidates by
        history: the lookup offers what arrived since the last utterance ended, so a voiced result is
        not copied into the next reply ("ok, 23 C"); only an unsaid newest context message keeps its
        start on offer (`owed`). A slot that says nothing (<empty>, a silent state token) moves nothing:
        a copy paused mid-message resumes where it stopped. Dropping the pointer there cost the number
        of a result read after a red cue ("Helsinki hail, -" then <empty>, then "15 C" for "-1 C": the
        result's bytes had come before "red!" ended, so nothing else offered them)."""
        if token == T.EMPTY or T.state_value(token) is not None:
            return
        first, second = self._refs(hist)
        if first is not None and first >= 0 and self.sources[first][1] == token:
            self.pointer = first
        elif second is not None and second >= 0 and self.sources[second][1] == token:
            self.pointer = second
        else:
            self.pointer = None
        if self.pointer is not None and self.sources[self.pointer][4]:
            self.copied.add(self.sources[self.pointer][0])
        if self.pointer is None or self.pointer != first:
            self.on_name = False
        elif self._naming(hist):
            self.on_name = True  # began copying the offered name (it stays on while the pointer follows it)
        if token == T.DELEGATE:
            self.in_task = True
        elif token in (T.DELEGATE_END, T.START_SPEAKING, T.STOP_SPEAKING):
            self.in_task = False
        if token == T.STOP_SPEAKING:
            start = self.after_pair.get((HIST_START, HIST_START))
            self.after_pair.clear()
            self.after_byte.clear()
            self.spent = len(self.sources)
            self.owed = None
            if start is not None and self.sources[start][4] and not self._said(start):
                self.owed = self.sources[start][0]
                self.after_pair[(HIST_START, HIST_START)] = start

    def _said(self, i: int) -> bool:
        """Whether the model has said any byte of the context message that starts at source i."""
        for j in range(i, len(self.sources)):
            pos, _, h1, _, ctx = self.sources[j]
            if not ctx:
                continue
            if j > i and h1 == HIST_START:
                return False
            if pos in self.copied:
                return True
        return False

    def drop(self, lo: int, hi: int) -> None:
        """Forget sources at positions lo..hi-1 and move later ones left by hi - lo (compaction); the
        copy pointer is dropped."""
        def moved(ps) -> set[int]:
            return {p - (hi - lo) if p >= hi else p for p in ps if not lo <= p < hi}

        kept = [(p - (hi - lo) if p >= hi else p, *rest, i < self.spent)
                for i, (p, *rest) in enumerate(self.sources) if not lo <= p < hi]
        self.ends, self.mute, self.copied = moved(self.ends), moved(self.mute), moved(self.copied)
        owed = next(iter(moved({self.owed})), None) if self.owed is not None else None
        self.sources, self.after_pair, self.after_byte, self.in_command_word = [], {}, {}, False
        self.pointer, self.name, self.opening, self.earlier, self.on_name = None, None, None, None, False
        self.spent = sum(spent for *_, spent in kept)
        for p, b, h1, h2, ctx, spent in kept:
            self.sources.append((p, b, h1, h2, ctx))
            self._index(len(self.sources) - 1, offer=not spent and p not in self.mute)
        self.owed = owed
        if owed is not None and (HIST_START, HIST_START) not in self.after_pair:
            self.after_pair[(HIST_START, HIST_START)] = next(i for i, s in enumerate(self.sources) if s[0] == owed)


@dataclass(frozen=True)
class TurnLayout:
    frames: int
    patches: int
    text_in: int
    context: int
    out_slots: int

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> TurnLayout:
        return cls(cfg.frames_per_turn, cfg.image_patches, cfg.text_in_slots, cfg.context_slots, cfg.text_out_slots)

    @property
    def audio(self) -> int:
        return 1

    @property
    def image(self) -> int:
        return self.audio + self.frames

    @property
    def text(self) -> int:
        return self.image + self.patches

    @property
    def ctx(self) -> int:
        return self.text + self.text_in

    @property
    def mel(self) -> int:
        return self.ctx + self.context

    @property
    def out(self) -> int:
        return self.mel + self.frames

    @property
    def turn_len(self) -> int:
        return self.out + 1 + self.out_slots

    def turn_start(self, turn: int) -> int:
        """Absolute position of turn `turn`'s marker in an uncompacted sequence."""
        return 1 + turn * self.turn_len

    def describe(self) -> list[tuple[str, int, int]]:
        """(name, first offset, count) for every slot group of a turn block."""
        return [("turn", 0, 1), ("audio", self.audio, self.frames), ("image", self.image, self.patches),
                ("text_in", self.text, self.text_in), ("context", self.ctx, self.context),
                ("mel_out", self.mel, self.frames), ("out", self.out, 1), ("y", self.out + 1, self.out_slots)]


@dataclass
class SlotChunk:
    """Inputs of B rows x T positions. The embedding of a position is E[token] plus, where masked,
    the dMel bag (audio_mask), the next hMLP token (image_mask; `patches` row-major over [B, T]) and
    a projection of `mel_in` (mel_mask)."""

    tokens: torch.Tensor  # long [B, T]
    dmel: torch.Tensor  # long [B, T, n_mels]
    audio_mask: torch.Tensor  # bool [B, T]
    patches: torch.Tensor  # float [N, 40, 40, 3]
    image_mask: torch.Tensor  # bool [B, T], N True entries
    mel_in: torch.Tensor  # float [B, T, n_mels] log10 mel
    mel_mask: torch.Tensor  # bool [B, T]
    hist: torch.Tensor  # long [B, T, 2]: the two bytes that precede this position's content (see History)
    cand: torch.Tensor  # long [B, T, 2]: copy candidates of an output position (see Lookup), else HIST_NONE

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.tokens.shape)

    @staticmethod
    def empty(b: int, t: int, cfg: ModelConfig, token: int = T.PAD) -> SlotChunk:
        return SlotChunk(
            tokens=torch.full((b, t), token, dtype=torch.long),
            dmel=torch.zeros(b, t, cfg.n_mels, dtype=torch.long),
            audio_mask=torch.zeros(b, t, dtype=torch.bool),
            patches=torch.zeros(0, cfg.patch, cfg.patch, 3),
            image_mask=torch.zeros(b, t, dtype=torch.bool),
            mel_in=torch.zeros(b, t, cfg.n_mels),
            mel_mask=torch.zeros(b, t, dtype=torch.bool),
            hist=torch.full((b, t, 2), HIST_NONE, dtype=torch.long),
            cand=torch.full((b, t, 2), HIST_NONE, dtype=torch.long),
        )

    @staticmethod
    def cat_time(chunks: list[SlotChunk]) -> SlotChunk:
        """Concatenate single-row chunks along time."""
        if any(c.tokens.shape[0] != 1 for c in chunks):
            raise ValueError("cat_time joins single-row chunks")
        return SlotChunk(*(torch.cat([getattr(c, f) for c in chunks], dim=0 if f == "patches" else 1)
                           for f in _FIELDS))

    @staticmethod
    def stack(chunks: list[SlotChunk]) -> SlotChunk:
        """Stack equal-length chunks as batch rows."""
        return SlotChunk(*(torch.cat([getattr(c, f) for c in chunks], dim=0) for f in _FIELDS))

    def to(self, device: torch.device | str) -> SlotChunk:
        if self.tokens.device == torch.device(device):
            return self
        return SlotChunk(*(getattr(self, f).to(device) for f in _FIELDS))


_FIELDS = ("tokens", "dmel", "audio_mask", "patches", "image_mask", "mel_in", "mel_mask", "hist", "cand")


def bos_chunk(cfg: ModelConfig) -> SlotChunk:
    return SlotChunk.empty(1, 1, cfg, T.BOS)


def turn_chunk(cfg: ModelConfig, *, barge_in: bool = False, dmel: torch.Tensor | None = None,
               has_audio: torch.Tensor | None = None, patches: torch.Tensor | None = None,
               text_ids: Sequence[int] = (), context_ids: Sequence[int] = (), voiced: bool = False,
               prev_mel: torch.Tensor | None = None, out_tokens: list[int] | None = None,
               text_hist: Sequence[tuple[int, int]] = (), context_hist: Sequence[tuple[int, int]] = (),
               out_hist: Sequence[tuple[int, int]] = (), out_cand: Sequence[tuple[int, int]] = ()) -> SlotChunk:
    """One turn block as a single-row chunk: up to and including <out> when `out_tokens` is None,
    else the whole block with y_0..y_{K-1} = out_tokens. `*_hist` are the History ids of the text
    and context bytes and of <out> (then y_0..y_{K-1} with out_tokens), `out_cand` the Lookup
    candidates of those output positions; missing ones are HIST_NONE."""
    lay = TurnLayout.from_config(cfg)
    n = lay.turn_len if out_tokens is not None else lay.out + 1
    c = SlotChunk.empty(1, n, cfg)
    tok = c.tokens[0]
    tok[0] = T.TURN_BARGE_IN if barge_in else T.TURN
    a = slice(lay.audio, lay.audio + lay.frames)
    if dmel is not None:
        mask = has_audio if has_audio is not None else torch.ones(lay.frames, dtype=torch.bool)
        tok[a] = torch.where(mask, T.AUDIO, T.SILENCE)
        c.dmel[0, a] = dmel
        c.audio_mask[0, a] = mask
    else:
        tok[a] = T.SILENCE
    im = slice(lay.image, lay.image + lay.patches)
    if patches is not None:
        if patches.shape[0] != lay.patches:
            raise ValueError(f"expected {lay.patches} patches, got {patches.shape[0]}")
        tok[im] = T.IMAGE
        c.image_mask[0, im] = True
        c.patches = patches.float()
    else:
        tok[im] = T.NO_FRAME
    if len(text_ids) > lay.text_in or len(context_ids) > lay.context:
        raise ValueError("more text/context ids than the turn has slots")
    tok[lay.text : lay.text + lay.text_in] = torch.tensor([*text_ids, *[T.PAD] * (lay.text_in - len(text_ids))])
    tok[lay.ctx : lay.ctx + lay.context] = torch.tensor(
        [*context_ids, *[T.CTX_PAD] * (lay.context - len(context_ids))])
    ms = slice(lay.mel, lay.mel + lay.frames)
    tok[ms] = T.MEL_VOICED if voiced else T.MEL_QUIET
    if prev_mel is not None:
        c.mel_in[0, ms] = prev_mel
        c.mel_mask[0, ms] = True
    tok[lay.out] = T.OUT
    if out_tokens is not None:
        if len(out_tokens) != lay.out_slots:
            raise ValueError(f"expected {lay.out_slots} output tokens")
        tok[lay.out + 1 :] = torch.tensor(out_tokens)
    if len(text_hist) > len(text_ids) or len(context_hist) > len(context_ids) or len(out_hist) > n - lay.out \
            or len(out_cand) > n - lay.out:
        raise ValueError("more history ids than the slots they describe")
    for field_, first, ids in (("hist", lay.text, text_hist), ("hist", lay.ctx, context_hist),
                               ("hist", lay.out, out_hist), ("cand", lay.out, out_cand)):
        if len(ids):
            getattr(c, field_)[0, first : first + len(ids)] = torch.tensor(list(ids), dtype=torch.long).view(-1, 2)
    return c


def block_offsets(length: int, lay: TurnLayout) -> torch.Tensor:
    """Offset within its turn block of each position 0..length-1 of an uncompacted sequence (-1 for <bos>)."""
    p = torch.arange(length)
    return torch.where(p == 0, -1, (p - 1) % lay.turn_len)


def text_targets(tokens: torch.Tensor, lay: TurnLayout) -> torch.Tensor:
    """[B, T] -> next-token targets at <out> and y_0..y_{K-2} (the decoded slots), IGNORE elsewhere."""
    off = block_offsets(tokens.shape[1], lay)
    predict = (off >= lay.out) & (off < lay.out + lay.out_slots)
    nxt = torch.cat([tokens[:, 1:], torch.full_like(tokens[:, :1], IGNORE)], dim=1)
    return torch.where(predict[None, :], nxt, torch.full_like(tokens, IGNORE))


def mel_slot_mask(length: int, lay: TurnLayout) -> torch.Tensor:
    """[T] bool: positions that are mel-out slots."""
    off = block_offsets(length, lay)
    return (off >= lay.mel) & (off < lay.mel + lay.frames)
