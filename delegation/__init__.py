"""Delegation: the context package, pluggable policies, the interleave scheduler, a research harness.

    from delegation import build_package, ContextPackageModel, ConversationLog
    from delegation import load_policy, TurnState, InterleaveScheduler
    pkg = build_package("weather in Paris", transcript=log, allowed_tools=["http_fetch"])
    policy = load_policy("model_token");  d = policy.decide(TurnState(...))
    sched = InterleaveScheduler();  sched.offer(update, turn);  decision = sched.step(turn, user_state)

Never imports an actor package; see ../shared/DESIGN.md.
"""

from delegation.digest import Digest, DigestConfig
from delegation.frames import FrameConfig, FrameObservation
from delegation.package import (
    ContextPackageModel,
    EntryKind,
    OmittedModel,
    PackageConfig,
    PackageError,
    PackageTooLarge,
    Priority,
    Speaker,
    SurfacingMode,
    TranscriptEntryModel,
    UserState,
    VisualObservationModel,
    build_package,
    fit_to_budget,
)
from delegation.policies import (
    AlwaysPolicy,
    Delegation,
    DelegationPolicy,
    FirstOfPolicy,
    ModelTokenPolicy,
    NeverPolicy,
    Policy,
    PolicyError,
    RulePolicy,
    ThresholdPolicy,
    TurnState,
    load_policy,
    policy_names,
    register_policy,
)
from delegation.scheduler import (
    Decision,
    Dropped,
    InterleaveScheduler,
    SchedulerConfig,
    SchedulerError,
    Settlement,
    Surfaced,
)
from delegation.transcript import ConversationLog, LogConfig, LogSnapshot, TranscriptError

__all__ = [
    "AlwaysPolicy",
    "ContextPackageModel",
    "ConversationLog",
    "Decision",
    "Delegation",
    "Digest",
    "DigestConfig",
    "DelegationPolicy",
    "FirstOfPolicy",
    "FrameConfig",
    "FrameObservation",
    "Dropped",
    "EntryKind",
    "InterleaveScheduler",
    "LogConfig",
    "LogSnapshot",
    "ModelTokenPolicy",
    "NeverPolicy",
    "OmittedModel",
    "PackageConfig",
    "PackageError",
    "PackageTooLarge",
    "Policy",
    "PolicyError",
    "Priority",
    "RulePolicy",
    "SchedulerConfig",
    "SchedulerError",
    "Settlement",
    "Speaker",
    "Surfaced",
    "SurfacingMode",
    "ThresholdPolicy",
    "TranscriptEntryModel",
    "TranscriptError",
    "TurnState",
    "UserState",
    "VisualObservationModel",
    "build_package",
    "fit_to_budget",
    "load_policy",
    "policy_names",
    "register_policy",
]
