"""Streaming sessions: a preallocated KV cache written by position, advanced one micro-turn at a time.

`step_batch` advances several sessions (at any lengths) by exactly one turn as one batch: featurize
each session's inputs, one chunk forward over the turn's input slots (layout.py), K-1 one-token
decode steps for the output slots, flow-head mel for voiced sessions (read from the tokens they
said last turn and this one, model/reader.py), then the vocoder. Nothing of
the history is recomputed. Decoding waits on nothing: greedy, or sampled with noise that is a pure
function of (session seed, turn, slot), so a session replays exactly.

Capacity rule (compaction): before a turn that would not fit, the session keeps the prefix (<bos>
and the first `prefix_turns` turns, an attention sink) and the newest whole turns that fill
`keep_fraction` of the rest, and drops the turns between. Kept K/V move left in the same cache;
K is stored RoPE-rotated, so moved keys are re-rotated by the shift (positions stay contiguous and
equal cache slots). The current turn is never dropped: compaction runs before it is written and
always leaves room for it. Requires capacity >= prefix + 2 turns.

Outputs: bytes become `text` (UTF-8 decoded across turns); <start_speaking> voices its own turn
and the ones after it until <stop_speaking> (whose turn still plays); a barge-in or <listen>
silences the current turn at once (`turn_voiced`); <delegate> opens a
task whose bytes (possibly over several turns) are collected instead of spoken text, and the turn
that closes it with </delegate> reports "delegate" in `controls` with `delegate_task` (a task left
open is closed with what it has by <start_speaking>, or after 50 turns or 1024 bytes; trailing
spaces and punctuation are trimmed, TASK_TRIM, and an empty task is dropped). A silent <state:n>
token (a countdown or tally the model keeps for itself) is reported as `state`, never as text.

Reading pace (model/pacing.py): a session made with `read_bytes` > 0 gives the model a voiced context
line longer than that in pieces, the next after the model's <stop_speaking>; off (0) by default,
as in training and evaluation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import torch

from interaction_actor.model import text as T
from interaction_actor.model.featurize import InputStreams, featurize_turn
from interaction_actor.model.flow_head import frame_noise, turn_context
from interaction_actor.model.fusion import InteractionModel
from interaction_actor.model.layout import NO_HIST, History, Lookup, SlotChunk, turn_chunk
from interaction_actor.model.pacing import ReadPacer
from interaction_actor.model.reader import ReadState, frame_windows
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
    heard: str = ""  # what the user said, as the ears heard it (final transcripts since the last turn);
    # the native model reads it in the text-in slots after any typed text
    voice: str = ""  # the lines of `context` the loop's scheduler decided are voiced now (INTERRUPT, or
    # WHEN_IDLE at a pause); the rest of `context` is context only (SILENT). A backend that voices results
    # itself says these; the native model reads `context` alone, each line led by its mode marker
    # (text.CTX_NOW / CTX_IDLE / CTX_SILENT; the loop writes them, a line without one is CTX_IDLE)


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
    delegate_confidence: float | None = None  # with delegate_task: p(<delegate>) at the step that opened it


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


class InputRejected(ValueError):
    """step_batch refused the input of the session at `index` before changing any state."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


@dataclass
class KVCache:
    """The session's KV cache: preallocated once, written by position (slot == position)."""

    kv: torch.Tensor  # [layers, 2, kv_heads, capacity, head_dim]
    capacity: int
    pos: int = 1  # positions decided so far; the pending token's (pos - 1) is written with the next chunk
    prefix_len: int = 1  # what compaction keeps at the front (<bos> and the first turns)
    compactions: int = 0


@dataclass
class Pending:
    """The token the last turn ended with: decided but not yet in the cache. It opens the next turn's
    chunk at position pos - 1, with its History ids and Lookup candidates (<bos> at the start)."""

    token: int = T.BOS
    hist: tuple[int, int] = NO_HIST
    cand: tuple[int, int] = NO_HIST


@dataclass
class Speech:
    """The assistant's side of the session: whether it speaks, what it has said, its audio, and the
    bytes of a <delegate> task it has opened and not yet closed."""

    speaking: bool = False
    history: History = field(default_factory=History)  # what the model is saying (layout.History)
    utf8: T.Utf8Stream = field(default_factory=T.Utf8Stream)
    prev_mel: torch.Tensor | None = None  # the previous turn's mel [16, 80] when it was voiced
    vocoder: VocoderState = field(default_factory=VocoderState)
    task: list[int] | None = None  # bytes of the open <delegate> task
    task_since: int = 0  # the turn it opened
    task_confidence: float | None = None  # p(<delegate>) when the open task's token was chosen
    opened: list[float] = field(default_factory=list)  # this turn's p(<delegate>) per opening, in order
    reader: ReadState = field(default_factory=ReadState)  # what the voice reads (model/reader.py); new_session sets K


