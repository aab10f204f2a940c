from interplay.v1 import common_pb2 as _common_pb2
from interplay.v1 import context_pb2 as _context_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UpdateKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UPDATE_KIND_UNSPECIFIED: _ClassVar[UpdateKind]
    UPDATE_KIND_ACCEPTED: _ClassVar[UpdateKind]
    UPDATE_KIND_QUEUED: _ClassVar[UpdateKind]
    UPDATE_KIND_PROGRESS: _ClassVar[UpdateKind]
    UPDATE_KIND_TOOL_CALL: _ClassVar[UpdateKind]
    UPDATE_KIND_TOOL_RESULT: _ClassVar[UpdateKind]
    UPDATE_KIND_PARTIAL: _ClassVar[UpdateKind]
    UPDATE_KIND_FINAL: _ClassVar[UpdateKind]
    UPDATE_KIND_ERROR: _ClassVar[UpdateKind]
    UPDATE_KIND_CANCELLED: _ClassVar[UpdateKind]
    UPDATE_KIND_STEERED: _ClassVar[UpdateKind]
UPDATE_KIND_UNSPECIFIED: UpdateKind
UPDATE_KIND_ACCEPTED: UpdateKind
UPDATE_KIND_QUEUED: UpdateKind
UPDATE_KIND_PROGRESS: UpdateKind
UPDATE_KIND_TOOL_CALL: UpdateKind
UPDATE_KIND_TOOL_RESULT: UpdateKind
UPDATE_KIND_PARTIAL: UpdateKind
UPDATE_KIND_FINAL: UpdateKind
UPDATE_KIND_ERROR: UpdateKind
UPDATE_KIND_CANCELLED: UpdateKind
UPDATE_KIND_STEERED: UpdateKind

class Update(_message.Message):
    __slots__ = ("task_id", "seq", "kind", "text", "tool_call", "tool_result", "error", "surfacing", "created_unix_ms", "ttl_ms", "progress", "step")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SURFACING_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    seq: int
    kind: UpdateKind
    text: str
    tool_call: _common_pb2.ToolCall
    tool_result: _common_pb2.ToolResult
    error: _common_pb2.ErrorInfo
    surfacing: _common_pb2.SurfacingMode
    created_unix_ms: int
    ttl_ms: int
    progress: float
    step: int
    def __init__(self, task_id: _Optional[str] = ..., seq: _Optional[int] = ..., kind: _Optional[_Union[UpdateKind, str]] = ..., text: _Optional[str] = ..., tool_call: _Optional[_Union[_common_pb2.ToolCall, _Mapping]] = ..., tool_result: _Optional[_Union[_common_pb2.ToolResult, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ..., surfacing: _Optional[_Union[_common_pb2.SurfacingMode, str]] = ..., created_unix_ms: _Optional[int] = ..., ttl_ms: _Optional[int] = ..., progress: _Optional[float] = ..., step: _Optional[int] = ...) -> None: ...

class SteerRequest(_message.Message):
    __slots__ = ("task_id", "text")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    text: str
    def __init__(self, task_id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class SteerResponse(_message.Message):
    __slots__ = ("accepted", "reason")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("task_id", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("cancelled", "reason")
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    reason: str
    def __init__(self, cancelled: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...
