"""The session router: one public Converse endpoint, sessions placed across interaction actors by
measured load and moved to another actor when theirs is lost (server.py: the service and its Ray
actor; relay.py: one session's pipe and move; placement.py: which actor takes a session)."""

from interaction_actor.router.placement import Member, Placement, PlacementConfig, local_member, ray_member
from interaction_actor.router.relay import Relay, RelayConfig, SessionCopy
from interaction_actor.router.server import RouterActor, RouterImpl, RouterService, spawn_router

__all__ = ["Member", "Placement", "PlacementConfig", "Relay", "RelayConfig", "RouterActor", "RouterImpl",
           "RouterService", "SessionCopy", "local_member", "ray_member", "spawn_router"]
