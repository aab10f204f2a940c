"""Streaming sessions: a preallocated KV cache written by position, advanced one micro-turn at a time.

`step_batch` advances several sessions (at any lengths) by exactly one turn as one batch: featurize
each session's inputs, one chunk forward over the turn's input slots (layout.py), K-1 one-token
decode steps for the output slots, flow-head mel for voiced sessions, then the vocoder. Nothing of
the history is recomputed. Decoding waits on nothing: greedy, or sampled with noise that is a pure
function of (session seed, turn, slot), so a session replays exactly.

Capacity rule (compaction): before a turn that would not fit, the session keeps the prefix (<bos>
and the first `prefix_turns` turns, an attention sink) and the newest whole turns that fill
`keep_fraction` of the rest, and drops the turns between. Kept K/V move left in the same cache;
K is stored RoPE-rotated, so moved keys are re-rotated by the shift (positions stay contiguous and
equal cache slots). The current turn is never dropped: compaction runs before it is written and
always leaves room for it. Requires capacity >= prefix + 2 turns.

Outputs: bytes become `text` (UTF-8 decoded across turns); <start_speaking>/<stop_speaking> set
whether the NEXT turns are voiced (a barge-in silences the current turn at once); <delegate> opens a
task whose bytes (possibly over several turns) are collected instead of spoken text, and the turn
that closes it with </delegate> reports "delegate" in `controls` with `delegate_task` (a task left
open is closed with what it has by <start_speaking>, or after 50 turns or 1024 bytes; an empty task
is dropped). A silent <state:n> token (a countdown or tally the model keeps for itself) is reported
as `state`, never as text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from interaction_actor.model import text as T
from interaction_actor.model.dmel import DMelStream
from interaction_actor.model.featurize import InputStreams, featurize_turn
from interaction_actor.model.flow_head import frame_noise
from interaction_actor.model.fusion import InteractionModel
from interaction_actor.model.layout import NO_HIST, History, Lookup, SlotChunk, turn_chunk
from interaction_actor.model.vocoder import VocoderState, reset, vocode_turns
from interplay.log import get_logger

log = get_logger("interaction_actor.model.session")

CONTROLS = ("delegate", "start_speaking", "stop_speaking", "listen")
DELEGATE_MAX_BYTES = 1024
DELEGATE_MAX_TURNS = 50  # a <delegate> left open this long is closed with what it has


@dataclass
class TurnInput:
    audio: torch.Tensor | None = None  # float32 mono 16 kHz samples of this window, [-1, 1]; None = nothing
    frame: torch.Tensor | None = None  # uint8 [H, W, 3] RGB latest video frame, or None
    text: str = ""  # typed text that arrived in this window
    context: str = ""  # background context to inject this turn
    barge_in: bool = False  # the user barged in during this window


@dataclass
class TurnOutput:
    session_id: str
    turn: int
    text: str
    mel: torch.Tensor  # [n_frames, 80] log10 mel (n_frames 0 when silent)
    pcm: torch.Tensor | None  # float32 16 kHz, or None when silent
    controls: list[str]
    delegate_task: str | None
    speaking: bool
    state: int | None = None  # the <state:n> the model wrote to itself this turn (a countdown, a tally)


@dataclass
class SessionRecord:
    """What a recording session computed, by position (for the streaming == full-forward tests)."""

    chunks: list[tuple[int, SlotChunk]] = field(default_factory=list)
    hidden_rows: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    logits_rows: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    compacted: bool = False

    def _cat(self, rows: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
        if self.compacted:
            raise RuntimeError("the session compacted: its record no longer describes one sequence")
        rows = sorted(rows, key=lambda r: r[0])
        expect = 0
        for start, r in rows:
            if start != expect:
                raise RuntimeError(f"record has a gap at position {expect}")
            expect = start + r.shape[0]
        return torch.cat([r for _, r in rows], dim=0)

    def sequence(self) -> SlotChunk:
        """The streamed sequence so far as one single-row SlotChunk (positions 0..n-1)."""
        if self.compacted:
            raise RuntimeError("the session compacted: its record no longer describes one sequence")
        return SlotChunk.cat_time([c for _, c in sorted(self.chunks, key=lambda r: r[0])])

    def hidden(self) -> torch.Tensor:
        return self._cat(self.hidden_rows)

    def logits(self) -> torch.Tensor:
        return self._cat(self.logits_rows)


@dataclass
class SessionState:
    id: str
    seed: int
    capacity: int
    kv: torch.Tensor  # [layers, 2, kv_heads, capacity, head_dim]; slot == position
    turn: int = 0
    pos: int = 1  # positions decided so far; the token at pos-1 (`pending`) is written next chunk
    pending: int = T.BOS
    history: History = field(default_factory=History)  # what the model is saying (layout.History)
    pending_hist: tuple[int, int] = NO_HIST  # History ids of the `pending` position
    pending_cand: tuple[int, int] = NO_HIST  # its Lookup candidates
    lookup: Lookup = field(default_factory=Lookup)  # bytes in the text/context slots still in the cache
    prefix_len: int = 1
    inputs: InputStreams = field(default_factory=InputStreams)  # dMel stream, text/context slot queues
    vocoder: VocoderState = field(default_factory=VocoderState)
    speaking: bool = False
    prev_mel: torch.Tensor | None = None  # previous turn's mel [16, 80] when it was voiced
    delegate_buf: list[int] | None = None
    delegate_since: int = 0
    utf8: T.Utf8Stream = field(default_factory=T.Utf8Stream)
    compactions: int = 0
    record: SessionRecord | None = None

    @property
    def dmel(self) -> DMelStream:
        return self.inputs.dmel

    @property
    def dropped_bytes(self) -> int:
        return self.inputs.dropped_bytes


def voiced_now(speaking: bool, barge_in: bool) -> bool:
    """The voicing rule, one copy for the session, the trainer and the evaluation: a turn is voiced
    when the assistant was speaking at its start, and a barge-in silences it at once."""
    return speaking and not barge_in


def speaking_after(speaking: bool, tokens: list[int]) -> bool:
    """Whether the NEXT turn starts speaking: <start_speaking> / <stop_speaking> in this turn's tokens."""
    for t in tokens:
        if t == T.START_SPEAKING:
            speaking = True
        elif t == T.STOP_SPEAKING:
            speaking = False
    return speaking


