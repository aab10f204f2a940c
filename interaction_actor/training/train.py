"""Co-training of the interaction model on synthetic episodes (synth.py): from scratch, or fine-tuning a
shipped checkpoint (TrainConfig.init_from: its weights, a fresh optimizer and schedule).

`train(...)` draws episodes by seed (deterministic), chains `episodes_per_row` of them into one session
per row (synth.chain: later tasks arrive after earlier conversation, as in a live session), featurizes
them exactly as the streaming session does (`featurize`: the same dMel stream, hMLP patching, text/context slot queues, voiced rule and
turn_chunk layout), and optimises `InteractionModel.training_loss` (text cross-entropy, decisions and
content weighted `content_weight`, + flow matching, + an auxiliary next-byte "reading" loss inside the
text/context slots, + the episodes' auxiliary targets at input slots, synth.Episode.aux) through the same modules and kernels.ops calls the runtime uses. It shows a progress bar,
logs losses with structlog, writes resumable checkpoints (model + optimizer + step) and finally the
checkpoint (fp16 weights, the shipped format) with a JSON card beside it: config, seed, data version,
steps, wall time, and eval scores when `evaluate_after` is set. Without an explicit `out` a run writes
`runs/train/<preset>.pt` (`default_out`): the shipped checkpoint in interaction_actor/checkpoints/
is only ever replaced when it is named as `out`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import kernels
from interaction_actor.model import reader
from interaction_actor.model import text as T
from interaction_actor.model.config import ModelConfig, preset
from interaction_actor.model.featurize import InputStreams, featurize_turn
from interaction_actor.model.flow_head import FlowHead, frame_noise, turn_context
from interaction_actor.model.fusion import InteractionModel
from interaction_actor.model.layout import (
    IGNORE,
    History,
    Lookup,
    SlotChunk,
    TurnLayout,
    block_offsets,
    bos_chunk,
    mel_slot_mask,
    text_targets,
    turn_chunk,
)
from interaction_actor.model.session import speaking_after, turn_voiced, voiced_now
from interaction_actor.model.weights import DEFAULT_CHECKPOINT, card_path
from interaction_actor.training import synth, voice
from interplay.log import get_logger

log = get_logger("interaction_actor.training.train")



@dataclass
class TrainConfig:
    """Defaults are the settings of the shipped checkpoint (see its card)."""

    preset: str = "small"
    steps: int = 20000  # the time budget (max_minutes) ends the shipped run first
    batch: int = 4  # sequences per step, each `episodes_per_row` episodes of one session (synth.chain)
    episodes_per_row: int = 2  # > 1: a task also arrives after earlier conversation, as in a live session
    # see batch_tasks: every task follows every task; rep_count (the slowest to learn), turn_taking and
    # delegation (spoken, heard, barge-in from audio, surfacing modes) come twice;
    # echo (synth.CURRICULUM) teaches reading the slots, twice since synth-13 (sentences as long as a
    # background answer); pause_handling (synth.SITUATIONS) staying quiet through a pause that ends on a
    # continuation
    mix: tuple[str, ...] = ("time_speak", "cue_speak", "rep_count", "turn_taking", "delegation", "echo",
                            "rep_count", "turn_taking", "delegation", "pause_handling", "echo")
    lr: float = 2e-3
    min_lr_fraction: float = 0.1
    warmup: int = 20
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    flow_weight: float = 1.0  # the voice (flow matching) weighs as much as the text
    seed: int = 1
    max_minutes: float = 60.0  # > 0: stop (and save) when this much wall time has passed; 0 = by steps only
    threads: int = 2  # torch threads (0 = leave as is); on a heavily shared CPU 1 can be faster (erratic OMP waits)
    checkpoint_every: int = 50
    content_weight: float = 2.0  # text CE weight of byte targets (what is said or delegated) vs <empty>
    decision_weight: float = 2.0  # text CE weight of control targets (start/stop speaking, delegate)
    reading_weight: float = 0.5  # > 0: auxiliary next-byte loss inside the text-in and context slots
    aux_weight: float = 0.5  # > 0: auxiliary loss on the episodes' own aux targets (synth.Episode.aux)
    # a shipped checkpoint (weights only, fp16 -> fp32) whose weights start the run: fine-tuning, with a
    # fresh optimizer, warmup and schedule; "" = from scratch. The steps behind it (its card's steps plus
    # its own init_steps) are recorded as `init_steps`
    init_from: str = ""
    # True: the mel-out slots carry what the model's own flow head says for the previous turn (as the
    # session feeds them at run time), not the voice plan's espeak mel; the flow loss still targets
    # the plan. With flow_weight 0 the flow head is frozen (a transformer fine-tune under a fixed voice).
    # Tried once (592 steps, lr 3e-4, under an even-timed voice): time_speak 0.94 -> 0.76 and turn-taking
    # 0.84 -> 0.78 on held-out episodes, so no shipped checkpoint is trained this way
    self_voice: bool = False


@dataclass
class Features:
    chunk: SlotChunk  # [1, 1 + turns * turn_len]
    text_targets: torch.Tensor  # [1, L]
    mel_targets: torch.Tensor  # [1, L, n_mels]
    mel_mask: torch.Tensor  # [1, L]
    voiced: list[bool]
    aux_targets: torch.Tensor | None = None  # [1, L]: Episode.aux at their slots, IGNORE elsewhere
    read: torch.Tensor | None = None  # [1, L, 4K + 1]: the flow head's read window at mel-out slots


def featurize(ep: synth.Episode, cfg: ModelConfig, outputs: list[list[int]] | None = None,
              voice_head: FlowHead | None = None) -> Features:
    """The training sequence of an episode: what the streaming session would write, position by
    position, if the model emitted `outputs` (default: the episode's targets), with the previous voiced
    turn's target mel fed to the mel-out slots (teacher forcing). The mel of a voiced turn is the
    episode's own voice plan (synth.Episode.voice) for its targets, else rebuilt from `outputs`
    (voice.voice_mels). With `voice_head`, the mel-out slots carry that flow head's own rendering of
    each voiced turn instead (`own_voice`: what the session feeds back); the targets stay the plan's."""
    voice_map = ep.voice if outputs is None or outputs is ep.targets else voice.voice_mels(
        outputs, cfg.text_out_slots, cfg.n_mels)
    outputs = ep.targets if outputs is None else outputs
    lay = TurnLayout.from_config(cfg)
    streams = InputStreams()
    history = History()
    lookup = Lookup()
    speaking = False
    prev_mel: torch.Tensor | None = None
    chunks = [bos_chunk(cfg)]
    mel_rows: list[torch.Tensor] = []
    voiced_turns: list[bool] = []
    read_windows = reader.windows(outputs, cfg.text_out_slots)
    for k, inp in enumerate(ep.inputs):
        voiced = speaking = voiced_now(speaking, inp.barge_in)
        f = featurize_turn(streams, inp, cfg, lay, lay.turn_start(k), lookup)
        out_hist = [history.ids()]
        out_cand = [lookup.cand(history.ids())]
        for t in outputs[k]:
            lookup.push(t, history.ids())
            history.push(t)
            out_hist.append(history.ids())
            out_cand.append(lookup.cand(history.ids()))
        chunks.append(turn_chunk(cfg, barge_in=inp.barge_in, voiced=voiced, prev_mel=prev_mel, **f.slots(),
                                 out_tokens=list(outputs[k]), out_hist=out_hist, out_cand=out_cand))
        mel = voice_map.get(k) if turn_voiced(voiced, inp.barge_in, outputs[k]) else None
        mel_rows.append(mel if mel is not None else torch.zeros(lay.frames, cfg.n_mels))
        voiced_turns.append(mel is not None)
        prev_mel = mel if mel is None or voice_head is None else own_voice(voice_head, cfg, read_windows[k], k, prev_mel)
        speaking = speaking_after(speaking, outputs[k])
    chunk = SlotChunk.cat_time(chunks)
    length = chunk.tokens.shape[1]
    slots = mel_slot_mask(length, lay)
    mel_targets = torch.zeros(1, length, cfg.n_mels)
    mel_mask = torch.zeros(1, length, dtype=torch.bool)
    read = torch.full((1, length, 4 * cfg.text_out_slots + 1), reader.PAD, dtype=torch.long)
    for k, v in enumerate(voiced_turns):
        a = lay.turn_start(k) + lay.mel
        mel_targets[0, a : a + lay.frames] = mel_rows[k]
        mel_mask[0, a : a + lay.frames] = v
        read[0, a : a + lay.frames] = reader.frame_windows(read_windows[k], lay.frames)
    assert bool((mel_mask[0] <= slots).all())
    aux = torch.full((1, length), IGNORE, dtype=torch.long)
    group = {"turn": 0, "audio": lay.audio, "image": lay.image, "text": lay.text, "ctx": lay.ctx, "out": lay.out}
    for turn, name, index, token in ep.aux:
        aux[0, lay.turn_start(turn) + group[name] + index] = token
    return Features(chunk, text_targets(chunk.tokens, lay), mel_targets, mel_mask, voiced_turns, aux, read)


def own_voice(head: FlowHead, cfg: ModelConfig, window: list[int], turn: int,
              prev: torch.Tensor | None = None) -> torch.Tensor:
    """A voiced turn's mel [frames, n_mels] as the session samples it (model/session._sample_mels at the
    mean path, flow_noise 0; else session seed 0's noise for `turn`), after the rendering `prev` of the
    turn before (None: it was quiet)."""
    frames = cfg.frames_per_turn
    noise = torch.zeros(frames, cfg.n_mels) if cfg.flow_noise == 0.0 else \
        frame_noise(0, turn, frames, cfg.n_mels) * cfg.flow_noise
    ctx = turn_context(prev, cfg)[None] if cfg.flow_context else None
    with torch.no_grad():
        return head.sample(reader.frame_windows(window, frames), noise, cfg.flow_steps, ctx)


def batch_features(seeds: list[int], cfg: ModelConfig, tasks: list[str] | None = None, per_row: int = 1,
                   voice_head: FlowHead | None = None) -> Features:
    """Episodes for `seeds` (of `tasks[i]`, default seed % 5), `per_row` consecutive ones chained into
    one session per row (synth.chain), featurized (with `voice_head`, see featurize) and stacked."""
    tasks = tasks or [None] * len(seeds)
    if len(seeds) % per_row:
        raise ValueError("the number of episodes must be a multiple of per_row")
    eps = [synth.episode(s, task, cfg=cfg) for s, task in zip(seeds, tasks, strict=True)]
    rows = []
    for r in range(0, len(eps), per_row):
        ep = eps[r]
        for nxt in eps[r + 1 : r + per_row]:
            ep = synth.chain(ep, nxt)
        rows.append(ep)
    feats = [featurize(ep, cfg, voice_head=voice_head) for ep in rows]
    return Features(SlotChunk.stack([f.chunk for f in feats]), torch.cat([f.text_targets for f in feats]),
                    torch.cat([f.mel_targets for f in feats]), torch.cat([f.mel_mask for f in feats]),
                    [v for f in feats for v in f.voiced], torch.cat([f.aux_targets for f in feats]),
                    torch.cat([f.read for f in feats]))


def check_mix(mix: tuple[str, ...]) -> None:
    """Raise ValueError naming the first unknown task of a training mix (or an empty mix)."""
    known = synth.TASKS + synth.CURRICULUM + synth.SITUATIONS
    if not mix:
        raise ValueError(f"an empty mix; choose among {list(known)}")
    for t in mix:
        if t not in known:
            raise ValueError(f"unknown task {t!r} in mix; choose among {list(known)}")


def batch_tasks(tc: TrainConfig, step: int = 0) -> list[str]:
    """The task of each episode of a step, batch * episodes_per_row of them (row r chains episodes
    r * episodes_per_row ...): each row's last episode takes TrainConfig.mix in rotation, the ones
    before it are `step` places further on per episode, so every ordered pair of tasks comes up."""
    check_mix(tc.mix)
    n, per, size = tc.batch, tc.episodes_per_row, len(tc.mix)
    out = []
    for r in range(n):
        main = (step * n + r) % size  # the row's last episode: the mix in rotation
        # the episodes before it step through every offset in the mix, so each task follows each task
        out += [tc.mix[(main + (per - 1 - e) * step) % size] for e in range(per)]
    return out


def step_features(tc: TrainConfig, cfg: ModelConfig, step: int, voice_head: FlowHead | None = None
                  ) -> tuple[list[str], Features]:
    """The tasks and the features of training step `step`: a pure function of (tc, step) (and, with
    self_voice, of the flow head `voice_head`)."""
    tasks = batch_tasks(tc, step)
    n = tc.batch * tc.episodes_per_row
    return tasks, batch_features(train_seeds(step, n, tc.seed), cfg, tasks, tc.episodes_per_row, voice_head)


def train_seeds(step: int, batch: int, seed: int) -> list[int]:
    """Training episode seeds of a step: a deterministic stream below synth.HELD_OUT_BASE."""
    base = (seed * 1_000_003 + step * batch) % (synth.HELD_OUT_BASE - batch)
    return [base + i for i in range(batch)]


def _lr(tc: TrainConfig, step: int, total: int, elapsed_s: float = 0.0) -> float:
    """Linear warmup, then cosine decay to min_lr_fraction over the run: by step, or, with a time
    budget (max_minutes), by whichever of steps and wall time is further along (so a time-budgeted run
    still anneals; such a run depends on the machine's speed and is not bit-reproducible)."""
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    p = min(1.0, (step - tc.warmup) / max(1, total - tc.warmup))
    if tc.max_minutes > 0:
        p = max(p, min(1.0, elapsed_s / (tc.max_minutes * 60)))
    return tc.lr * (tc.min_lr_fraction + (1 - tc.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * p)))


