"""Runtime settings: defaults < a TOML config file < INTERPLAY_* environment < explicit overrides.

Nested groups use a double underscore in the environment (INTERPLAY_LOOP__TURN_MS=200) and a table
in the config file (`[loop]` then `turn_ms = 200`): the same keys either way. The config file is
`--config PATH` on the command line, or INTERPLAY_CONFIG. Every setting here is read by `serve`
(interplay/runtime.py says where); `demo` reads them too, except where its script needs its own
value and the setting was not given (see cli.demo). Values are validated by pydantic at start-up:
a bad one is a one-line error naming the key, never a failure later in a turn. Secret values (API
keys, tool secrets) are `SecretStr`: `info`, logs and reprs show them as '**********'.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key in the config file is an error, not ignored


class LoopSettings(_Group):
    """The interaction actor's micro-turn clock and its sessions."""

    turn_ms: int = Field(200, ge=20, le=2000, description="Length of one micro-turn in milliseconds.")
    max_sessions: int = Field(64, ge=1, description="Sessions one interaction actor hosts at most.")
    output_queue: int = Field(50, ge=1, description="Output chunks buffered per client before the oldest is dropped.")
    idle_timeout_s: float = Field(8.0, gt=0, description="A session that sends nothing for this long ends.")
    kernel_threads: int = Field(2, ge=1, le=64, description="Threads a batched turn spreads its sessions' "
                                   "attention and its big linears over (1: the turn's own thread only).")
    admission_headroom: float = Field(0.2, ge=0, lt=1, description="Turn share kept free when admitting a session.")
    record_dir: str | None = Field(None, description="Record every session into this folder in the replay format "
                                   "(interplay.replay; one .replay.jsonl.gz per session); unset: no recording.")
    requested_record_dir: str = Field("runs/sessions", description="Where a session whose client asks to be "
                                      "recorded (talk --record, the page's 'save for replay') is saved; "
                                      "empty: such requests get an error event and nothing is saved.")


class CascadeSettings(_Group):
    """The `cascade` backend (interaction_actor/cascade/): VAD endpointing, the ears' transcripts, a reply
    model, espeak-ng. Table `[model.cascade]`; env INTERPLAY_MODEL__CASCADE__<KEY>."""

    min_silence_ms: int = Field(500, ge=100, le=5000, description="Quiet after the user's speech that ends their turn.")
    reply_engine: Literal["local", "openai"] = Field("local", description="Reply model: local (SmolLM2-135M via "
                                                     "llama-cpp) or openai (an OpenAI-compatible server).")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="OpenAI-compatible API of the reply model (openai).")
    reply_model: str = Field("default", description="Model name sent to that API (openai).")
    api_key: SecretStr | None = Field(None, description="Bearer token for that API; never printed.")
    voice: str = Field("en-us+f3", description="espeak-ng voice of the assistant.")
    max_reply_tokens: int = Field(48, ge=4, le=1024, description="Tokens one spoken reply may take at most.")


class ModelSettings(_Group):
    """The interaction model."""

    backend: str = Field("native", description="Interaction backend: a registered name (native, cascade) or "
                         "module:attr.")
    cascade: CascadeSettings = CascadeSettings()
    preset: str = Field("small", description="Named preset of the interaction model config.")
    checkpoint: str | None = Field(None, description="Path to a checkpoint; the shipped default when empty.")
    kv_capacity: int = Field(0, ge=0, description="KV cache positions per native session; 0: the checkpoint's "
                             "own (small: 5120, the trained length of two chained episodes). Fewer make a "
                             "turn at a full cache cheaper and compaction come sooner.")
    read_bytes: int = Field(20, ge=0, description="A voiced background result longer than this (UTF-8 bytes) "
                            "reaches a native session's context slots in pieces, the next after the model ends "
                            "an utterance (interaction_actor/model/pacing.py); 0: whole. The shipped model "
                            "said 28 of 48 long answers unpaced, 44 of 48 in pieces of 20.")
    deterministic: bool = Field(True, description="Route through the batch-invariant kernels.")


