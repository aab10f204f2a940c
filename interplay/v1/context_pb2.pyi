from interplay.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Speaker(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPEAKER_UNSPECIFIED: _ClassVar[Speaker]
    SPEAKER_USER: _ClassVar[Speaker]
    SPEAKER_ASSISTANT: _ClassVar[Speaker]
    SPEAKER_BACKGROUND: _ClassVar[Speaker]
    SPEAKER_SYSTEM: _ClassVar[Speaker]

class EntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_KIND_UNSPECIFIED: _ClassVar[EntryKind]
    ENTRY_KIND_UTTERANCE: _ClassVar[EntryKind]
    ENTRY_KIND_SILENCE: _ClassVar[EntryKind]
    ENTRY_KIND_EVENT: _ClassVar[EntryKind]
SPEAKER_UNSPECIFIED: Speaker
SPEAKER_USER: Speaker
SPEAKER_ASSISTANT: Speaker
SPEAKER_BACKGROUND: Speaker
SPEAKER_SYSTEM: Speaker
ENTRY_KIND_UNSPECIFIED: EntryKind
ENTRY_KIND_UTTERANCE: EntryKind
ENTRY_KIND_SILENCE: EntryKind
ENTRY_KIND_EVENT: EntryKind

class TranscriptEntry(_message.Message):
    __slots__ = ("speaker", "kind", "text", "start_ms", "end_ms", "start_turn", "end_turn", "overlapped", "interrupted", "typed", "confidence")
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    START_TURN_FIELD_NUMBER: _ClassVar[int]
    END_TURN_FIELD_NUMBER: _ClassVar[int]
    OVERLAPPED_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    TYPED_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    speaker: Speaker
    kind: EntryKind
    text: str
    start_ms: int
    end_ms: int
    start_turn: int
    end_turn: int
    overlapped: bool
    interrupted: bool
    typed: bool
    confidence: float
    def __init__(self, speaker: _Optional[_Union[Speaker, str]] = ..., kind: _Optional[_Union[EntryKind, str]] = ..., text: _Optional[str] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., start_turn: _Optional[int] = ..., end_turn: _Optional[int] = ..., overlapped: _Optional[bool] = ..., interrupted: _Optional[bool] = ..., typed: _Optional[bool] = ..., confidence: _Optional[float] = ...) -> None: ...

class VisualObservation(_message.Message):
    __slots__ = ("turn", "time_ms", "description", "image", "mime_type")
    TURN_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    turn: int
    time_ms: int
    description: str
    image: bytes
    mime_type: str
    def __init__(self, turn: _Optional[int] = ..., time_ms: _Optional[int] = ..., description: _Optional[str] = ..., image: _Optional[bytes] = ..., mime_type: _Optional[str] = ...) -> None: ...

class ContextPackage(_message.Message):
    __slots__ = ("task_id", "session_id", "task", "transcript", "earlier_summary", "dropped_entries", "user_state", "observations", "allowed_tools", "deadline_ms", "priority", "origin_turn", "created_unix_ms", "preferred_mode", "idempotent", "metadata", "omitted")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    EARLIER_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    DROPPED_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    USER_STATE_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_TOOLS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_TURN_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_MODE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    OMITTED_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    session_id: str
    task: str
    transcript: _containers.RepeatedCompositeFieldContainer[TranscriptEntry]
    earlier_summary: str
    dropped_entries: int
    user_state: _common_pb2.UserState
    observations: _containers.RepeatedCompositeFieldContainer[VisualObservation]
    allowed_tools: _containers.RepeatedScalarFieldContainer[str]
    deadline_ms: int
    priority: _common_pb2.Priority
    origin_turn: int
    created_unix_ms: int
    preferred_mode: _common_pb2.SurfacingMode
    idempotent: bool
    metadata: _containers.ScalarMap[str, str]
    omitted: Omitted
    def __init__(self, task_id: _Optional[str] = ..., session_id: _Optional[str] = ..., task: _Optional[str] = ..., transcript: _Optional[_Iterable[_Union[TranscriptEntry, _Mapping]]] = ..., earlier_summary: _Optional[str] = ..., dropped_entries: _Optional[int] = ..., user_state: _Optional[_Union[_common_pb2.UserState, str]] = ..., observations: _Optional[_Iterable[_Union[VisualObservation, _Mapping]]] = ..., allowed_tools: _Optional[_Iterable[str]] = ..., deadline_ms: _Optional[int] = ..., priority: _Optional[_Union[_common_pb2.Priority, str]] = ..., origin_turn: _Optional[int] = ..., created_unix_ms: _Optional[int] = ..., preferred_mode: _Optional[_Union[_common_pb2.SurfacingMode, str]] = ..., idempotent: _Optional[bool] = ..., metadata: _Optional[_Mapping[str, str]] = ..., omitted: _Optional[_Union[Omitted, _Mapping]] = ...) -> None: ...

class Omitted(_message.Message):
    __slots__ = ("entries", "log_entries", "images", "observations", "start_ms", "end_ms", "start_turn", "end_turn")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LOG_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    START_TURN_FIELD_NUMBER: _ClassVar[int]
    END_TURN_FIELD_NUMBER: _ClassVar[int]
    entries: int
    log_entries: int
    images: int
    observations: int
    start_ms: int
    end_ms: int
    start_turn: int
    end_turn: int
    def __init__(self, entries: _Optional[int] = ..., log_entries: _Optional[int] = ..., images: _Optional[int] = ..., observations: _Optional[int] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., start_turn: _Optional[int] = ..., end_turn: _Optional[int] = ...) -> None: ...
