"""What the voice reads: the bytes the model said up to a voiced turn, as the flow head's condition.

The interaction model speaks in the turn it writes (training/voice.py): the bytes it emits in turn k
start sounding in turn k's own audio, and the sound of turn k - 1's last bytes runs on into it. The
flow head renders turn k's 16 mel frames from a *read window* of the model's own output tokens, the
same at training and at run time (the session samples the mel after the turn's tokens are decoded):

  hist  the last 2K bytes of the current utterance said before turn k - 1 (PAD where it began later)
  prev  turn k - 1's K output tokens (what is still sounding)
  cur   turn k's K output tokens (what this turn starts to say)

In the turn that opens an utterance, hist and prev read PAD and cur starts at <start_speaking>, as
does prev in the turn after it (what came before it is not part of the utterance: a plan's first
turns read the same).

Bytes read as themselves, <start_speaking> as START, <stop_speaking> and <listen> as STOP, anything
else (<empty>, controls, <delegate> task bytes) as PAD. A window is `4K + 1` ids: the 4K tokens and
the frame index within the turn (0..15) last. The transformer decides what to say and when; the
reader makes the voice a function of those bytes, so a word the model never said in training is
read from its letters (the flow head conditioned on the transformer's hidden state at the mel-out
slots alone learned the training sentences' sounds and read held-out words as noise: Whisper heard
1.18 word errors per word of its voice).

`ReadState` is the streaming form (one per session); `windows(outputs, K)` the whole-stream form for
training, and both give the same ids (a test checks it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

import kernels
from interaction_actor.model import text as T

PAD, START, STOP = 256, 257, 258
VOCAB = 259


def read_id(token: int) -> int:
    if 0 <= token < T.N_BYTES:
        return token
    if token == T.START_SPEAKING:
        return START
    if token in (T.STOP_SPEAKING, T.LISTEN):
        return STOP
    return PAD


def _turn_ids(tokens, k: int) -> list[int]:
    ids = [read_id(t) for t in list(tokens)[:k]]
    return ids + [PAD] * (k - len(ids))


@dataclass
class ReadState:
    """A stream's reading position: the current utterance's bytes before the previous turn, and the
    previous turn's tokens. `window(cur)` before `push(cur)`, once a turn."""

    k: int = 3
    said: list[int] = field(default_factory=list)
    prev: tuple[int, ...] = ()  # the previous turn's tokens, <delegate> task bytes already <empty>
    inside_task: bool = False  # the stream is inside a <delegate> task at the end of `prev`

    def window(self, cur) -> list[int]:
        h = 2 * self.k
        cur = self._spoken(cur)
        if T.START_SPEAKING in cur:  # an utterance starts here: nothing before it is read
            return [PAD] * (h + self.k) + _turn_ids(cur[cur.index(T.START_SPEAKING):], self.k)
        hist = [] if T.START_SPEAKING in self.prev else self.said[-h:]  # an utterance starts in `prev`
        return [PAD] * (h - len(hist)) + hist + _turn_ids(self.prev, self.k) + _turn_ids(cur, self.k)

    def _spoken(self, tokens, advance: bool = False) -> list[int]:
        """The turn's tokens with <delegate> task bytes read as PAD (they are never said)."""
        inside, out = self.inside_task, []
        for t in tokens:
            if t == T.DELEGATE:
                inside = True
            elif t in (T.DELEGATE_END, T.START_SPEAKING):
                inside = False
            out.append(T.EMPTY if inside and 0 <= t < T.N_BYTES else t)
        if advance:
            self.inside_task = inside
        return out

    def push(self, cur) -> None:
        for t in self.prev:
            if t == T.START_SPEAKING:
                self.said = []
            elif 0 <= t < T.N_BYTES:
                self.said.append(t)
        del self.said[: max(0, len(self.said) - 2 * self.k)]
        cur = self._spoken(cur, advance=True)
        self.prev = tuple(cur[cur.index(T.START_SPEAKING):] if T.START_SPEAKING in cur else cur)


def windows(outputs: list[list[int]], k: int) -> list[list[int]]:
    """The read window (without the frame index) of every turn of a whole output stream: turn j's
    window reads turn j - 1 as `prev` and turn j as `cur`."""
    st, out = ReadState(k), []
    for toks in outputs:
        out.append(st.window(toks))
        st.push(toks)
    return out


