"""What `interplay eval fdbench` shows and keeps: the table, fdbench.json, fdbench.png, each episode's audio.

Given the figures of run.evaluate, `table(result)` is a rich table (one row per figure, one column per
backend, then the published FD-bench v1 models for the rows they published); `write_outputs(...)`
writes fdbench.json (everything, per-episode detail included), fdbench.png (takeover rates and
latencies of each backend, the published models beside them; when the delegation scenarios ran, a third
panel: per system and pipecat tool setting, its results voiced once / twice / lost stacked, with the
result-to-voiced p50 and the blocked turns written above) and, with `save_audio`, per episode
`<backend>/<episode>/output.wav` (the assistant as heard, on the session clock) — FD-bench's own
layout — and returns their paths. It computes nothing new and touches no network.

The published figures are Full-Duplex-Bench v1's (github.com/DanielLin94144/Full-Duplex-Bench README,
v1.0 table): other audio (Candor and ICC conversations, synthetic TTS), other ASR (parakeet), a GPT-4o
judge, and latency as a mean over takeovers from the first word. They stand beside ours for context,
not as a like-for-like comparison.
"""

from __future__ import annotations

import json
import math
import wave
from pathlib import Path

import numpy as np

# Full-Duplex-Bench v1.0 (README table): TOR = takeover rate; latencies in seconds.
PUBLISHED = {
    "PersonaPlex": {"pause_tor_synthetic": 0.584, "pause_tor_candor": 0.662, "turn_taking_tor": 0.992,
                    "turn_taking_latency_s": 0.070, "interruption_tor": 1.000, "interruption_gpt4o": 4.210,
                    "interruption_latency_s": 0.400},
    "dGSLM": {"pause_tor_synthetic": 0.934, "pause_tor_candor": 0.935, "turn_taking_tor": 0.975,
              "turn_taking_latency_s": 0.352, "interruption_tor": 0.917, "interruption_gpt4o": 0.201,
              "interruption_latency_s": 2.531},
    "Moshi": {"pause_tor_synthetic": 0.985, "pause_tor_candor": 0.980, "turn_taking_tor": 0.941,
              "turn_taking_latency_s": 0.265, "interruption_tor": 1.000, "interruption_gpt4o": 0.765,
              "interruption_latency_s": 0.257},
    "Freeze-Omni": {"pause_tor_synthetic": 0.642, "pause_tor_candor": 0.481, "turn_taking_tor": 0.336,
                    "turn_taking_latency_s": 0.953, "interruption_tor": 0.867, "interruption_gpt4o": 3.615,
                    "interruption_latency_s": 1.409},
    "Gemini Live 2.0": {"pause_tor_synthetic": 0.255, "pause_tor_candor": 0.310, "turn_taking_tor": 0.655,
                        "turn_taking_latency_s": 1.301, "interruption_tor": 0.891, "interruption_gpt4o": 3.376,
                        "interruption_latency_s": 1.183},
    "GPT-Realtime": {"pause_tor_synthetic": 0.010, "pause_tor_candor": 0.120, "turn_taking_tor": 1.000,
                     "turn_taking_latency_s": 1.470, "interruption_tor": 0.970, "interruption_gpt4o": 3.850,
                     "interruption_latency_s": 1.500},
}
PUBLISHED_NOTE = ("Full-Duplex-Bench v1.0 (README): different audio (Candor/ICC/synthetic), parakeet ASR, a GPT-4o "
                  "relevance judge, latency = mean over takeovers to the first word; context only. Issue #24 also "
                  "quotes TML at 0.40 s turn-taking latency (not in that table; not checked here).")

# (row label, our key, how to show it, the published key and its scale to our unit)
ROWS = (
    ("pause TOR (lower better)", "pause_takeover_rate", "{:.2f}", "pause_tor_synthetic", 1.0),
    ("turn-taking TOR", "turn_taking_takeover_rate", "{:.2f}", "turn_taking_tor", 1.0),
    ("turn-taking latency p50 ms", "turn_taking_latency_ms_p50", "{:.0f}", "turn_taking_latency_s", 1000.0),
    ("  takeovers only, p50 ms", "turn_taking_latency_ms_p50_takeovers", "{:.0f}", None, 0),
    ("interruption TOR", "interruption_takeover_rate", "{:.2f}", "interruption_tor", 1.0),
    ("interruption stop p50 ms", "interruption_stop_ms_p50", "{:.0f}", None, 0),
    ("interruption response p50 ms", "interruption_response_ms_p50", "{:.0f}", "interruption_latency_s", 1000.0),
    ("reply names the interruption", "interruption_addressed_rate", "{:.2f}", None, 0),
    ("delegation: results voiced once", "results_voiced_once", "{}", None, 0),
    ("delegation: results lost", "results_lost", "{}", None, 0),
    ("delegation: results voiced twice", "results_voiced_twice", "{}", None, 0),
    ("delegation: result to voiced p50 ms", "result_to_voiced_ms_p50", "{:.0f}", None, 0),
    ("delegation: blocked turns", "blocked_turns", "{}", None, 0),
    ("episodes complete / planned", "episodes", "{}", None, 0),
    ("missed turns", "missed_turns", "{}", None, 0),
    ("lateness p99 ms", "lateness_ms_p99", "{:.1f}", None, 0),
    ("delivery max ms", "delivery_ms_max", "{:.1f}", None, 0),
)
SHOWN = ("PersonaPlex", "Moshi", "Gemini Live 2.0", "GPT-Realtime")
SHORT = {"PersonaPlex": "PPlex*", "Moshi": "Moshi*", "Gemini Live 2.0": "Gemini*", "GPT-Realtime": "GPT-RT*"}


