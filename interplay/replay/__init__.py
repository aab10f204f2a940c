"""Replay: sessions recorded from the live turn loop (or generated) run again through the real stack
on a virtual clock. format.py (the versioned JSON-lines format), recorder.py (the loop's recording
hook), player.py (the replay), sessions.py (synthetic and scenario sessions), study.py (policies
compared through replay). See each module's docstring for its contract.
"""

from interplay.replay.format import (
    FORMAT,
    VERSION,
    ReplayFormatError,
    ReplaySession,
    read_session,
    read_sessions,
    write_session,
)
from interplay.replay.player import ReplayRun, StandIn, VirtualClock, compare, replay, replay_async
from interplay.replay.recorder import Recorder

__all__ = ["FORMAT", "VERSION", "Recorder", "ReplayFormatError", "ReplayRun", "ReplaySession", "StandIn",
           "VirtualClock", "compare", "read_session", "read_sessions", "replay", "replay_async", "write_session"]
