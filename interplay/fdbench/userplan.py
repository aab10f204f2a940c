"""When the user of a delegation scenario says what: the rules, shared by every system's client.

Standard library only: interplay's client (delegation.py) imports it, and so does pipecat_runner.py in
pipecat's own virtualenv (by its file path), so both systems' users follow exactly the same rules.

A scenario is a request (ending at `request_end`, a sample of the user's 16 kHz stream) and `steps`,
each (anchor, offset_s, length in samples). The anchors: "start" — the moment the first tool call was
seen; "due" — that moment plus the tool's delay (`delay_s`, the asked city's); "due_end" — the step
ends at the due moment; "heard" — after the assistant is first heard once the previous step ended
(`heard_since[k]`), or `barge_wait_s` after that end when it says nothing. With no tool call within
`tool_wait_s` of the request's end, the user goes on as if one had been seen then. The stream ends
`tail_s` after the last step and the last expected return (`dues`), whichever is later.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SR = 16_000


@dataclass
class Plan:
    request_end: int
    steps: list[tuple[str, float, int]]  # (anchor, offset_s, samples)
    delay_s: float
    tool_wait_s: float
    barge_wait_s: float
    tail_s: float
    tool_start: int | None = None  # sample at which the first tool call was seen
    placed: list[tuple[int, int]] = field(default_factory=list)  # (step index, start sample)
    heard_since: dict[int, int] = field(default_factory=dict)  # step index -> sample the assistant was heard
    dues: list[int] = field(default_factory=list)  # expected returns (samples), one per tool call seen

    def anchor(self) -> int:
        return self.tool_start if self.tool_start is not None else self.request_end + int(self.tool_wait_s * SR)

    def due(self) -> int:
        return self.anchor() + int(self.delay_s * SR)

    def prev_end(self) -> int:
        """Where the last placed step (or the request) ends."""
        if not self.placed:
            return self.request_end
        k, at = self.placed[-1]
        return at + self.steps[k][2]

    def tool_seen(self, sample: int, delay_s: float) -> None:
        """A tool call was seen at `sample`; its result is due `delay_s` later."""
        if self.tool_start is None:
            self.tool_start = sample
        self.dues.append(sample + int(delay_s * SR))

    def heard(self, sample: int) -> None:
        """The assistant was heard at `sample` (kept for the next step when past the previous one's end)."""
        k = len(self.placed)
        if k < len(self.steps) and k not in self.heard_since and sample >= self.prev_end():
            self.heard_since[k] = sample

    def next_start(self, i0: int) -> int | None:
        """Where the next unplaced step starts, once that is known at sample i0 (None: not yet)."""
        k = len(self.placed)
        if k >= len(self.steps):
            return None
        anchor, offset_s, size = self.steps[k]
        if self.tool_start is None and i0 < self.request_end + int(self.tool_wait_s * SR):
            return None
        prev_end = self.prev_end()
        if anchor == "start":
            at = self.anchor() + int(offset_s * SR)
        elif anchor == "due":
            at = self.due() + int(offset_s * SR)
        elif anchor == "due_end":
            at = self.due() + int(offset_s * SR) - size
        else:  # heard
            if i0 < prev_end:
                return None
            heard = self.heard_since.get(k)
            if heard is None and i0 < prev_end + int(self.barge_wait_s * SR):
                return None
            at = (heard if heard is not None else i0) + int(offset_s * SR)
        return max(at, prev_end, i0)

    def advance(self, i0: int, chunk: int) -> None:
        """Place the next step when it starts within the chunk at i0."""
        at = self.next_start(i0)
        if at is not None and at < i0 + chunk:
            self.placed.append((len(self.placed), at))

    def done(self, i0: int) -> bool:
        return len(self.placed) == len(self.steps) and i0 >= self.end()

    def end(self) -> int:
        due = max(self.dues or [self.due()])
        return max(self.prev_end(), due) + int(self.tail_s * SR)

    def spans(self, lead: int) -> list[tuple[int, int]]:
        """The user's speech: the request from `lead`, then each placed step."""
        return [(lead, self.request_end)] + [(a, a + self.steps[k][2]) for k, a in self.placed]
