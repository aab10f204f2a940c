"""`interplay eval fdbench`: every backend, one after another, served as `serve` serves it, played the same
episodes in real time over Session.Converse, then scored from its output audio.

`evaluate(FdbenchConfig) -> dict` starts, for each backend spec (a registered name such as `native` or
`cascade`, or `module:attr`), the runtime `serve` starts (interplay.runtime.start: Ray, the interaction
actor with that backend and, as the settings say, the ears, the delegation policy and the background
engine; `backgrounds` actors, one by default as in the demo: a backend that hands a question over, as
the cascade does with "Let me check.", is heard voicing the answer, not left hanging; 0: none, and
policy `never`; admission control off, see plan_for), plays every episode (episodes.py) to it through
stream.play — `concurrency` sessions at a time, each started at least `stagger_s` after the previous
one so that no two users finish speaking at the same moment (a cascade transcribes one segment at a
time; concurrent ends would queue and lengthen its latency, which is not what one user meets) —
drains it, and moves to the next. Only after every backend has run is anything scored (scoring.py: the
VAD and the transcriber would otherwise take CPU from the live turns). The result holds, per backend,
the FIGURES.md keys with the clock check (missed turns, lateness, delivery, the client's own send
lateness), `native_over_cascade_latency`, the published FD-bench v1 figures (outputs.py) and run
details; `fdbench_main` also writes fdbench.json, fdbench.png and each episode's output audio.
A backend that cannot be loaded is a UserError before anything starts; a failed episode is counted
(`episodes` < `episodes_planned`), never dropped silently.

The delegation scenarios (delegation.py; `delegation`: None all five, or none with `quick`) run after a
backend's episodes, against the same backend started again with the scenarios' slow tool alone
(delegation_plan: slow_weather.registry, allowed tools [weather], the demo's background prompt), or for
pipecat through its own function calling (pipecat_peer.stream_pipecat_delegation, once per tool
setting: the first, pipecat's default, gives the backend's keys, the other `delegation_<setting>`; with
`quick` and scenarios named, the default alone), each `delegation_repeats` times (delegation.repeated: the
k-th run of a scenario is `<name>-r<k>`; the counts cover every run).
They are scored with the same Scorer after everything has streamed; their figures join the backend's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from interplay.fdbench import episodes as E
from interplay.fdbench.stream import Recording, align, play, staggered
from interplay.log import get_logger

log = get_logger("interplay.fdbench.run")

DELEGATION_TOOLS = "interplay.fdbench.slow_weather:registry"


@dataclass
class FdbenchConfig:
    backends: tuple[str, ...] = ()  # empty: `native` and `cascade`, those of them registered
    quick: bool = False  # 2 episodes per category instead of 6
    per_category: int | None = None  # the first n episodes of each category (overrides quick)
    categories: tuple[str, ...] = E.CATEGORIES
    concurrency: int = 3  # sessions streaming at once
    stagger_s: float = 1.3  # at least this long between two session starts
    barge_in_control: bool = False  # also send BARGE_IN when the user interrupts (FD-bench: audio only)
    backgrounds: int = 1  # background actors (the settings' engine); 0: none, and delegation policy `never`
    checkpoint: str | None = None  # native weights (default: the shipped checkpoint)
    ray_address: str | None = None
    out_dir: str | None = "runs/fdbench"
    save_audio: bool = True  # each episode's output.wav under out_dir/<backend>/<episode>/
    # the delegation scenarios (delegation.py) by name; None: all five, but none with `quick` (they take minutes)
    delegation: tuple[str, ...] | None = None
    delegation_repeats: int = 1  # each delegation scenario this many times per system (per tool setting for pipecat)


def default_backends() -> tuple[str, ...]:
    """`native` and `cascade` (those registered), and `pipecat` when its virtualenv is there (`make peers`)."""
    from interaction_actor.runtime.backend import BACKENDS
    from interplay.fdbench import pipecat_peer

    return tuple(b for b in ("native", "cascade") if b in BACKENDS) + (
        (pipecat_peer.NAME,) if pipecat_peer.available() else ())


def check(cfg: FdbenchConfig) -> tuple[str, ...]:
    """The backends to run, each loadable, and a sane config (UserError otherwise)."""
    from interplay.client import UserError
    from interplay.fdbench import pipecat_peer
    from interplay.runtime import check_plan

    backends = tuple(cfg.backends) or default_backends()
    if not backends:
        raise UserError("no backend to evaluate: give --backends native,cascade or module:attr")
    if len(set(backends)) != len(backends):
        raise UserError(f"--backends names one backend twice: {', '.join(backends)}")
    if cfg.concurrency < 1 or cfg.stagger_s < 0 or cfg.backgrounds < 0:
        raise UserError("--concurrency must be at least 1, --stagger-s and --backgrounds at least 0")
    if cfg.delegation_repeats < 1:
        raise UserError("--delegation-repeats must be at least 1")
    for b in backends:
        if b == pipecat_peer.NAME:
            pipecat_peer.require()  # a peer process beside the project, not a Session backend
        else:
            check_plan(plan_for(b, cfg))
    if cfg.per_category is not None and not 1 <= cfg.per_category <= len(E.PAUSE_S):
        raise UserError(f"--episodes must be 1..{len(E.PAUSE_S)} per category")
    return backends


def plan_for(spec: str, cfg: FdbenchConfig):
    """What `serve` would run for this backend, with `cfg.backgrounds` background actors (none: policy `never`)."""
    from interplay.runtime import plan_from_settings
    from interplay.settings import load_settings

    plan = plan_from_settings(load_settings(), backend=spec, checkpoint=cfg.checkpoint, ray_address=cfg.ray_address)
    plan.background.actors = cfg.backgrounds
    # no admission control: on a loaded machine it refuses the second wave of sessions for a minute (its
    # window of measured turns); the run reports the missed turns and lateness instead
    plan.interaction.admission = False
    if cfg.backgrounds == 0:
        plan.interaction.policy, plan.interaction.policy_options = "never", {}
    return plan


def ordered(eps: list[E.Episode]) -> list[E.Episode]:
    """Categories interleaved (pause, turn, interruption, pause, ...): concurrent sessions differ in kind."""
    by = [[e for e in eps if e.category == c] for c in E.CATEGORIES]
    out = []
    for i in range(max((len(x) for x in by), default=0)):
        out += [x[i] for x in by if i < len(x)]
    return out


async def play_all(address: str, eps: list[E.Episode], concurrency: int = 3, stagger_s: float = 1.3,
                   barge_in_control: bool = False, tag: str = "") -> list[Recording]:
    """Every episode against one server: at most `concurrency` at once, starts `stagger_s` apart."""
    run = uuid.uuid4().hex[:6]

    async def one(ep: E.Episode) -> Recording:
        return await play(address, ep, f"fdb-{tag}{ep.name}-{run}", barge_in_control=barge_in_control)

    return await staggered(eps, one, concurrency, stagger_s)


def scenario_names(cfg: FdbenchConfig) -> tuple[str, ...]:
    """The delegation scenarios to run: those named, else all five, or none with `quick`."""
    from interplay.fdbench.delegation import SCENARIOS

    if cfg.delegation is not None:
        return tuple(cfg.delegation)
    return () if cfg.quick else tuple(SCENARIOS)


def delegation_plan(spec: str, cfg: FdbenchConfig):
    """`plan_for(spec)` serving the scenarios' slow tool alone (slow_weather.registry), at least one background
    actor, and the demo's background prompt (answer with the tool's result as it gave it)."""
    from interplay.demo import VOICE_PROMPT

    plan = plan_for(spec, dataclasses.replace(cfg, backgrounds=max(1, cfg.backgrounds)))
    plan.background.registry, plan.background.builtin = DELEGATION_TOOLS, ()
    plan.background.system_prompt = VOICE_PROMPT
    plan.interaction.allowed_tools = ["weather"]
    return plan


def _served(spec: str, plan, what: str, play, progress=None) -> tuple[object, dict]:
    """Start `plan` as `serve` does, run `play(address, tag)` (a coroutine factory) against it, drain it;
    (what play returned, {start_s, stream_s, address, load_avg}). `what` names the work for `progress`."""
    from interplay.runtime import drain, start

    t0 = time.monotonic()
    handles, address, _ = start(plan, log_to_driver=False)
    started = time.monotonic() - t0
    try:
        if progress:
            progress(f"{spec}: {what} at {address}")
        t1, load = time.monotonic(), os.getloadavg()[0]
        out = asyncio.run(play(address, spec.replace(":", "_").replace(".", "_")[:16] + "-"))
        streamed = time.monotonic() - t1
    finally:
        drain(handles, 1.0)
    # the machine's 1-minute load average as the streaming began and ended: the live figures depend on it
    return out, {"start_s": round(started, 1), "stream_s": round(streamed, 1), "address": address,
                 "load_avg": [round(load, 1), round(os.getloadavg()[0], 1)]}


def stream_delegation(spec: str, scs: list, cfg: FdbenchConfig, progress=None) -> tuple[list, dict]:
    """The delegation scenarios against `spec` served with the slow tool (delegation_plan); (recordings, facts)."""
    from interplay.fdbench import delegation as D

    plan = delegation_plan(spec, cfg)
    recs, run = _served(spec, plan, f"{len(scs)} delegation scenarios",
                        lambda address, tag: D.play_all(address, scs, cfg.concurrency, cfg.stagger_s, tag=tag),
                        progress)
    return recs, {"delegation_start_s": run["start_s"], "delegation_stream_s": run["stream_s"],
                  "delegation_tools": plan.background.registry, "delegation_policy": plan.interaction.policy}


def stream_backend(spec: str, eps: list[E.Episode], cfg: FdbenchConfig, progress=None) -> tuple[list[Recording], dict]:
    """Serve `spec` as `serve` does, play every episode to it, drain it; (recordings, run facts)."""
    plan = plan_for(spec, cfg)
    recs, run = _served(spec, plan, f"{len(eps)} episodes",
                        lambda address, tag: play_all(address, ordered(eps), cfg.concurrency, cfg.stagger_s,
                                                      cfg.barge_in_control, tag=tag),
                        progress)
    return recs, {**run, "ears": plan.interaction.ears is not None, "backgrounds": plan.background.actors,
                  "cpus": os.cpu_count()}


def evaluate(cfg: FdbenchConfig, progress=None) -> tuple[dict, dict[str, list[tuple[Recording, object]]]]:
    """The run (see the module docstring) -> (figures, {backend: [(recording, aligned), ...]})."""
    from interplay.fdbench import delegation as D
    from interplay.fdbench.outputs import PUBLISHED, PUBLISHED_NOTE, latency_ratio
    from interplay.fdbench.scoring import Scorer, summarize

    backends = check(cfg)
    eps = E.build(quick=cfg.quick, categories=cfg.categories, per_category=cfg.per_category) if cfg.categories else []
    names = scenario_names(cfg)
    scs = D.build(names, cfg.delegation_repeats) if names else []
    t0 = time.monotonic()
    streamed: dict[str, list[Recording]] = {}
    runs: dict[str, dict] = {}
    scenario_recs: dict[str, list] = {}
    for spec in backends:
        if spec == "pipecat":
            from interplay.fdbench.pipecat_peer import stream_pipecat, stream_pipecat_delegation

            streamed[spec], runs[spec] = (stream_pipecat(ordered(eps), cfg.concurrency, cfg.stagger_s, progress)
                                          if eps else ([], {}))
            if scs:
                from interplay.fdbench.pipecat_peer import TOOL_SETTINGS

                settings = tuple(TOOL_SETTINGS)[:1] if cfg.quick else tuple(TOOL_SETTINGS)  # quick: the default
                scenario_recs[spec], facts = stream_pipecat_delegation(scs, cfg.concurrency, cfg.stagger_s, progress,
                                                                       settings_run=settings)
                runs[spec].update(facts)
        else:
            streamed[spec], runs[spec] = stream_backend(spec, eps, cfg, progress) if eps else ([], {})
            if scs:
                scenario_recs[spec], facts = stream_delegation(spec, scs, cfg, progress)
                runs[spec].update(facts)
    if progress:
        progress("scoring the output audio (Silero VAD, Whisper tiny.en)")
    scorer = Scorer()
    per_backend, details, kept = {}, {}, {}
    for spec, recs in streamed.items():
        pairs = [(r, align(r)) for r in recs]
        scored = [scorer.score(r, a) for r, a in pairs]
        per_backend[spec] = {**summarize(scored, [a for _, a in pairs]), **runs[spec]}
        details[spec] = scored
        kept[spec] = pairs
        groups: dict[str, list] = {}  # pipecat: one group per tool setting (the first is its default)
        for r in scenario_recs.get(spec, []):
            groups.setdefault(r.runner.get("setting", "") if r.runner else "", []).append(r)
        for i, (setting, recs) in enumerate(groups.items()):
            dpairs = [(r, align(D.with_episode(r))) for r in (D.with_episode(r) for r in recs)]
            dscored = [{**D.score(scorer, r, a, *D.times(r)), "setting": setting or None} for r, a in dpairs]
            if i == 0:
                per_backend[spec].update(D.summarize(dscored), delegation_setting=setting or None)
            else:
                per_backend[spec][f"delegation_{setting}"] = D.summarize(dscored)
            details[spec] = details[spec] + dscored
            kept[spec] = kept[spec] + dpairs
    result = {
        "backends": per_backend,
        "native_over_cascade_latency": latency_ratio(per_backend, "native", "cascade"),
        "episodes_per_category": len(eps) // max(1, len(cfg.categories)),
        "categories": list(cfg.categories),
        "concurrency": cfg.concurrency,
        "stagger_s": cfg.stagger_s,
        "barge_in_control": cfg.barge_in_control,
        "time_base": "session turn grid (turn x turn_ms + lateness + compute); receive time as the check "
                     "(delivery_ms_*)",
        "scoring": "output audio only: Silero VAD regions (merged over gaps <= 0.5 s) for times, Whisper tiny.en "
                   "(the ears' transcriber and judge) for words; TOR per FD-bench v1 (>= 1 s or > 3 words); "
                   "turn-taking latency to the first output speech onset (VAD), not the first word; "
                   "interruption_addressed_rate: topic-word match, not an LLM judge",
        "published_fdbench_v1": PUBLISHED,
        "published_note": PUBLISHED_NOTE,
        "held_out": E.held_out_report(),
        "delegation_scenarios": D.about(list(names), quick=cfg.quick, repeats=cfg.delegation_repeats),
        "eval_seconds": round(time.monotonic() - t0, 1),
        "config": asdict(cfg),
        "episodes_detail": details,
    }
    log.info("fdbench_done", backends=list(per_backend), seconds=result["eval_seconds"])
    return result, kept


def fdbench_main(cfg: FdbenchConfig, progress=None) -> dict:
    """The CLI's entry: the run, then fdbench.json, fdbench.png and output WAVs under cfg.out_dir; returns
    the figures without the per-episode detail (that stays in fdbench.json), with `files`."""
    from interplay.fdbench.outputs import write_outputs

    result, kept = evaluate(cfg, progress)
    if cfg.out_dir:
        result["files"] = write_outputs(result, kept, Path(cfg.out_dir), save_audio=cfg.save_audio)
    return {k: v for k, v in result.items() if k != "episodes_detail"}
