"""`interplay bench model`: per-turn compute of the interaction model's streaming session on this CPU.

A turn = `step_batch` for one session of the given preset (featurize, prefill of the turn's input
slots, decode of its output slots; unvoiced unless the key says voiced). Keys per FIGURES.md plus
extras that say exactly what was measured. One thread unless `threads` says otherwise.
"""

from __future__ import annotations

import statistics
import time

import torch

import kernels
from interaction_actor.model.fusion import InteractionModel, build_model
from interaction_actor.model.session import SessionState, TurnInput, fill_after, new_session, step_batch

TURNS_10S = 50
TURNS_10MIN = 3000


def _inputs(g: torch.Generator, n: int, sr: int = 16000) -> list[TurnInput]:
    return [TurnInput(audio=torch.randn(sr // 5, generator=g) * 0.1,
                      frame=torch.randint(0, 256, (120, 160, 3), dtype=torch.uint8, generator=g),
                      text="hello there" if i % 7 == 0 else "", context="tool result: 42" if i % 11 == 0 else "")
            for i in range(n)]


def _time_turns(model: InteractionModel, sessions: list[SessionState], turns: int, g: torch.Generator,
                voiced: bool = False) -> list[float]:
    out = []
    for _ in range(turns):
        inputs = _inputs(g, len(sessions))
        if voiced:
            for s in sessions:
                s.speech.speaking = True
        t0 = time.perf_counter()
        step_batch(model, sessions, inputs)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100.0 * (len(xs) - 1))))]


def _at_fill(model: InteractionModel, turns_done: int, g: torch.Generator) -> SessionState:
    """A session in the state the capacity rule gives after `turns_done` turns (synthetic cache contents)."""
    s = new_session(model, f"fill{turns_done}")
    s.cache.pos = fill_after(model, turns_done, s.cache.capacity)
    s.turn = turns_done
    s.cache.kv.normal_(generator=g)
    return s


def bench_model(quick: bool = False, preset: str = "small", threads: int = 1) -> dict:
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(quick, preset)
    finally:
        torch.set_num_threads(prev_threads)


def _run(quick: bool, preset: str) -> dict:
    model = build_model(preset)
    cfg, lay = model.config, model.layout
    budget_ms = float(cfg.turn_ms)
    g = torch.Generator().manual_seed(0)
    n_steady = 60 if quick else 300
    # steady state: one real session from turn 0; timed after the cache has filled (compactions included)
    s = new_session(model, "steady")
    warm = -(-cfg.capacity // lay.turn_len)
    _time_turns(model, [s], warm, g)
    steady = _time_turns(model, [s], n_steady, g)
    # the same on the deterministic (batch-invariant) kernels, which the runtime loop runs by default
    det_s = new_session(model, "steady-deterministic")
    with kernels.deterministic():
        _time_turns(model, [det_s], warm, g)
        det_steady = _time_turns(model, [det_s], n_steady, g)
    # early (after 10 s of real turns) vs late (after 10 min): late is real in the full run, and in the quick
    # run a session placed at the cache fill the capacity rule gives after 3000 turns. Timed interleaved
    # (one early turn, one late turn, ...) so machine noise hits both alike.
    early_s = new_session(model, "early")
    _time_turns(model, [early_s], TURNS_10S, g)
    if quick:
        late_s = _at_fill(model, TURNS_10MIN, g)
        late_how = "synthetic: cache filled to the capacity rule's fill after 3000 turns"
    else:
        late_s = new_session(model, "late")
        _time_turns(model, [late_s], TURNS_10MIN, g)
        late_how = "real: 3000 turns stepped"
    early, late = [], []
    for _ in range(20 if quick else 60):
        early += _time_turns(model, [early_s], 1, g)
        late += _time_turns(model, [late_s], 1, g)
    # re-prefilling the history the session holds at 10 min vs appending one turn (interleaved too)
    hist = late_s.cache.pos
    x = torch.randn(1, hist, cfg.d_model)
    pre, append_ms = [], []
    with torch.no_grad():
        for _ in range(3 if quick else 10):
            cache = model.transformer.new_cache(late_s.cache.capacity)
            t0 = time.perf_counter()
            model.transformer(x, torch.arange(hist)[None], caches=[cache], starts=[0])
            pre.append((time.perf_counter() - t0) * 1000.0)
            append_ms += _time_turns(model, [late_s], 2, g)
    append = statistics.median(append_ms)
    # cost of turn N for N up to 10 minutes: a session at the fill the capacity rule gives after N turns
    # (synthetic cache contents), timed interleaved; attention grows with the fill until the rule bounds it
    marks = (1, 4, 10, 50, 300, TURNS_10MIN)
    fills = {n: _at_fill(model, n, g) for n in marks}
    fill_pos = {n: f.cache.pos for n, f in fills.items()}
    samples: dict[int, list[float]] = {n: [] for n in marks}
    for _ in range(8 if quick else 30):
        for n, f in fills.items():
            f.cache.pos = fill_pos[n]  # re-time the same fill (slots are rewritten in place)
            samples[n] += _time_turns(model, [f], 1, g)
    by_turn = {str(n): round(statistics.median(v), 3) for n, v in samples.items()}
    # voiced turns (flow head + Griffin-Lim vocoder) and 16 sessions batched at the 10-minute fill
    voiced = _time_turns(model, [s], 20 if quick else 100, g, voiced=True)
    batch = [_at_fill(model, TURNS_10MIN, g) for _ in range(16)]
    b16 = _time_turns(model, batch, 4 if quick else 20, g)
    p50, p99 = _pct(steady, 50), _pct(steady, 99)
    return {
        "turn_ms_p50": round(p50, 3),
        "turn_ms_p99": round(p99, 3),
        "budget_fraction_p99": round(p99 / budget_ms, 4),
        "kernels": "turn_ms_* and the other figures: the default ops; deterministic_*: the batch-invariant ops "
                   "the runtime loop runs by default (LoopConfig.deterministic)",
        "deterministic_turn_ms_p50": round(_pct(det_steady, 50), 3),
        "deterministic_turn_ms_p99": round(_pct(det_steady, 99), 3),
        "deterministic_budget_fraction_p99": round(_pct(det_steady, 99) / budget_ms, 4),
        "late_over_early": round(statistics.median(late) / statistics.median(early), 3),
        "reprefill_over_append": round(statistics.median(pre) / append, 3),
        "preset": preset,
        "threads": torch.get_num_threads(),
        "turn_positions": lay.turn_len,
        "capacity": cfg.capacity,
        "steady_turns_timed": len(steady),
        "early_turn_ms_p50": round(statistics.median(early), 3),
        "late_turn_ms_p50": round(statistics.median(late), 3),
        "late_how": late_how,
        "reprefill_ms_p50": round(statistics.median(pre), 3),
        "reprefill_positions": hist,
        "turn_ms_p50_by_turn": by_turn,
        "cache_fill_by_turn": {str(n): p for n, p in fill_pos.items()},
        "turn_n_over_turn_10": {n: round(ms / by_turn["10"], 3) for n, ms in by_turn.items()},
        "voiced_turn_ms_p50": round(_pct(voiced, 50), 3),
        "voiced_turn_ms_p99": round(_pct(voiced, 99), 3),
        "batch16_turn_ms_p50": round(_pct(b16, 50), 3),
        "batch16_budget_fraction_p50": round(_pct(b16, 50) / budget_ms, 4),
        "quick": quick,
    }


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    print(json.dumps(bench_model(quick="--quick" in sys.argv)))
