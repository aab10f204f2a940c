"""ConversationLog: per-turn speech of both sides becomes time-stamped, marked transcript spans."""

from __future__ import annotations

import io
import tracemalloc

import pytest
from PIL import Image

from delegation import (
    ConversationLog,
    DigestConfig,
    EntryKind,
    LogConfig,
    Speaker,
    TranscriptError,
    UserState,
    build_package,
)
from interplay.v1 import session_pb2 as spb


def test_consecutive_turns_of_one_speaker_form_one_utterance():
    lg = ConversationLog()
    for t, w in enumerate(["what", "is", "the", "time"]):
        lg.record_turn(t, user_text=w)
    (e,) = lg.entries()
    assert (e.speaker, e.text, e.start_turn, e.end_turn, e.start_ms, e.end_ms) == (
        Speaker.USER, "what is the time", 0, 3, 0, 800)


def test_speech_over_the_other_side_is_marked_overlapped_on_both_spans():
    lg = ConversationLog()
    lg.record_turn(0, assistant_text="so")
    lg.record_turn(1, assistant_text="then", user_text="wait")
    assert [(e.speaker, e.overlapped) for e in lg.entries()] == [(Speaker.ASSISTANT, True), (Speaker.USER, True)]


def test_a_barge_in_marks_the_assistant_span_interrupted():
    lg = ConversationLog()
    lg.record_turn(0, assistant_text="the answer is")
    lg.record_turn(1, user_text="stop", barge_in=True)
    a, u = lg.entries()
    assert (a.speaker, a.interrupted, a.end_turn) == (Speaker.ASSISTANT, True, 0)
    assert (u.speaker, u.interrupted) == (Speaker.USER, False)


def test_a_long_gap_becomes_a_silence_entry_and_a_short_one_does_not():
    lg = ConversationLog()
    lg.record_turn(0, user_text="hi")
    lg.record_turn(1)                      # a one-turn gap: not a silence
    lg.record_turn(2, user_text="there")
    for t in range(3, 8):                  # five quiet turns: a silence
        lg.record_turn(t)
    kinds = [(e.kind, e.start_turn, e.end_turn) for e in lg.entries()]
    assert kinds == [(EntryKind.UTTERANCE, 0, 0), (EntryKind.UTTERANCE, 2, 2), (EntryKind.SILENCE, 3, 7)]


def test_typed_text_is_its_own_utterance_marked_typed():
    lg = ConversationLog()
    lg.record_turn(0, user_text="look", typed_text="https://example.org")
    assert sorted((e.text, e.typed) for e in lg.entries()) == [("https://example.org", True), ("look", False)]


def test_turns_recorded_out_of_order_are_refused():
    lg = ConversationLog()
    lg.record_turn(4, user_text="a")
    with pytest.raises(TranscriptError):
        lg.record_turn(4, user_text="b")


def test_user_state_follows_the_last_recorded_turn():
    lg = ConversationLog()
    states = []
    for t, kw in enumerate([{"user_text": "x"}, {}, {"user_text": "y", "barge_in": True}]):
        lg.record_turn(t, **kw)
        states.append(lg.user_state)
    assert states == [UserState.SPEAKING, UserState.SILENT, UserState.INTERRUPTED]


# ---- the window, its rolling digest, frames, snapshots ---------------------------------------------