class BackgroundSettings(_Group):
    """The background actors and their engine."""

    engine: str = Field("local", description="Engine of every background actor: local, openai, vllm or module:attr.")
    actors: int = Field(2, ge=1, le=16, description="Background actors in the pool (the interaction side fails over).")
    openai_base_url: str = Field("http://127.0.0.1:8000/v1", description="OpenAI-compatible API (engine openai).")
    openai_model: str = Field("default", description="Model name sent to the OpenAI-compatible API.")
    openai_api_key: SecretStr | None = Field(None, description="Bearer token for the API; never printed.")
    max_concurrent_tasks: int = Field(4, ge=1, description="Tasks one background actor runs at once.")
    max_queued_tasks: int = Field(16, ge=0, description="Tasks waiting for a slot; beyond that refused.")
    task_deadline_ms: int = Field(30_000, ge=100, description="Deadline a delegation gives its task.")
    max_steps: int = Field(4, ge=1, le=32, description="Engine calls per task (the agent's step budget).")
    system_prompt: str | None = Field(None, description="The agent's system prompt; the built-in one when empty.")
    niceness: int | None = Field(10, ge=-20, le=19, description="Linux niceness of each background actor's "
                                 "process (engine and tools included): above the loop's (0), so reasoning gets "
                                 "the CPU the 200 ms clock leaves; unset: as Ray starts it.")


class DelegationSettings(_Group):
    """How the interaction side decides to delegate, and what a delegation carries."""

    policy: str = Field("first_of", description="Delegation policy: a registered name or module:attr.")
    policy_options: dict = Field(default_factory=lambda: {"policies": ["model_token", "rule"]},
                                 description="Keyword options of the policy (first_of: the policies it asks).")
    package_budget_bytes: int = Field(16_384, ge=512, description="Serialized size limit of a context package.")
    allowed_tools: list[str] = Field(default_factory=list,
                                     description="Tools a delegation may use; empty: every tool the background serves.")


class ToolSettings(_Group):
    """The background actors' tools."""

    registry: str | None = Field(None, description="module:attr of a tools.Registry (or a function returning one).")
    builtin: list[str] = Field(default_factory=lambda: ["calculator", "clock"],
                               description="Built-in tools served when no registry is given.")
    mcp: list[str] = Field(default_factory=list, description="MCP server commands whose tools are served too.")
    secrets: dict[str, SecretStr] = Field(default_factory=dict,
                                          description="Secrets tools declare, by name; never printed or logged.")


class EarsSettings(_Group):
    """The speech recogniser beside the loop (interaction_actor/ears/)."""

    enabled: bool = Field(True, description="Transcribe what users say (a Ray actor of its own).")
    engine: Literal["whisper", "openai"] = Field("whisper", description="whisper: faster-whisper in the actor; "
                                                 "openai: an OpenAI-compatible /v1/audio/transcriptions server.")
    model: str | None = Field(None, description="faster-whisper model path or size; the shipped tiny.en when empty.")
    cpu_threads: int = Field(1, ge=1, le=64, description="Threads of the faster-whisper model.")
    beam_size: int = Field(5, ge=1, le=16, description="Beam width of the faster-whisper decode (1: greedy).")
    prompt: str | None = Field(None, description="Text the recogniser reads before each segment (Whisper's initial "
                               "prompt): the names it should expect. Empty: the shipped world-city list "
                               "(ears/transcriber.py CITY_PROMPT); \"-\": none.")
    silence_ms: int = Field(320, ge=100, le=5000, description="Silence that ends a spoken segment.")
    niceness: int | None = Field(10, ge=-20, le=19, description="Linux niceness of the ears' process: above the "
                                 "loop's (0), so a Whisper decode never takes a core from a turn; unset: as Ray "
                                 "starts it.")
    openai_base_url: str = Field("http://127.0.0.1:8000/v1", description="Transcription server (engine openai).")
    openai_model: str = Field("whisper-1", description="Model name sent to the transcription server.")
    openai_api_key: SecretStr | None = Field(None, description="Bearer token for it; never printed.")


