"""`interplay bench kernels`: what the batch-invariant kernels cost, as ratios on this CPU.

`deterministic_over_default`: median per-turn time of a streaming session of the `small` preset
under `kernels.deterministic()` over the same session on the default (plain torch) ops; the two
sessions step the same inputs in alternation, so machine noise hits both alike, and both run under
the MKL mode `kernels` set for the process (`strict_cnr`). `deterministic_over_plain_mkl` (extra):
the default path runs in a second process with MKL out of strict CNR mode instead (what the process
would cost without `kernels`); the processes step turns in lockstep, one at a time. `..._cpu`
(extras): the same ratios of thread CPU time, which other processes on a shared machine do not
inflate. `moe_grouped_over_gather_t{1,4,16}`: the `small_moe` FFN layer's grouped per-expert path
over its gather+gemv path at 1, 4 and 16 tokens (> 1: gather+gemv is faster). One thread.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import torch

from kernels import cnr, fused_attention, moe, native

TOKENS = (1, 4, 16)


def bench_kernels(quick: bool = False, threads: int = 1, preset: str = "small",
                  moe_preset: str = "small_moe") -> dict:
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        turns = _turn_ratio(preset, 30 if quick else 200, 8 if quick else 20)
        plain = _cross_process_ratio(preset, threads, 30 if quick else 200, 8 if quick else 20)
        paths = _moe_ratios(moe_preset, 60 if quick else 400)
    finally:
        torch.set_num_threads(prev)
    out = {
        "deterministic_over_default": round(turns["ratio"], 4),
        **{f"moe_grouped_over_gather_t{t}": round(paths[t]["ratio"], 3) for t in TOKENS},
        "preset": preset,
        "moe_preset": moe_preset,
        "threads": threads,
        "strict_cnr": cnr.strict(),
        "native_rows": native.why(),
        "fused_attention": "on" if fused_attention.available() else fused_attention.why(),
        "moe_gather_max_tokens": moe.GATHER_MAX_TOKENS,
        "turns_timed": turns["turns"],
        "default_turn_ms_p50": round(turns["default_ms"], 3),
        "deterministic_turn_ms_p50": round(turns["deterministic_ms"], 3),
        "deterministic_over_default_cpu": round(turns["cpu_ratio"], 4),
        "deterministic_over_plain_mkl": round(plain["ratio"], 4),
        "deterministic_over_plain_mkl_cpu": round(plain["cpu_ratio"], 4),
        "plain_mkl_default_turn_ms_p50": round(plain["default_ms"], 3),
        "quick": quick,
    }
    for t in TOKENS:
        out[f"moe_gather_us_t{t}"] = round(paths[t]["gather_us"], 1)
        out[f"moe_grouped_us_t{t}"] = round(paths[t]["grouped_us"], 1)
    return out


def _turn_ratio(preset: str, turns: int, warm: int) -> dict:
    import kernels
    from interaction_actor.model.bench import _inputs
    from interaction_actor.model.fusion import build_model
    from interaction_actor.model.session import new_session, step_batch

    model = build_model(preset)
    sessions = {False: new_session(model, "default"), True: new_session(model, "deterministic")}
    times: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    g = torch.Generator().manual_seed(0)
    for k in range(warm + turns):
        inp = _inputs(g, 1)
        order = (False, True) if k % 2 else (True, False)
        for det in order:
            with kernels.deterministic(det):
                t0, c0 = time.perf_counter(), time.thread_time()
                step_batch(model, [sessions[det]], inp)
                dt, dc = (time.perf_counter() - t0) * 1000.0, (time.thread_time() - c0) * 1000.0
            if k >= warm:
                times[det].append(dt)
                cpu[det].append(dc)
    d, p = statistics.median(times[True]), statistics.median(times[False])
    cpu_ratio = statistics.median(cpu[True]) / statistics.median(cpu[False])
    return {"ratio": d / p, "deterministic_ms": d, "default_ms": p, "turns": turns, "cpu_ratio": cpu_ratio}


def _turn_server(preset: str, deterministic: bool, threads: int) -> None:
    """Child process of _cross_process_ratio: one turn of a fresh session per input line, its ms printed."""
    import kernels
    from interaction_actor.model.bench import _inputs
    from interaction_actor.model.fusion import build_model
    from interaction_actor.model.session import new_session, step_batch

    torch.set_num_threads(threads)
    model = build_model(preset)
    session = new_session(model, "lockstep")
    g = torch.Generator().manual_seed(0)
    print("@@ready", flush=True)
    for _ in sys.stdin:
        inp = _inputs(g, 1)
        with kernels.deterministic(deterministic):
            t0, c0 = time.perf_counter(), time.thread_time()
            step_batch(model, [session], inp)
            dt, dc = (time.perf_counter() - t0) * 1000.0, (time.thread_time() - c0) * 1000.0
        print(f"@@{dt:.6f} {dc:.6f}", flush=True)


def _reply(p: subprocess.Popen) -> str:
    """The child's next protocol line (its logging may share stdout); "" when it exited."""
    for line in p.stdout:
        if line.startswith("@@"):
            return line[2:].strip()
    return ""


def _cross_process_ratio(preset: str, threads: int, turns: int, warm: int) -> dict:
    env_plain = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    env_plain["KERNELS_MKL_STRICT"] = "0"
    procs = {}
    for det, env in ((True, dict(os.environ)), (False, env_plain)):
        code = f"from kernels.bench import _turn_server; _turn_server({preset!r}, {det}, {threads})"
        procs[det] = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, env=env)
    times: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    try:
        for p in procs.values():
            if _reply(p) != "ready":
                raise RuntimeError("bench child process failed to start")
        for k in range(warm + turns):
            for det in ((False, True) if k % 2 else (True, False)):
                procs[det].stdin.write("\n")
                procs[det].stdin.flush()
                dt, dc = (float(x) for x in _reply(procs[det]).split())
                if k >= warm:
                    times[det].append(dt)
                    cpu[det].append(dc)
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait(timeout=60)
    d, p = statistics.median(times[True]), statistics.median(times[False])
    cpu_ratio = statistics.median(cpu[True]) / statistics.median(cpu[False])
    return {"ratio": d / p, "deterministic_ms": d, "default_ms": p, "cpu_ratio": cpu_ratio}


def _moe_ratios(moe_preset: str, reps: int) -> dict:
    from interaction_actor.model.config import preset as get_preset

    cfg = get_preset(moe_preset)
    e, f, d = cfg.moe_experts, cfg.ffn_dim, cfg.d_model
    g = torch.Generator().manual_seed(1)
    w1, w3 = torch.randn(e, f, d, generator=g) * 0.05, torch.randn(e, f, d, generator=g) * 0.05
    w2 = torch.randn(e, d, f, generator=g) * 0.05
    out = {}
    for t in TOKENS:
        x = torch.randn(t, d, generator=g)
        router = torch.randn(t, e, generator=g)
        samples: dict[str, list[float]] = {"gather": [], "grouped": []}
        for k in range(reps + 10):
            for path in (("gather", "grouped") if k % 2 else ("grouped", "gather")):
                t0 = time.perf_counter()
                moe.moe_ffn(x, router, w1, w3, w2, cfg.moe_top_k, path=path)
                if k >= 10:
                    samples[path].append((time.perf_counter() - t0) * 1e6)
        ga, gr = statistics.median(samples["gather"]), statistics.median(samples["grouped"])
        out[t] = {"ratio": gr / ga, "gather_us": ga, "grouped_us": gr}
    return out


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    print(json.dumps(bench_kernels(quick="--quick" in sys.argv)))
