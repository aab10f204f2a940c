"""The context package: lossless protobuf <-> pydantic mirror, and the budgeted builder's truncation rule."""

from __future__ import annotations

import random
import time

import pytest

from delegation import (
    ContextPackageModel,
    ConversationLog,
    Digest,
    DigestConfig,
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
from interplay.v1 import common_pb2 as cpb
from interplay.v1 import context_pb2 as xpb


def _full_package() -> xpb.ContextPackage:
    """A package with every field (and every field of every sub-message) set to a non-default value."""
    entry = xpb.TranscriptEntry(speaker=xpb.SPEAKER_ASSISTANT, kind=xpb.ENTRY_KIND_UTTERANCE, text="héllo ✓",
                                start_ms=-5, end_ms=2**62, start_turn=3, end_turn=4, overlapped=True,
                                interrupted=True, typed=True, confidence=0.75)
    obs = xpb.VisualObservation(turn=7, time_ms=1400, description="a red mug", image=b"\xff\xd8\x00\x80\xfe",
                                mime_type="image/jpeg")
    return xpb.ContextPackage(
        task_id="t1", session_id="s1", task="look up the weather", transcript=[entry, entry],
        earlier_summary="2 earlier entries omitted", dropped_entries=2**32 - 1, user_state=cpb.USER_STATE_INTERRUPTED,
        observations=[obs], allowed_tools=["calculator", "clock"], deadline_ms=30_000, priority=cpb.PRIORITY_HIGH,
        origin_turn=12, created_unix_ms=1_700_000_000_123, preferred_mode=cpb.SURFACING_MODE_INTERRUPT,
        idempotent=True, metadata={"policy": "rule", "k": "v"},
        omitted=xpb.Omitted(entries=2**32 - 1, log_entries=7, images=2, observations=1, start_ms=-1, end_ms=9,
                            start_turn=1, end_turn=2))


def _all_set(msg) -> bool:
    for f in msg.DESCRIPTOR.fields:
        v = getattr(msg, f.name)
        if f.message_type is not None and not f.message_type.GetOptions().map_entry:
            if not f.is_repeated:
                if not msg.HasField(f.name) or not _all_set(v):
                    return False
            elif not len(v) or not all(_all_set(x) for x in v):
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
                      (VisualObservationModel, xpb.VisualObservation), (OmittedModel, xpb.Omitted)):
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


def test_the_newest_image_is_dropped_before_the_oldest_transcript_entry():
    lg = _log(600)
    lg.observe("old", 10, image=b"\x01" * 2000, mime_type="image/png")
    lg.observe("new", 590, image=b"\x02" * 2000, mime_type="image/png")
    text_only = build_package("t", task_id="x", transcript=lg, created_unix_ms=1,
                              observations=[VisualObservationModel(turn=10, description="old"),
                                            VisualObservationModel(turn=590, description="new")])
    pkg = build_package("t", task_id="x", transcript=lg, created_unix_ms=1, budget_bytes=text_only.ByteSize() + 200)
    assert (pkg.dropped_entries, pkg.omitted.images) == (0, 2)
    assert [(o.description, bool(o.image)) for o in pkg.observations] == [("old", False), ("new", False)]


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


# ---- what goes first, what always stays, and the account of what went ----------------------------

def _entries(n: int, seed: int = 0, words: int = 8) -> list[xpb.TranscriptEntry]:
    """`n` alternating utterances of `words` words, 1 s each (seeded)."""
    rng = random.Random(seed)
    vocab = ["table", "river", "tonight", "four", "booked", "menu", "rain", "later", "fish", "window"]
    return [xpb.TranscriptEntry(speaker=xpb.SPEAKER_USER if i % 2 == 0 else xpb.SPEAKER_ASSISTANT,
                                kind=xpb.ENTRY_KIND_UTTERANCE, text=f"e{i} " + " ".join(rng.choices(vocab, k=words)),
                                start_ms=i * 1000, end_ms=i * 1000 + 900, start_turn=i * 5, end_turn=i * 5 + 4)
            for i in range(n)]


def _image(turn: int, size: int, desc: str = "") -> xpb.VisualObservation:
    return xpb.VisualObservation(turn=turn, time_ms=turn * 200, description=desc or f"frame {turn}",
                                 image=bytes([turn % 256]) * size, mime_type="image/jpeg")


def test_an_image_is_dropped_before_any_conversation_entry():
    entries = _entries(100)
    text_only = build_package("t", task_id="x", created_unix_ms=1, transcript=entries,
                              observations=[xpb.VisualObservation(turn=499, time_ms=99_800, description="frame 499")])
    pkg = build_package("t", task_id="x", created_unix_ms=1, transcript=entries, observations=[_image(499, 6000)],
                        budget_bytes=text_only.ByteSize() + 200)
    assert (len(pkg.transcript), pkg.dropped_entries) == (100, 0)
    assert [(o.description, o.image) for o in pkg.observations] == [("frame 499", b"")]


def test_no_image_is_kept_while_any_conversation_entry_is_dropped():
    rng = random.Random(11)  # seed 11: budgets and image sizes
    for trial in range(60):
        entries = _entries(rng.randint(5, 400), seed=trial)
        obs = [_image(t, rng.randint(100, 12_000)) for t in sorted(rng.sample(range(2000), rng.randint(1, 6)))]
        pkg = build_package("find a table", transcript=entries, observations=obs, budget_bytes=rng.randint(1500, 40_000))
        if pkg.dropped_entries:
            assert not any(o.image for o in pkg.observations), trial


