"""Training the flow head (the model's voice) on espeak-ng's assistant voice, read from the bytes.

The flow head renders a voiced turn's 16 mel frames from a read window of the model's own tokens
(model/reader.py). Its training data are voice plans (training/voice.py: espeak-ng's rendering of a
text in the assistant's one voice, aligned to the bytes placed 3 per turn) of training-split text:

- every distinct utterance the training split's task episodes say (the reply, the cue, counts,
  training words, weather results of training cities), and
- `phrases` phrases: 1-4 words of the reading vocabulary (which has every held-out word removed),
  with a number in 30 %, and in a quarter of them random strings of the echo curriculum's characters
  (the model reads such strings aloud in training).

Each voiced turn of a plan is one example: (its window with each frame's index, its 16 mel frames).
The transformer is not touched: the same checkpoint with a new flow head is written out. The
condition no longer includes the hidden state, so this is all the voice's training (the main
trainer's flow loss trains the same head on the episodes' own plans).

`measure(model)` is the figure: training_vocoder.eval_texts() (held-out cities, weather words and
words, never trained on) planned, read by the flow head turn by turn, vocoded at the runtime's
settings and transcribed by the ears' transcriber (Whisper tiny.en): word errors per word, beside
espeak-ng's own audio of the same texts (`reference`) and the plans' mel through the vocoder
(`vocoder`: the best a flow head could do).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from interaction_actor.model import text as T
from interaction_actor.model.config import ModelConfig
from interaction_actor.model.flow_head import FlowHead
from interaction_actor.model.reader import frame_windows, windows
from interplay.log import get_logger

log = get_logger("interaction_actor.training.train_voice")


@dataclass
class VoiceTrainConfig:
    phrases: int = 14000
    task_episodes: int = 300  # training episodes per task whose utterances join the data
    steps: int = 12000
    batch: int = 96  # voiced turns (x 16 frames) per step
    lr: float = 2e-3
    warmup: int = 100
    min_lr_fraction: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    task_repeat: int = 1  # each distinct task utterance stands this many times in the data
    init_from_checkpoint: bool = False  # start from the checkpoint's own flow head (a continuation)
    seed: int = 5  # the phrases' draw
    init_seed: int = 0  # the flow head's initialisation and the batches
    threads: int = 2
    max_minutes: float = 0.0  # > 0: stop early when this much wall time has passed
    reader: str = ""  # the flow head's reader (config voice_reader); "" keeps the checkpoint's
    context: int = -1  # config flow_context (the previous turn's frames the head sees); -1 keeps the checkpoint's
    mix: int = -1  # config flow_mix (frames mixed within a turn); -1 keeps the checkpoint's
    # the share of a batch's turns whose context is the head's own rendering of the turn before (itself
    # rendered after its target context), as a session feeds it; the rest read the target's frames
    own_context: float = 0.0


def utterance_texts(outputs: list[list[int]]) -> list[str]:
    """The texts a token stream says: bytes from <start_speaking> to <stop_speaking>/<listen>, outside tasks."""
    out: list[str] = []
    said: list[int] = []
    on = task = False
    for toks in outputs:
        for t in toks:
            if t == T.DELEGATE:
                task = True
            elif t == T.DELEGATE_END:
                task = False
            elif t == T.START_SPEAKING:
                on, said, task = True, [], False
            elif t in (T.STOP_SPEAKING, T.LISTEN) and on:
                if said:
                    out.append(T.decode(said))
                on = False
            elif on and not task and 0 <= t < T.N_BYTES:
                said.append(t)
    return out


def training_texts(tc: VoiceTrainConfig) -> list[str]:
    """The distinct utterances of training task episodes, then `tc.phrases` drawn phrases (see the doc)."""
    from interaction_actor.training import synth, voice

    said: list[str] = []
    for task in ("time_speak", "cue_speak", "rep_count", "turn_taking", "delegation"):
        for seed in range(tc.task_episodes):
            said += utterance_texts(synth.episode(seed, task).targets)
    rng = random.Random(tc.seed)
    vocab = voice.reading_vocabulary()
    phrases = []
    for _ in range(tc.phrases):
        if rng.random() < 0.25:
            body = "".join(rng.choice(synth.ECHO_CHARS) for _ in range(rng.randint(2, 20))).strip() or "ok"
        else:
            words = [rng.choice(vocab) for _ in range(rng.randint(1, 4))]
            if rng.random() < 0.3:
                words.append(str(rng.randint(-9, 40)))
            body = " ".join(words)
        phrases.append(body)
    return sorted(set(said)) * tc.task_repeat + phrases


def plan_examples(text: str, k: int, frames: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(windows [frames, 4K + 1], mel [frames, n_mels]) of each voiced turn of `text`'s voice plan."""
    from interaction_actor.training import voice

    plan = voice.utterance(text, k)
    ws = windows([list(t) for t in plan.turns], k)  # turn j's audio reads turn j - 1 and turn j
    return ([frame_windows(ws[j], frames) for j in range(plan.voiced_turns)],
            [plan.turn_mel(j) for j in range(plan.voiced_turns)])


