"""Delegation policies: when does the interaction side hand a task to the background model?

One small interface: `decide(state: TurnState) -> Delegation | None`, called once per micro-turn,
plus `on_steer(task_id, text)` / `on_cancel(task_id, reason)` hooks and `reset()` between sessions.
Built-ins: model_token, rule, always, never, threshold (a confidence wrapper around another
policy), first_of (the first of several that decides). `load_policy(name_or_object, **opts)`
returns a policy from its registered name, a "module:attr" path, a class, or an object that
already has `decide`.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from delegation.package import Priority, SurfacingMode, UserState


@dataclass
class TurnState:
    """What a policy sees at one micro-turn boundary."""

    session_id: str = ""
    turn: int = 0
    time_ms: int = 0
    user_state: UserState = UserState.SILENT
    utterance: str = ""                      # the user's newest utterance (words so far, or complete)
    utterance_final: bool = False            # the utterance just ended (first silent turn after it)
    controls: list[str] = field(default_factory=list)  # control tokens the model emitted this turn
    delegate_task: str | None = None         # task text the model emitted with <delegate>
    confidence: float | None = None          # with delegate_task: the backend's own confidence in it (the
    # native model: p(<delegate>) at the step that opened the task; TurnOutput.delegate_confidence)
    active_tasks: list[str] = field(default_factory=list)  # delegations running now
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Delegation:
    """A decision to delegate: what to hand over and how the result should come back."""

    task: str
    priority: Priority = Priority.NORMAL
    preferred_mode: SurfacingMode = SurfacingMode.WHEN_IDLE
    allowed_tools: list[str] | None = None   # None: the runtime's default allow-list
    deadline_ms: int | None = None            # None: the runtime's default deadline
    confidence: float | None = None
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


class PolicyError(ValueError):
    """A policy name or its options are unknown or invalid."""


@runtime_checkable
class DelegationPolicy(Protocol):
    name: str

    def decide(self, state: TurnState) -> Delegation | None: ...

    def on_steer(self, task_id: str, text: str) -> None: ...

    def on_cancel(self, task_id: str, reason: str) -> None: ...


class Policy:
    """Base class with no-op hooks; subclasses implement `decide`."""

    name = "policy"

    def decide(self, state: TurnState) -> Delegation | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_steer(self, task_id: str, text: str) -> None:
        self.steered = getattr(self, "steered", 0) + 1

    def on_cancel(self, task_id: str, reason: str) -> None:
        self.cancelled = getattr(self, "cancelled", 0) + 1

    def reset(self) -> None:
        """Forget per-session state (called between sessions)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class NeverPolicy(Policy):
    """Baseline: never delegate (the interaction model answers everything itself)."""

    name = "never"

    def decide(self, state: TurnState) -> Delegation | None:
        return None


class AlwaysPolicy(Policy):
    """Baseline: delegate every completed user utterance."""

    name = "always"

    def __init__(self, mode: SurfacingMode = SurfacingMode.WHEN_IDLE) -> None:
        self.mode = SurfacingMode(mode)

    def decide(self, state: TurnState) -> Delegation | None:
        if state.utterance_final and state.utterance.strip():
            return Delegation(task=state.utterance.strip(), preferred_mode=self.mode,
                              confidence=state.confidence, reason="always")
        return None


class ModelTokenPolicy(Policy):
    """Delegate when the interaction model emitted a <delegate> control token with a task.

    A missing task text falls back to the user's newest utterance. The same task text is not
    delegated again within `dedupe_turns` turns (a model may repeat the token on adjacent turns).
    """

    name = "model_token"

    def __init__(self, token: str = "delegate", dedupe_turns: int = 10,
                 mode: SurfacingMode = SurfacingMode.WHEN_IDLE) -> None:
        self.token = token
        self.dedupe_turns = dedupe_turns
        self.mode = SurfacingMode(mode)
        self._recent: dict[str, int] = {}

    def decide(self, state: TurnState) -> Delegation | None:
        if self.token not in state.controls:
            return None
        task = (state.delegate_task or state.utterance or "").strip()
        if not task:
            return None
        last = self._recent.get(task)
        if last is not None and state.turn - last < self.dedupe_turns:
            return None
        self._recent[task] = state.turn
        if len(self._recent) > 64:  # bounded: forget tasks older than the dedupe window
            self._recent = {t: k for t, k in self._recent.items() if state.turn - k < self.dedupe_turns}
        return Delegation(task=task, preferred_mode=self.mode, confidence=state.confidence, reason="model_token")

    def reset(self) -> None:
        self._recent.clear()


