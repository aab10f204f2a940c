"""Compare delegation policies over the shipped scenarios; write a table (CSV/JSON) and plots (PNG).

    .venv/bin/python examples/delegation_study.py                  # writes ./runs/delegation_study/
    .venv/bin/python examples/delegation_study.py out/dir --seed 1 --repeats 5

Five policies (never, always, rule, model_token, and a confidence threshold over always) are
replayed on a virtual clock through the interleave scheduler, over every scenario in
examples/scenarios/, `repeats` seeds each. Runs in a few seconds on a laptop CPU; no GPU, no network.
The policies and the scheduler are the runtime's own; the user, the background and the interaction
model are simulated (delegation/harness.py): model_token and the threshold act on a stand-in that
emits <delegate> with each utterance's scripted probability, labelled "(simulated model)".
It prints the headline scores (±1 s.d. over the seeds); every score is in study.csv / study.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from interplay.log import configure_logging

configure_logging("warning")  # before the delegation modules bind their loggers

from delegation.study import DEFAULT_POLICIES, compact_table, run_study  # noqa: E402

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?", default="runs/delegation_study", help="where to write the table and plots")
    ap.add_argument("--scenarios", default=str(HERE / "scenarios"), help="a scenario file or a folder of them")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="seeds per scenario and policy")
    args = ap.parse_args(argv)
    result = run_study(DEFAULT_POLICIES, args.scenarios, args.out_dir, seed=args.seed, repeats=args.repeats)
    print(compact_table(result))
    print()
    for kind, path in result["files"].items():
        print(f"{kind:13s} {path}")
    return result


if __name__ == "__main__":
    main()
