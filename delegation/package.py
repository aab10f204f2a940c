"""The context package: a pydantic mirror of `interplay.v1.ContextPackage` and its budgeted builder.

`ContextPackageModel.from_proto(pb).to_proto() == pb` for every valid package (and the reverse).
`build_package(...)` assembles a package from a session's state and fits it into a byte budget by
the truncation rule documented on `fit_to_budget` (the task and the newest entries are kept; the
oldest are summarised, then dropped; a message is never split).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from interplay.log import get_logger
from interplay.v1 import common_pb2 as cpb
from interplay.v1 import context_pb2 as xpb

log = get_logger("delegation.package")


@runtime_checkable
class ConversationSource(Protocol):
    """What build_package reads from a conversation recorder (delegation.transcript.ConversationLog is
    one): its entries oldest first, the user's state, its visual observations, its session id."""

    session_id: str

    @property
    def user_state(self) -> Any: ...

    def to_proto_entries(self) -> list[xpb.TranscriptEntry]: ...

    def observations(self) -> list[Any]: ...

INT64 = (-(2**63), 2**63 - 1)
UINT32_MAX = 2**32 - 1


class Speaker(IntEnum):
    """Mirror of interplay.v1.Speaker (values equal the proto's)."""

    UNSPECIFIED = 0
    USER = 1
    ASSISTANT = 2
    BACKGROUND = 3
    SYSTEM = 4


class EntryKind(IntEnum):
    """Mirror of interplay.v1.EntryKind."""

    UNSPECIFIED = 0
    UTTERANCE = 1
    SILENCE = 2
    EVENT = 3


class UserState(IntEnum):
    """Mirror of interplay.v1.UserState."""

    UNSPECIFIED = 0
    SPEAKING = 1
    SILENT = 2
    INTERRUPTED = 3


class Priority(IntEnum):
    """Mirror of interplay.v1.Priority."""

    UNSPECIFIED = 0
    LOW = 1
    NORMAL = 2
    HIGH = 3


class SurfacingMode(IntEnum):
    """Mirror of interplay.v1.SurfacingMode."""

    UNSPECIFIED = 0
    INTERRUPT = 1
    WHEN_IDLE = 2
    SILENT = 3