@dataclass
class SessionState:
    """One session's streaming state: a tuple of the parts' own states, each owned by the step that
    writes it (the cache by the forward and compaction, `inputs` by the featurizer, `lookup` by the
    featurizer and the decoder, `speech` and `pending` by the decoder)."""

    id: str
    seed: int
    cache: KVCache
    turn: int = 0
    pending: Pending = field(default_factory=Pending)
    inputs: InputStreams = field(default_factory=InputStreams)  # dMel stream, text/context slot queues
    lookup: Lookup = field(default_factory=Lookup)  # bytes in the text/context slots still in the cache
    speech: Speech = field(default_factory=Speech)
    pacer: ReadPacer = field(default_factory=ReadPacer)  # long voiced context in pieces (off by default)
    record: SessionRecord | None = None


def voiced_now(speaking: bool, barge_in: bool) -> bool:
    """The voicing rule, one copy for the session, the trainer and the evaluation: a turn is voiced
    when the assistant was speaking at its start, and a barge-in silences it at once."""
    return speaking and not barge_in


def turn_voiced(at_start: bool, barge_in: bool, tokens: list[int]) -> bool:
    """Whether a turn plays the assistant's voice, once its tokens are known: it was voiced at its start
    (`voiced_now`), or it opens an utterance (<start_speaking>: the voice says the turn's own bytes at
    once), unless a barge-in silences it or the model yields the floor in it (<listen>)."""
    return (at_start or (T.START_SPEAKING in tokens and not barge_in)) and T.LISTEN not in tokens


def speaking_after(speaking: bool, tokens: list[int]) -> bool:
    """Whether the NEXT turn starts speaking: <start_speaking> / <stop_speaking> / <listen> in this turn's
    tokens (<listen> also silences the turn it is in: the model heard the user barge in)."""
    for t in tokens:
        if t == T.START_SPEAKING:
            speaking = True
        elif t in (T.STOP_SPEAKING, T.LISTEN):
            speaking = False
    return speaking


