"""A second interaction backend, outside the package, for the backend-seam tests.

EchoBackend is deliberately simple but real: it keeps its own per-session state, reads the typed
text of each turn, answers "<prefix><text>" on the next turn, and asks for a delegation when the
text starts with "delegate:" (as the native model does with its <delegate> token). It is silent: no
audio out. It exists to show that the loop, the delegation path and the gRPC service need nothing
from the native model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from interaction_actor.model.session import TurnInput, TurnOutput
from interaction_actor.runtime.backend import Capabilities


@dataclass
class EchoState:
    session_id: str
    turn: int = 0
    queued: list[str] = field(default_factory=list)


class EchoBackend:
    def __init__(self, prefix: str = "echo: ") -> None:
        self.prefix = prefix
        self.capabilities = Capabilities(name="echo", inputs=("text",), outputs=("text", "controls"),
                                         voices_results=False)
        self.opened: list[str] = []
        self.closed: list[str] = []

    def open(self, session_id: str) -> EchoState:
        self.opened.append(session_id)
        return EchoState(session_id)

    def step(self, states: list[EchoState], inputs: list[TurnInput]) -> list[TurnOutput]:
        outs = []
        for s, inp in zip(states, inputs, strict=True):
            text, controls, task = "", [], None
            if s.queued:
                said = s.queued.pop(0)
                if said.startswith("delegate:"):
                    task, controls = said.removeprefix("delegate:").strip(), ["delegate"]
                else:
                    text = self.prefix + said
            if inp.text:
                s.queued.append(inp.text)
            outs.append(TurnOutput(session_id=s.session_id, turn=s.turn, text=text, mel=torch.zeros(0, 80),
                                   pcm=None, controls=controls, delegate_task=task, speaking=False))
            s.turn += 1
        return outs

    def close(self, state: EchoState) -> None:
        self.closed.append(state.session_id)