def _reweighted(model: InteractionModel, res: dict, targets: torch.Tensor, tc: TrainConfig) -> dict:
    """Text CE recomputed from the same logits with non-<empty> targets weighted `content_weight`."""
    valid = targets != IGNORE
    tgt = targets[valid].to(model.device)
    logp = kernels.log_softmax(res["logits"][valid], dim=-1).gather(-1, tgt[:, None])[:, 0]
    w = torch.where(tgt == T.EMPTY, 1.0, torch.where(tgt < T.N_BYTES, tc.content_weight, tc.decision_weight))
    text_ce = -(w * logp).sum() / w.sum()
    return {**res, "text_ce": text_ce, "loss": text_ce + tc.flow_weight * res["flow"]}


def reading_targets(tokens: torch.Tensor, lay: TurnLayout) -> torch.Tensor:
    """[B, T] -> next-byte targets inside the text-in and context slot groups (a byte followed by a
    byte of the same group), IGNORE elsewhere: a dense auxiliary "read what you see" signal."""
    off = block_offsets(tokens.shape[1], lay)
    inside = ((off >= lay.text) & (off < lay.text + lay.text_in - 1)) | ((off >= lay.ctx) & (off < lay.ctx + lay.context - 1))
    nxt = torch.cat([tokens[:, 1:], torch.full_like(tokens[:, :1], IGNORE)], dim=1)
    keep = inside[None, :] & (tokens < T.N_BYTES) & (nxt >= 0) & (nxt < T.N_BYTES)
    return torch.where(keep, nxt, torch.full_like(tokens, IGNORE))


