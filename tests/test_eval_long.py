"""The long-answer measurement (training/eval_long.py): what counts as said whole, held-out content,
and a run through real sessions with the pacer on."""

from interaction_actor.model import text as T
from interaction_actor.model.fusion import build_model
from interaction_actor.model.pacing import READ_BYTES, pieces
from interaction_actor.model.session import TurnInput, step_batch
from interaction_actor.training import spoken
from interaction_actor.training.eval_long import answer_for, long_answer_scores, paced_session, said_whole

ANSWER = "The weather in Oslo is hail, with a temperature of -3 C."


def test_an_answer_said_in_its_pieces_counts_as_said_whole_though_the_cut_dropped_a_comma():
    assert said_whole(ANSWER, " ".join(pieces(ANSWER)) + " ")
    assert said_whole(ANSWER, "ok, sure. " + ANSWER)  # what came before the answer does not matter


def test_an_answer_that_stops_inside_its_last_piece_is_not_said_whole():
    assert not said_whole(ANSWER, "The weather in Oslo is hail with a temperature of -")
    assert not said_whole(ANSWER, "The weather in Oslo is hail with a temperature of -33 C.")


def test_the_long_answers_name_held_out_cities_and_conditions_after_held_out_requests():
    for seed in range(20):
        request, answer = answer_for(seed)
        city = answer.split()[3]
        assert city in spoken.TYPED_CITIES[spoken.EVAL] and city in request
        assert request.replace(city, "{city}") in spoken.REQUEST_TEMPLATES[spoken.EVAL]
        assert answer.split()[5].rstrip(",") in spoken.CONDITIONS[spoken.EVAL]
    assert answer_for(3) == answer_for(3)


def test_the_measured_sessions_give_the_model_a_long_answer_one_piece_at_a_time():
    model = build_model("tiny", seed=0)
    session = paced_session(model, 0)
    entered = session.pacer.feed(T.CTX_IDLE + ANSWER)
    assert entered == T.CTX_IDLE + pieces(ANSWER)[0] and len(entered[1:].encode()) <= READ_BYTES
    step_batch(model, [session], [TurnInput()])  # the session still steps


def test_a_model_s_long_answers_run_through_sessions_that_read_in_pieces():
    r = long_answer_scores(build_model("tiny", seed=0), n=2)
    assert r["long_answers"] == 2 and 0.0 <= r["long_answers_said"] <= 1.0
    assert len(r["long_answer_misses"]) == round(2 * (1 - r["long_answers_said"]))
