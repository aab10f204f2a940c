"""Training the vocoder's magnitude net (model/magnitude.py) on the assistant's voice, and measuring it.

Data: espeak-ng renderings, in the assistant's one voice (voice.ASSISTANT), of training-split text
only: words of the reading vocabulary (which has every held-out word removed) alone and in short
phrases, and the training cities' weather results, replies and counts. Each rendering, with 100 ms
of silence either side and a noise floor (none, faint, or a microphone's: the flow head's targets are
espeak's digital silence), gives frame pairs (log10 mel, log10 |STFT|) framed
exactly as dmel.log_mel frames (frame m centred on sample m * hop). A batch is 16-frame windows at
random offsets: what the streaming vocoder hands the net per turn.

`measure(net)` is the figure that decides whether the net ships: texts of the evaluation split
(never trained on), rendered by espeak-ng, turned into the flow head's own targets
(voice.utterance's planned mel) and vocoded turn by turn at the runtime's settings, through the
ears' transcriber (Whisper tiny.en): word error rate with the filterbank inversion and with the net,
beside espeak-ng's own audio of the same texts (the reference).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from interaction_actor.model.config import ModelConfig, preset
from interaction_actor.model.dmel import _reflect_left, frames_to_log_mel, stft_window
from interaction_actor.model.magnitude import SHIPPED, MagnitudeConfig, MagnitudeNet, save
from interplay.log import get_logger

log = get_logger("interaction_actor.training.train_vocoder")


@dataclass
class VocoderTrainConfig:
    texts: int = 3000  # renderings
    steps: int = 3000
    batch: int = 32  # 16-frame windows per step
    lr: float = 2e-3
    seed: int = 1
    threads: int = 2
    max_minutes: float = 20.0  # > 0: stop early when this much wall time has passed
    hidden: int = 256
    sc_weight: float = 1.0  # + spectral convergence (linear magnitude) beside the log-magnitude L1


def training_texts(n: int, seed: int = 1) -> list[str]:
    """`n` training-split texts for the assistant to say (no evaluation city, word or weather word)."""
    from interaction_actor.training import spoken, synth, voice

    rng = random.Random(f"vocoder:{seed}")
    words = voice.reading_vocabulary()
    tr = spoken.TRAIN
    out = [synth.REPLY, synth.CUE_TEXT, *(str(i) for i in range(10))]
    while len(out) < n:
        r = rng.random()
        if r < 0.35:
            out.append(rng.choice(words))
        elif r < 0.7:
            out.append(" ".join(rng.choice(words) for _ in range(rng.randint(2, 4))))
        else:
            out.append(f"{rng.choice(spoken.CITIES[tr])} {rng.choice(spoken.CONDITIONS[tr])}, {rng.randint(-9, 29)} C")
    return out[:n]


def frame_pairs(audio: np.ndarray, cfg: ModelConfig, noise: float = 0.002, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(log10 mel [M, n_mels], log10 magnitude [M, n_freq]) of `audio` with 100 ms of silence either side
    and a noise floor of std `noise` over all (0: digital silence, as espeak-ng's own), framed as
    dmel.log_mel frames it."""
    g = torch.Generator().manual_seed(seed)
    pad = torch.zeros(cfg.sample_rate // 10)
    x = torch.cat([pad, torch.from_numpy(np.asarray(audio, dtype=np.float32)), pad])
    x = x + noise * torch.randn(x.shape, generator=g)
    frames = _reflect_left(x, cfg.n_fft // 2).unfold(0, cfg.n_fft, cfg.hop_length)
    mel = frames_to_log_mel(frames, cfg)
    spec = torch.fft.rfft(frames * stft_window(cfg.n_fft, cfg.win_length), dim=-1)
    mag = torch.clamp(spec.abs(), min=1e-10).log10()
    return mel, mag


def _dataset(tc: VocoderTrainConfig, cfg: ModelConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from interaction_actor.ears import speech
    from interaction_actor.training import voice

    a = voice.ASSISTANT
    out = []
    for i, text in enumerate(training_texts(tc.texts, tc.seed)):
        noise = (0.0, 1e-4, 0.002)[i % 3]  # the plans are espeak's digital silence; a mic's floor too
        out.append(frame_pairs(speech.say(text, a.voice, a.rate, a.pitch), cfg, noise=noise, seed=i))
    return out


def _batch(data, rng: random.Random, n: int, frames: int, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    mels, mags = [], []
    for _ in range(n):
        mel, mag = data[rng.randrange(len(data))]
        s = rng.randrange(max(1, mel.shape[0] - frames + 1))
        mels.append(mel[s : s + frames])
        mags.append(mag[s : s + frames])
    return torch.stack(mels), torch.stack(mags).clamp(min=floor)


def train_vocoder(out: str | Path = SHIPPED, config: VocoderTrainConfig | None = None, *, measure_after: bool = True,
                  progress: bool = False) -> dict:
    """Train the magnitude net, write it (+ card) to `out`; returns the card (with `measure`'s figures)."""
    tc = config or VocoderTrainConfig()
    if tc.threads:
        torch.set_num_threads(tc.threads)
    cfg = preset("small")
    torch.manual_seed(tc.seed)
    mc = MagnitudeConfig.of(cfg, hidden=tc.hidden)
    net = MagnitudeNet(mc)
    t0 = time.perf_counter()
    data = _dataset(tc, cfg)
    frames = cfg.frames_per_turn
    data = [(m, g) for m, g in data if m.shape[0] >= frames]
    log.info("vocoder_data", utterances=len(data), frames=sum(m.shape[0] for m, _ in data),
             seconds=round(time.perf_counter() - t0, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=0.0)
    rng = random.Random(tc.seed)
    hist, step = [], 0
    t1 = time.perf_counter()
    while step < tc.steps:
        if tc.max_minutes > 0 and time.perf_counter() - t1 > tc.max_minutes * 60:
            break
        for g in opt.param_groups:
            g["lr"] = tc.lr * 0.5 * (1 + np.cos(np.pi * step / tc.steps))
        mel, mag = _batch(data, rng, tc.batch, frames, mc.floor)
        pred = net(mel)
        loss = (pred - mag).abs().mean()
        if tc.sc_weight > 0:  # spectral convergence on linear magnitude: the loud harmonics speech rides on
            lin, lin_p = 10.0**mag, 10.0**pred
            loss = loss + tc.sc_weight * (torch.linalg.norm(lin - lin_p) / torch.linalg.norm(lin))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0 or step == 1 or step == tc.steps:
            hist.append({"step": step, "l1": round(float(loss), 4)})
            log.info("vocoder_step", step=step, l1=round(float(loss), 4), elapsed_s=round(time.perf_counter() - t1, 1))
    net.eval()
    card = {"config": asdict(mc), "train_config": asdict(tc), "steps": step,
            "train_seconds": round(time.perf_counter() - t1, 1), "loss_history": hist}
    if measure_after:
        card["measure"] = measure(net)
    save(net, out, card)
    return card


def eval_texts() -> list[str]:
    """Evaluation-split texts of the kinds the assistant says: weather results of held-out cities and
    weather words, held-out words, the reply, the cue and counts (fixed: a pure function of spoken.py)."""
    from interaction_actor.training import spoken, synth

    rng = random.Random("vocoder-eval")
    ev = spoken.EVAL
    results = [f"{rng.choice(spoken.CITIES[ev])} {rng.choice(spoken.CONDITIONS[ev])}, {rng.randint(-9, 29)} C"
               for _ in range(30)]
    return [*results, *spoken.WORDS[ev], synth.REPLY, synth.CUE_TEXT, "three", "seven", "two"]


def measure(net: MagnitudeNet | None, iters: tuple[int, ...] = (8, 32)) -> dict:
    """Word error rate (Whisper tiny.en, the ears' normalisation) of eval_texts(): espeak-ng's audio
    (`reference`), and the planned mel vocoded with the filterbank inversion and with `net`, at each
    Griffin-Lim iteration count in `iters`."""
    from interaction_actor.ears import speech
    from interaction_actor.model.vocoder import griffin_lim
    from interaction_actor.training import spoken, voice

    cfg = preset("small")
    a = voice.ASSISTANT
    texts = eval_texts()
    plans = [voice.utterance(t, cfg.text_out_slots, cfg.n_mels).mel for t in texts]

    def wer(audios) -> float:
        e = n = 0
        for t, x in zip(texts, audios, strict=True):
            d, k, _ = spoken.heard_errors(t, x)
            e, n = e + d, n + k
        return round(e / max(1, n), 4)

    out = {"texts": len(texts), "reference": wer(speech.say(t, a.voice, a.rate, a.pitch) for t in texts)}
    for it in iters:
        out[f"filterbank_gl{it}"] = wer(griffin_lim(m, cfg, it, net=False).numpy() for m in plans)
        if net is not None:
            out[f"net_gl{it}"] = wer(griffin_lim(m, cfg, it, net=net).numpy() for m in plans)
    return out


def main(out: str | None = None, steps: int | None = None, minutes: float | None = None) -> dict:
    tc = VocoderTrainConfig()
    if steps is not None:
        tc.steps = steps
    if minutes is not None:
        tc.max_minutes = minutes
    card = train_vocoder(out or SHIPPED, tc)
    print(json.dumps(card.get("measure", {})))
    return card