def dataset(tc: VoiceTrainConfig, cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The examples (see `examples`) of the training texts."""
    return examples(training_texts(tc), cfg)


def examples(texts: list[str], cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(windows [N, 16, 4K + 1], mel [N, 16, n_mels], prev [N]: the row of the turn before in its
    utterance, -1 for an utterance's first turn) of every voiced turn of `texts`' plans."""
    ws, ms, prev = [], [], []
    for text in texts:
        w, m = plan_examples(text, cfg.text_out_slots, cfg.frames_per_turn)
        prev += [len(ms) + j - 1 if j else -1 for j in range(len(m))]
        ws += w
        ms += m
    return torch.stack(ws), torch.stack(ms), torch.tensor(prev, dtype=torch.long)


def contexts(cfg: ModelConfig, mel: torch.Tensor, prev: torch.Tensor) -> torch.Tensor | None:
    """The flow contexts [len(prev), flow_context, n_mels] of turns whose previous turns are rows `prev`
    of `mel` (-1: none, silence); None for a head without a context."""
    if not cfg.flow_context:
        return None
    ctx = mel[prev.clamp(min=0), mel.shape[1] - cfg.flow_context:].clone()
    ctx[prev < 0] = cfg.dmel_min
    return ctx


def _batch_contexts(head: FlowHead, cfg: ModelConfig, tc: VoiceTrainConfig,
                    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor], idx: torch.Tensor) -> torch.Tensor | None:
    """A batch's contexts (see `contexts`); `tc.own_context` of its turns that follow a voiced turn read
    the head's own rendering of that turn instead of its target frames."""
    W, M, P = data
    ctx = contexts(cfg, M, P[idx])
    if ctx is None or tc.own_context <= 0:
        return ctx
    f = cfg.frames_per_turn
    pick = (torch.rand(idx.shape[0]) < tc.own_context) & (P[idx] >= 0)
    if bool(pick.any()):
        before = P[idx][pick]
        with torch.no_grad():
            mel = head.sample(W[before].reshape(-1, W.shape[-1]), torch.zeros(before.shape[0] * f, cfg.n_mels),
                              cfg.flow_steps, contexts(cfg, M, P[before])).view(-1, f, cfg.n_mels)
        ctx[pick] = mel[:, f - cfg.flow_context:]
    return ctx


def say(head: FlowHead, cfg: ModelConfig, text: str) -> list[torch.Tensor]:
    """The mel [16, n_mels] of each voiced turn of `text`'s plan as a session renders it: turn by turn at
    the sampler's settings (train.own_voice), each turn's context its own previous rendering."""
    from interaction_actor.training import voice
    from interaction_actor.training.train import own_voice

    plan = voice.utterance(text, cfg.text_out_slots)
    ws = windows([list(t) for t in plan.turns], cfg.text_out_slots)
    out: list[torch.Tensor] = []
    for j in range(plan.voiced_turns):
        out.append(own_voice(head, cfg, ws[j], j, out[-1] if out else None))
    return out


def train_flow(cfg: ModelConfig, tc: VoiceTrainConfig, data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
               progress: bool = False, init: dict | None = None) -> tuple[FlowHead, dict]:
    """A flow head for `cfg` (fresh, or from the state `init`), trained on `data` (see `dataset`)."""
    torch.manual_seed(tc.init_seed)
    head = FlowHead(cfg)
    if init is not None:
        head.load_state_dict({k: v.float() for k, v in init.items()})
    W, M, P = data
    opt = torch.optim.AdamW(head.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    t0 = time.perf_counter()
    ema, hist, step = None, [], 0
    while step < tc.steps:
        if tc.max_minutes > 0 and time.perf_counter() - t0 > tc.max_minutes * 60:
            break
        done = step / tc.steps  # the schedule's progress: by steps, or by the wall-clock budget if sooner
        if tc.max_minutes > 0:
            done = max(done, (time.perf_counter() - t0) / (tc.max_minutes * 60))
        lr = tc.lr * min(1.0, (step + 1) / tc.warmup) * (
            tc.min_lr_fraction + (1 - tc.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * min(1.0, done))))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, W.shape[0], (tc.batch,))
        w, m = W[idx].reshape(-1, W.shape[-1]), M[idx].reshape(-1, M.shape[-1])
        noise, t = torch.randn_like(m), head.flow_times(m.shape[0])
        loss = head.loss(w, m, noise, t, _batch_contexts(head, cfg, tc, data, idx))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), tc.grad_clip)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 200 == 0:
            hist.append({"step": step, "flow": round(ema, 4)})
            log.info("voice_step", step=step, flow=round(ema, 4), elapsed_s=round(time.perf_counter() - t0, 1))
            if progress:
                print(f"step {step}/{tc.steps} flow {ema:.4f} {time.perf_counter() - t0:.0f}s", flush=True)
        step += 1
    head.eval()
    return head, {"steps": step, "train_seconds": round(time.perf_counter() - t0, 1), "loss_history": hist}