class PackageError(ValueError):
    """A context package could not be converted or built; `code` is stable, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class PackageTooLarge(PackageError):
    """The parts the truncation rule never drops (the task, ids, tools...) alone exceed the budget."""


_I64 = Field(0, ge=INT64[0], le=INT64[1])
_STRICT = ConfigDict(extra="forbid", validate_assignment=True, ser_json_bytes="base64", val_json_bytes="base64")


class TranscriptEntryModel(BaseModel):
    """One time-stamped span of the conversation (mirror of TranscriptEntry)."""

    model_config = _STRICT
    speaker: Speaker = Speaker.UNSPECIFIED
    kind: EntryKind = EntryKind.UNSPECIFIED
    text: str = ""
    start_ms: int = _I64
    end_ms: int = _I64
    start_turn: int = _I64
    end_turn: int = _I64
    overlapped: bool = False
    interrupted: bool = False
    typed: bool = False

    def to_proto(self) -> xpb.TranscriptEntry:
        return xpb.TranscriptEntry(**_plain(self))

    @classmethod
    def from_proto(cls, pb: xpb.TranscriptEntry) -> TranscriptEntryModel:
        return _validate(cls, _fields(pb))


class VisualObservationModel(BaseModel):
    """Something the interaction model saw recently (mirror of VisualObservation)."""

    model_config = _STRICT
    turn: int = _I64
    time_ms: int = _I64
    description: str = ""
    image: bytes = b""
    mime_type: str = ""

    def to_proto(self) -> xpb.VisualObservation:
        return xpb.VisualObservation(**_plain(self))

    @classmethod
    def from_proto(cls, pb: xpb.VisualObservation) -> VisualObservationModel:
        return _validate(cls, _fields(pb))


class ContextPackageModel(BaseModel):
    """Every field of interplay.v1.ContextPackage; converts to and from protobuf losslessly."""

    model_config = _STRICT
    task_id: str = ""
    session_id: str = ""
    task: str = ""
    transcript: list[TranscriptEntryModel] = Field(default_factory=list)
    earlier_summary: str = ""
    dropped_entries: int = Field(0, ge=0, le=UINT32_MAX)
    user_state: UserState = UserState.UNSPECIFIED
    observations: list[VisualObservationModel] = Field(default_factory=list)
    allowed_tools: list[str] = Field(default_factory=list)
    deadline_ms: int = _I64
    priority: Priority = Priority.UNSPECIFIED
    origin_turn: int = _I64
    created_unix_ms: int = _I64
    preferred_mode: SurfacingMode = SurfacingMode.UNSPECIFIED
    idempotent: bool = False
    metadata: dict[str, str] = Field(default_factory=dict)

    def to_proto(self) -> xpb.ContextPackage:
        d = _plain(self)
        d["transcript"] = [e.to_proto() for e in self.transcript]
        d["observations"] = [o.to_proto() for o in self.observations]
        return xpb.ContextPackage(**d)

    @classmethod
    def from_proto(cls, pb: xpb.ContextPackage) -> ContextPackageModel:
        d = _fields(pb)
        d["transcript"] = [TranscriptEntryModel.from_proto(e) for e in pb.transcript]
        d["observations"] = [VisualObservationModel.from_proto(o) for o in pb.observations]
        d["allowed_tools"] = list(pb.allowed_tools)
        d["metadata"] = dict(pb.metadata)
        return _validate(cls, d)


def _fields(pb: Any) -> dict[str, Any]:
    return {f.name: getattr(pb, f.name) for f in pb.DESCRIPTOR.fields}


def _plain(m: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in type(m).model_fields:
        v = getattr(m, name)
        out[name] = int(v) if isinstance(v, IntEnum) else v
    return out


def _validate(cls: type[BaseModel], d: dict[str, Any]) -> Any:
    try:
        return cls.model_validate(d)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PackageError("invalid_package", f"{cls.__name__}.{where}: {first['msg']}") from exc


# ---- the size budget ---------------------------------------------------------------------------

@dataclass
class PackageConfig:
    """Budget and truncation knobs of `build_package`."""

    budget_bytes: int = 16_384         # serialized size limit of the whole package
    max_observations: int = 4          # newest observations kept before the byte budget applies
    summary_max_bytes: int = 1_024     # the earlier_summary never exceeds this (nor budget / 8)
    summary_words: int = 12            # words kept per entry inside the summary


def _varint_len(n: int) -> int:
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def _ld(n: int) -> int:
    """Bytes a length-delimited field of payload n costs (field numbers < 16: one tag byte)."""
    return 1 + _varint_len(n) + n


def _clip_words(text: str, words: int) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" …" if len(parts) > words else "")


def _gist(e: xpb.TranscriptEntry, words: int) -> str:
    if e.kind == xpb.ENTRY_KIND_SILENCE:
        return f"[silence {(e.end_ms - e.start_ms) / 1000:.1f}s]"
    who = xpb.Speaker.Name(e.speaker).removeprefix("SPEAKER_").lower()
    marks = "".join(m for m, on in ((" (overlapped)", e.overlapped), (" (interrupted)", e.interrupted),
                                    (" (typed)", e.typed)) if on)
    body = _clip_words(e.text, words) if e.text else ""
    return f"{who}{marks}: {body}" if e.kind != xpb.ENTRY_KIND_EVENT else f"[{who} {body}]"


def summarise(dropped: Sequence[xpb.TranscriptEntry], max_bytes: int, words: int = 12) -> str:
    """Extractive summary of dropped entries, newest kept first when the cap binds; '' for none.

    Each entry becomes a short gist (speaker, marks, its first `words` words); gists are joined
    oldest first. When they do not fit in `max_bytes` the oldest gists are left out (an ellipsis
    says so); when not even the header fits, the summary is just the count.
    """
    if not dropped:
        return ""
    first, last = dropped[0], dropped[-1]
    head = f"{len(dropped)} earlier entries (turns {first.start_turn}-{last.end_turn}) omitted"
    if len(head.encode()) > max_bytes:
        return f"{len(dropped)} omitted"[:max_bytes] if max_bytes > 0 else ""
    gists: list[str] = []
    used = len(head.encode()) + 2 + 4  # ": " and a possible "… | "
    for e in reversed(dropped):
        g = _gist(e, words)
        cost = len(g.encode()) + 3
        if used + cost > max_bytes:
            break
        gists.append(g)
        used += cost
    if not gists:
        return head
    gists.reverse()
    more = "… | " if len(gists) < len(dropped) else ""
    return f"{head}: {more}" + " | ".join(gists)


def fit_to_budget(pkg: xpb.ContextPackage, config: PackageConfig | None = None) -> xpb.ContextPackage:
    """Truncate `pkg` in place so that `pkg.ByteSize() <= budget_bytes`; returns it.

    The rule, in order (each step runs only while the package is still over budget):
      0. keep only the newest `max_observations` observations;
      1. drop the image (not the description) of the oldest observation that still has one,
         except the newest observation's image;
      2. drop the oldest transcript entry, whole, and fold it into `earlier_summary` (an
         extractive summary capped at min(summary_max_bytes, budget/8)); `dropped_entries` counts;
      3. drop the newest observation's image, then observations, oldest first;
      4. shorten the summary to a bare count, then to nothing.
    Never dropped or shortened: the task, ids, user state, tools, deadline, priority, origin turn,
    mode, metadata. A kept transcript entry is never cut: entries are kept or dropped whole, and
    the kept ones are always the newest. If the never-dropped parts alone exceed the budget,
    PackageTooLarge is raised (and `pkg` is left as it was).
    """
    src = xpb.ContextPackage()
    src.CopyFrom(pkg)
    rest = xpb.ContextPackage()
    rest.CopyFrom(pkg)
    for name in ("transcript", "observations", "earlier_summary", "dropped_entries"):
        rest.ClearField(name)
    out = _fit(rest, list(src.transcript), list(src.observations), config or PackageConfig(),
               src.earlier_summary, src.dropped_entries)
    pkg.CopyFrom(out)
    return pkg


def _fit(pkg: xpb.ContextPackage, entries: list[xpb.TranscriptEntry], observations: list[xpb.VisualObservation],
         cfg: PackageConfig, prior_summary: str = "", prior_dropped: int = 0) -> xpb.ContextPackage:
    """`fit_to_budget` on a package whose transcript/observations/summary are passed separately."""
    budget = cfg.budget_bytes
    base = pkg.ByteSize()
    if base > budget:
        raise PackageTooLarge("package_too_large",
                              f"the task and fixed fields need {base} bytes; the budget is {budget}")
    obs = sorted(observations, key=lambda o: (o.turn, o.time_ms))
    obs = obs[-cfg.max_observations:] if cfg.max_observations > 0 else []
    obs_sizes = [_ld(o.ByteSize()) for o in obs]
    sizes = [_ld(e.ByteSize()) for e in entries]
    cap = max(0, min(cfg.summary_max_bytes, budget // 8))

    def meta_size(k: int, summary: str) -> int:
        n = prior_dropped + k
        s = _ld(len(summary.encode())) if summary else 0
        return s + (1 + _varint_len(n) if n else 0)

    def summary_for(k: int) -> str:
        if k == 0:
            return _cut_utf8(prior_summary, cap)
        s = summarise(entries[:k], cap, cfg.summary_words)
        if prior_summary and len(s.encode()) + len(prior_summary.encode()) + 3 <= cap:
            s = f"{prior_summary} | {s}"
        return s

    kept_total = sum(sizes)
    summary = summary_for(0)

    def over(k: int) -> bool:
        return base + sum(obs_sizes) + kept_total + meta_size(k, summary) > budget

    def strip_image(i: int) -> None:  # copy on write: the caller's messages stay intact
        bare = xpb.VisualObservation()
        bare.CopyFrom(obs[i])
        bare.image, bare.mime_type = b"", ""
        obs[i], obs_sizes[i] = bare, _ld(bare.ByteSize())

    # step 1: images of all but the newest observation, oldest first
    for i in range(len(obs) - 1):
        if not over(0):
            break
        if obs[i].image:
            strip_image(i)
    # step 2: whole transcript entries, oldest first
    k = 0
    while k < len(entries) and over(k):
        kept_total -= sizes[k]
        k += 1
        summary = summary_for(k)
    # step 3: the newest image, then observations, oldest first
    if obs and obs[-1].image and over(k):
        strip_image(len(obs) - 1)
    while obs and over(k):
        obs.pop(0)
        obs_sizes.pop(0)
    # step 4: the summary itself
    if over(k):
        summary = f"{prior_dropped + k} earlier entries omitted"
        if over(k):
            summary = ""
    pkg.transcript.extend(entries[k:])
    pkg.observations.extend(obs)
    pkg.earlier_summary = summary
    pkg.dropped_entries = prior_dropped + k
    if pkg.ByteSize() > budget:  # the arithmetic above is exact; this guards a future proto change
        raise PackageTooLarge("package_too_large", f"{pkg.ByteSize()} bytes after truncation > {budget}")
    if k:
        log.debug("package_truncated", task_id=pkg.task_id, dropped_entries=k, size=pkg.ByteSize())
    return pkg


def _cut_utf8(text: str, max_bytes: int) -> str:
    raw = text.encode()
    return text if len(raw) <= max_bytes else raw[:max_bytes].decode("utf-8", "ignore")


# ---- the builder -------------------------------------------------------------------------------

def _entry(e: Any) -> xpb.TranscriptEntry:
    if isinstance(e, xpb.TranscriptEntry):
        return e
    if isinstance(e, TranscriptEntryModel):
        return e.to_proto()
    if isinstance(e, Mapping):
        return TranscriptEntryModel.model_validate(dict(e)).to_proto()
    raise PackageError("bad_transcript_entry", f"expected TranscriptEntry, model or mapping, got {type(e).__name__}")


def _observation(o: Any) -> xpb.VisualObservation:
    if isinstance(o, xpb.VisualObservation):
        return o
    if isinstance(o, VisualObservationModel):
        return o.to_proto()
    if isinstance(o, Mapping):
        return VisualObservationModel.model_validate(dict(o)).to_proto()
    raise PackageError("bad_observation", f"expected VisualObservation, model or mapping, got {type(o).__name__}")


def build_package(
    task: str,
    *,
    task_id: str | None = None,
    session_id: str = "",
    transcript: ConversationSource | Iterable[Any] = (),
    user_state: int | None = None,
    observations: Iterable[Any] | None = None,
    allowed_tools: Iterable[str] = (),
    deadline_ms: int = 30_000,
    priority: int = Priority.NORMAL,
    origin_turn: int = 0,
    created_unix_ms: int | None = None,
    preferred_mode: int = SurfacingMode.WHEN_IDLE,
    idempotent: bool = False,
    metadata: Mapping[str, str] | None = None,
    budget_bytes: int | None = None,
    config: PackageConfig | None = None,
) -> xpb.ContextPackage:
    """Assemble a ContextPackage from a session's state and fit it to the byte budget.

    `transcript` is a ConversationLog (then its observations, user state and session id are used
    unless given) or an iterable of TranscriptEntry protos / TranscriptEntryModel / dicts, oldest
    first. `task` must be non-empty. Returns the protobuf message, at most `budget_bytes` long.
    """
    if not isinstance(task, str) or not task.strip():
        raise PackageError("empty_task", "a delegation needs a non-empty task")
    if deadline_ms < 0:
        raise PackageError("bad_deadline", f"deadline_ms must be >= 0, got {deadline_ms}")
    cfg = config or PackageConfig()
    if budget_bytes is not None:
        cfg = PackageConfig(budget_bytes=budget_bytes, max_observations=cfg.max_observations,
                            summary_max_bytes=cfg.summary_max_bytes, summary_words=cfg.summary_words)
    if isinstance(transcript, ConversationSource):
        logbook = transcript
        entries = logbook.to_proto_entries()
        session_id = session_id or logbook.session_id
        if user_state is None:
            user_state = int(logbook.user_state)
        if observations is None:
            observations = logbook.observations()
    else:
        entries = [_entry(e) for e in transcript]
    pkg = xpb.ContextPackage(
        task_id=task_id or uuid.uuid4().hex[:16], session_id=session_id, task=task,
        user_state=int(user_state if user_state is not None else cpb.USER_STATE_SILENT),
        allowed_tools=list(allowed_tools), deadline_ms=int(deadline_ms), priority=int(priority),
        origin_turn=int(origin_turn),
        created_unix_ms=int(created_unix_ms if created_unix_ms is not None else time.time() * 1000),
        preferred_mode=int(preferred_mode), idempotent=bool(idempotent), metadata=dict(metadata or {}),
    )
    return _fit(pkg, entries, [_observation(o) for o in (observations or ())], cfg)