def test_a_conversation_of_1250_entries_with_a_large_newest_image_keeps_its_newest_entries():
    entries = _entries(1250)
    pkg = build_package("find a table", transcript=entries, observations=[_image(6249, 15_000)])
    assert len(pkg.transcript) > 100
    assert list(pkg.transcript) == entries[-len(pkg.transcript):]
    assert not any(o.image for o in pkg.observations)


def test_older_observations_are_dropped_before_any_conversation_entry():
    entries = _entries(60)
    descs = [xpb.VisualObservation(turn=t, time_ms=t * 200, description="x" * 300) for t in (10, 20, 30)]
    full = build_package("t", task_id="x", created_unix_ms=1, transcript=entries, observations=descs)
    pkg = build_package("t", task_id="x", created_unix_ms=1, transcript=entries, observations=descs,
                        budget_bytes=full.ByteSize() - 400)
    assert pkg.dropped_entries == 0
    assert [o.turn for o in pkg.observations] == [30]
    assert pkg.omitted.observations == 2


def test_the_newest_entries_stay_when_the_budget_leaves_room_for_little_else():
    entries = _entries(50, words=40)
    obs = [xpb.VisualObservation(turn=300, time_ms=60_000, description="y" * 200)]
    cfg = PackageConfig(budget_bytes=1400, keep_entries=4)
    pkg = build_package("find a table", transcript=entries, observations=obs, config=cfg)
    assert pkg.ByteSize() <= 1400
    assert list(pkg.transcript) == entries[-4:]
    assert pkg.task == "find a table"


def test_the_summary_counts_the_dropped_entries_and_images_and_their_span():
    entries = _entries(600)
    pkg = build_package("t", transcript=entries, observations=[_image(10, 2000), _image(20, 2000)], budget_bytes=8192)
    k = pkg.dropped_entries
    assert 0 < k < 600 and len(pkg.transcript) == 600 - k
    o = pkg.omitted
    assert (o.entries, o.log_entries, o.images, o.observations) == (k, 0, 2, 1)  # the older frame went whole
    assert (o.start_ms, o.end_ms, o.start_turn, o.end_turn) == (0, (k - 1) * 1000 + 900, 0, (k - 1) * 5 + 4)
    assert pkg.earlier_summary.startswith(f"Left out: {k} earlier entries, 0:00-")
    assert "2 images; 1 observation." in pkg.earlier_summary


def test_the_summary_is_labelled_an_extractive_digest_and_quotes_the_newest_dropped_entry():
    entries = _entries(600)
    pkg = build_package("t", transcript=entries, budget_bytes=8192)
    newest_dropped = entries[pkg.dropped_entries - 1].text.split()
    assert "Extractive digest" in pkg.earlier_summary and "no model" in pkg.earlier_summary
    assert " ".join(newest_dropped[:6]) in pkg.earlier_summary
    assert entries[0].text.split()[0] + " " in pkg.earlier_summary  # the opening is quoted too


def test_a_fitted_package_never_exceeds_its_budget_and_keeps_a_newest_suffix():
    rng = random.Random(5)  # seed 5: sizes, budgets, observations
    for trial in range(80):
        entries = _entries(rng.randint(0, 300), seed=trial, words=rng.randint(1, 60))
        obs = [_image(t, rng.choice([0, 500, 5000])) for t in sorted(rng.sample(range(3000), rng.randint(0, 7)))]
        budget = rng.randint(300, 20_000)
        cfg = PackageConfig(budget_bytes=budget, summary_max_bytes=rng.choice([0, 100, 1024]),
                            max_observations=rng.randint(0, 5))
        pkg = build_package("task " * rng.randint(1, 20), transcript=entries, observations=obs, config=cfg)
        assert pkg.ByteSize() <= budget, trial
        kept = list(pkg.transcript)
        assert kept == entries[len(entries) - len(kept):], trial
        assert len(pkg.earlier_summary.encode()) <= min(cfg.summary_max_bytes, budget // 8), trial


def test_fit_to_budget_carries_over_what_a_package_already_left_out():
    pkg = build_package("t", transcript=_entries(300), budget_bytes=8192)
    first = pkg.dropped_entries
    fit_to_budget(pkg, PackageConfig(budget_bytes=4096))
    assert pkg.ByteSize() <= 4096
    assert pkg.dropped_entries == pkg.omitted.entries == 300 - len(pkg.transcript) > first


def _build_ms(entries: list[xpb.TranscriptEntry], reps: int = 5) -> float:
    best = float("inf")
    for i in range(reps):
        t0 = time.perf_counter()
        build_package("find a table", task_id=f"t{i}", transcript=entries, observations=[_image(1, 3000)])
        best = min(best, time.perf_counter() - t0)
    return best


def test_a_package_build_of_12k_entries_takes_linear_time():
    small, large = _entries(3_000), _entries(12_000)
    t_small, t_large = _build_ms(small), _build_ms(large)
    assert t_large < 8 * t_small + 0.005, (t_small, t_large)  # 4x the entries; a quadratic build is 16x
    assert t_large < 0.5  # generous: the quadratic builder took 1.2-2.2 s here


def test_a_package_build_of_50k_entries_takes_linear_time():
    t_small, t_large = _build_ms(_entries(12_500), 3), _build_ms(_entries(50_000), 3)
    assert t_large < 8 * t_small + 0.005, (t_small, t_large)


def test_the_digest_text_never_exceeds_the_cap_it_is_rendered_into():
    d = Digest(DigestConfig(head_bytes=200, tail_bytes=600))
    for e in _entries(300, seed=9, words=20):
        d.add(e)
    lengths = [len(d.render(cap, images=3, observations=2).encode()) for cap in range(0, 900)]
    assert all(n <= cap for cap, n in enumerate(lengths))
    assert lengths[899] > 600  # with room, the gists are there, not just the header