def _chat(lg: ConversationLog, turns: int, start: int = 0, words: int = 3) -> None:
    """User and assistant take turns of 4 micro-turns, each saying `words` numbered words per turn."""
    for t in range(start, start + turns):
        who = (t // 4) % 2
        text = " ".join(f"w{t}_{k}" for k in range(words))
        lg.record_turn(t, user_text=text if who == 0 else "", assistant_text=text if who == 1 else "")


def test_entries_that_fall_out_of_the_window_are_folded_into_the_digest():
    lg = ConversationLog(config=LogConfig(max_entries=10))
    _chat(lg, 200)
    total = 50  # 200 turns / 4 per span
    assert len(lg) == 10 + 1 and lg.forgotten == total - 11  # the window, the open span, the digest
    d = lg.digest
    assert (d.entries, d.start_turn, d.start_ms) == (total - 11, 0, 0)
    assert d.head[0].startswith("user: w0_0 w0_1 w0_2")
    assert d.tail[-1].split(": ")[1].startswith(f"w{(total - 12) * 4}_0")  # the newest folded span


def test_the_window_and_digest_stay_bounded_however_long_the_session():
    cfg = LogConfig(max_entries=64, max_window_bytes=4096, digest=DigestConfig(head_bytes=128, tail_bytes=256))
    lg = ConversationLog(config=cfg)
    _chat(lg, 2_000, words=6)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    _chat(lg, 8_000, start=2_000, words=6)
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    assert len(lg._closed) <= 64 and lg.window_bytes <= 4096
    assert lg.digest.size_bytes <= 128 + 256 and lg.forgotten > 2_000
    assert grown < 256 * 1024, grown  # 8k more turns of speech: no growth beyond noise


def test_a_long_monologue_is_split_into_spans_of_bounded_size():
    lg = ConversationLog(config=LogConfig(max_entry_bytes=200, max_span_turns=50))
    for t in range(400):
        lg.record_turn(t, user_text="word")
    spans = lg.entries()
    assert len(spans) > 1 and all(len(e.text.encode()) <= 200 + 5 for e in spans)
    assert all(e.end_turn - e.start_turn + 1 <= 50 for e in spans)
    assert " ".join(e.text for e in spans).split() == ["word"] * 400  # nothing lost at the seams


def test_a_package_carries_the_digest_of_what_the_log_folded_out_of_its_window():
    lg = ConversationLog("s", LogConfig(max_entries=20))
    lg.record_turn(0, typed_text="please remember the blue door code 4417")
    _chat(lg, 300, start=1)
    pkg = build_package("what was the door code?", transcript=lg)
    assert pkg.omitted.log_entries == lg.forgotten > 0
    assert pkg.dropped_entries == pkg.omitted.entries >= lg.forgotten
    assert "user (typed): please remember the blue door code 4417" in pkg.earlier_summary
    assert len(pkg.transcript) == len(lg)


def test_a_snapshot_does_not_change_when_recording_goes_on():
    lg = ConversationLog()
    _chat(lg, 30)
    snap = lg.snapshot()
    before = snap.to_proto_entries()
    _chat(lg, 30, start=30)
    lg.record_turn(60, typed_text="later")
    assert snap.to_proto_entries() == before and len(lg) > len(snap)


def _jpeg(rgb: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> spb.VideoFrame:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="JPEG", quality=90)
    return spb.VideoFrame(data=buf.getvalue(), encoding=spb.FRAME_ENCODING_JPEG, width=size[0], height=size[1])


def test_a_received_frame_becomes_an_observation_with_a_small_thumbnail_and_its_colour():
    lg = ConversationLog()
    lg.record_turn(0, user_text="look")
    lg.observe_frame(0, _jpeg((210, 20, 25), (1280, 720)))
    (obs,) = build_package("what colour is it?", transcript=lg).observations
    assert obs.mime_type == "image/jpeg" and 0 < len(obs.image) < 8_000
    assert max(Image.open(io.BytesIO(obs.image)).size) <= 128
    assert "1280x720 JPEG" in obs.description and "mean colour red" in obs.description


def test_the_frames_kept_are_the_newest_and_at_least_the_gap_apart():
    lg = ConversationLog(config=LogConfig(max_frames=2, frame_gap_turns=10))
    for t in range(60):
        lg.record_turn(t)
        lg.observe_frame(t, _jpeg((0, 0, 200), (16, 16)))
    turns = [o.turn for o in lg.observations()]
    assert turns[-1] == 59 and len(turns) == 2 and turns[1] - turns[0] >= 10


def test_a_frame_that_does_not_decode_is_described_without_an_image():
    lg = ConversationLog()
    lg.record_turn(0)
    lg.observe_frame(0, spb.VideoFrame(data=b"\xff\xd8 not a jpeg", encoding=spb.FRAME_ENCODING_JPEG))
    (obs,) = build_package("t", transcript=lg).observations
    assert obs.image == b"" and "did not decode" in obs.description
