"""Compare delegation policies over the shipped scenarios; write a table (CSV/JSON) and plots (PNG).

    .venv/bin/python examples/delegation_study.py                  # writes ./runs/delegation_study/
    .venv/bin/python examples/delegation_study.py out/dir --seed 1 --repeats 5

Five policies (never, always, rule, model_token, and a confidence threshold over always) are
replayed on a virtual clock through the interleave scheduler, over every scenario in
examples/scenarios/, `repeats` seeds each. Runs in a few seconds on a laptop CPU; no GPU, no network.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from interplay.log import configure_logging

configure_logging("warning")  # before the delegation modules bind their loggers

from delegation.study import DEFAULT_POLICIES, run_study  # noqa: E402

HERE = Path(__file__).resolve().parent
COLUMNS = ("answered_rate", "latency_ms_p50", "latency_ms_p90", "dead_air_s", "voiced_over_user",
           "stale_results", "wasted_background_s", "cancelled_tasks", "delegations", "redeliveries")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?", default="runs/delegation_study", help="where to write the table and plots")
    ap.add_argument("--scenarios", default=str(HERE / "scenarios"), help="a scenario file or a folder of them")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="seeds per scenario and policy")
    args = ap.parse_args(argv)
    result = run_study(DEFAULT_POLICIES, args.scenarios, args.out_dir, seed=args.seed, repeats=args.repeats)
    print(f"{len(result['scenarios'])} scenarios x {args.repeats} seeds; per-session means, latency pooled\n")
    head = f"| {'policy':24s} | " + " | ".join(COLUMNS) + " |"
    print(head)
    print("|" + "|".join("-" * (len(c) + 2) for c in ["policy" + " " * 18, *COLUMNS]) + "|")
    for name, s in result["policies"].items():
        cells = [("-" if s[c] is None else f"{s[c]:.3g}").rjust(len(c)) for c in COLUMNS]
        print(f"| {name:24s} | " + " | ".join(cells) + " |")
    print()
    for kind, path in result["files"].items():
        print(f"{kind:13s} {path}")
    return result


if __name__ == "__main__":
    main()
