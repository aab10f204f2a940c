"""What `serve` runs, built from the settings: the plan, its checks, starting it and draining it.

`plan_from_settings(settings, **cli)` turns the settings (config file < environment) and the
command line's options (which win) into a `RuntimePlan`: plain data saying exactly what starts —
the Session server's address, the interaction actor's loop and model, each background actor's
engine, tools and port, the delegation policy. `check_plan` validates everything a user can get
wrong (engine, checkpoint, backend, policy, tool registry) before Ray starts, raising UserError
(one line, exit code 2 in the CLI). `start(plan)` starts Ray and the actors (with `interaction.actors`
> 1, that many interaction actors behind a session router, interaction_actor/router); `drain(handles, s)`
tells every session the server is going away, lets running delegations settle for at most `s`
seconds and stops everything. Nothing here knows the demo: its tools and prompt stay in demo.py.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from interplay.client import UserError
from interplay.log import get_logger
from interplay.priority import ASYNC_NICENESS
from interplay.settings import DelegationSettings, Settings

log = get_logger("interplay.runtime")

ENGINES = ("local", "openai", "vllm")


@dataclass
class BackgroundPlan:
    engine: str = "local"
    engine_options: dict[str, Any] = field(default_factory=dict)  # api_key travels as a plain str (never logged)
    builtin: tuple[str, ...] = ("calculator", "clock")
    registry: str | None = None  # module:attr
    mcp: tuple[str, ...] = ()
    secrets: dict[str, str] = field(default_factory=dict)
    max_concurrent: int = 4
    max_queued: int = 16
    max_steps: int = 4
    system_prompt: str | None = None
    host: str = "127.0.0.1"
    first_port: int = 0  # 0: any free port for each actor; else actor i listens on first_port + i
    actors: int = 2
    niceness: int | None = ASYNC_NICENESS  # each actor's process (interplay.priority.yield_cpu)


@dataclass
class InteractionPlan:
    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int | None = None
    backend: str = "native"
    backend_options: dict = field(default_factory=dict)  # the cascade's settings (api_key as a plain str)
    preset: str = "small"
    checkpoint: str | None = None
    deterministic: bool = True
    turn_ms: int = 200
    max_sessions: int = 64
    output_queue: int = 50
    kernel_threads: int = 2
    idle_timeout_s: float = 8.0
    admission_headroom: float = 0.2
    admission: bool = True  # refuse sessions past the measured budget (LoopConfig); `eval fdbench` runs without
    delegation_deadline_ms: int = 30_000
    package_budget_bytes: int = 16_384
    allowed_tools: list[str] = field(default_factory=list)
    policy: str = "first_of"
    policy_options: dict = field(default_factory=dict)
    ears: dict | None = None  # EarsSettings as plain data (None: no transcripts); see ears_config()
    actors: int = 1  # interaction actors; > 1: a session router in front takes host:port
    advertise_host: str | None = None  # what the session endpoint publishes (None: see raylocal.advertised)
    record_dir: str | None = None  # the loop records every session here (interplay.replay); None: off
    requested_record_dir: str | None = None  # where a session whose client asks is recorded; None: refused


@dataclass
class RuntimePlan:
    interaction: InteractionPlan
    background: BackgroundPlan
    ray_address: str | None = None
    log_level: str = "info"
    log_dir: str | None = None
    trace_file: str | None = None  # every actor appends its spans here (interplay.tracing); None: no tracing
    otlp_endpoint: str | None = None  # every actor also sends its spans to this OTLP/gRPC collector; None: not
    web_port: int = 0  # the browser page's port (interplay.web, run by `serve` itself); 0: a free one; -1: none

    def describe(self) -> dict:
        """The plan as printable data: secrets and API keys masked."""
        d = asdict(self)
        bg = d["background"]
        bg["secrets"] = {k: "**********" for k in bg["secrets"]}
        if bg["engine_options"].get("api_key"):
            bg["engine_options"]["api_key"] = "**********"
        if d["interaction"]["backend_options"].get("api_key"):
            d["interaction"]["backend_options"]["api_key"] = "**********"
        ears = d["interaction"]["ears"]
        if ears and ears.get("openai_api_key"):
            ears["openai_api_key"] = "**********"
        return d


def plan_from_settings(s: Settings, *, host: str | None = None, port: int | None = None,
                       metrics_port: int | None = None, backend: str | None = None, engine: str | None = None,
                       checkpoint: str | None = None, backgrounds: int | None = None, tools: str | None = None,
                       mcp: list[str] | None = None, policy: str | None = None, ray_address: str | None = None,
                       log_dir: str | None = None, trace_file: str | None = None,
                       web_port: int | None = None, actors: int | None = None) -> RuntimePlan:
    """The settings with the command line's options on top (an option given wins over its setting)."""
    from interplay.tracing import otlp_from_env

    b, d, t, lp, m = s.background, s.delegation, s.tools, s.loop, s.model
    engine = engine or b.engine
    options: dict[str, Any] = {}
    if engine == "openai":
        options = {"base_url": b.openai_base_url, "model": b.openai_model}
        if b.openai_api_key is not None:
            options["api_key"] = b.openai_api_key.get_secret_value()
    host = host or s.host
    bg = BackgroundPlan(engine=engine, engine_options=options, builtin=tuple(t.builtin), registry=tools or t.registry,
                        mcp=tuple(mcp if mcp else t.mcp),
                        secrets={k: v.get_secret_value() for k, v in t.secrets.items()},
                        max_concurrent=b.max_concurrent_tasks, max_queued=b.max_queued_tasks, max_steps=b.max_steps,
                        system_prompt=b.system_prompt, host=host, first_port=s.background_port,
                        actors=backgrounds or b.actors, niceness=b.niceness)
    if policy is None and "policy" not in d.model_fields_set and (backend or m.backend) == "cascade":
        # the cascade's reply model delegates by its own `delegate` call; the default first_of would add the
        # rule's decision on the same words: two delegations, the answer voiced twice
        policy = "model_token"
    policy = policy or d.policy
    # the default options are first_of's: they go with another policy only when given for it
    given = "policy_options" in d.model_fields_set
    policy_options = dict(d.policy_options) if given or policy == DelegationSettings().policy else {}
    backend = backend or m.backend
    ia = InteractionPlan(host=host, port=s.session_port if port is None else port,
                         metrics_port=_metrics_port(s.metrics_port if metrics_port is None else metrics_port),
                         backend=backend, backend_options=_cascade_data(s) if backend == "cascade" else (
                             _native_options(m) if backend == "native" else {}),
                         preset=m.preset, checkpoint=checkpoint or m.checkpoint,
                         deterministic=m.deterministic, turn_ms=lp.turn_ms, max_sessions=lp.max_sessions,
                         output_queue=lp.output_queue, kernel_threads=lp.kernel_threads,
                         idle_timeout_s=lp.idle_timeout_s,
                         admission_headroom=lp.admission_headroom, delegation_deadline_ms=b.task_deadline_ms,
                         package_budget_bytes=d.package_budget_bytes, allowed_tools=list(d.allowed_tools),
                         policy=policy, policy_options=policy_options,
                         ears=_ears_data(s) if s.ears.enabled else None,
                         actors=actors or s.interaction_actors, advertise_host=s.advertise_host,
                         record_dir=str(Path(lp.record_dir).resolve()) if lp.record_dir else None,
                         requested_record_dir=(str(Path(lp.requested_record_dir).resolve())
                                               if lp.requested_record_dir else None))
    trace = trace_file or s.trace_file
    return RuntimePlan(interaction=ia, background=bg, ray_address=ray_address or s.ray_address,
                       log_level=s.log_level, log_dir=log_dir or s.log_dir,
                       trace_file=str(Path(trace).resolve()) if trace else None,
                       otlp_endpoint=s.otlp_endpoint or otlp_from_env(),
                       web_port=s.web_port if web_port is None else web_port)


