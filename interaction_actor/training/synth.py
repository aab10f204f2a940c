"""Deterministic synthetic micro-turn episodes for co-training and evaluating the interaction model.

`episode(seed, task)` is a pure function of (DATA_VERSION, task, seed): the user's side as one
`TurnInput` per 200 ms turn (procedural speech-like audio with a noise floor, 80x80 frames, typed
text, background context, barge-in flags), the K output tokens the model should emit at each turn
(teacher forcing), and `expect`, what evaluation checks. Five task families (see each builder):

  time_speak   typed "say W in Ns"        -> speak W at turn (text complete) + 5N (counting down in
                                             silent state tokens meanwhile)
  cue_speak    typed "tell me when red"   -> frames of shapes; speak "red!" at the turn a red shape appears
  rep_count    10 frames of a bouncing ball (up in the top half, or down on the floor), then typed
               "how many?" -> speak the number of floor hits (a silent tally meanwhile)
  turn_taking  user speech-like audio ends -> reply "ok, sure." at the first quiet turn; a barge-in
               mid-reply -> <stop_speaking> that turn, reply again once the user is quiet
  delegation   typed "weather in C?" -> <delegate>weather C</delegate>; the background result
               ("C cond, T C", a random temperature: it must be read, not guessed) arrives in the
               context slots later -> voice it at the first quiet turn (user silent)

A training-only curriculum (CURRICULUM, drawn through TrainConfig.mix, never evaluated):

  echo         random strings arrive in the context slots -> voice each at the first quiet turn once
               it is complete: content that cannot be guessed, only read

Silent state (<state:n> output tokens, text.state_token): a number the model writes to itself in a
silent turn's first output slot and reads back the next turn, never voiced. time_speak counts down
the turns left until it speaks (from the turn the message is complete); rep_count keeps the tally of
floor hits seen so far (from the first frame until it answers); cue_speak keeps a tally of red frames
seen (0) while it watches, until it speaks. A timer and a counter become
"read last turn's number, write the next one", not a span of 10 turns to re-derive at every turn.

Auxiliary targets (`Episode.aux`, training only; the text head predicts them at input slots whose
logits are otherwise unused): time_speak says the wait in turns at the message's last byte;
cue_speak says whether the frame holds red at its last patch and at the turn's context slots; rep_count says the floor hits seen so
far at each frame's last patch.

Speaking protocol (K slots per turn): the turn that starts speaking emits <start_speaking> then
bytes; later turns emit bytes (<empty> pads); the turn after the last bytes emits <stop_speaking>.
Speech follows text by one turn: a voiced turn's mel target is `voice_mel` of the bytes the
previous turn emitted (a procedural formant voice, 1/K of a turn per slot). A "quiet" turn is one
whose last QUIET_FRAMES dMel frames hold no user speech. Everything is torch/stdlib: no downloads.
User speech is procedural speech-like sound (gliding-f0 harmonics with formants, words and pauses),
not espeak-ng: the setup does not install it, and procedural audio keeps episodes a pure function
of the seed on every machine. Changing any builder means bumping DATA_VERSION.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field

import torch

from interaction_actor.model import text as T
from interaction_actor.model.config import ModelConfig
from interaction_actor.model.dmel import STREAM_LAG_FRAMES, log_mel
from interaction_actor.model.session import TurnInput

DATA_VERSION = "synth-4"
TASKS = ("time_speak", "cue_speak", "rep_count", "turn_taking", "delegation")
EPISODE_TURNS = 16  # every episode is 16 turns (3.2 s): fits the small preset's capacity uncompacted
QUIET_FRAMES = 6  # trailing speech-free dMel frames (75 ms + window) that make a turn "quiet"
SR = 16000
NOISE = 0.002  # microphone noise floor (std)
WORDS = ("hello", "go", "now", "stop", "yes", "done", "ready", "bye")
CITIES = ("Oslo", "Rome", "Lima", "Kyiv")
WEATHER = ("rain", "sun", "snow", "fog")
REPLY = "ok, sure."
CUE_TEXT = "red!"
HELD_OUT_BASE = 1 << 40  # evaluation seeds start here; training draws seeds below it


@dataclass
class Episode:
    task: str
    seed: int
    inputs: list[TurnInput]
    targets: list[list[int]]  # K output token ids per turn
    expect: dict = field(default_factory=dict)  # what evaluation checks (see each builder)
    speech: list[tuple[int, int]] = field(default_factory=list)  # user speech spans, in samples
    # auxiliary training targets at input slots, (turn, slot group "turn" | "audio" | "image" | "text" | "ctx",
    # index, token id): what the generator knows that the model must track, e.g. the bounces so far
    aux: list[tuple[int, str, int, int]] = field(default_factory=list)

    @property
    def turns(self) -> int:
        return len(self.inputs)


# ---- audio -----------------------------------------------------------------------------------
def _tone(n: int, f0a: float, f0b: float, formants: tuple[float, ...], amp: float) -> torch.Tensor:
    """A voiced segment: harmonics of a gliding f0 shaped by formant bumps, 10 ms raised-cosine edges."""
    f0 = torch.linspace(f0a, f0b, n, dtype=torch.float64)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / SR
    mean_f0 = (f0a + f0b) / 2
    h = torch.arange(1, int(3800 // max(f0a, f0b)) + 1, dtype=torch.float64)
    gains = sum(torch.exp(-(((h * mean_f0) - f) / 140.0) ** 2) * (0.7**i) for i, f in enumerate(formants))
    gains = gains + 0.02 / h
    wave = (gains[:, None] * torch.sin(h[:, None] * phase[None, :])).sum(0)
    wave = wave / wave.abs().max().clamp(min=1e-9)
    edge = min(160, n // 2)
    env = torch.ones(n, dtype=torch.float64)
    ramp = 0.5 - 0.5 * torch.cos(torch.linspace(0, math.pi, edge, dtype=torch.float64))
    env[:edge] = ramp
    env[n - edge :] = ramp.flip(0)
    return (amp * wave * env).float()


def user_speech(rng: random.Random, duration_s: float) -> torch.Tensor:
    """Speech-like audio of about `duration_s`: words of 1-3 syllables, 30-70 ms pauses, a falling end."""
    pieces: list[torch.Tensor] = []
    total = int(duration_s * SR)
    n = 0
    base = rng.uniform(100, 210)
    amp = rng.uniform(0.12, 0.3)
    while n < total:
        for _ in range(rng.randint(1, 3)):
            m = int(rng.uniform(0.09, 0.2) * SR)
            last = n + m >= total
            f0a = base * rng.uniform(0.9, 1.15)
            f0b = f0a * (0.7 if last else rng.uniform(0.9, 1.1))
            formants = (rng.uniform(300, 800), rng.uniform(900, 2200), rng.uniform(2400, 3200))
            pieces.append(_tone(m, f0a, f0b, formants, amp * rng.uniform(0.7, 1.0)))
            n += m
            if last:
                break
        if n >= total:
            break
        gap = int(rng.uniform(0.03, 0.07) * SR)
        pieces.append(torch.zeros(gap))
        n += gap
    return torch.cat(pieces)


def _audio_stream(turns: int, spans: list[tuple[int, torch.Tensor]], g: torch.Generator) -> list[torch.Tensor]:
    """Per-turn 3200-sample windows of noise floor plus the given (start sample, waveform) pieces."""
    total = turns * 3200
    x = torch.randn(total, generator=g) * NOISE
    for start, w in spans:
        end = min(total, start + w.shape[0])
        if end > start:
            x[start:end] += w[: end - start]
    return list(x.view(turns, 3200))


def quiet_turns(turns: int, speech: list[tuple[int, int]]) -> list[bool]:
    """Turn k is quiet when its last QUIET_FRAMES dMel frames (50 ms windows; the stream lags 2 frames)
    hold no user speech sample."""
    out = []
    for k in range(turns):
        last = 16 * k + 16 - STREAM_LAG_FRAMES - 1  # global index of the turn's last frame
        lo = (last - QUIET_FRAMES + 1) * 200 - 400
        hi = last * 200 + 400
        out.append(not any(s < hi and e > lo for s, e in speech))
    return out


@functools.lru_cache(maxsize=4096)
def _voice_mel_cached(slots: tuple[int, ...], n_mels: int) -> torch.Tensor:
    k = len(slots)
    parts = []
    for i, b in enumerate(slots):
        n = 3200 * (i + 1) // k - 3200 * i // k
        if 0 <= b < T.N_BYTES:
            f0 = 130.0 + (b % 7) * 12.0
            formants = (280.0 + (b % 11) * 55.0, 900.0 + (b % 13) * 130.0, 2600.0 + (b % 5) * 80.0)
            parts.append(_tone(n, f0, f0 * 0.97, formants, 0.25))
        else:
            parts.append(torch.zeros(n))
    wave = torch.cat([*parts, torch.zeros(512)]) + 1e-4 * torch.sin(torch.arange(3712) * 0.37)
    cfg = ModelConfig()
    return log_mel(wave, cfg)[:16].clamp(cfg.dmel_min, cfg.dmel_max)[:, :n_mels].contiguous()


def voice_mel(tokens: list[int], n_mels: int = 80) -> torch.Tensor:
    """[16, n_mels] log10 mel of the assistant's voice for one turn speaking these K output tokens."""
    return _voice_mel_cached(tuple(int(t) for t in tokens), n_mels)


