"""The voice's read window (model/reader.py): what the flow head reads of the model's own tokens."""

from __future__ import annotations

import random

import pytest
import torch

import kernels
from interaction_actor.model import text as T
from interaction_actor.model.config import ModelConfig
from interaction_actor.model.reader import (
    PAD,
    START,
    STOP,
    VOCAB,
    AlignReader,
    ReadState,
    frame_windows,
    make_reader,
    windows,
)
from interaction_actor.model.session import new_session, step_batch, turn_voiced
from interaction_actor.training import train

E = T.EMPTY


def _stream(rng: random.Random, turns: int, k: int = 3) -> list[list[int]]:
    pool = [*b"abc xyz", T.START_SPEAKING, T.STOP_SPEAKING, T.LISTEN, T.DELEGATE, T.DELEGATE_END, E, E, E]
    return [[rng.choice(pool) for _ in range(k)] for _ in range(turns)]


def test_a_turn_reads_the_bytes_said_before_it_the_previous_turn_and_its_own():
    out = [[T.START_SPEAKING, *b"he"], [*b"llo"], [*b" yo"], [T.STOP_SPEAKING, E, E]]
    w = windows(out, 3)
    assert w[1] == [PAD] * 6 + [START, *b"he"] + [*b"llo"]
    assert w[2] == [PAD] * 4 + [*b"he"] + [*b"llo"] + [*b" yo"]
    assert w[3] == [PAD, *b"hello"] + [*b" yo"] + [STOP, PAD, PAD]


def test_the_history_holds_the_last_six_bytes_of_the_utterance_only():
    out = [[T.START_SPEAKING, *b"ab"], [*b"cde"], [*b"fgh"], [*b"ijk"], [T.STOP_SPEAKING, E, E],
           [T.START_SPEAKING, *b"xy"], [*b"z", E, E]]
    w = windows(out, 3)
    assert w[4][:6] == [*b"cdefgh"]
    assert w[6][:6] == [PAD] * 6  # a new utterance forgets the last one
    assert w[6][6:9] == [START, *b"xy"]


def test_delegate_task_bytes_are_never_read_as_speech():
    out = [[T.DELEGATE, *b"we"], [*b"ath", ], [T.DELEGATE_END, T.START_SPEAKING, ord("o")], [*b"k, ", ]]
    w = windows(out, 3)
    assert w[1] == [PAD] * 6 + [PAD, PAD, PAD] + [PAD, PAD, PAD]
    assert w[2] == [PAD] * 9 + [START, ord("o"), PAD]  # an utterance reads from its <start_speaking> on
    assert w[3][6:] == [START, ord("o"), PAD] + [*b"k, "]


def test_the_streaming_read_state_gives_the_training_windows_on_any_token_stream():
    rng = random.Random(7)
    for _ in range(50):
        out = _stream(rng, 20)
        st, got = ReadState(3), []
        for toks in out:
            got.append(st.window(toks))
            st.push(toks)
        assert got == windows(out, 3)


def test_each_frame_reads_the_window_with_its_own_index():
    fw = frame_windows([PAD] * 12, 16)
    assert fw.shape == (16, 13) and fw[:, -1].tolist() == list(range(16)) and bool((fw[:, :12] == PAD).all())
    assert STOP == 258


def test_training_features_carry_the_windows_the_session_reads():
    """The trainer's read windows at the mel-out slots are the ones a session reading the same tokens
    computes: train.featurize on an episode whose outputs are what a session emitted (an untrained tiny
    model sampling at temperature 2: bytes, controls and tasks in every mix)."""
    from interaction_actor.model.config import preset
    from interaction_actor.model.fusion import InteractionModel
    from interaction_actor.training import synth

    torch.manual_seed(0)
    model = InteractionModel(preset("tiny").replace(temperature=2.0)).eval()
    ep = synth.episode(3, "turn_taking", cfg=model.config, turns=12)
    s = new_session(model, "read")
    outs, wins = [], []
    for inp in ep.inputs:
        before = ReadState(3, list(s.speech.reader.said), s.speech.reader.prev, s.speech.reader.inside_task)
        o = step_batch(model, [s], [inp])[0]
        toks = list(s.speech.reader.prev)
        outs.append(toks)
        wins.append(before.window(toks))
        assert o is not None
    f = train.featurize(ep, model.config, outputs=outs)
    lay = model.layout
    for k in range(len(outs)):
        a = lay.turn_start(k) + lay.mel
        assert f.read[0, a, :-1].tolist() == wins[k]
    assert torch.equal(f.read[0, lay.turn_start(1) + lay.mel : lay.turn_start(1) + lay.mel + lay.frames, -1],
                       torch.arange(lay.frames))


