"""ConversationLog: per-turn speech of both sides becomes time-stamped, marked transcript spans."""

from __future__ import annotations

import pytest

from delegation import ConversationLog, EntryKind, Speaker, TranscriptError, UserState


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