def _metrics_port(port: int | None) -> int | None:
    """The interaction actor serves /metrics on `port`, or a free one when none is set; -1: no metrics
    (None: neither it nor the background actors serve them)."""
    if port is not None and port < 0:
        return None
    return 0 if port is None else port


def _native_options(m) -> dict:
    """The native backend's options from `[model]`: its reading pace, and a KV capacity when one is set."""
    return {"read_bytes": m.read_bytes, **({"kv_capacity": m.kv_capacity} if m.kv_capacity else {})}


def _cascade_data(s: Settings) -> dict:
    """The `[model.cascade]` settings as the cascade backend's options (CascadeConfig.from_options)."""
    c = s.model.cascade
    data = c.model_dump(exclude={"api_key"})
    data["api_key"] = c.api_key.get_secret_value() if c.api_key is not None else ""
    data["turn_ms"] = s.loop.turn_ms
    return data


def _ears_data(s: Settings) -> dict:
    e = s.ears
    data = e.model_dump(exclude={"openai_api_key", "enabled"})
    data["openai_api_key"] = e.openai_api_key.get_secret_value() if e.openai_api_key is not None else ""
    return data


def ears_config(data: dict | None):
    """The EarsConfig (interaction_actor/ears/worker.py) of the settings' ears group; None when off."""
    if data is None:
        return None
    from interaction_actor.ears.segmenter import SegmenterConfig
    from interaction_actor.ears.transcriber import CITY_PROMPT, RemoteConfig, WhisperConfig
    from interaction_actor.ears.worker import EarsConfig

    prompt = "" if data["prompt"] == "-" else (data["prompt"] or CITY_PROMPT)
    return EarsConfig(segmenter=SegmenterConfig(silence_ms=data["silence_ms"]), transcriber=data["engine"],
                      whisper=WhisperConfig(model=data["model"] or "", cpu_threads=data["cpu_threads"],
                                            beam_size=data["beam_size"], prompt=prompt),
                      remote=RemoteConfig(base_url=data["openai_base_url"], model=data["openai_model"],
                                          api_key=data["openai_api_key"], prompt=prompt),
                      niceness=data["niceness"])


