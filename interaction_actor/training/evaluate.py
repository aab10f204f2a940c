"""Interactivity suite: held-out synthetic episodes run through the real streaming session, turn by turn.

`evaluate(...) -> dict` steps every episode (synth.py, seeds >= synth.HELD_OUT_BASE) with
session.new_session/step_batch, reads what the model said and when, and scores: per-task accuracy
(right content at the right turn, TOL turns of slack), turn-taking latency (user speech end -> the
end of the turn whose output starts the reply, plus the measured per-turn compute), barge-in stop
latency (barge-in onset -> the end of the first turn whose output is silent, plus compute), and
delegation precision/recall; and each task's accuracy when it arrives after another task in the same
session (`tasks_in_session`: a live session is never fresh), and turn-taking's and delegation's after
three others (`tasks_deep_session`: past the 80 turns a training row holds), and with the extras the
share of long answers said whole when the live loop's pacer gives them in pieces (`long_answers_said`,
eval_long.py). The same suite runs the baseline product
teams would build instead: the cascade backend (VAD endpointing → the ears' speech recognition → a reply
model → TTS; `run_cascade`), on the same episodes, stepped on a real-time grid. Keys follow
../shared/FIGURES.md.

`evaluate(..., progress=fn)` calls fn(done, total, what) as it goes (`interplay eval` draws a bar on
stderr from it, eval_outputs.py); `eval_main(..., out=DIR)` also writes eval.json and eval.png there.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from interaction_actor.model import text as T
from interaction_actor.model.config import ModelConfig
from interaction_actor.model.fusion import InteractionModel, build_model
from interaction_actor.model.session import TurnOutput, new_session, step_batch
from interaction_actor.model.weights import DEFAULT_CHECKPOINT
from interaction_actor.training import synth
from interaction_actor.training.eval_long import long_answer_scores
from interplay.log import get_logger

log = get_logger("interaction_actor.training.evaluate")

AUDIBLE = 0.02  # a turn's assistant audio with a peak above this is sound (the vocoder's silence is ~1e-3)
TOL = 1  # turns of slack on "the right turn" (200 ms); cue_speak's "within one turn of the cue"
TURN_MS = 200.0
SAMPLES_PER_MS = 16.0


@dataclass
class Delivered:
    """What the user received at the end of one real turn (several model turns when a harness replays)."""

    text: str = ""
    controls: list[str] = field(default_factory=list)
    delegate_tasks: list[str] = field(default_factory=list)
    speaking: bool = False
    state: int | None = None  # the model's silent <state:n> (its countdown or tally), the last one
    pcm: torch.Tensor | None = None  # the assistant's audio this turn delivered (None: silent)

    def add(self, o: TurnOutput) -> None:
        self.text += o.text
        self.state = o.state if o.state is not None else self.state
        self.controls += o.controls
        if o.delegate_task is not None:
            self.delegate_tasks.append(o.delegate_task)
        self.speaking = self.speaking or o.speaking
        if o.pcm is not None:
            self.pcm = o.pcm if self.pcm is None else torch.cat([self.pcm, o.pcm])

    @property
    def audible(self) -> bool:
        """The turn's audio holds sound (peak above AUDIBLE), measured on the samples."""
        return self.pcm is not None and bool(self.pcm.numel()) and float(self.pcm.abs().max()) > AUDIBLE

    @property
    def says(self) -> bool:
        return bool(self.text) or "start_speaking" in self.controls

    @property
    def silent(self) -> bool:
        return not self.speaking and not self.text and "start_speaking" not in self.controls


def utterances(tr: list[Delivered]) -> list[tuple[int, str]]:
    """(start turn, text) of each utterance: from <start_speaking> (or a first byte) until <stop_speaking>,
    <listen>, or four turns without text (the voice paces its bytes: a word may leave a turn empty)."""
    out: list[tuple[int, str]] = []
    cur: list | None = None
    idle = 0
    for k, d in enumerate(tr):
        if cur is not None and "start_speaking" in d.controls and cur[1]:
            out.append((cur[0], cur[1]))
            cur = None
        if cur is None and d.says:
            cur, idle = [k, ""], 0
        if cur is not None:
            cur[1] += d.text
            idle = 0 if d.text or "start_speaking" in d.controls else idle + 1
            if "stop_speaking" in d.controls or "listen" in d.controls or idle >= 4:
                out.append((cur[0], cur[1]))
                cur = None
    if cur is not None:
        out.append((cur[0], cur[1]))
    return out