def measure(head: FlowHead, cfg: ModelConfig, texts: list[str] | None = None) -> dict:
    """Word errors per word of held-out texts voiced by `head` (see the module doc), with the reference
    and the vocoder's ceiling; `wer_*_clipped` counts at most one error per word of each text, so that
    one hallucinated loop ("the end of the end of ...") does not outweigh the rest."""
    from interaction_actor.ears import speech
    from interaction_actor.model.vocoder import VocoderState, griffin_lim, vocode_turns
    from interaction_actor.training import spoken, voice
    from interaction_actor.training.train_vocoder import eval_texts

    texts = texts or eval_texts()
    a = voice.ASSISTANT
    errs = dict.fromkeys(("voice", "reference", "vocoder"), 0)
    clipped = dict(errs)
    n = 0
    samples = []
    for text in texts:
        st = VocoderState()
        with torch.no_grad():
            pcm = [vocode_turns([st], [mel], cfg)[0] for mel in say(head, cfg, text)]
        plan = voice.utterance(text, cfg.text_out_slots, cfg.n_mels)
        audios = {"voice": torch.cat(pcm).numpy(), "reference": speech.say(text, a.voice, a.rate, a.pitch),
                  "vocoder": griffin_lim(plan.mel, cfg).numpy()}
        for name, audio in audios.items():
            e, k, got = spoken.heard_errors(text, audio)
            errs[name] += e
            clipped[name] += min(e, k)
            if name == "voice":
                n += k
                if len(samples) < 10:
                    samples.append({"said": text, "heard": got.strip()})
    return {"texts": len(texts), "words": n, **{f"wer_{k}": round(v / max(1, n), 4) for k, v in errs.items()},
            **{f"wer_{k}_clipped": round(v / max(1, n), 4) for k, v in clipped.items()}, "samples": samples}


def train_voice(checkpoint: str | Path, out: str | Path, tc: VoiceTrainConfig | None = None, *,
                measure_after: bool = True, progress: bool = False) -> dict:
    """`checkpoint`'s transformer with a new flow head (of its config's size) trained here -> `out`
    (fp16 weights, + its card: the checkpoint's card with a "voice" section). Returns the voice section."""
    from interaction_actor.model.fusion import InteractionModel
    from interaction_actor.model.weights import card_path
    from interaction_actor.training.train import save_shipped

    tc = tc or VoiceTrainConfig()
    if tc.threads:
        torch.set_num_threads(tc.threads)
    blob = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    conf = dict(blob["config"])
    conf["image_grid"] = tuple(conf["image_grid"])
    cfg = ModelConfig(**conf).validate()
    shape = {"voice_reader": tc.reader or cfg.voice_reader,
             "flow_context": cfg.flow_context if tc.context < 0 else tc.context,
             "flow_mix": cfg.flow_mix if tc.mix < 0 else tc.mix}
    changed = {k: v for k, v in shape.items() if getattr(cfg, k) != v}
    if changed:
        if tc.init_from_checkpoint:
            raise ValueError(f"cannot continue the checkpoint's voice with a new shape {changed}")
        cfg = cfg.replace(**changed)
    t0 = time.perf_counter()
    data = dataset(tc, cfg)
    log.info("voice_data", turns=int(data[0].shape[0]), seconds=round(time.perf_counter() - t0, 1))
    init = {k[len("flow."):]: v for k, v in blob["state_dict"].items() if k.startswith("flow.")} \
        if tc.init_from_checkpoint else None
    head, run = train_flow(cfg, tc, data, progress=progress, init=init)
    model = InteractionModel(cfg)
    state = {k: v for k, v in blob["state_dict"].items() if not k.startswith("flow.")}
    state.update({f"flow.{k}": v for k, v in head.state_dict().items()})
    model.load_state_dict(state)
    from interaction_actor.training import voice

    section = {"train_config": asdict(tc), "voice_spec": asdict(voice.ASSISTANT), "data_turns": int(data[0].shape[0]), **run,
               "init": str(checkpoint)}
    if measure_after:
        section["measure"] = measure(head, cfg)
    save_shipped(model, out)
    src, dst = card_path(checkpoint), card_path(out)
    card = json.loads(Path(src).read_text()) if Path(src).is_file() else {}
    if tc.init_from_checkpoint and "voice" in card:
        section["continues"] = card["voice"]
    card["voice"] = section
    Path(dst).write_text(json.dumps(card, indent=1))
    return section
