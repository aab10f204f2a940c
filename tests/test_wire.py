"""The wire contract: every message round-trips, enums follow proto3 conventions, and the
committed generated code matches the .proto sources."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["common_pb2", "context_pb2", "background_pb2", "session_pb2"]


def _all_messages():
    for mod_name in MODULES:
        mod = importlib.import_module(f"interplay.v1.{mod_name}")
        for name in mod.DESCRIPTOR.message_types_by_name:
            yield f"{mod_name}.{name}", getattr(mod, name)


def _fill(msg, depth: int = 0) -> None:
    """Set every field of msg to a non-default value (recursively, bounded depth)."""
    for f in msg.DESCRIPTOR.fields:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            key_f, val_f = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            getattr(msg, f.name)[_scalar(key_f, 1)] = _scalar(val_f, 2)
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            if depth > 3:
                continue
            if f.is_repeated:
                _fill(getattr(msg, f.name).add(), depth + 1)
            else:
                _fill(getattr(msg, f.name), depth + 1)
        elif f.is_repeated:
            getattr(msg, f.name).extend([_scalar(f, 1), _scalar(f, 2)])
        else:
            if f.containing_oneof is not None and msg.WhichOneof(f.containing_oneof.name):
                continue
            setattr(msg, f.name, _scalar(f, 3))


def _scalar(f, k: int):
    t = f.type
    if t == FieldDescriptor.TYPE_STRING:
        return f"{f.name}-{k}-ü"
    if t == FieldDescriptor.TYPE_BYTES:
        return bytes([k, 0, 255, k])
    if t == FieldDescriptor.TYPE_BOOL:
        return True
    if t == FieldDescriptor.TYPE_ENUM:
        return f.enum_type.values[-1].number
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return 0.5 * k
    return 7 * k


@pytest.mark.parametrize("name,cls", list(_all_messages()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_message_round_trips_with_every_field_set(name, cls):
    msg = cls()
    _fill(msg)
    data = msg.SerializeToString()
    back = cls.FromString(data)
    assert back == msg
    for f in cls.DESCRIPTOR.fields:  # "every field set": a field left at its default would round-trip unseen
        if f.containing_oneof is not None:
            continue  # one member of each oneof is set (test_every_oneof_payload_... covers each)
        if f.is_repeated:  # lists and maps
            assert len(getattr(back, f.name)) > 0, f"{name}.{f.name} is empty"
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            assert back.HasField(f.name), f"{name}.{f.name} lost"
        else:
            assert getattr(back, f.name) != f.default_value, f"{name}.{f.name} is at its default"
    oneofs = {f.containing_oneof.name for f in cls.DESCRIPTOR.fields if f.containing_oneof is not None}
    assert all(back.WhichOneof(o) for o in oneofs), name


def test_every_oneof_payload_of_an_input_chunk_round_trips():
    from interplay.v1 import session_pb2 as s

    for payload in ("audio", "video", "text", "control"):
        chunk = s.InputChunk(session_id="abc", seq=3)
        _fill(getattr(chunk, payload))
        back = s.InputChunk.FromString(chunk.SerializeToString())
        assert back.WhichOneof("payload") == payload
        assert back == chunk


def test_every_enum_has_an_unspecified_zero():
    for mod_name in MODULES:
        mod = importlib.import_module(f"interplay.v1.{mod_name}")
        for enum_name, enum in mod.DESCRIPTOR.enum_types_by_name.items():
            zero = enum.values_by_number[0]
            assert zero.name.endswith("_UNSPECIFIED"), f"{enum_name} zero is {zero.name}"


def test_services_expose_the_rpcs_the_design_names():
    from interplay.v1 import background_pb2, session_pb2

    bg = background_pb2.DESCRIPTOR.services_by_name["Background"]
    assert set(bg.methods_by_name) == {"Delegate", "Steer", "Cancel"}
    assert bg.methods_by_name["Delegate"].server_streaming
    conv = session_pb2.DESCRIPTOR.services_by_name["Session"].methods_by_name["Converse"]
    assert conv.client_streaming and conv.server_streaming


def test_committed_generated_code_is_not_stale(tmp_path):
    sys.path.insert(0, str(ROOT / "proto"))
    try:
        from generate import generate
    finally:
        sys.path.pop(0)
    fresh = generate(tmp_path)
    assert fresh, "protoc produced nothing"
    committed = ROOT / "interplay" / "v1"
    for path in fresh:
        mine = committed / path.name
        assert mine.exists(), f"{path.name} is not committed; run `make proto`"
        assert mine.read_bytes() == path.read_bytes(), f"{path.name} is stale; run `make proto`"
    extra = {p.name for p in committed.glob("*_pb2*.py*")} - {p.name for p in fresh}
    assert not extra, f"generated files without a .proto source: {extra}"