def _at(turn: int | None, start: int, lo: int = 0) -> bool:
    return turn is not None and turn - lo <= start <= turn + TOL


def planned(ep: synth.Episode, start: int) -> str:
    """The bytes the episode's targets say from turn `start` until its utterance ends or the episode does."""
    out: list[int] = []
    for toks in ep.targets[start + ep.expect.get("offset", 0) :]:  # a chained episode's turns are relative
        for t in toks:
            if t in (T.STOP_SPEAKING, T.LISTEN):
                return T.decode(out)
            if 0 <= t < T.N_BYTES:
                out.append(t)
    return T.decode(out)


def _says_planned(ep: synth.Episode, utt: tuple[int, str], turn: int | None, full: str) -> bool:
    """`utt` starts at `turn` (TOL) and says what the plan says by the episode's end (a prefix of `full`,
    at most one turn of bytes short)."""
    start, said = utt[0], utt[1].strip()
    due = planned(ep, turn).strip() if turn is not None else full
    return _at(turn, start) and full.startswith(said) and len(said) >= len(due) - 3


def score(ep: synth.Episode, tr: list[Delivered]) -> bool:
    """Right content at the right turn, and nothing said where nothing should be (see synth builders)."""
    ex, utt = ep.expect, utterances(tr)
    if ep.task in ("time_speak", "rep_count"):
        return len(utt) == 1 and utt[0][1].strip() == ex["say"] and _at(ex["turn"], utt[0][0])
    if ep.task in ("cue_speak", "cue_with_result"):
        if ex["say"] is None:
            return not utt
        cue_ok = bool(utt) and utt[0][1].strip() == ex["say"] and _at(ex["turn"], utt[0][0])
        if ex.get("result_say") is None:  # no result, or a SILENT one: "red!" and nothing else
            return cue_ok and len(utt) == 1
        return cue_ok and len(utt) == 2 and _says_planned(ep, utt[1], ex["result_say"], ex["result"])
    if ep.task == "turn_taking":
        if ex["turn"] is None:
            return not utt
        if not utt or not _at(ex["turn"], utt[0][0]):
            return False
        if ex["barge_in"] is None:
            return len(utt) == 1 and _says_planned(ep, utt[0], ex["turn"], ex["say"])
        yielded = next((k for k in range(ex["barge_in"], len(tr)) if not tr[k].speaking), None)
        first_ok = ex["say"].startswith(utt[0][1].strip()) and yielded is not None \
            and yielded <= ex["listen_turn"] + TOL
        later = utt[1:]
        t2 = ex["turn2"]
        if t2 is None:
            return first_ok and not later
        return first_ok and len(later) == 1 and _says_planned(ep, later[0], t2, ex["say"])
    if ep.task == "delegation":
        tasks = [(k, t) for k, d in enumerate(tr) for t in d.delegate_tasks]
        if len(tasks) != 1 or tasks[0][1] != ex["task"]:
            return False
        if ex["result_turn"] is not None and tasks[0][0] > ex["result_turn"]:
            return False
        if ex.get("ack_turn") is not None:  # a spoken request: the acknowledgement comes first
            if not utt or not _at(ex["ack_turn"], utt[0][0]) or not synth.REPLY.startswith(utt[0][1].strip()):
                return False
            utt = utt[1:]
        if ex["turn"] is None:
            return not utt
        return len(utt) == 1 and _says_planned(ep, utt[0], ex["turn"], ex["say"])
    if ep.task == "pause_handling":
        return not took_over(ep, tr)
    raise KeyError(ep.task)


def took_over(ep: synth.Episode, tr: list[Delivered]) -> bool:
    """pause_handling: the model's speech (its audio, or <start_speaking>) began inside the user's pause."""
    lo, hi = ep.expect["pause"]
    for k, d in enumerate(tr):
        if synth.reaches_user_in(k, lo, hi) and (d.audible or "start_speaking" in d.controls):
            return True
    return False


def _onset(tr: list[Delivered], frm: int, until: int | None = None) -> int | None:
    """Sample (on the session clock) where the assistant's audio first holds sound from turn `frm` on."""
    for k in range(max(0, frm), len(tr) if until is None else min(until, len(tr))):
        d = tr[k]
        if d.audible:
            i = int((d.pcm.abs() > AUDIBLE).nonzero()[0, 0])
            return (k + 1) * 3200 + i  # turn k's audio plays from the end of its window
    return None


