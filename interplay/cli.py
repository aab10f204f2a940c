"""The `interplay` command line. Each command here works; `--help` lists only those.

Commands stay thin: they parse options, configure logging and call into the packages.
Benchmarks return a dict of figures that `interplay.report` prints (table, JSON last line).
"""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"interplay {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    log_level: str = typer.Option(None, "--log-level", help="debug, info, warning, error."),
    log_json: bool = typer.Option(None, "--log-json/--log-console", help="Force JSON or console logs."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    s = load_settings()
    configure_logging(log_level or s.log_level, s.log_json if log_json is None else log_json)


@contextlib.contextmanager
def user_errors():
    """A user's mistake (interplay.client.UserError) becomes one line on stderr and exit code 2."""
    from interplay.client import UserError

    try:
        yield
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


ENGINES = ("local", "openai", "vllm")


def _check_runtime_options(engine: str, checkpoint: str | None) -> None:
    """What `serve` and `demo` are given, checked before Ray or any model starts."""
    from interplay.client import UserError

    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if checkpoint and checkpoint.lower() not in ("none", "random") and not Path(checkpoint).is_file():
        raise UserError(f"checkpoint {checkpoint}: no such file (omit --checkpoint for the shipped model)")


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
    from interaction_actor.model.bench import bench_model as run

    emit("interplay bench model", run(quick=quick, preset=preset, threads=threads), as_json)


@bench_app.command("kernels")
def bench_kernels(quick: bool = QUICK, as_json: bool = JSON) -> None:
    """Deterministic vs default per-turn time (small); MoE gather+gemv vs grouped at 1/4/16 tokens."""
    from kernels.bench import bench_kernels as run

    emit("interplay bench kernels", run(quick=quick), as_json)


@bench_app.command("engine")
def bench_engine(
    quick: bool = QUICK,
    as_json: bool = JSON,
    engine: str = typer.Option("local", help="local | openai | vllm"),
    tool_choice: str = typer.Option("", help="First-step tool policy; '' = the engine's default (local: required)."),
) -> None:
    """Background engine on the fixed prompt set: tokens/s, time to first token, tool-call success."""
    from background_actor.bench import bench_engine as run

    emit("interplay bench engine", run(quick=quick, engine=engine, tool_choice=tool_choice), as_json)


@bench_app.command("loop")
def bench_loop(
    quick: bool = QUICK,
    as_json: bool = JSON,
    preset: str = typer.Option("small", help="Model preset the sessions run."),
    seconds: float = typer.Option(None, help="Seconds per configuration (default 20, --quick 3)."),
    turn_ms: int = typer.Option(200, help="Turn length in milliseconds."),
) -> None:
    """Turn-start lateness, compute fraction and misses for 1/4/16 sessions, idle and with a busy neighbour."""
    from interaction_actor.runtime.bench import bench_loop as run

    emit("interplay bench loop", run(quick=quick, preset=preset, seconds=seconds, turn_ms=turn_ms), as_json)


@bench_app.command("delegation")
def bench_delegation(quick: bool = QUICK, as_json: bool = JSON) -> None:
    """Context-package handoff time (build + serialize + send) and result surfacing delay in turns."""
    from delegation.bench import bench_delegation as run

    emit("interplay bench delegation", run(quick=quick), as_json)


@app.command()
def talk(
    address: str = typer.Argument(..., help="Session service address, host:port (printed by `serve`)."),
    wav: str = typer.Option(None, "--wav", help="16 kHz mono PCM16 WAV to stream in real time."),
    frames: str = typer.Option(None, "--frames", help="Folder of JPEG/PNG frames, streamed at --fps."),
    script: str = typer.Option(None, "--script", help="Text file: one typed message per line."),
    fps: float = typer.Option(5.0, help="Frames per second for --frames."),
    tail: float = typer.Option(1.0, help="Seconds to keep listening after the inputs end."),
    fast: bool = typer.Option(False, "--fast", help="Send as fast as possible instead of in real time."),
    session_id: str = typer.Option("", help="Session id (default: chosen by the server)."),
) -> None:
    """Stream a WAV (and frames, a text script) to a running actor; print the live per-turn timeline."""
    from interplay.client import talk_main

    if not (wav or frames or script):
        raise typer.BadParameter("give at least one of --wav, --frames, --script")
    with user_errors():
        talk_main(address, wav=wav, frames_dir=frames, script=script, fps=fps, tail_s=tail, realtime=not fast,
                  session_id=session_id)


@app.command()
def train(
    preset: str = typer.Option("small", help="Model preset to train from scratch."),
    steps: int = typer.Option(None, help="Optimizer steps (default: the preset's training config)."),
    minutes: float = typer.Option(None, help="Wall-clock budget; the learning-rate schedule follows it."),
    seed: int = typer.Option(None, help="Seed of the weights and of the episode stream (default: the shipped model's)."),
    out: str = typer.Option(None, help="Checkpoint path (default: interaction_actor/checkpoints/<preset>.pt)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last resumable state."),
    threads: int = typer.Option(None, help="torch threads (default: all cores)."),
    evaluate_after: bool = typer.Option(True, "--eval/--no-eval", help="Run the quick eval and record it in the card."),
) -> None:
    """Co-train the interaction model from scratch on synthetic micro-turn episodes; writes weights + card."""
    import json

    from interaction_actor.training.train import train_main

    card = train_main(preset=preset, steps=steps, minutes=minutes, seed=seed, out=out, resume=resume,
                      threads=threads, evaluate_after=evaluate_after, eval_quick=True, progress=True)
    typer.echo(json.dumps({k: card[k] for k in ("checkpoint", "steps", "train_seconds", "final_losses")
                           if k in card}))


@app.command("eval")
def eval_(
    quick: bool = QUICK,
    as_json: bool = JSON,
    checkpoint: str = typer.Option(None, help="Weights to evaluate (default: the shipped checkpoint)."),
) -> None:
    """Interactivity suite on held-out episodes, turn by turn through the streaming session, vs a turn-based baseline."""
    from interaction_actor.training.evaluate import eval_main

    emit("interplay eval", eval_main(checkpoint=checkpoint, quick=quick), as_json)


@app.command()
def study(
    as_json: bool = JSON,
    quick: bool = QUICK,
    policies: str = typer.Option(None, help="Comma-separated policy names (default: all registered)."),
    scenarios: str = typer.Option("examples/scenarios", help="Folder (or file) of scenario JSON."),
    out: str = typer.Option("runs/study", help="Where study.csv, study.json and plots go."),
    seed: int = typer.Option(0, help="Base seed."),
    repeats: int = typer.Option(3, help="Runs per policy x scenario."),
) -> None:
    """Compare delegation policies over scripted scenarios; writes CSV, JSON and plots."""
    from delegation.study import run_study

    names = [p.strip() for p in policies.split(",") if p.strip()] if policies else None
    result = run_study(names, scenarios, out, seed=seed, repeats=1 if quick else repeats)
    emit("interplay study", result, as_json)


def _engine_options(engine: str, s) -> dict:
    """Engine options from the settings (INTERPLAY_BACKGROUND__OPENAI_BASE_URL, ..._OPENAI_MODEL)."""
    if engine == "openai":
        return {"base_url": s.background.openai_base_url, "model": s.background.openai_model}
    return {}


def _backend(spec: str | None, s) -> str:
    """The interaction backend to run (--backend, else INTERPLAY_MODEL__BACKEND), checked before Ray starts:
    a spec that names no backend is a user mistake (one line, exit code 2)."""
    from interaction_actor.runtime.backend import BACKENDS

    spec = spec or s.model.backend
    if spec not in BACKENDS:
        import importlib

        module, sep, attr = spec.partition(":")
        try:
            ok = bool(sep) and hasattr(importlib.import_module(module), attr)
        except ImportError:
            ok = False
        if not ok:
            typer.echo(f"error: backend {spec!r} names nothing loadable: use one of {sorted(BACKENDS)} or "
                       "module:attr (importable where the interaction actor runs)", err=True)
            raise typer.Exit(2)
    return spec


@app.command()
def demo(
    as_json: bool = JSON,
    engine: str = typer.Option("local", help="Background engine: local (embedded SmolLM2), openai, vllm."),
    backgrounds: int = typer.Option(1, help="Background actors in the pool."),
    checkpoint: str = typer.Option(None, help="Interaction model weights (default: the shipped checkpoint)."),
    out: str = typer.Option("runs/demo", help="Where timeline.jsonl and assistant.wav go."),
    ray_address: str = typer.Option(None, "--address", help="Join this Ray cluster instead of starting one."),
    backend: str = typer.Option(None, help="Interaction backend: native (default) or module:attr."),
) -> None:
    """The live demo: Ray, a background pool and the interaction actor, fed a scripted conversation in real time."""
    from interplay.demo import DemoConfig, run_demo

    with user_errors():
        _check_runtime_options(engine, checkpoint)
    s = load_settings()
    cfg = DemoConfig(turn_ms=s.loop.turn_ms, engine=engine, engine_options=_engine_options(engine, s),
                     background_actors=backgrounds, checkpoint=checkpoint, preset=s.model.preset, out_dir=out,
                     ray_address=ray_address or s.ray_address, backend=_backend(backend, s))
    summary = run_demo(cfg)
    summary.pop("config", None)
    emit("interplay demo: summary", summary, as_json)


@app.command()
def serve(
    ray_address: str = typer.Option(None, "--address", help="Ray cluster to run on (default: start a local one)."),
    engine: str = typer.Option("local", help="Background engine: local, openai, vllm."),
    backgrounds: int = typer.Option(2, help="Background actors in the pool (the interaction actor fails over)."),
    checkpoint: str = typer.Option(None, help="Interaction model weights (default: the shipped checkpoint)."),
    seconds: float = typer.Option(0.0, help="Stop after this many seconds (0: run until Ctrl-C)."),
    backend: str = typer.Option(None, help="Interaction backend: native (default) or module:attr."),
) -> None:
    """Run the interaction actor and a background pool as services; prints the Session endpoint for `talk`."""
    import time

    from interplay.demo import DemoConfig, start_runtime, stop_runtime

    with user_errors():
        _check_runtime_options(engine, checkpoint)
    s = load_settings()
    cfg = DemoConfig(turn_ms=s.loop.turn_ms, engine=engine, engine_options=_engine_options(engine, s),
                     background_actors=backgrounds, checkpoint=checkpoint, preset=s.model.preset,
                     ray_address=ray_address or s.ray_address, backend=_backend(backend, s))
    handles, address, bg = start_runtime(cfg)
    typer.echo(f"session endpoint: {address}")
    typer.echo(f"background pool: {', '.join(bg)}")
    typer.echo(f"try: interplay talk {address} --wav examples/assets/hello.wav", err=True)
    try:
        deadline = time.monotonic() + seconds if seconds > 0 else float("inf")
        while time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        stop_runtime(handles)


if __name__ == "__main__":  # pragma: no cover
    app()