DEFAULT_INTENTS: tuple[str, ...] = (
    r"\b(look|looking) (it |that |this )?up\b",
    r"\b(search|google|browse)\b",
    r"\bfind (me |out |a |the )",
    r"\b(weather|forecast|temperature)\b",
    r"\b(price|cost|stock|exchange rate|convert)\b",
    r"\b(news|headlines|latest)\b",
    r"\b(book|reserve|schedule|remind me|set (a |an )?(timer|alarm|reminder))\b",
    r"\b(calculate|compute|how much|how many)\b",
    r"\b(email|send|message|text) (to|him|her|them)\b",
    r"\bwhat time\b",
)


class RulePolicy(Policy):
    """Delegate a completed utterance that matches any intent pattern (case-insensitive regex)."""

    name = "rule"

    def __init__(self, patterns: Iterable[str] = DEFAULT_INTENTS, mode: SurfacingMode = SurfacingMode.WHEN_IDLE) -> None:
        pats = list(patterns)
        if not pats:
            raise PolicyError("rule policy needs at least one intent pattern")
        try:
            self.patterns = [re.compile(p, re.IGNORECASE) for p in pats]
        except re.error as exc:
            raise PolicyError(f"bad intent pattern: {exc}") from exc
        self.mode = SurfacingMode(mode)

    def decide(self, state: TurnState) -> Delegation | None:
        if not state.utterance_final:
            return None
        text = state.utterance.strip()
        for p in self.patterns:
            if p.search(text):
                return Delegation(task=text, preferred_mode=self.mode, confidence=state.confidence,
                                  reason=f"rule:{p.pattern}")
        return None


class ThresholdPolicy(Policy):
    """Wrap a policy: keep its delegation only when the confidence is at least `threshold`.

    The confidence is the delegation's own, else the turn's `TurnState.confidence`; a decision
    with no known confidence is dropped (the wrapper is conservative).
    """

    name = "threshold"

    def __init__(self, inner: Any = "model_token", threshold: float = 0.5, **inner_opts: Any) -> None:
        if not 0.0 <= float(threshold) <= 1.0:
            raise PolicyError(f"threshold must lie in [0, 1], got {threshold}")
        self.inner = load_policy(inner, **inner_opts)
        self.threshold = float(threshold)
        self.name = f"threshold({getattr(self.inner, 'name', type(self.inner).__name__)},{self.threshold:g})"

    def decide(self, state: TurnState) -> Delegation | None:
        d = self.inner.decide(state)
        if d is None:
            return None
        conf = d.confidence if d.confidence is not None else state.confidence
        if conf is None or conf < self.threshold:
            return None
        d.confidence = conf
        return d

    def on_steer(self, task_id: str, text: str) -> None:
        self.inner.on_steer(task_id, text)

    def on_cancel(self, task_id: str, reason: str) -> None:
        self.inner.on_cancel(task_id, reason)

    def reset(self) -> None:
        if hasattr(self.inner, "reset"):
            self.inner.reset()