def _with_extra(model: InteractionModel, res: dict, targets: torch.Tensor, weight: float, name: str) -> dict:
    """`res` plus `weight` x the text-head cross-entropy on `targets` (IGNORE elsewhere), logged as `name`:
    the auxiliary losses at input slots whose logits are otherwise unused."""
    valid = targets != IGNORE
    if not bool(valid.any()):
        return res
    logp = kernels.log_softmax(res["logits"][valid.to(model.device)], dim=-1)
    loss = -logp.gather(-1, targets[valid].to(model.device)[:, None]).mean()
    return {**res, name: loss, "loss": res["loss"] + weight * loss}


def content_accuracy(logits: torch.Tensor, targets: torch.Tensor, tasks: list[str]) -> dict[str, float]:
    """Teacher-forced accuracy on the non-<empty> targets (decisions and content) of each task in the
    batch: the per-task learning curve the log carries (a task learns from few such tokens)."""
    with torch.no_grad():
        pred = logits.argmax(-1).cpu()
        keep = (targets != IGNORE) & (targets != T.EMPTY)
        out: dict[str, list[int]] = {}
        for row, task in enumerate(tasks):
            k = keep[row]
            hit = out.setdefault(task, [0, 0])
            hit[0] += int((pred[row][k] == targets[row][k]).sum())
            hit[1] += int(k.sum())
    return {t: round(a / n, 3) for t, (a, n) in out.items() if n}