def latency_ratio(backends: dict, a: str, b: str) -> float | None:
    """a's turn-taking latency p50 over b's, when both ran and both answered; else None."""
    x = (backends.get(a) or {}).get("turn_taking_latency_ms_p50")
    y = (backends.get(b) or {}).get("turn_taking_latency_ms_p50")
    return round(x / y, 3) if x is not None and y else None


def _label(name: str, figures: dict) -> str:
    """A backend's column and legend name; a peer system's with its version (pipecat 1.14.0)."""
    version = figures.get("pipecat_version")
    return f"{name} {version}" if isinstance(version, str) else name


def _show(fmt: str, v) -> str:
    return "-" if v is None else fmt.format(v)


def table(result: dict):
    """A rich Table of the figures (see the module docstring)."""
    from rich.table import Table

    backends = result["backends"]
    t = Table(title=f"interplay eval fdbench: {result['episodes_per_category']} episodes per category, "
                    f"{result['concurrency']} sessions at a time", header_style="bold")
    t.add_column("figure")
    for name, b in backends.items():
        t.add_column(_label(name, b), justify="right")
    for name in SHOWN:
        t.add_column(SHORT[name], justify="right", style="dim")
    for label, key, fmt, pub, scale in ROWS:
        cells = []
        for b in backends.values():
            v = b.get(key)
            cells.append(f"{v} / {b['episodes_planned']}" if key == "episodes" else _show(fmt, v))
        cells += [_show(fmt, PUBLISHED[m][pub] * scale) if pub else "" for m in SHOWN]
        t.add_row(label, *cells)
    ratio = result.get("native_over_cascade_latency")
    t.caption = (f"native / cascade turn-taking latency: {_show('{:.3f}', ratio)}.  * {', '.join(SHOWN)}: "
                 f"{PUBLISHED_NOTE}")
    return t


def _num(v) -> float:
    return math.nan if v is None else float(v)


# the delegation panel's stack, bottom up: (summarize's key, legend, colour)
OUTCOMES = (("results_voiced_once", "voiced once", "tab:green"),
            ("results_voiced_twice", "voiced twice", "tab:orange"),
            ("results_lost", "lost", "tab:red"))


def delegation_systems(backends: dict) -> list[tuple[str, dict]]:
    """(label, figures) per system that has delegation figures (non-null results_voiced_once): each backend,
    and each further tool setting of a backend (`delegation_<setting>`, pipecat) as its own system."""
    out = []
    for name, b in backends.items():
        setting = b.get("delegation_setting")
        if b.get("results_voiced_once") is not None:
            out.append((_label(name, b) + (f" {setting}" if setting else ""), b))
        for key, v in b.items():
            if key.startswith("delegation_") and isinstance(v, dict) and v.get("results_voiced_once") is not None:
                out.append((f"{_label(name, b)} {key.removeprefix('delegation_')}", v))
    return out