def latencies(ep: synth.Episode, tr: list[Delivered], compute_ms: float) -> tuple[list[float], list[float]]:
    """(turn-taking ms, barge-in stop ms) of a turn_taking episode, measured from the assistant's audio:
    user speech end -> the first sound of the reply; barge-in onset -> the end of the last turn that
    still played the assistant's voice (empty lists for other tasks), each plus the step's compute."""
    if ep.task != "turn_taking":
        return [], []
    ex = ep.expect
    take, stop = [], []
    ends = [(ex["end_sample"], ep.speech[0][0] // 3200, ex.get("barge_in"))]
    if ex["barge_in"] is not None:
        ends.append((ex["barge_end_sample"], ex["barge_in"] + 1, None))
    for end, from_turn, until in ends:
        at = _onset(tr, from_turn, until)
        if at is not None and at >= end:
            take.append((at - end) / SAMPLES_PER_MS + compute_ms)
    if ex["barge_in"] is not None:
        b = ex["barge_in"]
        j = next((k for k in range(b, len(tr)) if not tr[k].audible), None)
        if j is not None:
            stop.append(max(0.0, (j + 1) * 3200 - ex["barge_sample"]) / SAMPLES_PER_MS + compute_ms)
    return take, stop


def run_interactive(model: InteractionModel, eps: list[synth.Episode]) -> list[list[Delivered]]:
    """Every episode through its own streaming session, all sessions batched turn by turn."""
    sessions = [new_session(model, f"{ep.task}-{ep.seed}") for ep in eps]
    trs = [[Delivered() for _ in range(ep.turns)] for ep in eps]
    for k in range(eps[0].turns):
        for i, o in enumerate(step_batch(model, sessions, [ep.inputs[k] for ep in eps])):
            trs[i][k].add(o)
    return trs


def _pcm16(audio: torch.Tensor | None, n: int = 3200) -> bytes:
    if audio is None:
        return bytes(2 * n)
    return (audio.clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16).numpy().tobytes()


def run_cascade(eps: list[synth.Episode], backend, ears) -> tuple[list[list[Delivered]], float]:
    """The baseline: every episode through its own session of the cascade backend (interaction_actor/
    cascade/: VAD endpointing → speech recognition → reply model → TTS), all stepped as one batch per turn
    on a real-time 200 ms grid, because its reply model and TTS run on worker threads against the wall
    clock (stepped faster, its replies would land turns late). Its speech recognition is `ears` (a
    LocalEars: Silero + Whisper tiny.en), as in `serve`: each window goes to them after the step, and their
    final, confident transcripts are the next turn's `heard`, as the loop's hearing does. Inputs are the
    episode's own (audio, typed text, frames it does not read, context), with `voice` = the context, as the
    loop's scheduler voices a result that arrives while the user is quiet. It is the peer product teams
    build, not one that fails by construction, but these tasks are the native model's: the user's "speech"
    is procedural sound with no words in it, cues are in video, answers are exact strings at a turn; the
    like-for-like comparison on spoken audio is `interplay eval fdbench`. Blocks for the episodes' real
    duration (16 turns: 3.2 s). Returns (what each turn delivered, the median batched step in ms)."""
    import dataclasses

    run = time.monotonic_ns() % 1_000_000
    sids = [f"cascade-{ep.task}-{ep.seed}-{run}" for ep in eps]
    states = [backend.open(sid) for sid in sids]
    trs = [[Delivered() for _ in range(ep.turns)] for ep in eps]
    heard = [""] * len(eps)
    step_ms: list[float] = []
    try:
        t0 = time.monotonic()
        for k in range(eps[0].turns):
            time.sleep(max(0.0, t0 + (k + 1) * TURN_MS / 1000 - time.monotonic()))  # the window has been heard
            inputs = [dataclasses.replace(ep.inputs[k], heard=heard[i], voice=ep.inputs[k].context)
                      for i, ep in enumerate(eps)]
            s0 = time.perf_counter()
            outs = backend.step(states, inputs)
            step_ms.append((time.perf_counter() - s0) * 1000)
            for i, o in enumerate(outs):
                trs[i][k].add(o)
            ears.feed([(sid, k, _pcm16(ep.inputs[k].audio)) for sid, ep in zip(sids, eps, strict=True)])
            got = ears.take()
            heard = [" ".join(h.text.strip() for h in got if h.session_id == sid and h.final and not h.low_confidence
                              and h.text.strip()) for sid in sids]
    finally:
        for sid, st in zip(sids, states, strict=True):
            backend.close(st)
            ears.close(sid)
    return trs, statistics.median(step_ms) if step_ms else 0.0


def oracle_transcript(ep: synth.Episode, outputs: list[list[int]] | None = None) -> list[Delivered]:
    """What a session would deliver if the model emitted `outputs` (default: the episode's targets):
    the session's own output rules (session._finish_turn, the barge-in and voicing rules) without a
    model. The scorer's upper bound: the targets themselves must score as right."""
    from interaction_actor.model.config import ModelConfig
    from interaction_actor.model.session import KVCache, SessionState, _finish_turn, turn_voiced, voiced_now
    from interaction_actor.model.vocoder import VocoderState, reset, vocode_turns

    s = SessionState(id="oracle", seed=0, cache=KVCache(torch.zeros(0), 0))
    own = outputs is None
    voc, cfg = VocoderState(), ModelConfig()
    tr = []
    for k, inp in enumerate(ep.inputs):
        s.speech.speaking = voiced = voiced_now(s.speech.speaking, inp.barge_in)
        ys = list((outputs or ep.targets)[k])
        voiced = turn_voiced(voiced, inp.barge_in, ys)
        mel = ep.voice.get(k) if voiced and own else None  # the targets' own voice, through the real vocoder
        pcm = vocode_turns([voc], [mel], cfg)[0] if mel is not None else None
        if mel is None:
            reset(voc)
        d = Delivered()
        d.add(_finish_turn(s, ys, voiced, mel, pcm, 80))
        s.turn += 1
        tr.append(d)
    return tr


def turn_compute_ms(model: InteractionModel, ep: synth.Episode) -> float:
    """Median wall time of one session's step (what a reply waits for after its window closes)."""
    s = new_session(model, "timing")
    times = []
    for inp in ep.inputs:
        t = time.perf_counter()
        step_batch(model, [s], [inp])
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times[1:])


def _p50(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 1) if xs else None


def _split_key(ep: synth.Episode) -> str:
    """"spoken" when the user spoke the episode's request (turn_taking, pause_handling, spoken delegation)."""
    if ep.task in ("turn_taking", "pause_handling"):
        return "spoken"
    return "spoken" if ep.expect.get("spoken") else "typed"


def silent_voiced(ep: synth.Episode, tr: list[Delivered]) -> int:
    """1 when a SILENT result was voiced: any utterance or any sound of the assistant after it arrived."""
    ex = ep.expect
    if ep.task != "delegation" or ex.get("mode") != "silent" or ex.get("result_turn") is None:
        return 0
    r = ex["result_turn"]
    said = any(start >= r for start, _ in utterances(tr))
    return int(said or any(d.audible for d in tr[r + 1 :]))


def silent_voiced_later(ep: synth.Episode, tr: list[Delivered]) -> int | None:
    """For a chained episode whose session began with a delegation that got a SILENT result: 1 when the
    session voiced that result afterwards (an utterance from its arrival on, in either episode, holding
    the first three letters of the result's city, so a result cut short counts too), else 0; None when
    the session had no SILENT result."""
    b = ep.expect.get("before") or {}
    if b.get("task") != "delegation" or b.get("mode") != "silent" or b.get("result_turn") is None:
        return None
    city = b["result"].split()[0].lower()
    return int(any(start >= b["result_turn"] and city[:3] in said.lower() for start, said in utterances(tr)))


def _suite(eps_by_task: dict[str, list[synth.Episode]], trs_by_task: dict[str, list[list[Delivered]]],
           compute_ms: float) -> dict:
    """Scores of one system (the interaction model, or the cascade baseline)."""
    tasks, take, stop = {}, [], []
    by_split: dict[str, dict[str, list[bool]]] = {"spoken": {}, "typed": {}}
    tp = emitted = needed = 0
    silent = silent_n = pause_n = takeovers = 0
    collide: list[bool] = []
    unneeded: dict[str, int] = {}  # task -> its episodes that delegated though nothing asked for it
    for task, eps in eps_by_task.items():
        trs = trs_by_task[task]
        if task == "pause_handling":
            pause_n += len(eps)
            takeovers += sum(took_over(e, t) for e, t in zip(eps, trs, strict=True))
            continue
        if task == "cue_with_result":  # "red!", then the colliding result (or, SILENT, nothing more)
            collide = [score(e, t) for e, t in zip(eps, trs, strict=True)]
            continue
        tasks[task] = round(sum(score(e, t) for e, t in zip(eps, trs, strict=True)) / len(eps), 4)
        for e, t in zip(eps, trs, strict=True):
            by_split[_split_key(e)].setdefault(task, []).append(score(e, t))
            a, b = latencies(e, t, compute_ms)
            take += a
            stop += b
            emitted_here = [x for d in t for x in d.delegate_tasks]
            emitted += len(emitted_here)
            if task != "delegation":
                unneeded[task] = unneeded.get(task, 0) + int(bool(emitted_here))
            else:
                needed += 1
                tp += int(bool(emitted_here) and emitted_here[0] == e.expect["task"])
                if e.expect.get("mode") == "silent" and e.expect.get("result_turn") is not None:
                    silent_n += 1
                    silent += silent_voiced(e, t)
    per = {k: {task: round(sum(v) / len(v), 4) for task, v in d.items()} for k, d in by_split.items()}
    spoken_req = [e for e in eps_by_task.get("delegation", []) if e.expect.get("spoken")]
    return {"tasks": tasks, "tasks_spoken": per["spoken"], "tasks_typed": per["typed"],
            "turn_taking_ms_p50": _p50(take), "barge_in_stop_ms_p50": _p50(stop),
            "pause_takeover_rate": round(takeovers / pause_n, 4) if pause_n else None,
            "silent_voiced": silent, "silent_results": silent_n,
            "delegation_precision": round(tp / emitted, 4) if emitted else 0.0,
            "delegation_recall": round(tp / needed, 4) if needed else 0.0,
            # episodes of the other tasks (chit-chat, timers, cues, counts) that delegated anyway: a
            # task's score checks what it says, not this ("weather We" for "We went to the park.")
            "unneeded_delegations": unneeded,
            "cue_with_result": round(sum(collide) / len(collide), 4) if collide else None,
            "turn_taking_responses": len(take), "barge_in_stops": len(stop),
            # the ears' ceiling on spoken delegation: the share of spoken requests whose transcript names
            # the city at all (the model can only carry the city it was given)
            "delegation_spoken_city_heard": round(sum(bool(e.expect.get("city_heard")) for e in spoken_req)
                                                  / len(spoken_req), 4) if spoken_req else None}


def _utterance_audio(tr: list[Delivered], start: int) -> torch.Tensor:
    """The assistant's audio of the utterance that starts at `start`: its voiced turns that follow."""
    parts = []
    for d in tr[start + 1 :]:
        if d.pcm is None:
            break
        parts.append(d.pcm)
    return torch.cat(parts) if parts else torch.zeros(0)


def voice_pairs(groups: list[list[list[Delivered]]], limit: int = 40, same: int = 2) -> list[tuple[str, torch.Tensor]]:
    """(text, audio) of up to `limit` utterances of two or more characters, taken from the groups (one a
    task: its episodes' transcripts) in turn, at most `same` of one text: the voice is measured on what
    every task says (the weather answers as much as the time task's four words), not on the first task's."""
    queues = []
    for trs in groups:
        q = []
        for tr in trs:
            for start, text in utterances(tr):
                audio = _utterance_audio(tr, start)
                if len(text.strip()) >= 2 and audio.numel():
                    q.append((text.strip(), audio))
        queues.append(q)
    pairs: list[tuple[str, torch.Tensor]] = []
    seen: dict[str, int] = {}
    while len(pairs) < limit and any(queues):
        for q in queues:
            while q:
                text, audio = q.pop(0)
                if seen.get(text, 0) < same:
                    seen[text] = seen.get(text, 0) + 1
                    pairs.append((text, audio))
                    break
            if len(pairs) >= limit:
                break
    return pairs


def voice_wer(groups: list[list[list[Delivered]]], limit: int = 40, cfg: ModelConfig | None = None) -> dict:
    """The assistant's voice through the ears' transcriber (Whisper tiny.en), against the text it said:
    word errors / words over up to `limit` utterances (`voice_pairs`: every task's, in turn) (`voice_wer`), and the
    same texts rendered by espeak-ng in the voice the model was trained on, through the same
    transcriber (`voice_wer_reference`); with `cfg`, also the flow head's own training targets for
    those texts (voice.utterance's planned mel) through the runtime vocoder (`voice_wer_vocoder`):
    the best the flow head could do with this vocoder, so the gap to the reference splits into what the
    mel representation and vocoder lose and what the flow head loses. Normalised as the ears' bench
    normalises (ears/bench.py)."""

    from interaction_actor.ears import speech
    from interaction_actor.training import spoken, voice

    pairs = voice_pairs(groups, limit)
    if not pairs:
        return {"voice_wer": None, "voice_wer_reference": None, "voice_utterances": 0}
    errs = ref_errs = voc_errs = words = 0
    samples = []
    for text, audio in pairs:
        a = voice.ASSISTANT
        e, n, got = spoken.heard_errors(text, audio.numpy())
        e2, _, got_ref = spoken.heard_errors(text, speech.say(text, a.voice, a.rate, a.pitch))
        errs, ref_errs, words = errs + e, ref_errs + e2, words + n
        sample = {"said": text, "heard": got.strip(), "heard_reference": got_ref.strip()}
        if cfg is not None:
            from interaction_actor.model.vocoder import griffin_lim

            plan = voice.utterance(text, cfg.text_out_slots, cfg.n_mels)
            e3, _, got_voc = spoken.heard_errors(text, griffin_lim(plan.mel, cfg).numpy())
            voc_errs += e3
            sample["heard_vocoder"] = got_voc.strip()
        if len(samples) < 8:
            samples.append(sample)
    out = {"voice_wer": round(errs / max(1, words), 4), "voice_wer_reference": round(ref_errs / max(1, words), 4),
           "voice_utterances": len(pairs), "voice_samples": samples}
    if cfg is not None:
        out["voice_wer_vocoder"] = round(voc_errs / max(1, words), 4)
    return out


def _okay(text: str) -> str:
    """Whisper writes the assistant's "ok" as "Okay": one word either way."""
    import re

    return re.sub(r"\bokay\b", "ok", text, flags=re.IGNORECASE)


class _NoCopy:
    """Within the block, sessions get no copy candidates (layout.Lookup.cand answers nothing): the model
    reads the answer with attention alone. Evaluation only."""

    def __enter__(self) -> None:
        from interaction_actor.model import layout

        self._orig = layout.Lookup.cand
        layout.Lookup.cand = lambda _self, hist: layout.NO_HIST

    def __exit__(self, *exc: object) -> None:
        from interaction_actor.model import layout

        layout.Lookup.cand = self._orig


def in_session_episodes(n: int, cfg, tasks: tuple[str, ...] = synth.TASKS) -> dict[str, list[synth.Episode]]:
    """Each of `tasks`' held-out episodes (the same seeds as the fresh suite), each following a held-out
    episode of the next task in synth.TASKS in one session (synth.chain): the task arrives after a
    finished conversation, at positions and with a history a fresh session never has."""
    out = {}
    for i, task in enumerate(synth.TASKS):
        if task not in tasks:
            continue
        before = synth.TASKS[(i + 1) % len(synth.TASKS)]
        firsts = [synth.episode(s, before, cfg) for s in synth.held_out_seeds(n, offset=10_000_000 + i * 1_000_000)]
        out[task] = [synth.chain(a, synth.episode(s, task, cfg))
                     for a, s in zip(firsts, synth.held_out_seeds(n, offset=i * 1_000_000), strict=True)]
    return out


DEEP_DEPTH = 3  # finished episodes before the scored one: 120 turns, past the 80 a training row holds
DEEP_TASKS = ("turn_taking", "delegation")  # the two tasks that lose accuracy later in a session


def deep_session_episodes(n: int, cfg, depth: int = DEEP_DEPTH,
                          tasks: tuple[str, ...] = DEEP_TASKS) -> dict[str, list[synth.Episode]]:
    """Each of `tasks`' held-out episodes (the fresh suite's seeds) after `depth` finished held-out
    episodes of the other tasks in turn, in one session: the task arrives later than anything training
    shows (its rows hold 80 turns), after the session's KV cache has been compacted at least once at the
    default capacity. A live session that talks for a minute is here."""
    out = {}
    for i, task in enumerate(synth.TASKS):
        if task not in tasks:
            continue
        others = [t for t in synth.TASKS if t != task]
        eps = []
        for j, seed in enumerate(synth.held_out_seeds(n, offset=i * 1_000_000)):
            ep = None
            for d in range(depth):
                prior = synth.episode(synth.held_out_seeds(1, offset=20_000_000 + (i * depth + d) * 100_000 + j)[0],
                                      others[(j + d) % len(others)], cfg)
                ep = prior if ep is None else synth.chain(ep, prior)
            eps.append(synth.chain(ep, synth.episode(seed, task, cfg)))
        out[task] = eps
    return out


def deep_session_scores(model: InteractionModel, eps_by_task: dict[str, list[synth.Episode]],
                        tick: Callable[[str], None] | None = None) -> dict:
    """`tasks_deep_session`: the accuracy of each task's last episode (scored on its own turns) in the
    sessions of deep_session_episodes, and `deep_session_turns_before` (the turns before it)."""
    out, before = {}, 0
    for task, eps in eps_by_task.items():
        if tick is not None:
            tick(task)
        trs = run_interactive(model, eps)
        out[task] = round(sum(score(e, t[e.expect["offset"]:]) for e, t in zip(eps, trs, strict=True)) / len(eps), 4)
        before = eps[0].expect["offset"]
    return {"tasks_deep_session": out, "deep_session_turns_before": before}


Progress = Callable[[int, int, str], None]  # (stages done, stages in all, the stage starting now)


def _quiet(done: int, total: int, what: str) -> None:
    return None


def in_session_scores(model: InteractionModel, eps_by_task: dict[str, list[synth.Episode]],
                      tick: Callable[[str], None] | None = None) -> dict:
    """`tasks_in_session`: the accuracy of each task's second episode (scored on its own turns) in the
    chained sessions, and `silent_voiced_in_session` of `silent_results_in_session`: the sessions'
    first-episode SILENT results voiced at any later turn (silent_voiced_later; the fresh suite's
    `silent_voiced` sees only the turns left in the result's own episode). `tick(task)` before each
    task's sessions run."""
    out, silent = {}, []
    for task, eps in eps_by_task.items():
        if tick is not None:
            tick(task)
        trs = run_interactive(model, eps)
        out[task] = round(sum(score(e, t[e.expect["offset"]:]) for e, t in zip(eps, trs, strict=True)) / len(eps), 4)
        silent += [v for e, t in zip(eps, trs, strict=True) if (v := silent_voiced_later(e, t)) is not None]
    return {"tasks_in_session": out, "silent_voiced_in_session": sum(silent), "silent_results_in_session": len(silent)}


QUICK_EPISODES = 10  # per task: --quick takes ~15 s on a shared 2-core CPU (full: ~1 min), plus ~17 s for the
# cascade baseline: 5 tasks x 3.2 s of real time, whatever the episode count, and its start
FULL_EPISODES = 50


def evaluate(checkpoint: str | None = None, *, quick: bool = False, episodes: int | None = None,
             preset: str = "small", baseline: bool = True, in_session: bool = True, threads: int | None = 1,
             model: InteractionModel | None = None, progress: Progress | None = None, extras: bool = True) -> dict:
    """Run the suite on held-out seeds -> FIGURES.md keys (plus `baseline` with the same suite, and
    with `in_session` the accuracy `tasks_in_session` of each task arriving after another one, and
    `tasks_deep_session` of DEEP_TASKS arriving after DEEP_DEPTH others).

    `checkpoint` defaults to the shipped one (weights.DEFAULT_CHECKPOINT); `episodes` per task
    (default QUICK_EPISODES with `quick`, else FULL_EPISODES). `threads` (default 1): a session's
    ops are small, and on a shared CPU a second OpenMP thread mostly waits (measured: many times
    slower under load); None leaves torch's setting. `progress(done, total, what)` is called before each
    stage (a task's episodes on one system) and once at the end with done == total. `extras=False` skips
    the voice through the transcriber (voice_wer), the delegation without the copy lookup and the long
    answers read in pieces (eval_long.py), for a check of the task scores alone."""
    if threads:
        torch.set_num_threads(threads)
    if model is None:
        ckpt = checkpoint or (str(DEFAULT_CHECKPOINT) if Path(DEFAULT_CHECKPOINT).is_file() else None)
        model = build_model(preset, checkpoint=ckpt)
    else:
        ckpt = checkpoint
    n = episodes or (QUICK_EPISODES if quick else FULL_EPISODES)
    report = progress or _quiet
    suite_tasks = (*synth.TASKS, *synth.SITUATIONS)
    total = 1 + 3 * int(extras) + len(suite_tasks) * (1 + int(baseline)) \
        + (len(synth.TASKS) + len(DEEP_TASKS)) * int(in_session)
    done = 0

    def tick(what: str) -> None:
        nonlocal done
        report(done, total, what)
        done += 1

    t0 = time.perf_counter()
    tick("episodes and per-turn compute")
    eps = {task: [synth.episode(s, task, model.config) for s in synth.held_out_seeds(n, offset=i * 1_000_000)]
           for i, task in enumerate(suite_tasks)}
    compute_ms = turn_compute_ms(model, eps["turn_taking"][0])
    trs = {}
    for t, e in eps.items():
        tick(f"interaction: {t}")
        trs[t] = run_interactive(model, e)
    ours = _suite(eps, trs, compute_ms)
    result = dict(ours)
    if extras:
        tick("the voice through the transcriber")
        result.update(voice_wer([trs[t] for t in synth.TASKS], limit=15 if quick else 40, cfg=model.config))
        tick("delegation without the copy lookup")
        with _NoCopy():
            no_copy = run_interactive(model, eps["delegation"])
        from interaction_actor.training import spoken

        result["content_overlap"] = spoken.content_overlap()
        result["tasks_without_copy"] = {"delegation": round(sum(score(e, t) for e, t in zip(
            eps["delegation"], no_copy, strict=True)) / len(no_copy), 4)}
        tick("long answers in pieces, as the live loop reads them")
        result |= long_answer_scores(model, n=min(n, 10 if quick else 40))
    result |= {"episodes_per_task": n, "tolerance_turns": TOL, "turn_compute_ms": round(compute_ms, 2),
               "checkpoint": ckpt or "", "data_version": synth.DATA_VERSION}
    if in_session:
        result |= in_session_scores(model, in_session_episodes(n, model.config),
                                    tick=lambda t: tick(f"in session: {t}"))
        result |= deep_session_scores(model, deep_session_episodes(n, model.config),
                                      tick=lambda t: tick(f"deep in a session: {t}"))
    if baseline:
        from interaction_actor.ears.worker import LocalEars
        from interaction_actor.runtime.backend import load_backend

        backend, ears = load_backend("cascade"), LocalEars()
        runs, step_ms = {}, []
        try:
            for t, e in eps.items():
                tick(f"baseline (cascade): {t}")
                runs[t], ms = run_cascade(e, backend, ears)
                step_ms.append(ms)
        finally:
            backend.shutdown()
            ears.stop()
        step = statistics.median(step_ms)
        base = _suite(eps, runs, step)
        result["baseline"] = {**base, "backend": "cascade", "realtime": True, "step_ms_p50": round(step, 2)}
        result["tasks"] = {t: {"interaction": ours["tasks"][t], "baseline": base["tasks"][t]} for t in synth.TASKS}
        result["tasks_spoken"] = {t: {"interaction": v, "baseline": base["tasks_spoken"].get(t)}
                                  for t, v in ours["tasks_spoken"].items()}
        result["tasks_typed"] = {t: {"interaction": v, "baseline": base["tasks_typed"].get(t)}
                                 for t, v in ours["tasks_typed"].items()}
    result["eval_seconds"] = round(time.perf_counter() - t0, 1)
    report(total, total, "done")
    log.info("eval_done", **{k: v for k, v in result.items() if not isinstance(v, dict)})
    return result


def eval_main(checkpoint: str | None = None, quick: bool = False, out: str | Path | None = None,
              episodes: int | None = None, progress: bool = True) -> dict:
    """`interplay eval [--quick] [--checkpoint PATH] [--out DIR] [--episodes N]`: the suite on the shipped
    (or given) checkpoint -> the FIGURES.md dict: `tasks` (task -> {"interaction": acc, "baseline": acc}),
    `turn_taking_ms_p50`, `barge_in_stop_ms_p50`, `delegation_precision`, `delegation_recall` (of the
    interaction model), and `baseline` (the same keys for the cascade baseline) plus run details.
    With `progress` a bar on stderr; with `out` eval.json and eval.png there (their paths in `files`)."""
    from interaction_actor.training.eval_outputs import StderrProgress, write_outputs

    with StderrProgress(enabled=progress) as bar:
        result = evaluate(checkpoint=checkpoint, quick=quick, episodes=episodes, progress=bar.update)
    if out is not None:
        result["files"] = write_outputs(result, Path(out))
    return result
