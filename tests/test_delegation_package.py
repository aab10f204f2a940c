"""The context package: lossless protobuf <-> pydantic mirror, and the budgeted builder's truncation rule."""

from __future__ import annotations

import random

import pytest

from delegation import (
    ContextPackageModel,
    ConversationLog,
    EntryKind,
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
)
from interplay.v1 import common_pb2 as cpb
from interplay.v1 import context_pb2 as xpb


def _full_package() -> xpb.ContextPackage:
    """A package with every field (and every field of every sub-message) set to a non-default value."""
    entry = xpb.TranscriptEntry(speaker=xpb.SPEAKER_ASSISTANT, kind=xpb.ENTRY_KIND_UTTERANCE, text="héllo ✓",
                                start_ms=-5, end_ms=2**62, start_turn=3, end_turn=4, overlapped=True,
                                interrupted=True, typed=True)
    obs = xpb.VisualObservation(turn=7, time_ms=1400, description="a red mug", image=b"\xff\xd8\x00\x80\xfe",
                                mime_type="image/jpeg")
    return xpb.ContextPackage(
        task_id="t1", session_id="s1", task="look up the weather", transcript=[entry, entry],
        earlier_summary="2 earlier entries omitted", dropped_entries=2**32 - 1, user_state=cpb.USER_STATE_INTERRUPTED,
        observations=[obs], allowed_tools=["calculator", "clock"], deadline_ms=30_000, priority=cpb.PRIORITY_HIGH,
        origin_turn=12, created_unix_ms=1_700_000_000_123, preferred_mode=cpb.SURFACING_MODE_INTERRUPT,
        idempotent=True, metadata={"policy": "rule", "k": "v"})


def _all_set(msg) -> bool:
    for f in msg.DESCRIPTOR.fields:
        v = getattr(msg, f.name)
        if f.message_type is not None and not f.message_type.GetOptions().map_entry:
            if not len(v) or not all(_all_set(x) for x in v):
                return False
        elif not (len(v) if f.is_repeated or f.message_type is not None else v != f.default_value):
            return False
    return True


def _log(n_turns: int = 600, seed: int = 0) -> ConversationLog:
    rng = random.Random(seed)
    lg = ConversationLog("s")
    who = "user"
    for t in range(n_turns):
        if rng.random() < 0.15:
            who = rng.choice(["user", "assistant", "none"])
        lg.record_turn(t, user_text=f"u{t}" if who == "user" else "",
                       assistant_text=f"a{t}" if who == "assistant" else "")
    return lg


def test_package_round_trips_protobuf_to_pydantic_and_back_with_every_field_set():
    pb = _full_package()
    assert _all_set(pb)
    assert ContextPackageModel.from_proto(pb).to_proto() == pb


def test_package_round_trips_pydantic_to_protobuf_and_json_and_back():
    m = ContextPackageModel.from_proto(_full_package())
    assert ContextPackageModel.from_proto(m.to_proto()) == m
    assert ContextPackageModel.model_validate_json(m.model_dump_json()) == m


def test_pydantic_mirrors_declare_exactly_the_proto_fields():
    for model, pb in ((ContextPackageModel, xpb.ContextPackage), (TranscriptEntryModel, xpb.TranscriptEntry),
                      (VisualObservationModel, xpb.VisualObservation)):
        assert set(model.model_fields) == {f.name for f in pb.DESCRIPTOR.fields}


def test_enum_mirrors_carry_the_proto_values():
    pairs = ((Speaker, xpb.Speaker, "SPEAKER_"), (EntryKind, xpb.EntryKind, "ENTRY_KIND_"),
             (UserState, cpb.UserState, "USER_STATE_"), (Priority, cpb.Priority, "PRIORITY_"),
             (SurfacingMode, cpb.SurfacingMode, "SURFACING_MODE_"))
    for py, pb, prefix in pairs:
        assert {m.name: m.value for m in py} == {k.removeprefix(prefix): v for k, v in pb.items()}


def test_an_unknown_enum_number_in_a_proto_gives_a_typed_error():
    pb = _full_package()
    pb.user_state = 99  # proto3 enums are open: the wire can carry it
    with pytest.raises(PackageError, match="user_state"):
        ContextPackageModel.from_proto(pb)