def _delegation_panel(ax, systems: list[tuple[str, dict]], repeats) -> None:
    """Stacked counts per system (OUTCOMES), the result-to-voiced p50 and the blocked turns above each bar."""
    xs = range(len(systems))
    bottom = [0.0] * len(systems)
    for key, legend, colour in OUTCOMES:
        counts = [float(f.get(key) or 0) for _, f in systems]
        ax.bar(xs, counts, 0.6, bottom=bottom, label=legend, color=colour)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    for x, (_, f), top in zip(xs, systems, bottom, strict=True):
        p50, blocked = f.get("result_to_voiced_ms_p50"), f.get("blocked_turns")
        asked = f.get("delegation_turns_asked_during_call")
        lines = ("p50 n/a" if p50 is None else f"p50 {p50:.0f} ms",
                 "blocked n/a" if blocked is None else f"blocked {blocked}" + ("" if asked is None else f" / {asked}"))
        ax.text(x, top, "\n".join(lines), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(xs), [label for label, _ in systems], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, max([*bottom, 1.0]) * 1.35)
    ax.set_ylabel("results (count)")
    runs = f" (each run {repeats}x)" if isinstance(repeats, int) and repeats > 1 else ""
    ax.set_title(f"delegation scenarios{runs}\nabove: result to voiced p50, blocked / asked during a call", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


def figure(result: dict):
    """The figure of fdbench.png (a matplotlib Figure on the Agg canvas): takeover rates and latencies, ours
    beside the published models, and the delegation scenarios' counts when any system ran them."""
    from matplotlib.figure import Figure  # the Agg canvas; never touches pyplot's global backend

    backends = result["backends"]
    systems = delegation_systems(backends)
    fig = Figure(figsize=(17 if systems else 12, 4.8), layout="constrained")
    if systems:
        tor_ax, lat_ax, del_ax = fig.subplots(1, 3, width_ratios=(1, 1, 0.8))
        _delegation_panel(del_ax, systems, (result.get("delegation_scenarios") or {}).get("repeats"))
    else:  # --quick: the scenarios did not run (fdbench.json says why); no empty panel
        tor_ax, lat_ax = fig.subplots(1, 2)
    tor_keys = [("pause_takeover_rate", "pause_tor_synthetic", "pause\n(lower better)"),
                ("turn_taking_takeover_rate", "turn_taking_tor", "turn taking\n(higher better)"),
                ("interruption_takeover_rate", "interruption_tor", "interruption\n(higher better)")]
    lat_keys = [("turn_taking_latency_ms_p50", "turn_taking_latency_s", "turn-taking\nlatency p50"),
                ("interruption_stop_ms_p50", None, "interruption\nstop p50"),
                ("interruption_response_ms_p50", "interruption_latency_s", "interruption\nresponse p50")]
    names = list(backends)
    width = 0.8 / max(1, len(names))
    for ax, keys, scale in ((tor_ax, tor_keys, 1.0), (lat_ax, lat_keys, 1000.0)):
        for i, name in enumerate(names):
            xs = [k + (i - (len(names) - 1) / 2) * width for k in range(len(keys))]
            vals = [_num(backends[name].get(key)) for key, _, _ in keys]
            ax.bar(xs, [0.0 if math.isnan(v) else v for v in vals], width, label=_label(name, backends[name]),
                   color=f"C{i}")
            for x, v in zip(xs, vals, strict=True):  # every bar labelled: a rate of 0 is a result, n/a is none
                label = "n/a" if math.isnan(v) else (f"{v:.2f}" if scale == 1.0 else f"{v:.0f}")
                ax.text(x, 0 if math.isnan(v) else v, label, ha="center", va="bottom", fontsize=7)
        for j, model in enumerate(SHOWN):
            for k, (_, pub, _) in enumerate(keys):
                if pub:
                    ax.plot([k - 0.45, k + 0.45], [PUBLISHED[model][pub] * scale] * 2, ls=":", lw=1.2,
                            color=f"C{len(names) + j}", label=f"{model} (FD-bench v1)" if k == 0 else None)
        ax.set_xticks(range(len(keys)), [label for _, _, label in keys])
        ax.grid(axis="y", alpha=0.3)
    tor_ax.set_ylim(0, 1.05)
    tor_ax.set_ylabel("takeover rate (TOR)")
    lat_ax.set_ylabel("ms")
    tor_ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"interplay eval fdbench: {result['episodes_per_category']} espeak-ng episodes per category, "
                 "scored from the output audio (dotted: FD-bench v1 published, other audio)", fontsize=10)
    return fig


def plot(result: dict, path: Path):
    """fdbench.png (see `figure`); returns the figure."""
    fig = figure(result)
    fig.savefig(path, dpi=90)
    return fig


def _wav(path: Path, x: np.ndarray, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2").tobytes())


def write_outputs(result: dict, kept: dict, out_dir: Path, save_audio: bool = True) -> dict[str, str]:
    """fdbench.json, fdbench.png and (save_audio) the output WAVs; returns {"json", "png", "audio"} paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out_dir / "fdbench.json"), "png": str(out_dir / "fdbench.png")}
    if save_audio:
        for spec, pairs in kept.items():
            folder = spec.replace(":", "_").replace("/", "_")
            for rec, al in pairs:
                _wav(out_dir / folder / rec.episode.name / "output.wav", al.track)
        files["audio"] = str(out_dir / "<backend>/<episode>/output.wav")
    plot(result, Path(files["png"]))
    Path(files["json"]).write_text(json.dumps({**result, "files": files}, indent=1, default=str) + "\n",
                                   encoding="utf-8")
    return files