class Reader(nn.Module):
    """Read window [N, 4K + 1] (see the module doc) -> condition [N, width] for the flow head: the
    tokens' embeddings (with their place in the window) through a two-layer MLP, then the frame's
    own embedding and one more layer, so each of a turn's 16 frames reads its part of the window."""

    def __init__(self, k: int, width: int, frames: int, emb: int = 48, hidden: int = 512) -> None:
        super().__init__()
        n = 4 * k
        self.n = n
        self.emb = nn.Parameter(torch.randn(VOCAB, emb) * 0.1)
        self.place = nn.Parameter(torch.randn(n, emb) * 0.1)
        self.w1 = nn.Parameter(torch.randn(hidden, n * emb) / math.sqrt(n * emb))
        self.b1 = nn.Parameter(torch.zeros(hidden))
        self.w2 = nn.Parameter(torch.randn(width, hidden) / math.sqrt(hidden))
        self.b2 = nn.Parameter(torch.zeros(width))
        self.frame = nn.Parameter(torch.randn(frames, width) * 0.1)
        self.w3 = nn.Parameter(torch.randn(width, width) / math.sqrt(width))
        self.b3 = nn.Parameter(torch.zeros(width))

    def _summary(self, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the tokens' embeddings [N, 4K, emb], the window's summary [N, width], the frame's index [N])."""
        ids, frame = window[:, : self.n], window[:, self.n]
        e = self.emb[ids] + self.place
        base = kernels.linear(kernels.silu(kernels.linear(e.reshape(ids.shape[0], -1), self.w1, self.b1)),
                              self.w2, self.b2)
        return e, base, frame

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        _, base, frame = self._summary(window)
        return kernels.linear(kernels.silu(base + self.frame[frame]), self.w3, self.b3)


class AlignReader(Reader):
    """Read window [N, 4K + 1] -> condition [N, width], with an alignment: each frame takes a soft pick
    of the window's tokens as well as the whole window's summary.

    The flattened MLP above (`Reader`) adds the frame's embedding after the window is summarised, so
    which byte sounds at frame f of a turn must come out of one layer; its voice rendered about the
    mean sound of each window. Here each token is read in its context (its neighbours, a width-3
    convolution over the window, plus the window's summary), the frame with the summary gives `heads`
    distributions over the 4K tokens (where in the window this frame is), and each head's weighted
    sum of the tokens' values joins the condition. The weighted sums are written out token by token
    (elementwise ops in a fixed order), so a row's bits do not depend on the batch.

    Measured against `Reader` on the same data (6-minute flow-head runs, espeak's word timing): flow loss
    0.149 vs 0.154 at 1800 steps, but 1.5 times slower a step, so at equal time its loss and its mel L1
    on held-out texts (0.70 vs 0.64) were worse. Not the shipped reader (`interplay train-voice --reader
    align` trains one).
    """

    def __init__(self, k: int, width: int, frames: int, emb: int = 48, hidden: int = 512, tok: int = 128,
                 heads: int = 4, head_dim: int = 32) -> None:
        super().__init__(k, width, frames, emb, hidden)
        n = self.n
        self.heads, self.head_dim = heads, head_dim
        self.w_conv = nn.Parameter(torch.randn(tok, 3 * emb) / math.sqrt(3 * emb))
        self.w_ctx = nn.Parameter(torch.randn(tok, width) / math.sqrt(width) * 0.5)
        self.b_conv = nn.Parameter(torch.zeros(tok))
        self.w_val = nn.Parameter(torch.randn(heads * head_dim, tok) / math.sqrt(tok))
        self.w_pick = nn.Parameter(torch.randn(heads * n, width) / math.sqrt(width))
        self.b_pick = nn.Parameter(torch.zeros(heads * n))
        self.w3 = nn.Parameter(torch.randn(width, width + heads * head_dim) / math.sqrt(width + heads * head_dim))

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        e, base, frame = self._summary(window)
        rows = e.shape[0]
        z = e.new_zeros(rows, 1, e.shape[-1])
        near = torch.cat([torch.cat([z, e[:, :-1]], 1), e, torch.cat([e[:, 1:], z], 1)], dim=-1)
        tok = kernels.silu(kernels.linear(near, self.w_conv, self.b_conv)
                           + kernels.linear(base, self.w_ctx)[:, None, :])
        val = kernels.linear(tok, self.w_val).view(rows, self.n, self.heads, self.head_dim)
        q = kernels.silu(base + self.frame[frame])
        pick = torch.exp(kernels.log_softmax(kernels.linear(q, self.w_pick, self.b_pick).view(rows, self.heads, self.n)))
        read = pick[:, :, 0, None] * val[:, 0]
        for j in range(1, self.n):
            read = read + pick[:, :, j, None] * val[:, j]
        return kernels.linear(torch.cat([q, read.reshape(rows, -1)], dim=-1), self.w3, self.b3)


def make_reader(kind: str, k: int, width: int, frames: int) -> nn.Module:
    """The flow head's reader of config `voice_reader`: "mlp" (`Reader`) or "align" (`AlignReader`)."""
    if kind == "mlp":
        return Reader(k, width, frames, hidden=2 * width)
    if kind == "align":
        return AlignReader(k, width, frames, hidden=2 * width)
    raise ValueError(f"unknown voice_reader {kind!r} (mlp or align)")


def frame_windows(window: list[int], frames: int) -> torch.Tensor:
    """One turn's window -> [frames, 4K + 1]: the window with each frame index appended."""
    w = torch.tensor(window, dtype=torch.long)
    return torch.cat([w.expand(frames, -1), torch.arange(frames)[:, None]], dim=1)