def test_truncation_keeps_the_task_and_the_newest_entries_under_budget():
    lg = _log()
    full = lg.to_proto_entries()
    pkg = build_package("find the cheapest flight to Rome", transcript=lg, budget_bytes=2048)
    assert pkg.ByteSize() <= 2048
    assert pkg.task == "find the cheapest flight to Rome"
    kept = list(pkg.transcript)
    assert 0 < len(kept) < len(full)
    assert kept == full[-len(kept):]
    assert pkg.dropped_entries == len(full) - len(kept)
    assert pkg.earlier_summary


def test_truncation_never_splits_a_message():
    rng = random.Random(3)
    for trial in range(40):
        entries = [xpb.TranscriptEntry(speaker=xpb.SPEAKER_USER, kind=xpb.ENTRY_KIND_UTTERANCE,
                                       text=" ".join("wörd" for _ in range(rng.randint(1, 80))), start_turn=i)
                   for i in range(rng.randint(1, 60))]
        budget = rng.randint(600, 8000)
        pkg = build_package("task", transcript=entries, budget_bytes=budget, task_id=f"t{trial}")
        assert pkg.ByteSize() <= budget
        by_turn = {e.start_turn: e for e in entries}
        assert all(e == by_turn[e.start_turn] for e in pkg.transcript)


def test_a_package_within_budget_is_left_whole():
    lg = _log(40)
    pkg = build_package("task", transcript=lg, budget_bytes=16_384)
    assert list(pkg.transcript) == lg.to_proto_entries()
    assert (pkg.dropped_entries, pkg.earlier_summary) == (0, "")


def test_observation_images_are_dropped_before_any_transcript_entry():
    lg = _log(60)
    lg.observe("a desk", 10, image=b"\x01" * 3000, mime_type="image/png")
    lg.observe("a cup", 20, image=b"\x02" * 3000, mime_type="image/png")
    size_without_images = build_package("t", task_id="x", transcript=lg, created_unix_ms=1,
                                        observations=[VisualObservationModel(turn=10, description="a desk"),
                                                      VisualObservationModel(turn=20, description="a cup")]).ByteSize()
    pkg = build_package("t", task_id="x", transcript=lg, created_unix_ms=1, budget_bytes=size_without_images + 3100)
    assert pkg.dropped_entries == 0
    assert [bool(o.image) for o in pkg.observations] == [False, True]


def test_the_newest_image_outlasts_the_oldest_transcript_entries():
    lg = _log(600)
    lg.observe("old", 10, image=b"\x01" * 2000, mime_type="image/png")
    lg.observe("new", 590, image=b"\x02" * 2000, mime_type="image/png")
    pkg = build_package("t", transcript=lg, budget_bytes=4096)
    assert pkg.dropped_entries > 0
    assert [(o.description, bool(o.image)) for o in pkg.observations] == [("old", False), ("new", True)]


def test_a_task_larger_than_the_budget_raises_package_too_large():
    with pytest.raises(PackageTooLarge):
        build_package("x" * 5000, budget_bytes=1024)


def test_an_empty_task_is_refused_with_a_typed_error():
    with pytest.raises(PackageError, match="empty_task"):
        build_package("   ")


def test_build_package_accepts_the_keywords_the_interaction_delegator_passes():
    entries = [xpb.TranscriptEntry(speaker=xpb.SPEAKER_USER, kind=xpb.ENTRY_KIND_UTTERANCE, text="hi")]
    pkg = build_package(task_id="abc", session_id="s", task="weather?", transcript=entries,
                        user_state=cpb.USER_STATE_SILENT, allowed_tools=["clock"], deadline_ms=5000, origin_turn=9)
    assert (pkg.task_id, pkg.origin_turn, list(pkg.allowed_tools), len(pkg.transcript)) == ("abc", 9, ["clock"], 1)


def test_the_summary_never_exceeds_its_cap():
    pkg = build_package("t", transcript=_log(2000, seed=5), config=PackageConfig(budget_bytes=4096,
                                                                                  summary_max_bytes=300))
    assert 0 < len(pkg.earlier_summary.encode()) <= 300
