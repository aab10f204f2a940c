"""`interplay eval fdbench` against live servers: one episode of each category streamed in real time to the
shipped native model through a real TurnLoop and Session gRPC on 127.0.0.1 (~15 s), scored from its output
audio by the real VAD and transcriber; the CLI's one-line errors; and (slow) the whole quick run of
native and cascade as a user starts it."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from interplay.cli import app
from interplay.fdbench import episodes as E
from interplay.fdbench.run import ordered, play_all
from interplay.fdbench.stream import align


async def _stream(eps: list[E.Episode]):
    from interaction_actor.runtime.backend import load_backend
    from interaction_actor.runtime.loop import LoopConfig, TurnLoop
    from interaction_actor.runtime.service import serve

    # admission off: on a loaded shared CPU a refused session would test the machine, not the evaluation
    loop = TurnLoop(load_backend("native"), LoopConfig(turn_ms=200, policy="never", admission=False))
    loop.start()
    server, address = await serve(loop)
    try:
        return await play_all(address, ordered(eps), concurrency=3, stagger_s=1.3)
    finally:
        await server.stop(None)
        await loop.stop()


@pytest.fixture(scope="module")
def live():
    eps = E.build(per_category=1)
    recs = asyncio.run(_stream(eps))
    return {r.episode.category: r for r in recs}


def test_one_episode_of_each_category_streams_to_its_end_with_every_turn_in_order(live):
    assert set(live) == set(E.CATEGORIES)
    for cat, rec in live.items():
        assert rec.complete and not rec.refused, (cat, rec.error, rec.refused)
        planned = (rec.episode.layer.size + rec.episode.tail_s * E.SR) / E.SR
        # a loaded loop skips the slots of a missed turn: the session's clock (time_ms), not the count, says
        assert rec.turns[-1].time_ms / 1000 >= planned - 0.4, (cat, rec.turns[-1].time_ms)


def test_the_user_interrupts_only_after_hearing_the_assistant_or_after_waiting_for_it(live):
    rec = live["interruption"]
    assert rec.interrupt_at is not None
    at = rec.started + rec.interrupt_at / E.SR  # the client's clock when the interruption began
    if rec.heard_at is not None:
        assert at >= rec.heard_at + E.INTERRUPT_AFTER_S - 0.001
    else:
        assert rec.interrupt_at >= rec.episode.user_end + E.INTERRUPT_WAIT_S * E.SR


def test_the_users_speech_lands_on_the_session_clock_where_the_client_played_it(live):
    for rec in live.values():
        al = align(rec)
        first = al.user_spans[0]
        lead = rec.episode.spans[0][0] / E.SR
        # the user starts once the session's first turn came back: that turn's compute after the session began
        assert lead <= first[0] <= lead + 0.5, (rec.episode.name, first)
        assert first[1] - first[0] == pytest.approx((rec.episode.spans[0][1] - rec.episode.spans[0][0]) / E.SR,
                                                    abs=0.1)


def test_every_live_episode_is_scored_from_its_output_audio(live):
    from interplay.fdbench.scoring import Scorer, summarize

    scorer = Scorer()
    scored = [scorer.score(r, align(r)) for r in live.values()]
    figures = summarize(scored, [align(r) for r in live.values()])
    assert figures["episodes"] == figures["episodes_planned"] == 3
    for key in ("pause_takeover_rate", "turn_taking_takeover_rate", "interruption_takeover_rate"):
        assert figures[key] in (0.0, 1.0), (key, figures)
    assert all("output" in e for e in scored)


def test_an_unknown_backend_is_one_line_and_exit_code_2_before_anything_starts():
    result = CliRunner().invoke(app, ["eval", "fdbench", "--backends", "native,nothing.here:Backend"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "nothing.here:Backend" in lines[0], lines


def test_interplay_eval_keeps_its_own_options_and_lists_fdbench():
    result = CliRunner().invoke(app, ["eval", "--help"])
    assert result.exit_code == 0 and "fdbench" in result.output and "--episodes" in result.output


@pytest.mark.slow
def test_interplay_eval_fdbench_quick_reports_every_figure_for_native_and_cascade(tmp_path):
    """The command as a user runs it (~2-4 min on this CPU): both backends complete every episode."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "interplay.cli", "--log-level", "warning", "eval", "fdbench",
                          "--quick", "--json", "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    from interplay.fdbench import pipecat_peer

    # the default backends: pipecat too when `make peers` has made its virtualenv
    assert set(result["backends"]) == {"native", "cascade"} | ({"pipecat"} if pipecat_peer.available() else set())
    for name, b in result["backends"].items():
        assert b["episodes"] == b["episodes_planned"] == 6, (name, b)
        for key in ("pause_takeover_rate", "turn_taking_takeover_rate", "turn_taking_latency_ms_p50",
                    "interruption_takeover_rate", "interruption_stop_ms_p50"):
            assert key in b, (name, key)
    assert "native_over_cascade_latency" in result
    assert (tmp_path / "fdbench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "fdbench.json").read_text())["episodes_detail"]["cascade"]
