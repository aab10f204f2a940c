"""What the demo writes and prints, read off output chunks built here (no Ray, no model): the timeline
records keep integers as integers and booleans as booleans, the summary names surfacing modes, and
what the assistant said is split into its utterances. The live demo itself: test_demo.py."""

from __future__ import annotations

import io
import json

from interplay.client import event_label
from interplay.demo import DemoConfig, Player, chunk_record, summarize, utterances, write_outputs
from interplay.v1 import common_pb2 as cpb
from interplay.v1 import session_pb2 as spb


def surfaced(turn: int, text: str = "Oslo snow, -3 C") -> spb.Event:
    return spb.Event(kind=spb.EVENT_KIND_RESULT_SURFACED, task_id="t1", text=text,
                     mode=cpb.SURFACING_MODE_WHEN_IDLE, voiced=True, update=spb.EVENT_UPDATE_FINAL,
                     received_turn=turn - 1)


def conversation() -> list[spb.OutputChunk]:
    """Turns 0-9: "hi" over turns 1-2, silence, the surfaced answer at 5 and "Oslo snow" voiced over 5-7."""
    texts = ["", "h", "i", "", "", "Oslo ", "snow", "", "", ""]
    chunks = []
    for t, text in enumerate(texts):
        c = spb.OutputChunk(session_id="s", turn=t, time_ms=200 * t, text=text)
        if text:
            c.audio.pcm16 = b"\x01\x00" * 3200
        if t == 2:
            c.controls.append(spb.CONTROL_TOKEN_STOP_SPEAKING)
        if t == 0:
            c.events.append(spb.Event(kind=spb.EVENT_KIND_DELEGATION_STARTED, task_id="t1", text="weather",
                                      origin_turn=0, policy="rule"))
        if t == 5:
            c.events.append(surfaced(t))
        chunks.append(c)
    return chunks


def test_a_timeline_record_carries_turns_as_integers():
    rec = json.loads(json.dumps(chunk_record(spb.OutputChunk(turn=12, time_ms=2400, dropped_chunks=3))))
    assert rec["turn"] == 12 and rec["time_ms"] == 2400 and rec["dropped_chunks"] == 3


def test_a_timeline_record_keeps_event_integers_and_booleans_typed_and_modes_named():
    c = spb.OutputChunk(turn=5, events=[surfaced(5)])
    ev = json.loads(json.dumps(chunk_record(c)))["events"][0]
    assert ev["received_turn"] == 4 and ev["voiced"] is True
    assert ev["mode"] == "SURFACING_MODE_WHEN_IDLE" and ev["update"] == "EVENT_UPDATE_FINAL"


def test_a_timeline_record_leaves_the_audio_out():
    c = spb.OutputChunk(turn=1)
    c.audio.pcm16 = b"\x00\x00" * 10
    assert "audio" not in chunk_record(c)


def test_the_demo_writes_integer_turns_into_timeline_jsonl(tmp_path):
    chunks = conversation()
    log_path, _ = write_outputs(chunks, [{"dir": "out", **chunk_record(c)} for c in chunks], tmp_path)
    turns = [json.loads(line)["turn"] for line in log_path.read_text().splitlines()]
    assert turns == list(range(10))  # turn 0 included, though proto3's JSON leaves zeros out


def test_the_demo_summary_names_the_surfacing_mode():
    summary = summarize(conversation(), Player(DemoConfig(), io.StringIO()), 200)
    (r,) = summary["results_surfaced"]
    assert r == {"turn": 5, "mode": "WHEN_IDLE", "voiced": True, "update": "FINAL", "text": "Oslo snow, -3 C"}


def test_the_demo_summary_lists_each_utterance_of_the_assistant_separately():
    summary = summarize(conversation(), Player(DemoConfig(), io.StringIO()), 200)
    assert summary["assistant_said"] == [{"turn": 1, "text": "hi"}, {"turn": 5, "text": "Oslo snow"}]


def test_an_utterance_ends_after_four_turns_without_text_and_not_after_two():
    chunks = [spb.OutputChunk(turn=t, text=x) for t, x in enumerate(["a", "", "", "b", "", "", "", "", "c"])]
    assert [u["text"] for u in utterances(chunks)] == ["ab", "c"]


def test_an_utterance_ends_where_the_assistant_yields_the_floor():
    chunks = [spb.OutputChunk(turn=t, text=x) for t, x in enumerate(["a", "b", "", "c"])]
    chunks[2].controls.append(spb.CONTROL_TOKEN_LISTEN)
    assert [u["text"] for u in utterances(chunks)] == ["ab", "c"]


def test_the_demo_summary_says_which_policy_delegated():
    summary = summarize(conversation(), Player(DemoConfig(), io.StringIO()), 200)
    assert summary["delegated_tasks"] == ["weather"] and summary["delegated_by"] == ["rule"]


def test_the_timeline_line_shows_a_surfaced_results_mode_and_voicing():
    assert event_label(surfaced(5)) == "result_surfaced:final[when_idle, voiced](Oslo snow, -3 C)"