# ---- frames ----------------------------------------------------------------------------------
COLOURS = {"red": (220, 30, 30), "blue": (30, 70, 220), "green": (30, 170, 60), "yellow": (220, 200, 40),
           "white": (235, 235, 235)}


def draw(shapes: list[tuple[str, str, int, int, int]], bg: int) -> torch.Tensor:
    """80x80 RGB frame: shapes are (kind circle|square, colour, cx, cy, radius) on a grey level `bg`."""
    img = torch.full((80, 80, 3), bg, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(80), torch.arange(80), indexing="ij")
    for kind, colour, cx, cy, r in shapes:
        if kind == "circle":
            m = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        else:
            m = ((xx - cx).abs() <= r) & ((yy - cy).abs() <= r)
        img[m] = torch.tensor(COLOURS[colour], dtype=torch.uint8)
    return img


def _shape(rng: random.Random, colour: str) -> tuple[str, str, int, int, int]:
    r = rng.randint(7, 13)
    return (rng.choice(("circle", "square")), colour, rng.randint(r, 79 - r), rng.randint(r, 79 - r), r)


# ---- targets ---------------------------------------------------------------------------------
def speak_tokens(text: str) -> list[int]:
    return [T.START_SPEAKING, *T.encode(text)]


def place(targets: list[list[int]], turn: int, seq: list[int], k: int, stop: bool = True) -> int:
    """Write `seq` K tokens a turn from `turn` (<empty> pads), then a <stop_speaking> turn if `stop`.
    Returns the turn after the last one written. Tokens beyond the episode are cut."""
    chunks = [seq[i : i + k] for i in range(0, len(seq), k)]
    if stop:
        chunks.append([T.STOP_SPEAKING])
    for i, c in enumerate(chunks):
        if turn + i < len(targets):
            targets[turn + i] = [*c, *[T.EMPTY] * (k - len(c))]
    return turn + len(chunks)


