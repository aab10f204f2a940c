"""The `interplay` command line. Each command here works; `--help` lists only those.

Commands stay thin: they parse options, configure logging and call into the packages.
Benchmarks return a dict of figures that `interplay.report` prints (table, JSON last line).
"""

from __future__ import annotations

import contextlib
import platform
import sys
from pathlib import Path

import typer

from interplay import __version__
from interplay.log import configure_logging
from interplay.report import emit
from interplay.settings import load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0],
                  pretty_exceptions_enable=False)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: print the figures of ../shared/FIGURES.md.")
app.add_typer(bench_app, name="bench")

QUICK = typer.Option(False, "--quick", help="A shorter run that reports the same keys.")
JSON = typer.Option(False, "--json", help="Also print one JSON object as the last line.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"interplay {__version__}")
        raise typer.Exit()


_debug = False  # --debug: user mistakes show their traceback too


@app.callback()
def _main(
    config: str = typer.Option(None, "--config", help="TOML settings file: the same keys as the INTERPLAY_* "
                               "environment variables ([loop] turn_ms = 200); the environment wins."),
    log_level: str = typer.Option(None, "--log-level", help="debug, info, warning, error."),
    log_json: bool = typer.Option(None, "--log-json/--log-console", help="Force JSON or console logs."),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback behind an error message."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    global _debug
    from interplay.settings import ConfigFileError, describe_error, use_config_file

    _debug = debug
    try:
        use_config_file(config)
        s = load_settings()
    except (ConfigFileError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        if debug:
            raise
        typer.echo(f"error: {describe_error(exc)}", err=True)
        raise typer.Exit(2) from None
    configure_logging(log_level or s.log_level, s.log_json if log_json is None else log_json)


@contextlib.contextmanager
def user_errors():
    """A user's mistake (interplay.client.UserError) becomes one line on stderr and exit code 2
    (with --debug, its traceback too)."""
    from interplay.client import UserError

    try:
        yield
    except UserError as exc:
        if _debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def shipped_path(path: str) -> Path:
    """`path` as given when it exists, else the same path inside the installed project (examples/...
    ship with it), so a command's default works from any folder."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    inside = Path(__file__).resolve().parent.parent / given
    return inside if inside.exists() else given


@app.command()
def info() -> None:
    """Print versions of interplay and its runtime dependencies, and the effective settings."""
    import google.protobuf
    import grpc
    import ray
    import torch

    from interplay.settings import config_file

    s = load_settings()
    typer.echo(f"interplay {__version__} (python {platform.python_version()}, {platform.machine()})")
    typer.echo(f"torch {torch.__version__} cuda={torch.cuda.is_available()} threads={torch.get_num_threads()}")
    typer.echo(f"ray {ray.__version__}  grpcio {grpc.__version__}  protobuf {google.protobuf.__version__}")
    typer.echo(f"config file: {config_file() or 'none'} (secrets shown as **********)")
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


@bench_app.command("scale")
def bench_scale(
    quick: bool = QUICK,
    as_json: bool = JSON,
    preset: str = typer.Option("small", help="Model preset of the capacity runs."),
    seconds: float = typer.Option(None, help="Seconds per capacity run (default 10, --quick 2)."),
) -> None:
    """Sessions one actor holds at 0 missed turns (idle, busy) and its compute p99 there; the session
    router's per-chunk overhead; failover resume time (an actor killed -> the session's next chunk)."""
    from interaction_actor.router.bench import bench_scale as run

    emit("interplay bench scale", run(quick=quick, preset=preset, seconds=seconds), as_json)


@bench_app.command("delegation")
def bench_delegation(quick: bool = QUICK, as_json: bool = JSON) -> None:
    """Context-package handoff time (build + serialize + send) and result surfacing delay in turns."""
    from delegation.bench import bench_delegation as run

    emit("interplay bench delegation", run(quick=quick), as_json)


@bench_app.command("ears")
def bench_ears(quick: bool = QUICK, as_json: bool = JSON,
               preset: str = typer.Option("small", help="Interaction model preset the loop runs.")) -> None:
    """The ears: held-out WER and real-time factor, speech end -> final transcript at the client, and
    missed turns while transcribing for 1 and 4 sessions."""
    from interaction_actor.runtime.ears_bench import bench_ears as run

    emit("interplay bench ears", run(quick=quick, preset=preset), as_json)


@bench_app.command("faults")
def bench_faults(quick: bool = QUICK, as_json: bool = JSON) -> None:
    """Hostile clients, misbehaving tools and a killed background against a live runtime, beside a monitor
    session: which faults it survived, the monitor's turns, unsettled delegations, leaked secrets."""
    from interplay.faults import FAULTS
    from interplay.faults import bench_faults as run

    total = len(FAULTS)
    with typer.progressbar(length=total, label="faults", file=sys.stderr) as bar:
        figures = run(quick=quick, progress=lambda name: bar.update(1))
    emit("interplay bench faults", figures, as_json)


@app.command("report")
def report_(run_dir: str = typer.Argument(..., help="A run folder holding timeline.jsonl (e.g. runs/demo)."),
            out: str = typer.Option(None, help="PNG path (default: RUN_DIR/report.png)."),
            trace: str = typer.Option(None, "--trace", help="The run's spans (what --trace wrote; default: "
                                      "RUN_DIR/trace.jsonl when there): the Gantt comes from them.")) -> None:
    """Draw a run's per-turn compute and lateness and a Gantt of each delegation to a PNG."""
    from interplay.client import UserError
    from interplay.pictures import draw

    with user_errors():
        if not (Path(run_dir) / "timeline.jsonl").is_file():
            raise UserError(f"{run_dir}: no timeline.jsonl here (interplay demo writes one into runs/demo)")
        if trace and not Path(trace).is_file():
            raise UserError(f"--trace {trace}: no such file")
        typer.echo(str(draw(run_dir, out, trace=trace)))


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
    mic: bool = typer.Option(False, "--mic", help="Talk through the default microphone (until Ctrl-C or --seconds)."),
    play: bool = typer.Option(False, "--play", help="Play the assistant's voice on the default speaker."),
    save_wav: str = typer.Option(None, "--save-wav", help="Write the assistant's audio to this WAV (on the "
                                 "session's clock, silence where it said nothing)."),
    as_json: bool = typer.Option(False, "--json", help="Print the timeline as JSON lines (the records of the "
                                 "demo's timeline.jsonl, which `interplay report` draws) instead of text."),
    seconds: float = typer.Option(0.0, help="With --mic: stop after this many seconds (0: at Ctrl-C)."),
    record: bool = typer.Option(False, "--record", help="Ask the server to save the session in the replay "
                                "format (its loop.requested_record_dir); the summary says where."),
) -> None:
    """Talk to a running actor: stream a WAV, frames, a text script or the microphone; print the live
    per-turn timeline (or JSON lines), play and/or save the assistant's voice."""
    from interplay.talk import talk_main

    if not (wav or frames or script or mic):
        raise typer.BadParameter("give at least one of --wav, --frames, --script, --mic")
    with user_errors():
        talk_main(address, wav=wav and str(shipped_path(wav)), frames_dir=frames and str(shipped_path(frames)),
                  script=script, fps=fps, tail_s=tail, realtime=not fast, session_id=session_id, mic=mic, play=play,
                  save_wav=save_wav, as_json=as_json, seconds=seconds, record=record)


@app.command()
def train(
    preset: str = typer.Option("small", help="Model preset to train from scratch."),
    steps: int = typer.Option(None, help="Optimizer steps (default: the preset's training config)."),
    minutes: float = typer.Option(None, help="Wall-clock budget; the learning-rate schedule follows it."),
    seed: int = typer.Option(None, help="Seed of the weights and of the episode stream (default: the shipped model's)."),
    out: str = typer.Option(None, help="Checkpoint path (default: runs/train/<preset>.pt). The shipped "
                            "interaction_actor/checkpoints/<preset>.pt, which demo, serve and eval load, is never "
                            "written unless given here."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last resumable state."),
    threads: int = typer.Option(None, help="torch threads (default: all cores)."),
    init_from: str = typer.Option(None, "--init-from", help="Fine-tune: start from this checkpoint's weights "
                                  "(same preset), with a fresh optimizer and schedule."),
    lr: float = typer.Option(None, help="Peak learning rate (default: the training config's)."),
    evaluate_after: bool = typer.Option(True, "--eval/--no-eval", help="Run the quick eval and record it in the card."),
    self_voice: bool = typer.Option(False, "--self-voice", help="Feed the model its own flow head's voice (as the "
                                    "session does), not espeak's, and keep that voice fixed: a fine-tune after "
                                    "train-voice."),
    mix: str = typer.Option(None, help="The episode mix, comma-separated task names in rotation (a name twice "
                            "comes twice as often; default: the training config's)."),
) -> None:
    """Co-train the interaction model on synthetic micro-turn episodes (from scratch, or fine-tune with
    --init-from); writes weights + card."""
    import json

    from interaction_actor.training.train import train_main
    from interplay.client import UserError

    with user_errors():
        if init_from and not Path(init_from).is_file():
            raise UserError(f"--init-from {init_from}: no such checkpoint (give a .pt that interplay train wrote)")
        names = tuple(x.strip() for x in mix.split(",") if x.strip()) if mix is not None else None
        if names is not None:
            from interaction_actor.training.train import check_mix

            try:
                check_mix(names)
            except ValueError as exc:
                raise UserError(f"--mix {mix}: {exc}") from None
    card = train_main(preset=preset, steps=steps, minutes=minutes, seed=seed, out=out, resume=resume,
                      threads=threads, init_from=init_from, lr=lr, evaluate_after=evaluate_after, eval_quick=True,
                      progress=True, self_voice=self_voice, mix=names)
    typer.echo(json.dumps({k: card[k] for k in ("checkpoint", "steps", "train_seconds", "final_losses")
                           if k in card}))


@app.command("train-vocoder")
def train_vocoder(
    out: str = typer.Option(None, help="Where to write the net (default: the shipped "
                            "interaction_actor/checkpoints/vocoder.pt, which the runtime's vocoder loads)."),
    steps: int = typer.Option(None, help="Optimizer steps (default: the training config's)."),
    minutes: float = typer.Option(None, help="Wall-clock budget."),
) -> None:
    """Train the vocoder's mel -> magnitude net on espeak-ng's assistant voice (training-split text), then
    measure it: Whisper's word error rate on held-out texts vocoded with and without it (JSON)."""
    from interaction_actor.training.train_vocoder import main

    main(out=out, steps=steps, minutes=minutes)


@app.command("train-voice")
def train_voice(
    checkpoint: str = typer.Option("interaction_actor/checkpoints/small.pt", help="The checkpoint whose transformer "
                                   "keeps its weights."),
    out: str = typer.Option(..., help="Where to write the checkpoint with the new flow head (+ its card)."),
    steps: int = typer.Option(None, help="Optimizer steps (default: the voice training config's)."),
    minutes: float = typer.Option(None, help="Wall-clock budget."),
    lr: float = typer.Option(None, help="Peak learning rate (default: the voice training config's)."),
    task_repeat: int = typer.Option(None, help="How many times each task utterance stands in the data."),
    init_voice: bool = typer.Option(False, "--init-voice", help="Continue from the checkpoint's own flow head."),
    reader: str = typer.Option(None, help="The flow head's reader: mlp or align (default: the checkpoint's)."),
    context: int = typer.Option(None, help="The previous turn's last mel frames the flow head sees, 0-16 "
                                "(default: the checkpoint's)."),
    mix: int = typer.Option(None, help="Frames each flow block mixes within a turn: 0 or odd (default: the "
                            "checkpoint's)."),
    own_context: float = typer.Option(None, help="Share of turns whose context is the head's own rendering of "
                                      "the turn before (default: the voice training config's)."),
) -> None:
    """Train the model's voice (the flow head, reading the bytes it says) on espeak-ng's assistant voice of
    training-split text, then measure it: Whisper's word error rate on held-out texts (JSON)."""
    import json

    from interaction_actor.training.train_voice import VoiceTrainConfig
    from interaction_actor.training.train_voice import train_voice as run
    from interplay.client import UserError

    with user_errors():
        if not Path(checkpoint).is_file():
            raise UserError(f"--checkpoint {checkpoint}: no such checkpoint")
        if reader not in (None, "mlp", "align"):
            raise UserError(f"--reader {reader}: choose mlp or align")
        if context is not None and not 0 <= context <= 16:
            raise UserError(f"--context {context}: choose 0 to 16 frames")
        if mix is not None and (mix < 0 or (mix and mix % 2 == 0)):
            raise UserError(f"--mix {mix}: choose 0 or an odd width")
        if own_context is not None and not 0.0 <= own_context <= 1.0:
            raise UserError(f"--own-context {own_context}: choose a share in 0..1")
    tc = VoiceTrainConfig(reader=reader or "", context=-1 if context is None else context,
                          mix=-1 if mix is None else mix)
    if steps is not None:
        tc.steps = steps
    if minutes is not None:
        tc.max_minutes = minutes
    if lr is not None:
        tc.lr = lr
    if task_repeat is not None:
        tc.task_repeat = task_repeat
    if own_context is not None:
        tc.own_context = own_context
    tc.init_from_checkpoint = init_voice
    section = run(checkpoint, out, tc, progress=True)
    typer.echo(json.dumps({k: section[k] for k in ("steps", "train_seconds", "measure") if k in section}))


eval_app = typer.Typer(no_args_is_help=False)  # its help is the callback's docstring
app.add_typer(eval_app, name="eval")


@eval_app.callback(invoke_without_command=True)
def eval_(
    ctx: typer.Context,
    quick: bool = QUICK,
    as_json: bool = JSON,
    checkpoint: str = typer.Option(None, help="Weights to evaluate (default: the shipped checkpoint)."),
    out: str = typer.Option("runs/eval", help="Where eval.json and eval.png (accuracy per task vs the baseline) go."),
    episodes: int = typer.Option(None, help="Held-out episodes per task (default: 10 with --quick, else 50)."),
) -> None:
    """Interactivity suite on held-out episodes, turn by turn through the streaming session, vs the cascade baseline.

    `interplay eval fdbench`: the FD-bench-style evaluation of live backends (see its --help)."""
    if ctx.invoked_subcommand is not None:
        return
    from interaction_actor.training.evaluate import eval_main

    emit("interplay eval", eval_main(checkpoint=checkpoint, quick=quick, out=out, episodes=episodes), as_json)


@eval_app.command("fdbench")
def eval_fdbench(
    quick: bool = typer.Option(False, "--quick", help="2 episodes per category instead of 6 (~2 min)."),
    as_json: bool = JSON,
    backends: str = typer.Option(None, help="Comma-separated backends: names or module:attr (default: native "
                                 "and cascade, and pipecat when `make peers` has made .venv-peers)."),
    episodes: int = typer.Option(None, help="Episodes per category, 1-6 (overrides --quick)."),
    concurrency: int = typer.Option(3, help="Sessions streaming at once."),
    stagger_s: float = typer.Option(1.3, "--stagger-s", help="Seconds at least between two session starts."),
    barge_in_control: bool = typer.Option(False, "--barge-in-control", help="Also send a BARGE_IN control when "
                                          "the user interrupts (FD-bench gives the model the audio alone)."),
    backgrounds: int = typer.Option(1, help="Background actors (the settings' engine) that delegations go to; "
                                    "0: none, and no delegation."),
    checkpoint: str = typer.Option(None, help="Native model weights (default: the shipped checkpoint)."),
    out: str = typer.Option("runs/fdbench", help="Where fdbench.json, fdbench.png and each episode's output.wav go."),
    delegation_repeats: int = typer.Option(1, "--delegation-repeats", help="Run each delegation scenario this many "
                                           "times per system (pipecat: per tool setting) for larger counts; "
                                           "not with --quick, which leaves the scenarios out."),
) -> None:
    """FD-bench-style: pause handling, turn taking and interruptions spoken (espeak-ng, held-out voices) in real
    time to each backend over Session.Converse, scored from the output audio (takeover rates, latencies)."""
    import json

    from rich.console import Console

    from interplay.fdbench.outputs import table
    from interplay.fdbench.run import FdbenchConfig, fdbench_main

    names = tuple(b.strip() for b in backends.split(",") if b.strip()) if backends else ()
    cfg = FdbenchConfig(backends=names, quick=quick, per_category=episodes, concurrency=concurrency,
                        stagger_s=stagger_s, barge_in_control=barge_in_control, backgrounds=backgrounds,
                        checkpoint=checkpoint, out_dir=out, delegation_repeats=delegation_repeats)
    with user_errors():
        result = fdbench_main(cfg, progress=lambda what: typer.echo(f"fdbench: {what}", err=True))
    Console(highlight=False).print(table(result))
    if as_json:
        typer.echo(json.dumps(result, default=str))


@app.command()
def study(
    as_json: bool = JSON,
    quick: bool = QUICK,
    policies: str = typer.Option(None, help="Comma-separated policy names (default: all registered)."),
    scenarios: str = typer.Option("examples/scenarios", help="Folder (or file) of scenario JSON."),
    out: str = typer.Option("runs/study", help="Where study.csv, study.json and plots go."),
    seed: int = typer.Option(0, help="Base seed."),
    repeats: int = typer.Option(3, help="Runs per policy x scenario (with --replay: seeds, at least 2)."),
    replay: bool = typer.Option(False, "--replay", help="Run the policies through replay on the real model, "
                                "scheduler and policy (interplay.replay) instead of the simulated harness."),
    sessions: str = typer.Option(None, help="Recorded replay sessions (*.replay.jsonl[.gz], a file or folder) "
                                 "to replay as well; implies --replay."),
    replay_scenarios: bool = typer.Option(False, "--replay-scenarios", help="With --replay: also replay the "
                                          "--scenarios files, converted to sessions per seed."),
    checkpoint: str = typer.Option(None, help="With --replay: interaction model weights (default: shipped)."),
) -> None:
    """Compare delegation policies: by default over scripted scenarios in the simulated harness (simulated
    user, model and background; real policy and scheduler); with --replay (or --sessions) through replay on
    the real model over synthetic and recorded sessions, with 95% intervals over seeds. Prints headline
    scores, writes the full table (CSV, JSON) and plots."""
    import json

    from delegation.policies import PolicyError
    from delegation.scenario import ScenarioError
    from delegation.study import compact_table, run_study
    from interplay.client import UserError

    names = [p.strip() for p in policies.split(",") if p.strip()] if policies else None
    if replay or sessions:
        from interplay.replay.format import ReplayFormatError
        from interplay.replay.study import study_main, table

        with user_errors():
            try:
                result = study_main(policies=names, sessions=str(shipped_path(sessions)) if sessions else None,
                                    scenarios=str(shipped_path(scenarios)) if replay_scenarios else None, out=out,
                                    seed=seed, repeats=repeats, quick=quick, checkpoint=checkpoint)
            except (PolicyError, ScenarioError, ReplayFormatError) as exc:
                raise UserError(str(exc)) from None
        typer.echo(table(result))
        if as_json:
            typer.echo(json.dumps(result))
        return
    with user_errors():
        where = shipped_path(scenarios)
        try:
            result = run_study(names, str(where), out, seed=seed, repeats=1 if quick else repeats)
        except (PolicyError, ScenarioError) as exc:
            raise UserError(str(exc)) from None
    typer.echo(compact_table(result))
    if as_json:
        typer.echo(json.dumps(result))


@app.command()
def demo(
    as_json: bool = JSON,
    engine: str = typer.Option(None, help="Background engine: local (embedded SmolLM2, the default), openai, vllm."),
    backgrounds: int = typer.Option(None, help="Background actors in the pool (default 1 for the demo)."),
    checkpoint: str = typer.Option(None, help="Interaction model weights (default: the shipped checkpoint)."),
    out: str = typer.Option("runs/demo", help="Where timeline.jsonl and assistant.wav go."),
    ray_address: str = typer.Option(None, "--address", help="Join this Ray cluster instead of starting one."),
    backend: str = typer.Option(None, help="Interaction backend: native (default), cascade, or module:attr."),
    trace: str = typer.Option(None, "--trace", help="Append OpenTelemetry spans to this file (JSON lines)."),
) -> None:
    """The live demo: Ray, a background pool and the interaction actor, fed a scripted conversation in real time.

    It reads the settings like `serve`, except where its script needs its own value and the setting was
    not given: one background actor, the demo's weather tool and voice prompt, policy model_token (the model's
    own <delegate>; an intent rule on the transcript only when a policy such as first_of is given)."""
    from interplay.demo import DemoConfig, run_demo
    from interplay.runtime import (
        check_backend,
        check_checkpoint,
        check_engine,
        check_policy,
        plan_from_settings,
    )

    s = load_settings()
    plan = plan_from_settings(s, engine=engine, checkpoint=checkpoint, backend=backend, ray_address=ray_address,
                              trace_file=trace)
    bg, ia = plan.background, plan.interaction
    cfg = DemoConfig(turn_ms=ia.turn_ms, engine=bg.engine, engine_options=bg.engine_options,
                     background_actors=backgrounds or (bg.actors if "actors" in s.background.model_fields_set else 1),
                     checkpoint=ia.checkpoint, preset=ia.preset, out_dir=out, ray_address=plan.ray_address,
                     backend=ia.backend, backend_options=ia.backend_options, ears=ia.ears, trace_file=plan.trace_file,
                     otlp_endpoint=plan.otlp_endpoint)
    if "policy" in s.delegation.model_fields_set:
        cfg.policy, cfg.policy_options = ia.policy, dict(ia.policy_options)
    with user_errors():
        check_engine(cfg.engine)
        check_checkpoint(cfg.checkpoint)
        check_backend(cfg.backend, cfg.ears, cfg.backend_options)
        check_policy(cfg.policy, cfg.policy_options)
    summary = run_demo(cfg)
    summary.pop("config", None)
    emit("interplay demo: summary", summary, as_json)


def _logs_where(log_dir: str | None) -> str:
    if log_dir:
        return f"logs: {Path(log_dir).resolve()} (one JSON file per process) and this console"
    try:
        import ray

        ray_logs = ray._private.worker._global_node.get_logs_dir_path()  # noqa: SLF001 - where Ray keeps them
    except Exception:  # noqa: BLE001 - only a hint
        ray_logs = "Ray's session folder"
    return f"logs: this console (the actors' lines are prefixed by Ray); also {ray_logs}; --log-dir for files"


def _metrics_endpoints(handles: list, front: int = 1) -> list[tuple[str, str]]:
    """("metrics", host:port) of each interaction actor (the last `front` handles: one actor, or the actors
    and their router, which serves none), then ("background metrics", host:port) of each background actor
    that serves them."""
    import ray

    found = []
    for i, h in enumerate([*handles[-front:], *handles[:-front]] if handles else []):
        try:
            endpoint = ray.get(h.metrics_endpoint.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - only printed
            endpoint = ""
        if endpoint:
            found.append(("metrics" if i < front else "background metrics", endpoint))
    return found


def _start_web(session_address: str, plan):
    """The browser page and its WebSocket bridge to `session_address` (interplay.web), on a thread."""
    from interplay.web.bridge import BridgeConfig
    from interplay.web.server import WebServer

    web = WebServer(BridgeConfig(session_address), host=plan.interaction.host, port=plan.web_port)
    web.start()
    return web


class _Terminate(Exception):
    """SIGTERM arrived: drain and stop."""


@app.command()
def serve(
    host: str = typer.Option(None, help="Address the servers bind (default: setting host, 127.0.0.1)."),
    port: int = typer.Option(None, help="Session service port (default: setting session_port; 0: any free)."),
    backend: str = typer.Option(None, help="Interaction backend: native (default), cascade, or module:attr."),
    engine: str = typer.Option(None, help="Background engine: local, openai, vllm (default: setting, local)."),
    checkpoint: str = typer.Option(None, help="Interaction model weights (default: the shipped checkpoint)."),
    backgrounds: int = typer.Option(None, help="Background actors in the pool (default: setting, 2)."),
    tools: str = typer.Option(None, "--tools", help="module:attr of your tools.Registry (or a function returning "
                              "one); default: the built-in calculator and clock."),
    mcp: list[str] = typer.Option(None, "--mcp", help="Command of an MCP server whose tools are served too "
                                  "(repeatable), e.g. --mcp 'python my_server.py'."),
    policy: str = typer.Option(None, help="Delegation policy: a registered name or module:attr (default: first_of)."),
    metrics_port: int = typer.Option(None, "--metrics-port", help="Serve Prometheus /metrics on this port "
                                     "(default: setting metrics_port, else a free port; printed at start; -1: off)."),
    trace: str = typer.Option(None, "--trace", help="Append every actor's OpenTelemetry spans to this file "
                              "(JSON lines; default: setting trace_file, else no tracing)."),
    web_port: int = typer.Option(None, "--web-port", min=-1, max=65535, help="Serve the browser page (mic, speaker, live timeline) on "
                                 "this port (default: setting web_port, else a free port; -1: no page)."),
    ray_address: str = typer.Option(None, "--address", help="Ray cluster to run on (default: start a local one)."),
    log_dir: str = typer.Option(None, "--log-dir", help="Also write every process's JSON log lines here."),
    seconds: float = typer.Option(0.0, help="Stop after this many seconds (0: run until Ctrl-C or SIGTERM)."),
    drain_s: float = typer.Option(10.0, "--drain-s", help="On stop, seconds running delegations get to settle."),
    plan_only: bool = typer.Option(False, "--plan", help="Print what would run as JSON (secrets masked) and exit."),
    actors: int = typer.Option(None, "--actors", min=1, max=64, help="Interaction actors (default: setting "
                               "interaction_actors, 1); more than 1 puts a session router in front of them on the "
                               "session port, which places sessions by load and moves them when an actor dies."),
) -> None:
    """Run the interaction actor and a background pool as services; prints the Session endpoint for `talk`.

    Settings come from --config / INTERPLAY_* (see `interplay info`); an option given here wins. Ctrl-C or
    SIGTERM drains: new sessions are refused, running delegations get --drain-s to settle, every session
    gets SESSION_ENDED, then everything stops."""
    import json
    import signal
    import time

    from interplay.runtime import check_plan, drain, plan_from_settings, start

    s = load_settings()
    plan = plan_from_settings(s, host=host, port=port, metrics_port=metrics_port, backend=backend, engine=engine,
                              checkpoint=checkpoint, backgrounds=backgrounds, tools=tools, mcp=mcp, policy=policy,
                              ray_address=ray_address, log_dir=log_dir, trace_file=trace, web_port=web_port,
                              actors=actors)
    with user_errors():
        check_plan(plan)
    if plan_only:
        typer.echo(json.dumps(plan.describe()))
        return
    configure_logging(plan.log_level, s.log_json, log_dir=plan.log_dir, process="serve")

    def terminate(_signum, _frame) -> None:
        raise _Terminate

    signal.signal(signal.SIGTERM, terminate)
    handles: list = []
    web = None
    try:
        handles, address, bg = start(plan)
        signal.signal(signal.SIGTERM, terminate)  # again: ray.init put its own (a stack dump) in its place
        typer.echo(f"session endpoint: {address}")
        routed = plan.interaction.actors > 1
        if routed:
            import ray

            members = ray.get(handles[-1].member_addresses.remote(), timeout=30)
            typer.echo(f"interaction actors: {', '.join(members)} (behind the session router)")
        typer.echo(f"background pool: {', '.join(bg)} (engine {plan.background.engine})")
        for what, endpoint in _metrics_endpoints(handles, plan.interaction.actors + 1 if routed else 1):
            typer.echo(f"{what}: http://{endpoint}/metrics")
        if plan.trace_file:
            typer.echo(f"traces: {plan.trace_file} (OpenTelemetry spans, JSON lines)")
        if plan.web_port >= 0:
            with user_errors():
                web = _start_web(address, plan)
            typer.echo(f"page: {web.url} (open it in a browser: microphone, speaker, live timeline)")
        typer.echo(_logs_where(plan.log_dir))
        typer.echo(f"try: interplay talk {address} --wav examples/assets/hello.wav", err=True)
        deadline = time.monotonic() + seconds if seconds > 0 else float("inf")
        while time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            if routed and int(time.monotonic()) % 5 == 0:  # Ray restarts a crashed router: serve again
                try:
                    ray.get(handles[-1].start.remote(), timeout=30)
                except Exception as exc:  # noqa: BLE001 - still restarting: try again at the next check
                    typer.echo(f"session router not answering: {type(exc).__name__}", err=True)
    except (KeyboardInterrupt, _Terminate):
        typer.echo("stopping: draining sessions ...", err=True)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM does not cut the drain short
        if handles:
            report = drain(handles, drain_s)
            typer.echo(f"stopped: {json.dumps(report)}", err=True)
        if web is not None:
            web.stop()


if __name__ == "__main__":  # pragma: no cover
    app()
