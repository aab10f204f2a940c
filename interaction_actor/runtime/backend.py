"""InteractionBackend: the one seam the turn loop steps sessions through.

Contract. The loop (loop.py) gives a backend, once per micro-turn, a batch of live sessions' streaming
states and one `TurnInput` each (this window's audio, latest frame, typed text, woven background
context, barge-in hint), and takes back one `TurnOutput` each (text, audio, control tokens, the
model's silent state, a delegation request and, when the backend has one, its confidence in it:
`delegate_confidence`, which the `threshold` policy reads). `open` makes a session's streaming state
before its first turn; `close` releases it. A backend must never block the turn: `step` runs in the loop's
worker thread against a 200 ms clock, so slow work (a remote model, speech synthesis) runs off the
turn path and `step` returns whatever is ready. It must not keep references to other sessions'
states. To refuse one session's input it raises `session.InputRejected(index, message)` before
changing any state (the loop then steps that session with an empty input and tells its client);
any other exception means the batch's states may be partly advanced, and the loop ends those
sessions with an error rather than stepping them twice.

`capabilities` tells the loop and its users what the backend does: the modalities it reads and
writes, how many sessions one step takes, its turn length and audio rate, and whether it voices
background results itself (reading them from the context it is given) or needs them spoken for it.

Backends are chosen by name (`native`, the project's early-fusion model: NativeBackend; `cascade`,
VAD → speech recognition → reply model → TTS: interaction_actor/cascade/) or by
`module:attr`, where attr is an InteractionBackend instance, or a class / factory called with the
options (`load_backend`). The loop only needs the protocol; nothing else in the runtime imports
a concrete model.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

import kernels.native
from interaction_actor.model.pacing import READ_BYTES
from interaction_actor.model.session import (
    SessionState,
    TurnInput,
    TurnOutput,
    check_capacity,
    new_session,
    step_batch,
)


@dataclass(frozen=True)
class Capabilities:
    """What a backend reads and writes, and how it steps."""

    name: str
    inputs: tuple[str, ...] = ("audio", "video", "text", "context")  # what TurnInput fields it reads
    outputs: tuple[str, ...] = ("text", "audio", "controls", "state")  # what TurnOutput fields it fills
    max_sessions_per_step: int = 0  # 0: any batch size
    turn_ms: int = 200
    sample_rate: int = 16_000  # of TurnOutput.pcm (and of the audio it reads)
    voices_results: bool = True  # reads background results from TurnInput.context and voices them itself


@runtime_checkable
class InteractionBackend(Protocol):
    """See the module docstring: open → step per turn → close; never blocks the turn."""

    capabilities: Capabilities

    def open(self, session_id: str) -> Any:
        """A new session's streaming state (whatever the backend keeps per session)."""
        ...

    def step(self, states: list[Any], inputs: list[TurnInput]) -> list[TurnOutput]:
        """Advance every session by exactly one turn; outputs in the order of `states`."""
        ...

    def close(self, state: Any) -> None:
        """The session ended: release what its state holds."""
        ...