def test_the_turn_that_starts_speaking_plays_its_own_audio():
    assert turn_voiced(False, False, [T.START_SPEAKING, *b"ok"])
    assert turn_voiced(True, False, [*b"ok,"])  # an utterance goes on
    assert turn_voiced(True, False, [T.STOP_SPEAKING, E, E])  # its last turn still plays
    assert not turn_voiced(False, False, [E, E, E])


def test_a_barge_in_or_listen_silences_the_turn_even_where_it_starts_speaking():
    assert not turn_voiced(False, True, [T.START_SPEAKING, *b"ok"])
    assert not turn_voiced(True, False, [T.LISTEN, E, E])


@pytest.mark.bitwise
def test_the_align_reader_gives_a_row_the_same_bits_whatever_rows_share_the_call():
    torch.manual_seed(0)
    reader = AlignReader(3, 64, 16, hidden=128)
    rng = random.Random(4)
    rows = torch.tensor([[rng.randrange(VOCAB) for _ in range(12)] + [rng.randrange(16)] for _ in range(37)])
    with torch.no_grad(), kernels.deterministic():
        whole = reader(rows)
        assert all(torch.equal(reader(rows[i : i + m]), whole[i : i + m]) for i, m in ((0, 1), (5, 3), (20, 17)))


def test_the_align_reader_gives_each_frame_of_a_turn_its_own_condition():
    torch.manual_seed(0)
    reader = AlignReader(3, 64, 16, hidden=128)
    with torch.no_grad():
        cond = reader(frame_windows([*b"hello there!"], 16))
    assert cond.shape == (16, 64) and len({tuple(r.tolist()) for r in cond}) == 16


def test_an_unknown_voice_reader_is_a_clear_error():
    with pytest.raises(ValueError, match="voice_reader"):
        ModelConfig(voice_reader="lstm").validate()
    assert isinstance(make_reader("align", 3, 32, 16), AlignReader)


def _with_context_voice(shipped):
    """The shipped transformer with a fresh flow head that reads a 4-frame context and mixes 3 frames
    (its zero-initialised weights drawn, so that its input shows)."""
    from interaction_actor.model.fusion import InteractionModel

    model = InteractionModel(shipped.config.replace(flow_context=4, flow_mix=3)).eval()
    state = {k: v for k, v in shipped.state_dict().items() if not k.startswith("flow.")}
    assert not model.load_state_dict(state, strict=False).unexpected_keys
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.flow.parameters():
            if not p.any():
                p.normal_(std=0.1)
    return model


@pytest.mark.parametrize("voice", ["shipped", "context and mix"])
def test_with_self_voice_the_trainer_feeds_back_the_mel_the_session_feeds_back(voice):
    """train.featurize(voice_head=the model's flow head) puts in each mel-out slot what a session that
    emitted the same tokens fed back there: the flow head's own rendering of its previous turn (the
    shipped model answering a turn-taking episode, so that it speaks; with a context head, each turn
    rendered after the session's own rendering of the turn before)."""
    from interaction_actor.model.fusion import build_model
    from interaction_actor.model.weights import DEFAULT_CHECKPOINT
    from interaction_actor.training import synth

    model = build_model(checkpoint=str(DEFAULT_CHECKPOINT))
    if voice != "shipped":
        model = _with_context_voice(model)
    ep = synth.episode(7, "turn_taking", cfg=model.config)
    s = new_session(model, "self-voice")
    outs, fed = [], []
    for inp in ep.inputs:
        fed.append(s.speech.prev_mel)
        step_batch(model, [s], [inp])
        outs.append(list(s.speech.reader.prev))
    f = train.featurize(ep, model.config, outputs=outs, voice_head=model.flow)
    lay = model.layout
    assert sum(m is not None for m in fed) >= 3, "the model did not speak"
    for k, m in enumerate(fed):
        a = lay.turn_start(k) + lay.mel
        got = f.chunk.mel_in[0, a : a + lay.frames]
        if m is None:
            assert not bool(got.abs().sum())
        else:
            torch.testing.assert_close(got, m, rtol=1e-4, atol=1e-4)
