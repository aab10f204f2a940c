"""Reading pace (interaction_actor/model/pacing.py): a long voiced result reaches the model in pieces.

The pacer's rules are checked on its own; the last test runs the shipped checkpoint, so that the
reason the pacer exists (the model says a 63-byte answer only when it comes in pieces) stays measured.
"""

from __future__ import annotations

import random

import torch

from interaction_actor.model import text as T
from interaction_actor.model.pacing import READ_BYTES, ReadPacer, pieces

ANSWER = "The weather in Oslo is quite snowy, with a temperature of -3 C."  # the demo's answer, 63 bytes


def _sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["snow", "temperature", "Oslo", "with", "a", "quite", "the", "is", "of", "-3", "C.", "sunny,",
             "tomorrow", "afternoon;", "Reykjavik", "wind", "north", "12"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def test_no_piece_is_longer_than_read_bytes_unless_it_is_one_word():
    for s in _sentences(400):
        assert all(len(p.encode()) <= READ_BYTES or " " not in p for p in pieces(s))


def test_pieces_say_every_word_of_the_message_in_order():
    for s in _sentences(400, seed=1):
        strip = str.maketrans("", "", ",;")
        assert " ".join(pieces(s)).translate(strip).split() == s.translate(strip).split()


def test_the_demo_answer_is_cut_at_its_comma_which_is_dropped():
    assert pieces(ANSWER, 48) == ["The weather in Oslo is quite snowy", "with a temperature of -3 C."]


def test_at_the_default_size_the_demo_answer_comes_in_four_pieces():
    assert pieces(ANSWER) == ["The weather in Oslo", "is quite snowy", "with a temperature", "of -3 C."]


def test_a_message_that_fits_passes_through_whole():
    assert ReadPacer(read_bytes=48).feed(T.CTX_NOW + "Oslo snow, -3 C") == T.CTX_NOW + "Oslo snow, -3 C"


def test_a_pacer_with_read_bytes_zero_changes_nothing():
    line = T.CTX_IDLE + ANSWER + "\n" + T.CTX_SILENT + "x"
    assert ReadPacer(read_bytes=0).feed(line) == line


def test_only_the_first_piece_enters_with_the_message():
    p = ReadPacer(read_bytes=48)
    assert p.feed(T.CTX_IDLE + ANSWER) == T.CTX_IDLE + "The weather in Oslo is quite snowy"
    assert p.feed("") == ""


def test_the_next_piece_enters_the_turn_after_the_model_stops_speaking():
    p = ReadPacer(read_bytes=48)
    p.feed(T.CTX_NOW + ANSWER)
    p.after([T.START_SPEAKING, ord("T"), ord("h")])
    assert p.feed("") == ""
    p.after([ord("y"), T.STOP_SPEAKING, T.EMPTY])
    assert p.feed("") == T.CTX_NOW + "with a temperature of -3 C."
    assert not p.waiting


def test_a_piece_the_model_passes_over_does_not_hold_the_rest_forever():
    p = ReadPacer(read_bytes=48, wait_turns=5)
    p.feed(T.CTX_IDLE + ANSWER)
    said = [p.feed("") for _ in range(6)]
    assert said == [""] * 5 + [T.CTX_IDLE + "with a temperature of -3 C."]


def test_a_silent_result_enters_whole_while_pieces_wait():
    p = ReadPacer(read_bytes=48)
    p.feed(T.CTX_IDLE + ANSWER)
    assert p.feed(T.CTX_SILENT + ANSWER) == T.CTX_SILENT + ANSWER


def test_a_voiced_result_arriving_while_pieces_wait_queues_behind_them():
    p = ReadPacer(read_bytes=48)
    p.feed(T.CTX_IDLE + ANSWER)
    assert p.feed(T.CTX_NOW + "Lima sun, 21 C") == ""
    p.after([T.STOP_SPEAKING])
    assert p.feed("") == T.CTX_IDLE + "with a temperature of -3 C."
    p.after([T.STOP_SPEAKING])
    assert p.feed("") == T.CTX_NOW + "Lima sun, 21 C"


def test_a_barge_in_drops_the_waiting_pieces():
    p = ReadPacer(read_bytes=48)
    p.feed(T.CTX_IDLE + ANSWER)
    p.feed("", barge_in=True)
    p.after([T.STOP_SPEAKING])
    assert p.feed("") == "" and not p.waiting


def test_the_native_backend_paces_its_sessions_at_read_bytes():
    from interaction_actor.model.fusion import build_model
    from interaction_actor.runtime.backend import load_backend

    tiny = build_model("tiny", seed=0)
    assert load_backend("native", model=tiny).open("a").pacer.read_bytes == READ_BYTES
    assert load_backend("native", model=tiny, read_bytes=0).open("b").pacer.read_bytes == 0


def test_the_shipped_model_says_the_demo_answer_in_full_when_it_comes_in_pieces():
    """The real checkpoint, a fresh session on a quiet microphone: the answer arrives CTX_NOW at turn 3."""
    from interaction_actor.model.fusion import build_model
    from interaction_actor.model.session import TurnInput, new_session, step_batch
    from interaction_actor.model.weights import DEFAULT_CHECKPOINT

    torch.set_num_threads(1)
    model = build_model("small", checkpoint=str(DEFAULT_CHECKPOINT))
    s = new_session(model, "paced", read_bytes=READ_BYTES)
    g = torch.Generator().manual_seed(0)
    utterances, cur = [], ""
    for k in range(60):
        inp = TurnInput(audio=torch.randn(3200, generator=g) * 0.002, context=T.CTX_NOW + ANSWER if k == 3 else "")
        out = step_batch(model, [s], [inp])[0]
        cur += out.text
        if "stop_speaking" in out.controls:
            utterances, cur = [*utterances, cur.strip()], ""
    assert " ".join(utterances) == "The weather in Oslo is quite snowy with a temperature of -3 C."


async def test_a_long_answer_through_the_live_loop_is_said_in_its_pieces():
    """The real TurnLoop with the shipped model, Session gRPC and a Background servicer on 127.0.0.1
    (conftest.answering_background: it answers ANSWER to any task; what is under test is the
    interaction side). A typed training-template request the model delegates by its own token; the
    answer surfaces WHEN_IDLE on a quiet line, and the assistant's text holds both of its pieces."""
    from conftest import answering_background
    from conftest import serve_background as background

    from interaction_actor.model.fusion import build_model
    from interaction_actor.model.weights import resolve_checkpoint
    from interaction_actor.runtime.loop import LoopConfig, TurnLoop
    from interaction_actor.runtime.service import serve
    from interplay.client import SessionClient, text_chunk
    from interplay.v1 import session_pb2 as spb

    model = build_model("small", resolve_checkpoint("small", None), 0)
    server_bg, bg_addr = await background(answering_background(ANSWER, delay_s=1.0))
    loop = TurnLoop(model, LoopConfig(turn_ms=100, background_address=bg_addr, policy="model_token"))
    loop.start()
    server, address = await serve(loop)
    said = ""
    try:
        async with SessionClient(address, "paced") as c:
            n = 0
            async for chunk in c.chunks():
                n += 1
                said += chunk.text + (" | " if spb.CONTROL_TOKEN_STOP_SPEAKING in chunk.controls else "")
                if n == 2:
                    await c.send(text_chunk("what is the weather in Rome"))
                if "-3 C." in said or n >= 120:
                    break
    finally:
        await server.stop(0.2)
        await loop.stop()
        await server_bg.stop(0.2)
    assert " ".join(said.replace("|", " ").split()) .endswith(
        "The weather in Oslo is quite snowy with a temperature of -3 C.")