def count_token(n: int) -> int:
    """A small count as one token id: the byte of chr(ord("0") + n) ("0".."9", then ":" for 10 ...)."""
    return ord("0") + n


def text_turns(text: str, slots: int) -> int:
    """Turns a typed message occupies in the text-in slots (it arrives whole, `slots` bytes a turn)."""
    return max(1, math.ceil(len(T.encode(text)) / slots))


def _blank(turns: int, k: int) -> tuple[list[TurnInput], list[list[int]]]:
    return [TurnInput() for _ in range(turns)], [[T.EMPTY] * k for _ in range(turns)]


# ---- task builders ---------------------------------------------------------------------------
def _time_speak(rng: random.Random, g: torch.Generator, cfg: ModelConfig) -> Episode:
    """expect: say (word), turn (turn of <start_speaking>), n (seconds)."""
    k = cfg.text_out_slots
    inputs, targets = _blank(EPISODE_TURNS, k)
    word, n = rng.choice(WORDS), rng.choice((1, 2))
    msg = f"say {word} in {n}s"
    a = rng.randint(0, 1)
    inputs[a].text = msg
    done = a + text_turns(msg, cfg.text_in_slots) - 1
    turn = done + 5 * n
    for t in range(done, turn):  # the countdown the model keeps for itself: turns left until it speaks
        targets[t][0] = T.state_token(turn - t)
    place(targets, turn, speak_tokens(word), k)
    for i, w in enumerate(_audio_stream(EPISODE_TURNS, [], g)):
        inputs[i].audio = w
    last = len(T.encode(msg)) - 1  # the message's last byte ("s") is read with its digit: the wait
    aux = [(a + last // cfg.text_in_slots, "text", last % cfg.text_in_slots, count_token(5 * n))]
    return Episode("time_speak", 0, inputs, targets, {"say": word, "turn": turn, "n": n, "sent": a}, aux=aux)


def _cue_speak(rng: random.Random, g: torch.Generator, cfg: ModelConfig) -> Episode:
    """expect: say ("red!" or None when no red shape appears), turn (cue turn or None)."""
    k = cfg.text_out_slots
    inputs, targets = _blank(EPISODE_TURNS, k)
    msg = "tell me when red"
    a = rng.randint(0, 1)
    inputs[a].text = msg
    done = a + text_turns(msg, cfg.text_in_slots) - 1
    cue = rng.randint(done + 1, EPISODE_TURNS - 4) if rng.random() < 0.8 else None
    others = ("blue", "green", "yellow", "white")
    aux = []
    for i in range(EPISODE_TURNS):
        shapes = [_shape(rng, rng.choice(others)) for _ in range(rng.randint(1, 2))]
        red = cue is not None and cue <= i < cue + 2
        if red:
            shapes.append(_shape(rng, "red"))
        inputs[i].frame = draw(shapes, rng.randint(90, 130))
        # is there red in this frame? At its last patch, and at each context slot after it (always
        # <ctx_pad> here): the slots between the frame and <out> learn to look back for red, as <out> must
        aux.append((i, "image", cfg.image_patches - 1, count_token(int(red))))
        aux += [(i, "ctx", j, count_token(int(red))) for j in range(cfg.context_slots)]
    for t in range(done, EPISODE_TURNS if cue is None else cue):  # watching: red frames seen so far, 0
        targets[t][0] = T.state_token(0)
    if cue is not None:
        place(targets, cue, speak_tokens(CUE_TEXT), k)
    for i, w in enumerate(_audio_stream(EPISODE_TURNS, [], g)):
        inputs[i].audio = w
    return Episode("cue_speak", 0, inputs, targets,
                   {"say": CUE_TEXT if cue is not None else None, "turn": cue, "sent": a}, aux=aux)


def _rep_count(rng: random.Random, g: torch.Generator, cfg: ModelConfig) -> Episode:
    """expect: say (the count as a digit), turn (the turn the question is complete)."""
    k = cfg.text_out_slots
    inputs, targets = _blank(EPISODE_TURNS, k)
    n_frames = 10
    count = rng.randint(1, 4)
    # floor hits on non-adjacent frames 1..8: sorted picks q_i from 1..8-(count-1), spread to q_i + i
    hits = [q + i for i, q in enumerate(sorted(rng.sample(range(1, n_frames - 1 - (count - 1)), count)))]
    cx, r = rng.randint(12, 67), rng.randint(6, 9)
    colour = rng.choice(("white", "yellow", "green", "blue"))
    bg = rng.randint(20, 60)
    aux = []
    for i in range(n_frames):
        cy = 79 - r if i in hits else rng.randint(r, 39 - r)  # a hit is on the floor, else in the top half
        inputs[i].frame = draw([("circle", colour, cx, cy, r)], bg)
        aux.append((i, "image", cfg.image_patches - 1, count_token(sum(h <= i for h in hits))))
    msg = "how many?"
    inputs[n_frames].text = msg
    done = n_frames + text_turns(msg, cfg.text_in_slots) - 1
    for t in range(done):  # the tally the model keeps for itself while it watches: floor hits so far
        targets[t][0] = T.state_token(sum(h <= t for h in hits))
    place(targets, done, speak_tokens(str(count)), k)
    for i, w in enumerate(_audio_stream(EPISODE_TURNS, [], g)):
        inputs[i].audio = w
    return Episode("rep_count", 0, inputs, targets, {"say": str(count), "turn": done}, aux=aux)


def _first_quiet(quiet: list[bool], start: int) -> int | None:
    return next((t for t in range(max(0, start), len(quiet)) if quiet[t]), None)


def _turn_taking(rng: random.Random, g: torch.Generator, cfg: ModelConfig) -> Episode:
    """expect: say (REPLY), turn (first quiet turn after the speech), end_sample (speech end),
    barge_in (turn or None), barge_sample (its onset), turn2 (reply after the barge-in speech)."""
    k = cfg.text_out_slots
    inputs, targets = _blank(EPISODE_TURNS, k)
    barge = rng.random() < 0.5
    start = int(rng.uniform(0.1, 0.5) * SR)
    w = user_speech(rng, rng.uniform(0.4, 0.9) if barge else rng.uniform(0.6, 1.4))
    spans = [(start, w)]
    speech = [(start, start + w.shape[0])]
    end_turn = (start + w.shape[0]) // 3200
    turn = _first_quiet(quiet_turns(EPISODE_TURNS, speech), end_turn)
    expect: dict = {"say": REPLY, "turn": turn, "end_sample": speech[0][1], "barge_in": None}
    place(targets, turn, speak_tokens(REPLY), k)
    if barge:
        b = turn + rng.randint(2, 3)
        onset = b * 3200 + rng.randint(200, 2400)
        w2 = user_speech(rng, rng.uniform(0.3, 0.6))
        spans.append((onset, w2))
        speech.append((onset, onset + w2.shape[0]))
        inputs[b].barge_in = True
        for t in range(b, EPISODE_TURNS):
            targets[t] = [T.EMPTY] * k
        targets[b] = [T.STOP_SPEAKING, *[T.EMPTY] * (k - 1)]
        turn2 = _first_quiet(quiet_turns(EPISODE_TURNS, speech), (onset + w2.shape[0]) // 3200)
        if turn2 is not None:
            place(targets, turn2, speak_tokens(REPLY), k)
        expect.update(barge_in=b, barge_sample=onset, barge_end_sample=speech[1][1], turn2=turn2)
    for i, a in enumerate(_audio_stream(EPISODE_TURNS, spans, g)):
        inputs[i].audio = a
    return Episode("turn_taking", 0, inputs, targets, expect, speech)


def _delegation(rng: random.Random, g: torch.Generator, cfg: ModelConfig) -> Episode:
    """expect: task ("weather C"), task_turn (turn of <delegate>), say (the result), turn (its
    <start_speaking> turn: the first quiet turn once the result is in context), result_turn."""
    k = cfg.text_out_slots
    inputs, targets = _blank(EPISODE_TURNS, k)
    city, cond = rng.choice(CITIES), rng.choice(WEATHER)
    msg = f"weather in {city}?"
    a = rng.randint(0, 1)
    inputs[a].text = msg
    done = a + text_turns(msg, cfg.text_in_slots) - 1
    task = f"weather {city}"
    after = place(targets, done, [T.DELEGATE, *T.encode(task), T.DELEGATE_END], k, stop=False)
    result = f"{city} {cond}, {rng.randint(-9, 29)} C"  # the demo weather tool's answer format
    arrive = after + rng.randint(0, 1)
    inputs[arrive].context = result
    ready = arrive + math.ceil(len(result) / cfg.context_slots) - 1
    spans, speech = [], []
    if rng.random() < 0.5:  # the user is talking when the result comes in: wait for a quiet turn
        onset = (arrive - 1) * 3200 + rng.randint(0, 3000)
        w = user_speech(rng, rng.uniform(0.4, 0.8))
        spans.append((onset, w))
        speech.append((onset, onset + w.shape[0]))
    turn = _first_quiet(quiet_turns(EPISODE_TURNS, speech), ready)
    if turn is not None:
        place(targets, turn, speak_tokens(result), k)
    for i, w in enumerate(_audio_stream(EPISODE_TURNS, spans, g)):
        inputs[i].audio = w
    return Episode("delegation", 0, inputs, targets,
                   {"task": task, "task_turn": done, "say": result, "turn": turn, "result_turn": arrive,
                    "user_talking": bool(speech)}, speech)


ECHO_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.-"


def _echo(rng: random.Random, g: torch.Generator, cfg: ModelConfig) -> Episode:
    """A training curriculum, not an evaluated task: random strings of 2-20 bytes arrive in the
    context slots (as a background result would); the model voices each at the first quiet turn
    once it is complete, then the next string comes. Random content cannot be guessed, only read
    (through the copy candidates, layout.Lookup): the skill that voicing delegation results needs.
    expect: says (list of (string, turn))."""
    k = cfg.text_out_slots
    inputs, targets = _blank(EPISODE_TURNS, k)
    t = rng.randint(0, 1)
    says: list[tuple[str, int]] = []
    spans: list[tuple[int, torch.Tensor]] = []
    speech: list[tuple[int, int]] = []
    while t < EPISODE_TURNS - 3:
        body = "".join(rng.choice(ECHO_CHARS) for _ in range(rng.randint(2, 20))).strip() or "ok"
        inputs[t].context = body
        ready = t + math.ceil(len(T.encode(body)) / cfg.context_slots) - 1
        if rng.random() < 0.3:  # the user is talking when it is ready: wait for a quiet turn
            onset = ready * 3200 + rng.randint(0, 2000)
            w = user_speech(rng, rng.uniform(0.3, 0.6))
            spans.append((onset, w))
            speech.append((onset, onset + w.shape[0]))
        turn = _first_quiet(quiet_turns(EPISODE_TURNS, speech), ready)
        if turn is None:
            break
        says.append((body, turn))
        t = place(targets, turn, speak_tokens(body), k) + rng.randint(0, 1)
    for i, w in enumerate(_audio_stream(EPISODE_TURNS, spans, g)):
        inputs[i].audio = w
    return Episode("echo", 0, inputs, targets, {"says": says}, speech)


CURRICULUM = ("echo",)  # training-only tasks (TrainConfig.mix may draw them; eval does not)

_BUILDERS = {"echo": _echo, "time_speak": _time_speak, "cue_speak": _cue_speak, "rep_count": _rep_count,
             "turn_taking": _turn_taking, "delegation": _delegation}


def episode(seed: int, task: str | None = None, cfg: ModelConfig | None = None) -> Episode:
    """The episode of `task` (default: TASKS[seed % 5]) for `seed`: a pure function of both."""
    cfg = cfg or ModelConfig()
    task = TASKS[seed % len(TASKS)] if task is None else task
    if task not in _BUILDERS:
        raise KeyError(f"unknown task {task!r}; choose one of {list(TASKS + CURRICULUM)}")
    rng = random.Random(f"{DATA_VERSION}:{task}:{seed}")
    g = torch.Generator().manual_seed(rng.getrandbits(62))
    ep = _BUILDERS[task](rng, g, cfg)
    ep.seed = seed
    return ep


def chain(first: Episode, second: Episode) -> Episode:
    """`second` as the continuation of the session `first` began: one sequence of both episodes' turns,
    so that a task also arrives after earlier conversation (a finished delegation, a reply, a count),
    as it does in a live session, not only at position 0. Targets, aux and speech of `second` move by
    first.turns; `expect` is second's with "offset" = first.turns (its turns are relative to it)."""
    off = first.turns
    return Episode(second.task, second.seed, [*first.inputs, *second.inputs], [*first.targets, *second.targets],
                   {**second.expect, "offset": off},
                   [*first.speech, *((a + off * 3200, b + off * 3200) for a, b in second.speech)],
                   [*first.aux, *((t + off, g, i, tok) for t, g, i, tok in second.aux)])


def held_out_seeds(n: int, offset: int = 0) -> list[int]:
    """Evaluation seeds: disjoint from every training seed (training uses seeds < HELD_OUT_BASE)."""
    return [HELD_OUT_BASE + offset + i for i in range(n)]