# ---- checks before Ray starts -------------------------------------------------------------------

def check_engine(engine: str) -> None:
    if engine not in ENGINES and not (":" in engine and _importable(engine)):
        raise UserError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)} or module:attr of an Engine")


def check_checkpoint(checkpoint: str | None) -> None:
    if checkpoint and checkpoint.lower() not in ("none", "random") and not Path(checkpoint).is_file():
        raise UserError(f"checkpoint {checkpoint}: no such file (omit --checkpoint for the shipped model)")


def _importable(spec: str) -> bool:
    module, sep, attr = spec.partition(":")
    try:
        return bool(sep) and hasattr(importlib.import_module(module), attr)
    except ImportError:
        return False


def check_backend(spec: str, ears: dict | None | bool = True, options: dict | None = None) -> None:
    """`ears`: the plan's ears (None: off). The cascade hears through the loop's ears, so it needs them;
    its voice (`options["voice"]`) must be one espeak-ng has."""
    from interaction_actor.runtime.backend import BACKENDS

    if spec not in BACKENDS and not _importable(spec):
        raise UserError(f"backend {spec!r} names nothing loadable: use one of {sorted(BACKENDS)} or module:attr "
                        "(importable where the interaction actor runs)")
    if spec == "cascade" and not ears:
        raise UserError("backend cascade hears the user through the ears, which are off: set ears.enabled = true "
                        "(INTERPLAY_EARS__ENABLED=true) or choose another backend")
    if spec == "cascade" and (options or {}).get("voice"):
        from interaction_actor.ears.speech import SpeechError, say

        try:
            say("ready", options["voice"])
        except SpeechError as exc:
            raise UserError(f"model.cascade.voice {options['voice']!r}: {exc}") from None


