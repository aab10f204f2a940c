"""The `interplay` command line. Each command here works; `--help` lists only those.

Commands stay thin: they parse options, configure logging and call into the packages.
Benchmarks return a dict of figures that `interplay.report` prints (table, JSON last line).
"""

from __future__ import annotations

import platform

import typer

from interplay import __version__
from interplay.log import configure_logging
from interplay.report import emit
from interplay.settings import load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: print the figures of ../shared/FIGURES.md.")
app.add_typer(bench_app, name="bench")

QUICK = typer.Option(False, "--quick", help="A shorter run that reports the same keys.")
JSON = typer.Option(False, "--json", help="Also print one JSON object as the last line.")


@app.callback()
def _main(
    log_level: str = typer.Option(None, "--log-level", help="debug, info, warning, error."),
    log_json: bool = typer.Option(None, "--log-json/--log-console", help="Force JSON or console logs."),
) -> None:
    s = load_settings()
    configure_logging(log_level or s.log_level, s.log_json if log_json is None else log_json)


@app.command()
def info() -> None:
    """Print versions of interplay and its runtime dependencies, and the effective settings."""
    import google.protobuf
    import grpc
    import ray
    import torch

    s = load_settings()
    typer.echo(f"interplay {__version__} (python {platform.python_version()}, {platform.machine()})")
    typer.echo(f"torch {torch.__version__} cuda={torch.cuda.is_available()} threads={torch.get_num_threads()}")
    typer.echo(f"ray {ray.__version__}  grpcio {grpc.__version__}  protobuf {google.protobuf.__version__}")
    typer.echo(s.model_dump_json(indent=2))


@bench_app.command("model")
def bench_model(
    quick: bool = QUICK,
    as_json: bool = JSON,
    preset: str = typer.Option("small", help="Model preset to time."),
    threads: int = typer.Option(1, help="torch threads for the model step."),
) -> None:
    """Per-turn compute of the interaction model, late vs early turns, re-prefill vs append."""
    from interaction_actor.bench_model import bench_model as run

    emit("interplay bench model", run(quick=quick, preset=preset, threads=threads), as_json)


if __name__ == "__main__":  # pragma: no cover
    app()