def session_seed(session_id: str, model_seed: int = 0) -> int:
    digest = hashlib.blake2b(f"{model_seed}:{session_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 62) - 1)


def new_session(model: InteractionModel, session_id: str, capacity: int | None = None, *,
                seed: int | None = None, record: bool = False) -> SessionState:
    """A fresh session with its KV cache preallocated (`capacity` positions, default the config's)."""
    cfg, lay = model.config, model.layout
    capacity = cfg.capacity if capacity is None else int(capacity)
    prefix = 1 + cfg.prefix_turns * lay.turn_len
    if capacity < prefix + 2 * lay.turn_len:
        raise ValueError(f"capacity {capacity} < prefix {prefix} + 2 turns of {lay.turn_len} positions")
    if capacity > cfg.max_seq_len:
        raise ValueError(f"capacity {capacity} > max_seq_len {cfg.max_seq_len}")
    return SessionState(id=session_id, seed=session_seed(session_id) if seed is None else int(seed),
                        capacity=capacity, kv=model.transformer.new_cache(capacity),
                        record=SessionRecord() if record else None)


def _plan(model: InteractionModel, capacity: int, pos: int) -> int:
    """Positions the capacity rule drops at this fill (0 = none): whole turns after the prefix."""
    lay = model.layout
    prefix = 1 + model.config.prefix_turns * lay.turn_len
    fits = (capacity - prefix) // lay.turn_len - 1
    keep = max(1, min(fits, int(model.config.keep_fraction * (capacity - prefix)) // lay.turn_len))
    have = (pos - prefix) // lay.turn_len
    return 0 if have <= keep else pos - keep * lay.turn_len - prefix


def fill_after(model: InteractionModel, turns: int, capacity: int | None = None) -> int:
    """Cache positions in use after `turns` turns under the capacity rule (pure arithmetic)."""
    capacity = model.config.capacity if capacity is None else capacity
    pos = 1
    for _ in range(turns):
        if pos + model.layout.turn_len > capacity:
            pos -= _plan(model, capacity, pos)
        pos += model.layout.turn_len
    return pos


def compact(model: InteractionModel, s: SessionState) -> None:
    """Apply the capacity rule now (see module doc); the next turn is guaranteed to fit."""
    shift = _plan(model, s.capacity, s.pos)
    if shift == 0:
        return
    prefix = 1 + model.config.prefix_turns * model.layout.turn_len
    src = prefix + shift
    n = s.pos - src
    moved = s.kv[:, :, :, src : src + n].clone()
    moved[:, 0] = model.transformer.rerotate(moved[:, 0], shift)
    s.kv[:, :, :, prefix : prefix + n] = moved
    s.lookup.drop(prefix, src)
    s.pos -= shift
    s.prefix_len = prefix
    s.compactions += 1
    if s.record is not None:
        s.record.compacted = True
    log.info("session_compacted", session_id=s.id, turn=s.turn, dropped_positions=shift, kept=prefix + n)


def _one(cfg, token: int, hist: tuple[int, int], cand: tuple[int, int]) -> SlotChunk:
    """A one-position chunk holding an output token, its History ids and Lookup candidates."""
    c = SlotChunk.empty(1, 1, cfg, token)
    c.hist[0, 0] = torch.tensor(hist)
    c.cand[0, 0] = torch.tensor(cand)
    return c


def _uniform(seed: int, turn: int, slot: int, n: int) -> torch.Tensor:
    digest = hashlib.blake2b(f"{seed}:{turn}:token{slot}".encode(), digest_size=8).digest()
    return torch.rand(n, generator=torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1))


def _choose(model: InteractionModel, logits: torch.Tensor, sessions: list[SessionState], slot: int) -> list[int]:
    """Next output token for each row: greedy, or Gumbel-max with per-(seed, turn, slot) noise."""
    z = logits + model.output_bias
    temp = model.config.temperature
    if temp > 0:
        u = torch.stack([_uniform(s.seed, s.turn, slot, z.shape[-1]) for s in sessions]).clamp(1e-9, 1 - 1e-9)
        u = u.to(z.device)
        z = z / temp - torch.log(-torch.log(u))
    return [int(i) for i in z.argmax(-1)]


def _record(s: SessionState, model: InteractionModel, start: int, chunk: SlotChunk, hidden: torch.Tensor) -> None:
    if s.record is not None:
        s.record.chunks.append((start, chunk))
        s.record.hidden_rows.append((start, hidden.clone()))
        s.record.logits_rows.append((start, model.logits(hidden)))


def _validate(inp: TurnInput) -> None:
    """Reject bad input before any session state changes (a bad input loses nothing)."""
    if not isinstance(inp, TurnInput):
        raise TypeError(f"expected TurnInput, got {type(inp).__name__}")
    a = inp.audio
    if a is not None and (not isinstance(a, torch.Tensor) or a.dim() != 1 or not a.is_floating_point()):
        raise TypeError("TurnInput.audio must be a 1-D float tensor of 16 kHz samples or None")
    if a is not None and not bool(torch.isfinite(a).all()):
        raise ValueError("TurnInput.audio contains NaN or inf")
    f = inp.frame
    if f is not None and (not isinstance(f, torch.Tensor) or f.dtype != torch.uint8 or f.dim() != 3
                          or f.shape[-1] != 3 or f.shape[0] < 1 or f.shape[1] < 1):
        raise TypeError("TurnInput.frame must be a uint8 [H, W, 3] tensor or None")
    if not isinstance(inp.text, str) or not isinstance(inp.context, str):
        raise TypeError("TurnInput.text and .context must be str")


@torch.no_grad()
def step_batch(model: InteractionModel, sessions: list[SessionState], inputs: list[TurnInput]) -> list[TurnOutput]:
    """Advance each session exactly one turn (batched compute) and return its output."""
    if len(sessions) != len(inputs):
        raise ValueError("one TurnInput per session")
    if len({id(s) for s in sessions}) != len(sessions):
        raise ValueError("a session appears twice in the batch")
    if not sessions:
        return []
    for inp in inputs:
        _validate(inp)
    cfg, lay = model.config, model.layout
    chunks, voiced = [], []
    for s, inp in zip(sessions, inputs, strict=True):
        if s.pos + lay.turn_len > s.capacity:
            compact(model, s)
        s.speaking = voiced_now(s.speaking, inp.barge_in)
        voiced.append(s.speaking)
        f = featurize_turn(s.inputs, inp, cfg, lay, s.pos, s.lookup, s.id)
        block = turn_chunk(cfg, barge_in=inp.barge_in, voiced=s.speaking, prev_mel=s.prev_mel, **f.slots(),
                           out_hist=[s.history.ids()], out_cand=[s.lookup.cand(s.history.ids())])
        chunks.append(SlotChunk.cat_time([_one(cfg, s.pending, s.pending_hist, s.pending_cand), block]))
    caches = [s.kv for s in sessions]
    starts = [s.pos - 1 for s in sessions]
    batch = SlotChunk.stack(chunks)
    hidden = model.forward_chunk(batch, caches, starts)
    for i, s in enumerate(sessions):
        _record(s, model, starts[i], chunks[i], hidden[i])
    # mel frames of voiced sessions (flow head reads the mel-out slots)
    mels: dict[int, torch.Tensor] = {}
    vi = [i for i, v in enumerate(voiced) if v]
    if vi:
        a = 1 + lay.mel
        cond = hidden[vi, a : a + lay.frames].reshape(-1, cfg.d_model)
        noise = torch.cat([frame_noise(sessions[i].seed, sessions[i].turn, lay.frames, cfg.n_mels) for i in vi])
        out = model.flow.sample(cond, noise.to(cond.device), cfg.flow_steps).view(len(vi), lay.frames, cfg.n_mels)
        out = out.cpu()
        mels = {i: out[j].clone() for j, i in enumerate(vi)}
    # output tokens: y_0 from <out>, then K-1 one-token steps
    ys = [[t] for t in _choose(model, model.logits(hidden[:, -1]), sessions, 0)]
    for s, y in zip(sessions, ys, strict=True):
        s.history.push(y[-1])
        s.lookup.push(y[-1])
    for k in range(1, lay.out_slots):
        rows = [_one(cfg, y[-1], s.history.ids(), s.lookup.cand(s.history.ids()))
                for s, y in zip(sessions, ys, strict=True)]
        step = SlotChunk.stack(rows)
        st = [s.pos + lay.out + k for s in sessions]
        h = model.forward_chunk(step, caches, st)
        for i, s in enumerate(sessions):
            _record(s, model, st[i], rows[i], h[i])
        for i, t in enumerate(_choose(model, model.logits(h[:, -1]), sessions, k)):
            ys[i].append(t)
            sessions[i].history.push(t)
            sessions[i].lookup.push(t)
    pcms = dict(zip(vi, vocode_turns([sessions[i].vocoder for i in vi], [mels[i] for i in vi], cfg), strict=True))
    outputs = []
    for i, s in enumerate(sessions):
        if not voiced[i]:
            reset(s.vocoder)
        outputs.append(_finish_turn(s, ys[i], voiced[i], mels.get(i), pcms.get(i), cfg.n_mels))
        s.pending = ys[i][-1]
        s.pending_hist = s.history.ids()
        s.pending_cand = s.lookup.cand(s.pending_hist)
        s.pos += lay.turn_len
        s.prev_mel = mels.get(i)
        s.turn += 1
    return outputs


def _close_task(s: SessionState, task: str | None, controls: list[str]) -> str | None:
    """Close the open <delegate> task, if any: its bytes become the turn's task (an empty one is
    dropped; the turn reports one task, the first it closed)."""
    if s.delegate_buf and task is None:
        task = T.decode(s.delegate_buf)
        controls.append("delegate")
    s.delegate_buf = None
    return task


def _finish_turn(s: SessionState, ys: list[int], voiced: bool, mel: torch.Tensor | None, pcm: torch.Tensor | None,
                 n_mels: int) -> TurnOutput:
    text_ids: list[int] = []
    controls: list[str] = []
    task: str | None = None
    state: int | None = None
    for t in ys:
        if (v := T.state_value(t)) is not None:
            state = v
        elif t < T.N_BYTES:
            if s.delegate_buf is not None:
                s.delegate_buf.append(t)
            else:
                text_ids.append(t)
        elif t == T.DELEGATE:
            s.delegate_buf, s.delegate_since = [], s.turn
        elif t == T.DELEGATE_END:
            task = _close_task(s, task, controls)
        elif t == T.START_SPEAKING:
            task = _close_task(s, task, controls)  # a task left open ends where speech starts
            controls.append("start_speaking")
        elif t == T.STOP_SPEAKING:
            controls.append("stop_speaking")
        elif t == T.LISTEN:
            controls.append("listen")
    s.speaking = speaking_after(s.speaking, ys)
    if s.delegate_buf is not None and (len(s.delegate_buf) >= DELEGATE_MAX_BYTES
                                       or s.turn - s.delegate_since >= DELEGATE_MAX_TURNS):
        task = _close_task(s, task, controls)
    return TurnOutput(session_id=s.id, turn=s.turn, text=s.utf8.feed(text_ids),
                      mel=mel if mel is not None else torch.zeros(0, n_mels), pcm=pcm, controls=controls,
                      delegate_task=task, speaking=voiced, state=state)
