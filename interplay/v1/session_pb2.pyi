from interplay.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FrameEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_ENCODING_UNSPECIFIED: _ClassVar[FrameEncoding]
    FRAME_ENCODING_JPEG: _ClassVar[FrameEncoding]
    FRAME_ENCODING_PNG: _ClassVar[FrameEncoding]
    FRAME_ENCODING_RAW_RGB: _ClassVar[FrameEncoding]

class ControlKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTROL_KIND_UNSPECIFIED: _ClassVar[ControlKind]
    CONTROL_KIND_START: _ClassVar[ControlKind]
    CONTROL_KIND_STOP: _ClassVar[ControlKind]
    CONTROL_KIND_BARGE_IN: _ClassVar[ControlKind]

class ControlToken(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTROL_TOKEN_UNSPECIFIED: _ClassVar[ControlToken]
    CONTROL_TOKEN_DELEGATE: _ClassVar[ControlToken]
    CONTROL_TOKEN_START_SPEAKING: _ClassVar[ControlToken]
    CONTROL_TOKEN_STOP_SPEAKING: _ClassVar[ControlToken]
    CONTROL_TOKEN_LISTEN: _ClassVar[ControlToken]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_SESSION_STARTED: _ClassVar[EventKind]
    EVENT_KIND_SESSION_ENDED: _ClassVar[EventKind]
    EVENT_KIND_DELEGATION_STARTED: _ClassVar[EventKind]
    EVENT_KIND_PROGRESS: _ClassVar[EventKind]
    EVENT_KIND_RESULT_SURFACED: _ClassVar[EventKind]
    EVENT_KIND_ERROR: _ClassVar[EventKind]
    EVENT_KIND_BARGE_IN: _ClassVar[EventKind]
    EVENT_KIND_TOOL_CALL: _ClassVar[EventKind]
    EVENT_KIND_OUTPUT_DROPPED: _ClassVar[EventKind]
    EVENT_KIND_USER_TRANSCRIPT: _ClassVar[EventKind]
    EVENT_KIND_SESSION_MOVED: _ClassVar[EventKind]

class EventUpdate(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_UPDATE_UNSPECIFIED: _ClassVar[EventUpdate]
    EVENT_UPDATE_ACCEPTED: _ClassVar[EventUpdate]
    EVENT_UPDATE_QUEUED: _ClassVar[EventUpdate]
    EVENT_UPDATE_PROGRESS: _ClassVar[EventUpdate]
    EVENT_UPDATE_TOOL_CALL: _ClassVar[EventUpdate]
    EVENT_UPDATE_TOOL_RESULT: _ClassVar[EventUpdate]
    EVENT_UPDATE_PARTIAL: _ClassVar[EventUpdate]
    EVENT_UPDATE_FINAL: _ClassVar[EventUpdate]
    EVENT_UPDATE_ERROR: _ClassVar[EventUpdate]
    EVENT_UPDATE_CANCELLED: _ClassVar[EventUpdate]
    EVENT_UPDATE_STEERED: _ClassVar[EventUpdate]
    EVENT_UPDATE_STEER_REFUSED: _ClassVar[EventUpdate]
FRAME_ENCODING_UNSPECIFIED: FrameEncoding
FRAME_ENCODING_JPEG: FrameEncoding
FRAME_ENCODING_PNG: FrameEncoding
FRAME_ENCODING_RAW_RGB: FrameEncoding
CONTROL_KIND_UNSPECIFIED: ControlKind
CONTROL_KIND_START: ControlKind
CONTROL_KIND_STOP: ControlKind
CONTROL_KIND_BARGE_IN: ControlKind
CONTROL_TOKEN_UNSPECIFIED: ControlToken
CONTROL_TOKEN_DELEGATE: ControlToken
CONTROL_TOKEN_START_SPEAKING: ControlToken
CONTROL_TOKEN_STOP_SPEAKING: ControlToken
CONTROL_TOKEN_LISTEN: ControlToken
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_SESSION_STARTED: EventKind
EVENT_KIND_SESSION_ENDED: EventKind
EVENT_KIND_DELEGATION_STARTED: EventKind
EVENT_KIND_PROGRESS: EventKind
EVENT_KIND_RESULT_SURFACED: EventKind
EVENT_KIND_ERROR: EventKind
EVENT_KIND_BARGE_IN: EventKind
EVENT_KIND_TOOL_CALL: EventKind
EVENT_KIND_OUTPUT_DROPPED: EventKind
EVENT_KIND_USER_TRANSCRIPT: EventKind
EVENT_KIND_SESSION_MOVED: EventKind
EVENT_UPDATE_UNSPECIFIED: EventUpdate
EVENT_UPDATE_ACCEPTED: EventUpdate
EVENT_UPDATE_QUEUED: EventUpdate
EVENT_UPDATE_PROGRESS: EventUpdate
EVENT_UPDATE_TOOL_CALL: EventUpdate
EVENT_UPDATE_TOOL_RESULT: EventUpdate
EVENT_UPDATE_PARTIAL: EventUpdate
EVENT_UPDATE_FINAL: EventUpdate
EVENT_UPDATE_ERROR: EventUpdate
EVENT_UPDATE_CANCELLED: EventUpdate
EVENT_UPDATE_STEERED: EventUpdate
EVENT_UPDATE_STEER_REFUSED: EventUpdate

class AudioChunk(_message.Message):
    __slots__ = ("pcm16", "sample_rate_hz", "channels")
    PCM16_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    pcm16: bytes
    sample_rate_hz: int
    channels: int
    def __init__(self, pcm16: _Optional[bytes] = ..., sample_rate_hz: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class VideoFrame(_message.Message):
    __slots__ = ("data", "encoding", "width", "height")
    DATA_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    encoding: FrameEncoding
    width: int
    height: int
    def __init__(self, data: _Optional[bytes] = ..., encoding: _Optional[_Union[FrameEncoding, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class TextInput(_message.Message):
    __slots__ = ("text", "raw", "encoding")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    text: str
    raw: bytes
    encoding: str
    def __init__(self, text: _Optional[str] = ..., raw: _Optional[bytes] = ..., encoding: _Optional[str] = ...) -> None: ...

class Control(_message.Message):
    __slots__ = ("kind",)
    KIND_FIELD_NUMBER: _ClassVar[int]
    kind: ControlKind
    def __init__(self, kind: _Optional[_Union[ControlKind, str]] = ...) -> None: ...

class InputChunk(_message.Message):
    __slots__ = ("session_id", "seq", "audio", "video", "text", "control")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    seq: int
    audio: AudioChunk
    video: VideoFrame
    text: TextInput
    control: Control
    def __init__(self, session_id: _Optional[str] = ..., seq: _Optional[int] = ..., audio: _Optional[_Union[AudioChunk, _Mapping]] = ..., video: _Optional[_Union[VideoFrame, _Mapping]] = ..., text: _Optional[_Union[TextInput, _Mapping]] = ..., control: _Optional[_Union[Control, _Mapping]] = ...) -> None: ...

class AudioOutput(_message.Message):
    __slots__ = ("pcm16", "sample_rate_hz", "mel", "n_mels")
    PCM16_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    MEL_FIELD_NUMBER: _ClassVar[int]
    N_MELS_FIELD_NUMBER: _ClassVar[int]
    pcm16: bytes
    sample_rate_hz: int
    mel: _containers.RepeatedScalarFieldContainer[float]
    n_mels: int
    def __init__(self, pcm16: _Optional[bytes] = ..., sample_rate_hz: _Optional[int] = ..., mel: _Optional[_Iterable[float]] = ..., n_mels: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("kind", "task_id", "text", "error", "mode", "attrs", "update", "voiced", "seq", "progress", "received_turn", "age_ms", "redelivery", "origin_turn", "policy", "tool_call", "turns", "dropped", "stage", "start_turn", "end_turn", "confidence", "low_confidence", "language")
    class AttrsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ATTRS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    VOICED_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_TURN_FIELD_NUMBER: _ClassVar[int]
    AGE_MS_FIELD_NUMBER: _ClassVar[int]
    REDELIVERY_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_TURN_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    START_TURN_FIELD_NUMBER: _ClassVar[int]
    END_TURN_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    kind: EventKind
    task_id: str
    text: str
    error: _common_pb2.ErrorInfo
    mode: _common_pb2.SurfacingMode
    attrs: _containers.ScalarMap[str, str]
    update: EventUpdate
    voiced: bool
    seq: int
    progress: float
    received_turn: int
    age_ms: int
    redelivery: int
    origin_turn: int
    policy: str
    tool_call: _common_pb2.ToolCall
    turns: int
    dropped: int
    stage: str
    start_turn: int
    end_turn: int
    confidence: float
    low_confidence: bool
    language: str
    def __init__(self, kind: _Optional[_Union[EventKind, str]] = ..., task_id: _Optional[str] = ..., text: _Optional[str] = ..., error: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ..., mode: _Optional[_Union[_common_pb2.SurfacingMode, str]] = ..., attrs: _Optional[_Mapping[str, str]] = ..., update: _Optional[_Union[EventUpdate, str]] = ..., voiced: _Optional[bool] = ..., seq: _Optional[int] = ..., progress: _Optional[float] = ..., received_turn: _Optional[int] = ..., age_ms: _Optional[int] = ..., redelivery: _Optional[int] = ..., origin_turn: _Optional[int] = ..., policy: _Optional[str] = ..., tool_call: _Optional[_Union[_common_pb2.ToolCall, _Mapping]] = ..., turns: _Optional[int] = ..., dropped: _Optional[int] = ..., stage: _Optional[str] = ..., start_turn: _Optional[int] = ..., end_turn: _Optional[int] = ..., confidence: _Optional[float] = ..., low_confidence: _Optional[bool] = ..., language: _Optional[str] = ...) -> None: ...

class TurnTiming(_message.Message):
    __slots__ = ("lateness_ms", "compute_ms", "missed")
    LATENESS_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    lateness_ms: float
    compute_ms: float
    missed: bool
    def __init__(self, lateness_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., missed: _Optional[bool] = ...) -> None: ...

class OutputChunk(_message.Message):
    __slots__ = ("session_id", "turn", "time_ms", "text", "audio", "controls", "events", "timing", "dropped_chunks", "model_state")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    DROPPED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    MODEL_STATE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    turn: int
    time_ms: int
    text: str
    audio: AudioOutput
    controls: _containers.RepeatedScalarFieldContainer[ControlToken]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    timing: TurnTiming
    dropped_chunks: int
    model_state: int
    def __init__(self, session_id: _Optional[str] = ..., turn: _Optional[int] = ..., time_ms: _Optional[int] = ..., text: _Optional[str] = ..., audio: _Optional[_Union[AudioOutput, _Mapping]] = ..., controls: _Optional[_Iterable[_Union[ControlToken, str]]] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., timing: _Optional[_Union[TurnTiming, _Mapping]] = ..., dropped_chunks: _Optional[int] = ..., model_state: _Optional[int] = ...) -> None: ...