def check_policy(name: str, options: dict) -> None:
    from delegation.policies import PolicyError, load_policy

    try:
        load_policy(name, **options)
    except PolicyError as exc:
        raise UserError(f"policy {name!r}: {exc}") from None
    except TypeError as exc:
        raise UserError(f"policy {name!r} does not take these options {sorted(options)}: {exc}") from None


def load_registry(spec: str | None, builtin: tuple[str, ...] = ("calculator", "clock")):
    """The tools a background actor serves: `module:attr` (a Registry, or a function returning one), else
    the named built-in tools. Runs inside each background actor (picklable through functools.partial)."""
    from tools import Registry
    from tools.builtin import default_registry

    if not spec:
        return default_registry(include=tuple(builtin))
    module, _, attr = spec.partition(":")
    obj = getattr(importlib.import_module(module), attr)
    reg = obj if isinstance(obj, Registry) else obj()
    if not isinstance(reg, Registry):
        raise TypeError(f"{spec} gave {type(reg).__name__}, not a tools.Registry")
    return reg


def check_tools(spec: str | None, builtin: tuple[str, ...]) -> list[str]:
    """Load the registry here once (as each actor will) and return its tool names."""
    try:
        return load_registry(spec, builtin).names()
    except Exception as exc:  # noqa: BLE001 - any failure to build the registry is the user's to fix
        what = f"--tools {spec}" if spec else f"built-in tools {list(builtin)}"
        raise UserError(f"{what}: {type(exc).__name__}: {exc} (give module:attr of a tools.Registry)") from None


def check_plan(plan: RuntimePlan) -> None:
    """Everything a user can get wrong, checked before Ray or any model starts (UserError)."""
    bg, ia = plan.background, plan.interaction
    check_engine(bg.engine)
    check_checkpoint(ia.checkpoint)
    check_backend(ia.backend, ia.ears, ia.backend_options)
    check_policy(ia.policy, ia.policy_options)
    names = check_tools(bg.registry, bg.builtin)
    unknown = [n for n in ia.allowed_tools if n not in names]
    if unknown and not bg.mcp:
        raise UserError(f"delegation.allowed_tools names {unknown}, which the background does not serve ({names})")



# ---- start and drain ----------------------------------------------------------------------------

def background_kwargs(plan: RuntimePlan, index: int = 0) -> dict[str, Any]:
    """What `start_background` gets for the pool's `index`-th actor."""
    from background_actor.agent import AgentConfig

    bg = plan.background
    agent = AgentConfig(max_steps=bg.max_steps)
    if bg.system_prompt:
        agent.system_prompt = bg.system_prompt
    kwargs: dict[str, Any] = dict(engine=bg.engine, engine_options=dict(bg.engine_options), host=bg.host,
                                  port=bg.first_port + index if bg.first_port else None,
                                  max_concurrent=bg.max_concurrent, max_queued=bg.max_queued, agent=agent,
                                  registry_factory=functools.partial(load_registry, bg.registry, bg.builtin),
                                  log_level=plan.log_level, log_dir=plan.log_dir, trace_file=plan.trace_file,
                                  metrics_port=0 if plan.interaction.metrics_port is not None else None,
                                  niceness=bg.niceness)
    if bg.mcp:
        kwargs["mcp"] = tuple(bg.mcp)
    if bg.secrets:
        kwargs["secrets"] = dict(bg.secrets)
    if plan.otlp_endpoint:
        kwargs["otlp_endpoint"] = plan.otlp_endpoint
    return kwargs


