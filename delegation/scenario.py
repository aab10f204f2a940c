"""Scenario files for the research harness: scripted user speech and a background-side model.

A scenario is JSON: the user's utterances in order (each with an intent, the interaction model's
delegate probability, and when it starts: an absolute turn, a gap after the previous one, or a
delay after a result starts being voiced: a reactive barge-in), and the background's latency
and failure distributions. `load_scenario(path)` validates with a clear error naming the field.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Mode = Literal["", "interrupt", "when_idle", "silent"]
Intent = Literal["background", "chat", "cancel", "steer"]
DEFAULT_P = {"background": 0.85, "chat": 0.1, "cancel": 0.05, "steer": 0.2}


class ScenarioError(ValueError):
    """A scenario file is missing, not JSON, or has an invalid field (named in the message)."""


class Latency(BaseModel):
    """A latency distribution in milliseconds, clipped to [min_ms, max_ms]."""

    model_config = ConfigDict(extra="forbid")
    dist: Literal["fixed", "uniform", "lognormal", "exponential"] = "lognormal"
    value: float = Field(1500.0, ge=0)         # fixed
    low: float = Field(500.0, ge=0)            # uniform
    high: float = Field(3000.0, ge=0)
    median: float = Field(1500.0, gt=0)        # lognormal
    sigma: float = Field(0.5, ge=0)
    mean: float = Field(1500.0, gt=0)          # exponential
    min_ms: float = Field(50.0, ge=0)
    max_ms: float = Field(120_000.0, gt=0)

    def sample(self, rng: random.Random) -> float:
        if self.dist == "fixed":
            x = self.value
        elif self.dist == "uniform":
            x = rng.uniform(self.low, self.high)
        elif self.dist == "lognormal":
            x = rng.lognormvariate(math.log(self.median), self.sigma)
        else:
            x = rng.expovariate(1.0 / self.mean)
        return min(max(x, self.min_ms), self.max_ms)


class BackgroundSpec(BaseModel):
    """How the simulated background side behaves for every delegation of the scenario."""

    model_config = ConfigDict(extra="forbid")
    latency: Latency = Field(default_factory=Latency)
    failure_rate: float = Field(0.0, ge=0, le=1)
    accept_ms: float = Field(120.0, ge=0)            # ACCEPTED arrives this long after the hand-off
    progress_every_ms: float = Field(0.0, ge=0)      # a PROGRESS update this often (0: none)
    progress_ttl_ms: int = Field(2_000, ge=0)
    result_ttl_ms: int = Field(0, ge=0)              # 0: a result never expires
    result_mode: Mode = ""                           # the background's suggestion ("" none)
    progress_mode: Mode = "silent"
    steer_extra_ms: float = Field(800.0, ge=0)       # a steer adds this much work
    cancel_ack_ms: float = Field(80.0, ge=0)


class Utterance(BaseModel):
    """One thing the user says. Exactly one of at / gap / after_result places it (default gap 5)."""

    model_config = ConfigDict(extra="forbid")
    say: str = Field(min_length=1)
    intent: Intent = "chat"
    model_p: float | None = Field(None, ge=0, le=1)  # P(<delegate>) the interaction model assigns
    at: int | None = Field(None, ge=0)               # absolute turn (or right after the previous ends)
    gap: int | None = Field(None, ge=0)              # turns of silence after the previous utterance
    after_result: int | None = Field(None, ge=0)     # turns after the next result starts being voiced
    turns: int | None = Field(None, ge=1)            # how long it is spoken (default: 2 turns a word)
    answer_chars: int = Field(60, ge=1)              # length of the answer it asks for
    id: str = ""

    @model_validator(mode="after")
    def _one_placement(self) -> Utterance:
        if sum(x is not None for x in (self.at, self.gap, self.after_result)) > 1:
            raise ValueError("give at most one of at, gap, after_result")
        return self

    @property
    def delegate_p(self) -> float:
        return DEFAULT_P[self.intent] if self.model_p is None else self.model_p

    @property
    def duration(self) -> int:
        return self.turns or max(2, 2 * len(self.say.split()))


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    description: str = ""
    turn_ms: int = Field(200, ge=10, le=2000)
    tail_turns: int = Field(40, ge=0)              # simulated turns after the last utterance
    stale_after_ms: int = Field(8_000, ge=0)       # a result voiced later than this after it was ready is stale
    background: BackgroundSpec = Field(default_factory=BackgroundSpec)
    utterances: list[Utterance] = Field(min_length=1)

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> Scenario:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise ScenarioError(f"{source}: {where}: {first['msg']}") from exc


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ScenarioError(f"{p}: no such scenario file") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{p}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ScenarioError(f"{p}: a scenario is a JSON object")
    return Scenario.from_dict(data, str(p))


def default_scenario_dir() -> Path:
    """examples/scenarios of the source tree this package lives in."""
    return Path(__file__).resolve().parent.parent / "examples" / "scenarios"


def load_scenarios(spec: str | Path | Scenario | list | tuple | None = None) -> list[Scenario]:
    """Scenarios from a directory (every *.json, sorted), a file, a Scenario, or a list of these."""
    if spec is None:
        spec = default_scenario_dir()
    if isinstance(spec, Scenario):
        return [spec]
    if isinstance(spec, (list, tuple)):
        return [s for item in spec for s in load_scenarios(item)]
    p = Path(spec)
    if p.is_dir():
        files = sorted(p.glob("*.json"))
        if not files:
            raise ScenarioError(f"{p}: no *.json scenario files")
        return [load_scenario(f) for f in files]
    return [load_scenario(p)]