class Settings(BaseSettings):
    """All settings of one interplay process."""

    model_config = SettingsConfigDict(env_prefix="INTERPLAY_", env_nested_delimiter="__", extra="forbid")

    host: str = Field("127.0.0.1", description="Address every server of the project binds (0.0.0.0: every "
                                                "interface, for a multi-node Ray cluster).")
    advertise_host: str | None = Field(None, description="Host name clients dial for the session endpoint (empty: "
                                                         "the bound host, or this node's IP when host is 0.0.0.0).")
    interaction_actors: int = Field(1, ge=1, le=64, description="Interaction actors; more than 1 puts a session "
                                                                "router in front, on session_port.")
    session_port: int = Field(0, ge=0, le=65535, description="Port of the Session service (0: any free port).")
    background_port: int = Field(0, ge=0, le=65535,
                                 description="Port of the first Background service, the next ones follow (0: any free).")
    metrics_port: int | None = Field(None, ge=-1, le=65535,
                                     description="Prometheus /metrics port of the interaction actor (empty or 0: a "
                                                 "free port, printed at start; the background actors take free ports; "
                                                 "-1: no metrics served anywhere).")
    web_port: int = Field(0, ge=-1, le=65535,
                          description="Port of the browser page and its WebSocket bridge (interplay/web), bound on "
                                      "`host` (0: a free port, printed at start; -1: no page).")
    trace_file: str | None = Field(None, description="Append OpenTelemetry spans here as JSON lines (off when empty).")
    otlp_endpoint: str | None = Field(None, description="Send OpenTelemetry spans to this OTLP/gRPC collector, e.g. "
                                                        "http://127.0.0.1:4317 (empty: OTEL_EXPORTER_OTLP_ENDPOINT when "
                                                        "set, else off).")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool | None = Field(None, description="JSON logs; default: JSON when stderr is not a TTY.")
    log_dir: str | None = Field(None, description="Folder for every process's JSON log file (also printed at start).")
    ray_address: str | None = Field(None, description="Existing Ray cluster to join; local when empty.")
    loop: LoopSettings = LoopSettings()
    model: ModelSettings = ModelSettings()
    background: BackgroundSettings = BackgroundSettings()
    delegation: DelegationSettings = DelegationSettings()
    tools: ToolSettings = ToolSettings()
    ears: EarsSettings = EarsSettings()

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _TomlFile(settings_cls)


class ConfigFileError(ValueError):
    """The config file is missing or is not TOML; the message names the file."""


_config_file: Path | None = None


def use_config_file(path: str | Path | None) -> None:
    """Read settings from this TOML file from now on in this process (None: INTERPLAY_CONFIG or none)."""
    global _config_file
    _config_file = Path(path) if path else None
    if _config_file is not None:
        _read_toml(_config_file)  # fail now, with the file named, not at the first load


def config_file() -> Path | None:
    return _config_file or (Path(os.environ["INTERPLAY_CONFIG"]) if os.environ.get("INTERPLAY_CONFIG") else None)


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigFileError(f"config file {path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"config file {path} is not valid TOML: {exc}") from None


class _TomlFile(PydanticBaseSettingsSource):
    """The config file's tables, below the environment."""

    def get_field_value(self, field, field_name):  # pragma: no cover - __call__ does the work
        return None, field_name, False

    def __call__(self) -> dict:
        path = config_file()
        return _read_toml(path) if path is not None else {}


def load_settings(**overrides: object) -> Settings:
    """Settings from the config file and the environment, with explicit keyword overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]


def describe_error(exc: Exception) -> str:
    """One line for a settings error: the key as a user writes it (loop.turn_ms) and what is wrong."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors(include_url=False):
            key = ".".join(str(p) for p in err.get("loc", ()))
            msg = "unknown key" if err.get("type") == "extra_forbidden" else err.get("msg", "invalid")
            parts.append(f"{key or 'settings'}: {msg}")
        where = f" (config file {config_file()})" if config_file() else ""
        return "bad setting " + "; ".join(parts) + where + "; env vars: INTERPLAY_<GROUP>__<KEY>"
    return str(exc)