def session_seed(session_id: str, model_seed: int = 0) -> int:
    digest = hashlib.blake2b(f"{model_seed}:{session_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 62) - 1)


def check_capacity(model: InteractionModel, capacity: int | None = None) -> int:
    """The KV capacity a session of `model` gets (`capacity`, default the config's); ValueError when it
    cannot hold the prefix and two turns, or exceeds max_seq_len."""
    cfg, lay = model.config, model.layout
    capacity = cfg.capacity if capacity is None else int(capacity)
    prefix = 1 + cfg.prefix_turns * lay.turn_len
    if capacity < prefix + 2 * lay.turn_len:
        raise ValueError(f"capacity {capacity} < prefix {prefix} + 2 turns of {lay.turn_len} positions")
    if capacity > cfg.max_seq_len:
        raise ValueError(f"capacity {capacity} > max_seq_len {cfg.max_seq_len}")
    return capacity


def new_session(model: InteractionModel, session_id: str, capacity: int | None = None, *,
                seed: int | None = None, record: bool = False, read_bytes: int = 0) -> SessionState:
    """A fresh session with its KV cache preallocated (`capacity` positions, default the config's).
    `read_bytes` > 0 paces voiced context longer than that into pieces (model/pacing.py); 0 (the
    trainer's and the evaluation's sessions) gives the model every line whole."""
    cfg = model.config
    capacity = check_capacity(model, capacity)
    s = SessionState(id=session_id, seed=session_seed(session_id) if seed is None else int(seed),
                     cache=KVCache(model.transformer.new_cache(capacity), capacity),
                     record=SessionRecord() if record else None, pacer=ReadPacer(read_bytes=int(read_bytes)))
    s.speech.reader = ReadState(cfg.text_out_slots)
    return s


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
    c = s.cache
    shift = _plan(model, c.capacity, c.pos)
    if shift == 0:
        return
    prefix = 1 + model.config.prefix_turns * model.layout.turn_len
    src = prefix + shift
    n = c.pos - src
    moved = c.kv[:, :, :, src : src + n].clone()
    moved[:, 0] = model.transformer.rerotate(moved[:, 0], shift)
    c.kv[:, :, :, prefix : prefix + n] = moved
    s.lookup.drop(prefix, src)
    c.pos -= shift
    c.prefix_len = prefix
    c.compactions += 1
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
    """Next output token for each row: greedy, or Gumbel-max with per-(seed, turn, slot) noise. A row
    that opens a <delegate> records the model's probability of that token (before any noise) as the
    task's confidence; nothing else reads the probabilities, so the tokens are unchanged."""
    z0 = logits + model.output_bias
    z = z0
    temp = model.config.temperature
    if temp > 0:
        u = torch.stack([_uniform(s.seed, s.turn, slot, z.shape[-1]) for s in sessions]).clamp(1e-9, 1 - 1e-9)
        u = u.to(z.device)
        z = z / temp - torch.log(-torch.log(u))
    tokens = [int(i) for i in z.argmax(-1)]
    for i, t in enumerate(tokens):
        if t == T.DELEGATE:
            sessions[i].speech.opened.append(float(torch.softmax(z0[i].float(), -1)[t]))
    return tokens


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
    """Advance each session exactly one turn (batched compute) and return its output.

    open each turn (compaction, the voicing rule, featurize, lay out the chunk) → one forward over
    all chunks → the output tokens → mel frames of the voiced turns (the flow head reads the tokens
    said last turn and this turn, model/reader.py) → audio → close each turn."""
    if len(sessions) != len(inputs):
        raise ValueError("one TurnInput per session")
    if len({id(s) for s in sessions}) != len(sessions):
        raise ValueError("a session appears twice in the batch")
    if not sessions:
        return []
    for i, inp in enumerate(inputs):
        try:
            _validate(inp)
        except (TypeError, ValueError) as exc:
            raise InputRejected(i, str(exc)) from exc
    cfg = model.config
    chunks = [_open_turn(model, s, inp) for s, inp in zip(sessions, inputs, strict=True)]
    voiced = [s.speech.speaking for s in sessions]
    starts = [s.cache.pos - 1 for s in sessions]
    hidden = model.forward_chunk(SlotChunk.stack(chunks), [s.cache.kv for s in sessions], starts)
    for i, s in enumerate(sessions):
        _record(s, model, starts[i], chunks[i], hidden[i])
    ys = _decode_outputs(model, sessions, hidden)
    voiced = [turn_voiced(v, inp.barge_in, y) for v, inp, y in zip(voiced, inputs, ys, strict=True)]
    mels = _sample_mels(model, sessions, ys, voiced)
    vi = sorted(mels)
    pcms = dict(zip(vi, vocode_turns([sessions[i].speech.vocoder for i in vi], [mels[i] for i in vi], cfg),
                    strict=True))
    return [_close_turn(model, s, ys[i], voiced[i], mels.get(i), pcms.get(i)) for i, s in enumerate(sessions)]


def _open_turn(model: InteractionModel, s: SessionState, inp: TurnInput) -> SlotChunk:
    """Make room, apply the voicing rule, featurize the inputs: this turn's chunk, led by the pending token."""
    cfg, lay = model.config, model.layout
    if s.cache.pos + lay.turn_len > s.cache.capacity:
        compact(model, s)
    sp = s.speech
    sp.speaking = voiced_now(sp.speaking, inp.barge_in)
    if s.pacer.read_bytes:
        inp = replace(inp, context=s.pacer.feed(inp.context, inp.barge_in))
    f = featurize_turn(s.inputs, inp, cfg, lay, s.cache.pos, s.lookup, s.id)
    block = turn_chunk(cfg, barge_in=inp.barge_in, voiced=sp.speaking, prev_mel=sp.prev_mel, **f.slots(),
                       out_hist=[sp.history.ids()], out_cand=[s.lookup.cand(sp.history.ids())])
    p = s.pending
    return SlotChunk.cat_time([_one(cfg, p.token, p.hist, p.cand), block])


def _sample_mels(model: InteractionModel, sessions: list[SessionState], ys: list[list[int]],
                 voiced: list[bool]) -> dict[int, torch.Tensor]:
    """Mel frames [frames, n_mels] of the voiced sessions (the flow head reads each one's window), by row."""
    cfg, lay = model.config, model.layout
    vi = [i for i, v in enumerate(voiced) if v]
    if not vi:
        return {}
    cond = torch.cat([frame_windows(sessions[i].speech.reader.window(ys[i]), lay.frames) for i in vi])
    cond = cond.to(model.device)
    if cfg.flow_noise == 0.0:  # the mean path: no per-session noise to draw
        noise = torch.zeros(len(vi) * lay.frames, cfg.n_mels)
    else:
        noise = torch.cat([frame_noise(sessions[i].seed, sessions[i].turn, lay.frames, cfg.n_mels)
                           for i in vi]) * cfg.flow_noise
    ctx = None
    if cfg.flow_context:  # each turn's previous rendering (silence after a quiet turn)
        ctx = torch.stack([turn_context(sessions[i].speech.prev_mel, cfg) for i in vi]).to(model.device)
    out = model.flow.sample(cond, noise.to(cond.device), cfg.flow_steps, ctx).view(len(vi), lay.frames, cfg.n_mels)
    out = out.cpu()
    return {i: out[j].clone() for j, i in enumerate(vi)}


def _decode_outputs(model: InteractionModel, sessions: list[SessionState], hidden: torch.Tensor) -> list[list[int]]:
    """The turn's output tokens: y_0 from <out>, then K-1 one-token steps written to the caches."""
    cfg, lay = model.config, model.layout
    ys: list[list[int]] = [[] for _ in sessions]

    def take(tokens: list[int]) -> None:
        for s, y, t in zip(sessions, ys, tokens, strict=True):
            y.append(t)
            s.lookup.push(t, s.speech.history.ids())
            s.speech.history.push(t)

    take(_choose(model, model.logits(hidden[:, -1]), sessions, 0))
    for k in range(1, lay.out_slots):
        rows = [_one(cfg, y[-1], s.speech.history.ids(), s.lookup.cand(s.speech.history.ids()))
                for s, y in zip(sessions, ys, strict=True)]
        st = [s.cache.pos + lay.out + k for s in sessions]
        h = model.forward_chunk(SlotChunk.stack(rows), [s.cache.kv for s in sessions], st)
        for i, s in enumerate(sessions):
            _record(s, model, st[i], rows[i], h[i])
        take(_choose(model, model.logits(h[:, -1]), sessions, k))
    return ys


def _close_turn(model: InteractionModel, s: SessionState, ys: list[int], voiced: bool, mel: torch.Tensor | None,
                pcm: torch.Tensor | None) -> TurnOutput:
    """Read the turn's tokens into its output; the last token becomes pending; the cache moves on a turn."""
    sp = s.speech
    if not voiced:
        reset(sp.vocoder)
    out = _finish_turn(s, ys, voiced, mel, pcm, model.config.n_mels)
    sp.reader.push(ys)
    s.pacer.after(ys)
    hist = sp.history.ids()
    s.pending = Pending(ys[-1], hist, s.lookup.cand(hist))
    s.cache.pos += model.layout.turn_len
    sp.prev_mel = mel
    s.turn += 1
    return out


# A heard request ends in the transcriber's full stop or comma ("... in Oslo."), and the model copies
# heard bytes: on held-out cities it wrote "weather Nairobi." for "weather Nairobi" in 5 of 26 spoken
# requests. A query has no use for trailing punctuation, so the reported task drops it (the model's
# own sequence keeps every byte it wrote).
TASK_TRIM = " \t.,;:!?"


def _close_task(s: SessionState, task: str | None, controls: list[str]) -> str | None:
    """Close the open <delegate> task, if any: its bytes, less trailing spaces and punctuation
    (TASK_TRIM), become the turn's task (one left empty is dropped; the turn reports one task, the
    first it closed)."""
    sp = s.speech
    if sp.task and task is None and (trimmed := T.decode(sp.task).rstrip(TASK_TRIM)):
        task = trimmed
        controls.append("delegate")
    sp.task = None
    return task


def _finish_turn(s: SessionState, ys: list[int], voiced: bool, mel: torch.Tensor | None, pcm: torch.Tensor | None,
                 n_mels: int) -> TurnOutput:
    sp = s.speech
    text_ids: list[int] = []
    controls: list[str] = []
    task: str | None = None
    state: int | None = None
    confidence: float | None = None
    opened, sp.opened = sp.opened, []
    for t in ys:
        if task is None:
            confidence = sp.task_confidence  # of the task that is open until one closes this turn
        if (v := T.state_value(t)) is not None:
            state = v
        elif t < T.N_BYTES:
            if sp.task is not None:
                sp.task.append(t)
            else:
                text_ids.append(t)
        elif t == T.DELEGATE:
            sp.task, sp.task_since = [], s.turn
            sp.task_confidence = opened.pop(0) if opened else None
        elif t == T.DELEGATE_END:
            task = _close_task(s, task, controls)
        elif t == T.START_SPEAKING:
            task = _close_task(s, task, controls)  # a task left open ends where speech starts
            controls.append("start_speaking")
        elif t == T.STOP_SPEAKING:
            controls.append("stop_speaking")
        elif t == T.LISTEN:
            controls.append("listen")
    sp.speaking = speaking_after(sp.speaking, ys)
    if task is None:
        confidence = sp.task_confidence
    if sp.task is not None and (len(sp.task) >= DELEGATE_MAX_BYTES or s.turn - sp.task_since >= DELEGATE_MAX_TURNS):
        task = _close_task(s, task, controls)
    return TurnOutput(session_id=s.id, turn=s.turn, text=sp.utf8.feed(text_ids),
                      mel=mel if mel is not None else torch.zeros(0, n_mels), pcm=pcm, controls=controls,
                      delegate_task=task, speaking=voiced, state=state,
                      delegate_confidence=confidence if task is not None else None)
