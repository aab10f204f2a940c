"""Runtime settings, read from the environment (prefix INTERPLAY_) or passed explicitly.

Nested groups use a double underscore: INTERPLAY_LOOP__TURN_MS=200. Settings are validated
by pydantic; a bad value fails at start-up with the field named, never later in a turn.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LoopSettings(BaseModel):
    """The interaction actor's micro-turn clock."""

    turn_ms: int = Field(200, ge=20, le=2000, description="Length of one micro-turn in milliseconds.")
    max_sessions: int = Field(64, ge=1, description="Sessions one interaction actor hosts at most.")
    output_queue: int = Field(50, ge=1, description="Output chunks buffered per client before the oldest is dropped.")


class ModelSettings(BaseModel):
    """The interaction model."""

    backend: str = Field("native", description="Interaction backend: a registered name (native) or module:attr.")
    preset: str = Field("small", description="Named preset of the interaction model config.")
    checkpoint: str | None = Field(None, description="Path to a checkpoint; the shipped default when empty.")
    deterministic: bool = Field(True, description="Route through the batch-invariant kernels.")


class BackgroundSettings(BaseModel):
    """The background actor and its engine."""

    engine: Literal["local", "openai", "vllm"] = "local"
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_model: str = "default"
    max_concurrent_tasks: int = Field(4, ge=1)
    max_queued_tasks: int = Field(16, ge=0)
    task_deadline_ms: int = Field(30_000, ge=100)
    max_steps: int = Field(6, ge=1)


class DelegationSettings(BaseModel):
    """How the interaction side decides to delegate and surfaces results."""

    policy: str = "model_token"
    package_budget_bytes: int = Field(16_384, ge=512)


class Settings(BaseSettings):
    """All settings of one interplay process."""

    model_config = SettingsConfigDict(env_prefix="INTERPLAY_", env_nested_delimiter="__", extra="ignore")

    host: str = Field("127.0.0.1", description="Address every server of the project binds.")
    session_port: int = Field(0, ge=0, le=65535, description="Port of the Session service (0: any free port).")
    background_port: int = Field(0, ge=0, le=65535, description="Port of the Background service (0: any free).")
    log_level: str = "info"
    log_json: bool | None = Field(None, description="JSON logs; default: JSON when stderr is not a TTY.")
    ray_address: str | None = Field(None, description="Existing Ray cluster to join; local when empty.")
    loop: LoopSettings = LoopSettings()
    model: ModelSettings = ModelSettings()
    background: BackgroundSettings = BackgroundSettings()
    delegation: DelegationSettings = DelegationSettings()


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit keyword overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
