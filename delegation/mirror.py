"""The pydantic mirror of `interplay.v1.ContextPackage`: enums, messages and the typed errors.

`ContextPackageModel.from_proto(pb).to_proto() == pb` for every valid package (and the reverse);
every model declares exactly its proto message's fields. An invalid value (an enum number the
mirror does not know, an int64 out of range) raises PackageError("invalid_package").
The builder that fills a package to its byte budget is delegation/package.py.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from interplay.v1 import context_pb2 as xpb

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
    confidence: float = 0.0

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


class OmittedModel(BaseModel):
    """What a package leaves out, counted (mirror of Omitted)."""

    model_config = _STRICT
    entries: int = Field(0, ge=0, le=UINT32_MAX)
    log_entries: int = Field(0, ge=0, le=UINT32_MAX)
    images: int = Field(0, ge=0, le=UINT32_MAX)
    observations: int = Field(0, ge=0, le=UINT32_MAX)
    start_ms: int = _I64
    end_ms: int = _I64
    start_turn: int = _I64
    end_turn: int = _I64

    def to_proto(self) -> xpb.Omitted:
        return xpb.Omitted(**_plain(self))

    @classmethod
    def from_proto(cls, pb: xpb.Omitted) -> OmittedModel:
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
    omitted: OmittedModel | None = None  # None: the field is unset (nothing was left out)

    def to_proto(self) -> xpb.ContextPackage:
        d = _plain(self)
        d["transcript"] = [e.to_proto() for e in self.transcript]
        d["observations"] = [o.to_proto() for o in self.observations]
        d["omitted"] = self.omitted.to_proto() if self.omitted is not None else None
        return xpb.ContextPackage(**d)

    @classmethod
    def from_proto(cls, pb: xpb.ContextPackage) -> ContextPackageModel:
        d = _fields(pb)
        d["transcript"] = [TranscriptEntryModel.from_proto(e) for e in pb.transcript]
        d["observations"] = [VisualObservationModel.from_proto(o) for o in pb.observations]
        d["allowed_tools"] = list(pb.allowed_tools)
        d["metadata"] = dict(pb.metadata)
        d["omitted"] = OmittedModel.from_proto(pb.omitted) if pb.HasField("omitted") else None
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