class FirstOfPolicy(Policy):
    """Ask several policies in order; the first decision wins, and one request delegates once.

    E.g. `first_of` with ["model_token", "rule"]: the interaction model decides, and an intent rule
    on typed requests backs it up. A decision within `dedupe_turns` turns of the last one, while that
    delegation still runs, is dropped (the backup must not repeat what the model already sent); so is
    one made while the user's newest utterance is still the one the last decision answered, within
    `same_request_turns` (the model's own token may come after the rule's delegation has finished).
    """

    name = "first_of"

    def __init__(self, policies: Iterable[Any] = ("model_token", "rule"), dedupe_turns: int = 10,
                 same_request_turns: int = 100) -> None:
        self.inner = [load_policy(p) for p in policies]
        if not self.inner:
            raise PolicyError("first_of needs at least one policy")
        self.dedupe_turns = int(dedupe_turns)
        self.same_request_turns = int(same_request_turns)
        self._last_turn: int | None = None
        self._last_utterance = ""
        names = ",".join(getattr(p, "name", type(p).__name__) for p in self.inner)
        self.name = f"first_of({names})"

    def decide(self, state: TurnState) -> Delegation | None:
        decisions = [(p, p.decide(state)) for p in self.inner]  # every policy sees every turn (they keep state)
        policy, d = next(((p, d) for p, d in decisions if d is not None), (None, None))
        if d is None:
            return None
        if self._last_turn is not None:
            since = state.turn - self._last_turn
            if state.active_tasks and since < self.dedupe_turns:
                return None
            if state.utterance and state.utterance == self._last_utterance and since < self.same_request_turns:
                return None
        self._last_turn, self._last_utterance = state.turn, state.utterance
        d.reason = d.reason or getattr(policy, "name", "")
        return d

    def on_steer(self, task_id: str, text: str) -> None:
        for p in self.inner:
            p.on_steer(task_id, text)

    def on_cancel(self, task_id: str, reason: str) -> None:
        for p in self.inner:
            p.on_cancel(task_id, reason)

    def reset(self) -> None:
        self._last_turn, self._last_utterance = None, ""
        for p in self.inner:
            if hasattr(p, "reset"):
                p.reset()


_REGISTRY: dict[str, Callable[..., Any]] = {
    "never": NeverPolicy,
    "always": AlwaysPolicy,
    "model_token": ModelTokenPolicy,
    "rule": RulePolicy,
    "threshold": ThresholdPolicy,
    "first_of": FirstOfPolicy,
}


def register_policy(name: str, factory: Callable[..., Any], *, replace: bool = False) -> None:
    """Make `load_policy(name, **opts)` call `factory(**opts)`."""
    if not name or not isinstance(name, str):
        raise PolicyError("a policy name must be a non-empty string")
    if name in _REGISTRY and not replace:
        raise PolicyError(f"policy {name!r} is already registered")
    _REGISTRY[name] = factory


def policy_names() -> list[str]:
    return sorted(_REGISTRY)


def _check(obj: Any, source: str) -> Any:
    if not callable(getattr(obj, "decide", None)):
        raise PolicyError(f"{source} gave {type(obj).__name__}, which has no decide(turn_state) method")
    for hook in ("on_steer", "on_cancel"):
        if not callable(getattr(obj, hook, None)):
            setattr(obj, hook, lambda *_a, **_k: None)
    if not getattr(obj, "name", None):
        with contextlib.suppress(AttributeError):  # a slotted object keeps its class name
            obj.name = type(obj).__name__
    return obj


def load_policy(spec: Any, **opts: Any) -> Any:
    """A policy from a registered name, "module:attr", a class/factory, or a ready object.

    Options go to the factory; options given with a ready object are an error (it is used as is).
    """
    if isinstance(spec, str):
        if spec in _REGISTRY:
            factory = _REGISTRY[spec]
        elif ":" in spec:
            mod, _, attr = spec.partition(":")
            try:
                factory = getattr(importlib.import_module(mod), attr)
            except (ImportError, AttributeError) as exc:
                raise PolicyError(f"cannot import policy {spec!r}: {exc}") from exc
        else:
            raise PolicyError(f"unknown policy {spec!r}; known: {', '.join(policy_names())}")
        return _check(_call(factory, opts, spec), repr(spec))
    if isinstance(spec, Mapping):
        d = dict(spec)
        name = d.pop("policy", None) or d.pop("name", None)
        return load_policy(name, **d, **opts)
    if isinstance(spec, type):
        return _check(_call(spec, opts, spec.__name__), spec.__name__)
    if callable(getattr(spec, "decide", None)):
        if opts:
            raise PolicyError(f"options {sorted(opts)} given with a ready policy object")
        return _check(spec, type(spec).__name__)
    if callable(spec):
        return _check(_call(spec, opts, getattr(spec, "__name__", "factory")), "factory")
    raise PolicyError(f"cannot make a policy from {type(spec).__name__}")


def _call(factory: Callable[..., Any], opts: Mapping[str, Any], label: Any) -> Any:
    try:
        return factory(**opts)
    except TypeError as exc:
        raise PolicyError(f"bad options for policy {label!r}: {exc}") from exc