def interaction_kwargs(plan: RuntimePlan, background_addresses: list[str]) -> dict[str, Any]:
    """What `spawn` (InteractionActorImpl) gets: the actor's own options and its LoopConfig fields."""
    ia = plan.interaction
    loop = {k: v for k, v in asdict(ia).items()
            if k not in ("host", "port", "metrics_port", "backend", "backend_options", "preset", "checkpoint")}
    loop.pop("ears")
    loop.pop("actors")
    advertise_host = loop.pop("advertise_host")
    return dict(preset=ia.preset, checkpoint=ia.checkpoint, backend=ia.backend,
                backend_options=dict(ia.backend_options), host=ia.host, port=ia.port,
                metrics_port=ia.metrics_port, log_level=plan.log_level, log_dir=plan.log_dir, trace_file=plan.trace_file,
                otlp_endpoint=plan.otlp_endpoint, background_address=",".join(background_addresses), ears=ears_config(ia.ears),
                advertise_host=advertise_host, **loop)


def start(plan: RuntimePlan, log_to_driver: bool = True) -> tuple[list, str, list[str]]:
    """Ray, the background pool and the interaction actor; returns (handles, session address, background
    addresses). The interaction actor is the last handle. `log_to_driver`: the actors' log lines also
    print on this process's console."""
    from background_actor.actor import start_background
    from interaction_actor.runtime.actor import spawn
    from interplay.raylocal import ensure_ray

    ensure_ray(plan.ray_address, log_to_driver=log_to_driver)
    handles, addresses = [], []
    for i in range(plan.background.actors):
        h, addr = start_background(**background_kwargs(plan, i))
        handles.append(h)
        addresses.append(addr)
    kwargs = interaction_kwargs(plan, addresses)
    if not kwargs["allowed_tools"] and handles:  # empty: every tool the background serves, MCP tools included
        import ray

        kwargs["allowed_tools"] = list(ray.get(handles[0].tool_names.remote(), timeout=30))
    if plan.interaction.actors > 1:
        return _start_routed(plan, kwargs, handles, addresses)
    actor, address = spawn(**kwargs)
    handles.append(actor)
    return handles, address, addresses


def _start_routed(plan: RuntimePlan, kwargs: dict[str, Any], handles: list, addresses: list[str]):
    """N interaction actors (free ports, spread over the nodes, each publishing its node's address) and the
    session router in front of them on the session host:port; the router is the last handle (its drain
    drains them all)."""
    import uuid

    from interaction_actor.router import spawn_router
    from interaction_actor.runtime.actor import spawn_many

    ia = plan.interaction
    prefix = f"interplay-interaction-{uuid.uuid4().hex[:8]}"
    members = spawn_many(ia.actors, name_prefix=prefix, **{**kwargs, "advertise_host": None,
                                                           "metrics_port": None if ia.metrics_port is None else 0})
    named = [(f"{prefix}-{i}", address) for i, (_, address) in enumerate(members)]  # names survive a router restart
    router, address = spawn_router(named, host=ia.host, port=ia.port, advertise_host=ia.advertise_host,
                                   turn_ms=ia.turn_ms, log_level=plan.log_level, log_dir=plan.log_dir)
    handles.extend([*(h for h, _ in members), router])
    return handles, address, addresses


def drain(handles: list, timeout_s: float = 10.0) -> dict:
    """Graceful stop: the interaction actor (the last handle; with several, the session router, which
    drains them all) refuses new sessions, lets running delegations settle for at most `timeout_s`, ends
    every session with SESSION_ENDED and stops; then the background actors stop. Returns the drain report."""
    import ray

    report: dict = {}
    if handles:
        try:
            report = ray.get(handles[-1].drain.remote(timeout_s), timeout=timeout_s + 10)
        except Exception as exc:  # noqa: BLE001 - best effort: stop what is left below
            log.warning("drain_failed", error=repr(exc))
    for h in handles:
        try:
            ray.get(h.stop.remote(), timeout=10)
        except Exception as exc:  # noqa: BLE001 - best effort at shutdown
            log.warning("actor_stop_failed", error=repr(exc))
        ray.kill(h)
    return report
