"""Placement: which interaction actor takes a new (or moved) session, by measured load.

Given the router's members (each an interaction actor's Session address and a way to ask for its
load: `InteractionActorImpl.load`, the loop's own admission figure), `Placement.order()` asks every
member at once (bounded by `load_timeout_s`) and returns the members to try, best first:
admitting ones before refusing ones, then the most headroom (budget - compute p99 - one session's
share) less the sessions this router placed there too recently to show in the measured compute,
then the fewest sessions. A member whose load does not come back (dead, hung, draining) is left
out. It never opens a session itself: the relay tries the members in this order and moves on when
one refuses. Pure bookkeeping on the router's event loop; no blocking calls.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from interplay.log import get_logger

log = get_logger("interaction_actor.router.placement")


@dataclass
class Member:
    """One interaction actor the router may place sessions on."""

    address: str  # its Session service, as it advertises it
    load: Callable[[], Awaitable[dict]]  # its admission figure (InteractionActorImpl.load)
    name: str = ""
    handle: object | None = None  # its Ray actor handle, when it is one (drain, kill)
    placed: deque = field(default_factory=deque)  # monotonic times of this router's recent placements here

    def __post_init__(self) -> None:
        self.name = self.name or self.address


def ray_member(actor: object, address: str, name: str = "") -> Member:
    """A member that is a Ray InteractionActor, by handle or by its actor name (looked up at first use:
    a router restarted by Ray then needs no handle kept alive for it); its load is one actor call."""
    member = Member(address=address, load=None, name=name or (actor if isinstance(actor, str) else ""),  # type: ignore[arg-type]
                    handle=None if isinstance(actor, str) else actor)

    async def load() -> dict:
        if member.handle is None:
            import ray

            member.handle = ray.get_actor(actor)  # type: ignore[arg-type]
        return await member.handle.load.remote()  # type: ignore[attr-defined]

    member.load = load
    return member


def local_member(actor: object) -> Member:
    """A member that is an InteractionActorImpl in this process (tests, benches)."""

    async def load() -> dict:
        return actor.load()  # type: ignore[attr-defined]

    return Member(address=actor.address, load=load)  # type: ignore[attr-defined]


@dataclass
class PlacementConfig:
    load_timeout_s: float = 1.0  # a member that does not answer this fast is not considered
    settle_s: float = 2.0  # a placement counts as pending until the member's measured compute shows it


def admits(figure: dict) -> bool:
    """Would the member take one more session, by its own admission rule (TurnLoop.load)?"""
    if figure.get("draining"):
        return False
    if figure.get("sessions", 0) >= figure.get("max_sessions", float("inf")):
        return False
    measured = figure.get("admission", True) and figure.get("measured_turns", 0) >= 20
    return not measured or figure.get("headroom_ms", 0.0) >= 0


class Placement:
    def __init__(self, members: list[Member], config: PlacementConfig | None = None) -> None:
        self.members = list(members)
        self.config = config or PlacementConfig()

    async def loads(self, exclude: tuple[str, ...] = ()) -> list[tuple[Member, dict]]:
        """Every member's figure (asked at once), without those in `exclude` or that failed to answer."""
        candidates = [m for m in self.members if m.address not in exclude]

        async def ask(m: Member) -> dict | None:
            try:
                return await asyncio.wait_for(m.load(), self.config.load_timeout_s)
            except Exception as exc:  # noqa: BLE001 - a dead or hung member is simply not a candidate
                log.info("member_unreachable", member=m.name, error=type(exc).__name__)
                return None

        figures = await asyncio.gather(*(ask(m) for m in candidates))
        return [(m, f) for m, f in zip(candidates, figures, strict=True) if f is not None]

    def pending(self, m: Member, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        while m.placed and now - m.placed[0] > self.config.settle_s:
            m.placed.popleft()
        return len(m.placed)

    def rank(self, figures: list[tuple[Member, dict]]) -> list[Member]:
        """The members best first (see the module docstring)."""
        now = time.monotonic()

        def key(item: tuple[Member, dict]) -> tuple:
            m, f = item
            pending = self.pending(m, now)
            headroom = f.get("headroom_ms", 0.0) - f.get("share_ms", 0.0) * pending
            return (not admits(f), -headroom, f.get("sessions", 0) + pending)

        return [m for m, f in sorted(figures, key=key) if not f.get("draining")]

    async def order(self, exclude: tuple[str, ...] = ()) -> list[Member]:
        return self.rank(await self.loads(exclude))

    def placed(self, m: Member) -> None:
        """The relay is opening a session on `m` (pending until `settle_s` passes)."""
        m.placed.append(time.monotonic())

    def unplaced(self, m: Member) -> None:
        """`m` refused the session the relay was opening there."""
        if m.placed:
            m.placed.pop()
