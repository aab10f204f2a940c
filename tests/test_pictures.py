"""`interplay report RUN_DIR` draws a run's timeline: per-turn compute and lateness, and a Gantt of each
delegation. The timeline here is the demo's own format, written by the demo's writer from chunks built
for the test (the demo itself is run by test_demo.py, which checks that it writes report.png)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from interplay.cli import app
from interplay.demo import write_outputs
from interplay.pictures import TurnClock, delegations, read_timeline
from interplay.v1 import common_pb2 as cpb
from interplay.v1 import session_pb2 as spb


def timeline(tmp_path: Path) -> Path:
    from google.protobuf.json_format import MessageToDict

    chunks = []
    for turn in range(12):
        c = spb.OutputChunk(session_id="s", turn=turn, time_ms=200 * turn)
        c.timing.compute_ms, c.timing.lateness_ms = 20.0 + turn, 1.0
        if turn == 2:
            c.events.add(kind=spb.EVENT_KIND_DELEGATION_STARTED, task_id="t1", text="weather in Oslo?")
        if turn == 4:
            c.events.add(kind=spb.EVENT_KIND_PROGRESS, task_id="t1", update=spb.EVENT_UPDATE_TOOL_CALL)
        if turn == 8:
            c.events.add(kind=spb.EVENT_KIND_RESULT_SURFACED, task_id="t1", update=spb.EVENT_UPDATE_FINAL,
                         mode=cpb.SURFACING_MODE_WHEN_IDLE, voiced=True, text="Oslo snow, -3 C")
        chunks.append(c)
    records = [{"dir": "out", **MessageToDict(c, preserving_proto_field_name=True)} for c in chunks]
    for r, c in zip(records, chunks, strict=True):
        r["turn"] = c.turn
    write_outputs(chunks, records, tmp_path)
    return tmp_path


def test_a_delegation_in_the_timeline_becomes_one_gantt_row_from_decision_to_surfacing(tmp_path):
    (task,) = delegations(read_timeline(timeline(tmp_path) / "timeline.jsonl"))
    assert (task.started, task.ended, task.text) == (2, 8, "weather in Oslo?")
    assert (4, "tool_call") in task.marks and (8, "surfaced when_idle voiced") in task.marks


def test_interplay_report_writes_a_png_beside_the_timeline(tmp_path):
    result = CliRunner().invoke(app, ["report", str(timeline(tmp_path))])
    png = tmp_path / "report.png"
    assert result.exit_code == 0 and png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_folder_without_a_timeline_is_one_line_and_exit_code_2(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "timeline.jsonl" in lines[0]


def test_trace_times_map_onto_turns_through_the_slots_an_overrun_turn_skipped():
    clock = TurnClock([(0, 0.0), (1, 200.0), (2, 600.0), (3, 800.0)], turn_ms=200)  # turn 1 overran: a slot skipped
    assert [clock.turn(ms) for ms in (-200.0, 100.0, 400.0, 600.0, 1000.0)] == [-1.0, 0.5, 1.5, 2.0, 4.0]
    assert (clock.time_ms(2), clock.time_ms(5)) == (600.0, 1200.0)