class NativeBackend:
    """The project's early-fusion interaction model (interaction_actor.model.fusion) behind the seam.

    Each session's state is a session.SessionState (a KV cache written by position and the small
    streaming states of its parts); `step` is session.step_batch: one batched forward for the turn.
    A voiced background result longer than `read_bytes` reaches a session in pieces (model/pacing.py:
    unpaced, the model said 28 of 48 long answers after a delegation, in pieces of 20 bytes 44); 0
    gives it whole.
    """

    def __init__(self, model: Any = None, *, preset: str = "small", checkpoint: str | None = None,
                 seed: int = 0, kv_capacity: int = 0, read_bytes: int = READ_BYTES) -> None:
        if model is None:
            from interaction_actor.model.fusion import build_model
            from interaction_actor.model.weights import resolve_checkpoint

            model = build_model(preset, resolve_checkpoint(preset, checkpoint), seed)
        self.model = model
        if int(read_bytes) < 0:
            raise BackendError(f"read_bytes: {read_bytes} < 0")
        self.read_bytes = int(read_bytes)
        try:  # a clear error now, not at the first session
            self.kv_capacity = check_capacity(model, kv_capacity or None)
        except ValueError as exc:
            raise BackendError(f"kv_capacity: {exc}") from exc
        kernels.native.warm(model)  # the fixed-order decode kernels' build and checks, before any turn
        cfg = model.config
        self.capabilities = Capabilities(name="native", turn_ms=cfg.turn_ms, sample_rate=cfg.sample_rate)
        self.warm()

    def warm(self) -> None:
        """A throwaway session's listening turn and speaking turn, before any real session's.

        The first voiced turn of a process loads the vocoder's magnitude net from disk and pays each
        path's first-call costs; in a live session that turn took 307 ms of a 200 ms slot (the demo,
        2026-12-02). Sessions share nothing but the weights and that cached net, so no real session's
        output changes."""
        s = self.open("warm-up")
        n = self.capabilities.sample_rate * self.capabilities.turn_ms // 1000
        step_batch(self.model, [s], [TurnInput(audio=torch.zeros(n))])
        s.speech.speaking = True  # as if its last turn had opened speech: this turn is voiced
        step_batch(self.model, [s], [TurnInput(audio=torch.zeros(n))])
        self.close(s)

    def open(self, session_id: str) -> SessionState:
        return new_session(self.model, session_id, self.kv_capacity, read_bytes=self.read_bytes)

    def step(self, states: list[SessionState], inputs: list[TurnInput]) -> list[TurnOutput]:
        return step_batch(self.model, states, inputs)

    def close(self, state: SessionState) -> None:
        state.record = None  # the KV cache goes with the state object; nothing else is shared


def _cascade(**options: Any) -> InteractionBackend:
    """The cascade (interaction_actor/cascade/: VAD → the ears' transcripts → reply model → TTS), imported
    only when chosen so the native path never loads llama-cpp or espeak-ng."""
    from interaction_actor.cascade.backend import CascadeBackend

    return CascadeBackend.from_options(**options)


BACKENDS: dict[str, Any] = {"native": NativeBackend, "cascade": _cascade}


class BackendError(ValueError):
    """The backend spec names nothing loadable, or what it names is not an InteractionBackend."""


def load_backend(spec: Any = "native", **options: Any) -> InteractionBackend:
    """A backend from a registered name, "module:attr", a class / factory, or a ready instance.

    `options` go to the class or factory (for `native`: model, preset, checkpoint, seed, kv_capacity); a ready
    instance takes none. Raises BackendError with the reason when the spec cannot be used."""
    target: Any = spec
    if isinstance(spec, str):
        if spec in BACKENDS:
            target = BACKENDS[spec]
        elif ":" in spec:
            module, _, attr = spec.partition(":")
            try:
                target = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise BackendError(f"cannot load backend {spec!r}: {exc}") from exc
        else:
            raise BackendError(f"unknown backend {spec!r}; use one of {sorted(BACKENDS)} or 'module:attr'")
    ready = not isinstance(target, type) and callable(getattr(target, "step", None))
    if ready and options:
        raise BackendError(f"backend {spec!r} is a ready instance; it takes no options ({sorted(options)})")
    if not ready and not callable(target):
        raise BackendError(f"backend {spec!r} is neither a backend nor a class or factory that makes one")
    try:
        backend = target if ready else target(**options)
    except TypeError as exc:
        raise BackendError(f"backend {spec!r} does not take these options {sorted(options)}: {exc}") from exc
    missing = [m for m in ("open", "step", "close") if not callable(getattr(backend, m, None))]
    if missing or not isinstance(getattr(backend, "capabilities", None), Capabilities):
        what = f"methods {missing}" if missing else "a `capabilities: Capabilities` attribute"
        raise BackendError(f"backend {spec!r} is not an InteractionBackend: it lacks {what}")
    return backend
