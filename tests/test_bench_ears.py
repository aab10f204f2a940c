"""`interplay bench ears --quick`: the ears on the held-out espeak-ng set and at the loop, as serve runs
them (a Ray EarsActor beside the shipped model's TurnLoop over gRPC). Slow (~45 s): `make test SLOW=1`."""

from __future__ import annotations

import pytest

from interaction_actor.runtime.ears_bench import bench_ears


@pytest.fixture(scope="module")
def figures(ray_local):
    return bench_ears(quick=True)


@pytest.mark.slow
def test_the_held_out_word_error_rate_is_within_the_goal(figures):
    assert figures["wer"] <= 0.25, figures["wer"]


@pytest.mark.slow
def test_every_utterance_is_transcribed_and_no_turn_is_missed_at_one_and_four_sessions(figures):
    for run in figures["runs"]:
        assert run["transcripts"] == run["utterances"] and run["missed"] == 0 and run["turn_gaps"] == 0, run


@pytest.mark.slow
def test_a_final_transcript_reaches_the_client_within_a_generous_bound_after_speech_ends(figures):
    assert figures["final_latency_ms_p50"] < 1500, figures  # the 700 ms goal is the bench's to hold
