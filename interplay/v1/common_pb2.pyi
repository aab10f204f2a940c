from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class SurfacingMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SURFACING_MODE_UNSPECIFIED: _ClassVar[SurfacingMode]
    SURFACING_MODE_INTERRUPT: _ClassVar[SurfacingMode]
    SURFACING_MODE_WHEN_IDLE: _ClassVar[SurfacingMode]
    SURFACING_MODE_SILENT: _ClassVar[SurfacingMode]

class UserState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USER_STATE_UNSPECIFIED: _ClassVar[UserState]
    USER_STATE_SPEAKING: _ClassVar[UserState]
    USER_STATE_SILENT: _ClassVar[UserState]
    USER_STATE_INTERRUPTED: _ClassVar[UserState]

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]
    PRIORITY_NORMAL: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
SURFACING_MODE_UNSPECIFIED: SurfacingMode
SURFACING_MODE_INTERRUPT: SurfacingMode
SURFACING_MODE_WHEN_IDLE: SurfacingMode
SURFACING_MODE_SILENT: SurfacingMode
USER_STATE_UNSPECIFIED: UserState
USER_STATE_SPEAKING: UserState
USER_STATE_SILENT: UserState
USER_STATE_INTERRUPTED: UserState
PRIORITY_UNSPECIFIED: Priority
PRIORITY_LOW: Priority
PRIORITY_NORMAL: Priority
PRIORITY_HIGH: Priority

class ErrorInfo(_message.Message):
    __slots__ = ("code", "message", "retryable")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    retryable: bool
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("call_id", "name", "arguments_json")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    name: str
    arguments_json: str
    def __init__(self, call_id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("call_id", "name", "content", "ok", "truncated", "duration_ms")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    name: str
    content: str
    ok: bool
    truncated: bool
    duration_ms: float
    def __init__(self, call_id: _Optional[str] = ..., name: _Optional[str] = ..., content: _Optional[str] = ..., ok: _Optional[bool] = ..., truncated: _Optional[bool] = ..., duration_ms: _Optional[float] = ...) -> None: ...