def _param_groups(model: InteractionModel, wd: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() < 2 or "norm" in name or name.endswith(("_b", ".b1", ".b2", ".b3")) else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def save_shipped(model: InteractionModel, path: str | Path) -> None:
    """Config + fp16 weights (loadable by build_model(checkpoint=path); the model runs in fp32)."""
    state = {k: v.detach().to(torch.float16) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": dataclasses.asdict(model.config), "state_dict": state}, str(path))


def _resume_key(tc: dict) -> dict:
    """The settings a resumed run must share with the run it continues (its length may grow)."""
    return {k: v for k, v in tc.items() if k not in ("steps", "max_minutes", "threads", "checkpoint_every")}


def default_work_dir(out: str | Path) -> Path:
    """Where the resumable state of a run writing `out` lives (outside the package tree):
    $XDG_CACHE_HOME/interplay/train/<stem>-<hash of out's absolute path>."""
    out = Path(out).resolve()
    tag = hashlib.blake2b(str(out).encode(), digest_size=4).hexdigest()
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "interplay" / "train" / f"{out.stem}-{tag}"


RUNS_DIR = Path("runs") / "train"  # relative to the working directory, like `interplay demo`'s runs/demo


def default_out(preset_name: str) -> Path:
    """Where a run writes its checkpoint when no `out` is given: runs/train/<preset>.pt, never the
    shipped interaction_actor/checkpoints/<preset>.pt (the demo, serve and eval load that one)."""
    return RUNS_DIR / f"{preset_name}.pt"


def train(out: str | Path | None = None, *, config: TrainConfig | None = None, resume: bool = True,
          work_dir: str | Path | None = None, evaluate_after: bool = False, eval_quick: bool = True,
          progress: bool = True, model_config: ModelConfig | None = None) -> dict:
    """Train from scratch, or from `config.init_from`'s weights (or resume from `work_dir`/last.pt), and write the checkpoint `out` (default:
    `default_out(preset)`) plus its JSON card. Returns the card as a dict."""
    tc = config or TrainConfig()
    if tc.threads:
        torch.set_num_threads(tc.threads)
    cfg = model_config or preset(tc.preset)
    out = Path(out) if out is not None else default_out(tc.preset)
    if out.resolve() == Path(DEFAULT_CHECKPOINT).resolve():
        log.warning("train_replaces_shipped_checkpoint", checkpoint=str(out))
    work = Path(work_dir) if work_dir is not None else default_work_dir(out)
    work.mkdir(parents=True, exist_ok=True)
    last = work / "last.pt"
    torch.manual_seed(tc.seed)
    model = InteractionModel(cfg)
    init_steps = _init_from(model, tc.init_from) if tc.init_from else 0
    model.train()
    if tc.self_voice and tc.flow_weight == 0:  # a fixed voice: the flow head is not trained (nor decayed)
        model.flow.requires_grad_(False)
    opt = torch.optim.AdamW(_param_groups(model, tc.weight_decay), lr=tc.lr, betas=(0.9, 0.98))
    step, elapsed, history = 0, 0.0, []
    resumed_from = 0
    if resume and last.is_file():
        blob = torch.load(str(last), map_location="cpu", weights_only=False)
        if _resume_key(blob["train_config"]) != _resume_key(dataclasses.asdict(tc)) \
                or blob["model_config"] != dataclasses.asdict(cfg):
            raise ValueError(f"{last} was written with another configuration; remove it or pass resume=False")
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optimizer"])
        step, elapsed, history = blob["step"], blob["elapsed_s"], blob["history"]
        resumed_from = step
        log.info("train_resumed", step=step, elapsed_s=round(elapsed, 1))
    load_start = round(os.getloadavg()[0], 2)
    log.info("train_start", preset=tc.preset, steps=tc.steps, batch=tc.batch, data_version=synth.DATA_VERSION,
             params=sum(p.numel() for p in model.parameters()), threads=torch.get_num_threads())
    bar = _Progress(tc.steps, step, enabled=progress)
    t0 = time.perf_counter() - elapsed
    ema: dict[str, float] = {}
    stopped_early = False
    while step < tc.steps:
        tasks, feats = step_features(tc, cfg, step, model.flow if tc.self_voice else None)
        row_tasks = tasks[tc.episodes_per_row - 1 :: tc.episodes_per_row]  # a row is named by its last episode
        for g in opt.param_groups:
            g["lr"] = _lr(tc, step, tc.steps, time.perf_counter() - t0)
        gen = torch.Generator().manual_seed(tc.seed * 7919 + step)
        res = model.training_loss(feats.chunk, feats.text_targets, feats.mel_targets, feats.mel_mask,
                                  generator=gen, flow_weight=tc.flow_weight, read=feats.read)
        if tc.content_weight != 1.0 or tc.decision_weight != 1.0:
            res = _reweighted(model, res, feats.text_targets, tc)
        if tc.reading_weight > 0:
            res = _with_extra(model, res, reading_targets(feats.chunk.tokens, model.layout), tc.reading_weight,
                              "reading")
        if tc.aux_weight > 0 and feats.aux_targets is not None:
            res = _with_extra(model, res, feats.aux_targets, tc.aux_weight, "aux")
        opt.zero_grad(set_to_none=True)
        res["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        step += 1
        vals = {k: float(res[k].detach()) for k in ("loss", "text_ce", "flow")}
        for k, v in vals.items():
            ema[k] = v if k not in ema else 0.9 * ema[k] + 0.1 * v
        bar.update(step, f"ce {ema['text_ce']:.3f} flow {ema['flow']:.3f}")
        if step % 10 == 0 or step == 1:
            acc = content_accuracy(res["logits"], feats.text_targets, row_tasks)
            history.append({"step": step, **{k: round(v, 5) for k, v in vals.items()}})
            log.info("train_step", step=step, lr=round(opt.param_groups[0]["lr"], 6), content_acc=acc,
                     elapsed_s=round(time.perf_counter() - t0, 1), **{k: round(v, 4) for k, v in vals.items()})
        over = tc.max_minutes > 0 and time.perf_counter() - t0 > tc.max_minutes * 60
        if step % tc.checkpoint_every == 0 or step == tc.steps or over:
            _save_work(last, model, opt, tc, cfg, step, time.perf_counter() - t0, history)
        if over:
            stopped_early = True
            log.warning("train_time_budget_reached", step=step, max_minutes=tc.max_minutes)
            break
    bar.close()
    train_s = time.perf_counter() - t0
    model.eval()
    save_shipped(model, out)
    card = {"checkpoint": out.name, "data_version": synth.DATA_VERSION, "train_config": dataclasses.asdict(tc),
            "model_config": dataclasses.asdict(cfg), "params": sum(p.numel() for p in model.parameters()),
            "steps": step, "resumed_from": resumed_from, "init_steps": init_steps, "stopped_early": stopped_early, "train_seconds": round(train_s, 1),
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "load_avg_1m_start": load_start, "load_avg_1m_end": round(os.getloadavg()[0], 2),
            "final_losses": history[-1] if history else {}, "loss_history": _thin(history, 40)}
    if evaluate_after:
        from interaction_actor.training.evaluate import evaluate

        card["eval"] = evaluate(checkpoint=str(out), quick=eval_quick)
    card_path(out).write_text(json.dumps(card, indent=1))
    log.info("train_done", checkpoint=str(out), steps=step, train_seconds=round(train_s, 1))
    return card


# settings of a session, not of the weights: a fine-tune may change them (synth-11's longer episodes
# needed a larger KV capacity than the checkpoint it continued)
RUNTIME_ONLY = ("capacity",)


def _init_from(model: InteractionModel, checkpoint: str) -> int:
    """Load a checkpoint's weights into `model` (build_model reads it; same config but RUNTIME_ONLY,
    else ValueError);
    returns the steps behind it: its card's steps plus the card's own init_steps (0 without a card)."""
    from interaction_actor.model.fusion import build_model

    src = build_model(checkpoint=checkpoint)
    diff = [f.name for f in dataclasses.fields(model.config) if f.name not in RUNTIME_ONLY
            and getattr(src.config, f.name) != getattr(model.config, f.name)]
    if diff:
        raise ValueError(f"{checkpoint} has another model configuration ({', '.join(diff)}); train from scratch instead")
    model.load_state_dict(src.state_dict())
    card = card_path(checkpoint)
    info = json.loads(card.read_text()) if card.is_file() else {}
    steps = int(info.get("steps", 0)) + int(info.get("init_steps", 0))  # the whole lineage's steps
    log.info("train_init_from", checkpoint=str(checkpoint), steps=steps)
    return steps


def _thin(history: list[dict], n: int) -> list[dict]:
    """About n entries of the loss history, always keeping the first and the last."""
    if len(history) <= n:
        return list(history)
    kept = history[:: max(1, len(history) // n)]
    return kept if kept[-1] is history[-1] else [*kept, history[-1]]


def train_main(preset: str = "small", steps: int | None = None, minutes: float | None = None, seed: int | None = None,
               out: str | None = None, resume: bool = False, threads: int | None = None,
               init_from: str | None = None, lr: float | None = None, evaluate_after: bool = True, eval_quick: bool = True, progress: bool = True,
               self_voice: bool = False, mix: tuple[str, ...] | None = None) -> dict:
    """`interplay train`: train `preset` from scratch (or `resume` the run that writes `out`) and write
    the checkpoint + JSON card to `out` (default: runs/train/<preset>.pt; the shipped
    interaction_actor/checkpoints/<preset>.pt only when it is given as `out`).
    `steps` and `minutes` bound the run (defaults: TrainConfig's, the settings of the shipped model);
    `threads` defaults to TrainConfig's. `self_voice`: the model hears its own flow head's voice in the
    mel-out slots and the flow head stays fixed (TrainConfig.self_voice, flow_weight 0). `mix`: the
    episode mix (TrainConfig.mix) in place of the default.
    Returns the card (with quick eval scores if `evaluate_after`)."""
    tc = TrainConfig(preset=preset)
    if seed is not None:
        tc.seed = int(seed)
    if steps is not None:
        tc.steps = int(steps)
    if minutes is not None:
        tc.max_minutes = float(minutes)
    if threads is not None:
        tc.threads = int(threads)
    if init_from:
        tc.init_from = str(init_from)
    if lr is not None:
        tc.lr = float(lr)
    if self_voice:
        tc.self_voice, tc.flow_weight = True, 0.0
    if mix:
        tc.mix = tuple(mix)
    return train(out or default_out(preset), config=tc, resume=resume, evaluate_after=evaluate_after,
                 eval_quick=eval_quick, progress=progress)


class _Progress:
    """A rich progress bar on stderr (steps, losses, elapsed, ETA); a no-op when disabled."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self._p = None
        if not enabled:
            return
        import sys

        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           TimeRemainingColumn(), TextColumn("{task.fields[losses]}"),
                           console=Console(file=sys.stderr), transient=False)
        self._p.start()
        self._task = self._p.add_task("train", total=total, completed=done, losses="")

    def update(self, done: int, losses: str) -> None:
        if self._p is not None:
            self._p.update(self._task, completed=done, losses=losses)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()


def _save_work(path: Path, model: InteractionModel, opt: torch.optim.Optimizer, tc: TrainConfig, cfg: ModelConfig,
               step: int, elapsed: float, history: list) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "elapsed_s": elapsed,
                "history": history, "train_config": dataclasses.asdict(tc),
                "model_config": dataclasses.asdict(cfg)}, str(tmp))
    os.replace(tmp, path)
