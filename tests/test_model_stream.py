"""Streaming session vs the full-sequence training forward, batching, capacity rule, replay (tiny preset)."""

from __future__ import annotations

import pytest
import torch

from interaction_actor.model import text as T
from interaction_actor.model.fusion import build_model
from interaction_actor.model.layout import mel_slot_mask, text_targets
from interaction_actor.model.session import TurnInput, compact, fill_after, new_session, step_batch


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return build_model("tiny", seed=1)


def random_input(g: torch.Generator, k: int) -> TurnInput:
    """Varied inputs: audio or not, a frame or not, text and context of random lengths, barge-ins."""
    r = torch.rand(6, generator=g)
    audio = torch.randn(3200, generator=g) * 0.2 if r[0] > 0.2 else None
    frame = torch.randint(0, 256, (48, 64, 3), dtype=torch.uint8, generator=g) if r[1] > 0.5 else None
    text = "héllo wörld"[: int(r[2] * 12)]
    context = f"result {k}" if r[3] > 0.7 else ""
    return TurnInput(audio=audio, frame=frame, text=text, context=context, barge_in=bool(r[4] > 0.9))


def drive(model, sessions, n_turns, seed=0, voice_every=3):
    """Step the sessions together; every `voice_every`-th turn each session is made to speak."""
    g = torch.Generator().manual_seed(seed)
    outs = []
    for k in range(n_turns):
        for s in sessions:
            if k % voice_every == voice_every - 1:
                s.speech.speaking = True
        outs.append(step_batch(model, sessions, [random_input(g, k) for _ in sessions]))
    return outs


def test_chunked_streaming_equals_the_full_sequence_forward_over_60_turns(model):
    s = new_session(model, "eq", record=True)
    outs = drive(model, [s], 60)
    assert any(o[0].speaking for o in outs), "the run must include voiced turns (mel-in slots)"
    with torch.no_grad():
        hidden, logits = model.forward_sequence(s.record.sequence())
    streamed_h, streamed_l = s.record.hidden(), s.record.logits()
    assert streamed_h.shape[0] == s.cache.pos - 1 >= 60 * model.layout.turn_len
    torch.testing.assert_close(streamed_h, hidden[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(streamed_l, logits[0], rtol=1e-4, atol=1e-4)


def test_moe_model_streams_equal_to_its_full_forward():
    m = build_model("tiny", seed=2)
    cfg = m.config.replace(moe_experts=4, moe_top_k=2)
    from interaction_actor.model.fusion import InteractionModel

    torch.manual_seed(3)
    m = InteractionModel(cfg).eval()
    s = new_session(m, "moe", record=True)
    drive(m, [s], 12)
    with torch.no_grad():
        hidden, logits = m.forward_sequence(s.record.sequence())
    torch.testing.assert_close(s.record.logits(), logits[0], rtol=1e-4, atol=1e-4)


def test_batched_sessions_at_different_lengths_equal_each_session_alone(model):
    a1, b1, c1 = (new_session(model, n, record=True) for n in ("a", "b", "c"))
    a2, b2, c2 = (new_session(model, n, record=True) for n in ("a", "b", "c"))
    drive(model, [a1], 7, seed=10)
    drive(model, [a2], 7, seed=10)
    drive(model, [b1], 2, seed=11)
    drive(model, [b2], 2, seed=11)
    together = drive(model, [a1, b1, c1], 6, seed=12)
    g = torch.Generator().manual_seed(12)
    alone = []
    for k in range(6):
        inputs = [random_input(g, k) for _ in range(3)]
        row = []
        for s, inp in zip((a2, b2, c2), inputs, strict=True):
            if k % 3 == 2:
                s.speech.speaking = True
            row.append(step_batch(model, [s], [inp])[0])
        alone.append(row)
    for row_t, row_a in zip(together, alone, strict=True):
        for x, y in zip(row_t, row_a, strict=True):
            assert (x.text, x.controls, x.turn, x.speaking) == (y.text, y.controls, y.turn, y.speaking)
            torch.testing.assert_close(x.mel, y.mel, rtol=1e-4, atol=1e-4)
            if x.pcm is not None:
                torch.testing.assert_close(x.pcm, y.pcm, rtol=1e-3, atol=1e-4)
    for s1, s2 in ((a1, a2), (b1, b2), (c1, c2)):
        torch.testing.assert_close(s1.record.logits(), s2.record.logits(), rtol=1e-4, atol=1e-4)


def test_capacity_rule_keeps_turns_coming_past_capacity_with_the_current_turn_intact(model):
    lay = model.layout
    cap = 1 + 2 * lay.turn_len + 4 * lay.turn_len + 5  # prefix (bos + 1 turn) + room for 4 turns
    s = new_session(model, "cap", capacity=cap)
    prefix_k = None
    for k, out in enumerate(drive(model, [s], 30)):
        assert out[0].turn == k
        assert s.cache.pos <= cap
        if k == 0:
            prefix_k = s.cache.kv[:, 0, :, : 1 + lay.turn_len].clone()
    assert s.cache.compactions >= 5
    # the prefix is never moved; the turn just written sits right before the pending slot
    torch.testing.assert_close(s.cache.kv[:, 0, :, : 1 + lay.turn_len], prefix_k, rtol=0, atol=0)
    assert s.cache.kv[:, 0, :, s.cache.pos - 2].abs().sum() > 0


def test_compaction_moves_kept_keys_to_the_rotation_of_their_new_positions(model):
    """Layer-0 keys depend only on the token and position, so after compaction they must equal a fresh
    computation of the kept tokens at their new positions."""
    lay = model.layout
    s = new_session(model, "rot", capacity=1 + 2 * lay.turn_len + 4 * lay.turn_len, record=True)
    drive(model, [s], 5)
    seq = s.record.sequence()
    old_pos = s.cache.pos
    compact(model, s)
    shift = old_pos - s.cache.pos
    assert shift > 0
    kept = list(range(s.cache.prefix_len)) + list(range(s.cache.prefix_len + shift, old_pos - 1))
    blk = model.transformer.blocks[0]
    with torch.no_grad():
        x = blk.attn_norm(model.embed_at(seq, torch.arange(seq.tokens.shape[1])[None]))[0, kept]
        qkv = torch.nn.functional.linear(x, blk.attn.wqkv)
        hq, hkv, dh = blk.attn.hq, blk.attn.hkv, blk.attn.dh
        k = qkv[:, hq * dh : (hq + hkv) * dh].view(len(kept), hkv, dh)
        new_positions = torch.arange(len(kept))
        from interaction_actor.model.transformer import apply_rope

        fresh = apply_rope(k, model.transformer.rope_cos[new_positions][:, None], model.transformer.rope_sin[
            new_positions][:, None]).transpose(0, 1)
    torch.testing.assert_close(s.cache.kv[0, 0, :, : len(kept)], fresh, rtol=1e-4, atol=1e-5)


def test_a_sampled_voiced_session_replays_exactly_for_its_seed():
    m = build_model("tiny", seed=4)
    from interaction_actor.model.fusion import InteractionModel

    m2 = InteractionModel(m.config.replace(temperature=1.0)).eval()
    m2.load_state_dict(m.state_dict())
    runs = []
    for _ in range(2):
        s = new_session(m2, "replay", seed=42)
        runs.append(drive(m2, [s], 12, seed=5, voice_every=2))
    other = drive(m2, [new_session(m2, "replay", seed=43)], 12, seed=5, voice_every=2)
    flat = [(o[0].text, o[0].controls, o[0].mel) for o in runs[0]]
    again = [(o[0].text, o[0].controls, o[0].mel) for o in runs[1]]
    for x, y in zip(flat, again, strict=True):
        assert x[:2] == y[:2] and torch.equal(x[2], y[2])
    assert [o[0].text for o in other] != [f[0] for f in flat]


def test_training_forward_returns_text_and_flow_losses_that_reach_every_module(model):
    s = new_session(model, "train", record=True)
    drive(model, [s], 4, voice_every=1)
    seq = s.record.sequence()
    n = seq.tokens.shape[1]
    targets = text_targets(seq.tokens, model.layout)
    mel_mask = mel_slot_mask(n, model.layout)[None] & torch.ones(1, n, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    mel_targets = torch.rand(1, n, 80, generator=g) * 5 - 6
    seq.image_mask[0, model.layout.turn_start(0) + model.layout.image] = True
    seq.patches = torch.rand(1, 40, 40, 3, generator=g)
    # the previous turn's mel at the voiced turns' mel-in slots (the default sampler, flow_noise 0, gives an
    # untrained head's constant mel there, which would leave mel_in without a gradient)
    seq.mel_in[seq.mel_mask] = torch.rand(int(seq.mel_mask.sum()), 80, generator=g) * 5 - 6
    model.zero_grad()
    out = model.training_loss(seq, targets, mel_targets, mel_mask, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["text_ce"]) and torch.isfinite(out["flow"])
    # the last turn's final output token is still pending (written at the next turn's start)
    assert int((targets != -100).sum()) == 4 * model.layout.out_slots - 1
    out["loss"].backward()
    for name in ("tok_emb", "audio_emb", "mel_in", "hmlp.w1", "transformer.blocks.0.attn.wqkv", "flow.w_out"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    model.zero_grad()


def test_output_tokens_are_only_bytes_and_controls(model):
    s = new_session(model, "vocab", record=True)
    drive(model, [s], 5)
    seq = s.record.sequence().tokens[0]
    off = torch.arange(seq.shape[0]) - 1
    ys = seq[(off >= 0) & (off % model.layout.turn_len > model.layout.out)]
    assert set(ys.tolist()) <= set(T.OUTPUT_TOKENS)


def test_bad_input_is_a_typed_error_that_changes_no_session(model):
    good, other = new_session(model, "good"), new_session(model, "other")
    bad_inputs = [TurnInput(audio=torch.zeros(3200, dtype=torch.int16)), TurnInput(frame=torch.zeros(8, 8, 3)),
                  TurnInput(text=b"bytes"), TurnInput(audio=torch.full((3200,), float("nan")))]
    for bad in bad_inputs:
        with pytest.raises((TypeError, ValueError)):
            step_batch(model, [good, other], [TurnInput(audio=torch.zeros(3200)), bad])
        assert (good.turn, good.cache.pos, good.inputs.dmel.frames) == (0, 1, 0)
    with pytest.raises(ValueError):
        step_batch(model, [good], [])
    with pytest.raises(ValueError):
        new_session(model, "small", capacity=10)


def test_fill_after_predicts_where_the_capacity_rule_leaves_a_session(model):
    cap = 1 + 7 * model.layout.turn_len + 3
    s = new_session(model, "fill", capacity=cap)
    for k in range(1, 26):
        drive(model, [s], 1, seed=k)
        assert s.cache.pos == fill_after(model, k, cap)
    assert s.cache.compactions >= 3


def test_a_delegated_task_spanning_turns_is_reported_once_when_closed(model):
    from interaction_actor.model.session import _finish_turn

    s = new_session(model, "deleg")
    first = _finish_turn(s, [T.encode("a")[0], T.DELEGATE, *T.encode("ti")], False, None, None, 80)
    s.turn += 1
    second = _finish_turn(s, [*T.encode("mer"), T.DELEGATE_END], False, None, None, 80)
    assert (first.text, first.controls, first.delegate_task) == ("a", [], None)
    assert (second.text, second.controls, second.delegate_task) == ("", ["delegate"], "timer")


def test_a_delegated_task_is_reported_without_the_heard_full_stop_it_copied(model):
    from interaction_actor.model.session import _finish_turn

    s = new_session(model, "stop")
    out = _finish_turn(s, [T.DELEGATE, *T.encode("weather Nairobi. "), T.DELEGATE_END], False, None, None, 80)
    assert (out.controls, out.delegate_task) == (["delegate"], "weather Nairobi")


def test_a_delegated_task_of_punctuation_alone_is_dropped(model):
    from interaction_actor.model.session import _finish_turn

    s = new_session(model, "dots")
    out = _finish_turn(s, [T.DELEGATE, *T.encode(" ."), T.DELEGATE_END], False, None, None, 80)
    assert (out.controls, out.delegate_task, s.speech.task) == ([], None, None)


def test_a_silent_state_token_is_reported_as_state_and_never_as_text_or_speech(model):
    s = new_session(model, "state")
    bias = model.output_bias.clone()
    try:  # let the real session emit only <state:7> (a tiny untrained model would not choose it)
        model.output_bias.fill_(float("-inf"))
        model.output_bias[T.state_token(7)] = 0.0
        out = step_batch(model, [s], [TurnInput(audio=torch.zeros(3200), text="hi")])[0]
    finally:
        model.output_bias.copy_(bias)
    assert (out.state, out.text, out.controls, out.speaking, out.pcm) == (7, "", [], False, None)
    assert not s.speech.speaking and s.speech.task is None


def test_a_delegated_task_left_open_ends_where_speech_starts_and_the_speech_is_text(model):
    from interaction_actor.model.session import _finish_turn

    s = new_session(model, "open")
    first = _finish_turn(s, [T.DELEGATE, *T.encode("wx")], False, None, None, 80)
    s.turn += 1
    second = _finish_turn(s, [T.START_SPEAKING, *T.encode("hi")], False, None, None, 80)
    assert (first.controls, first.delegate_task) == ([], None)
    assert (second.text, second.controls, second.delegate_task) == ("hi", ["delegate", "start_speaking"], "wx")


def test_barge_in_silences_the_assistant_in_the_same_turn(model):
    s = new_session(model, "barge")
    s.speech.speaking = True
    voiced = step_batch(model, [s], [TurnInput(audio=torch.zeros(3200))])[0]
    s.speech.speaking = True
    barged = step_batch(model, [s], [TurnInput(audio=torch.zeros(3200), barge_in=True)])[0]
    assert voiced.speaking and voiced.pcm is not None and voiced.pcm.shape == (3200,) and voiced.mel.shape == (16, 80)
    assert not barged.speaking and barged.pcm is None and barged.mel.shape == (0, 80)


def test_a_few_training_steps_on_a_streamed_sequence_lower_the_loss():
    from interaction_actor.model.fusion import InteractionModel

    torch.manual_seed(0)
    m = InteractionModel(build_model("tiny", seed=0).config)  # the preset's config; weights from the seed above
    s = new_session(m, "fit", record=True)
    drive(m.eval(), [s], 4, voice_every=1)
    seq = s.record.sequence()
    n = seq.tokens.shape[1]
    targets = text_targets(seq.tokens, m.layout)
    mel_mask = mel_slot_mask(n, m.layout)[None]
    mel_targets = torch.linspace(-6, 0, 80).expand(1, n, 80)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        out = m.training_loss(seq, targets, mel_targets, mel_mask, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_the_slot_embedding_row_is_the_offset_in_the_turn_block_and_zero_for_bos(model):
    lay = model.layout
    pos = torch.tensor([0, 1, lay.turn_len, lay.turn_len + 1, 1 + 3 * lay.turn_len + lay.ctx])
    assert model.slot_index(pos).tolist() == [0, 1, lay.turn_len, 1, 1 + lay.ctx]


def test_streaming_with_byte_history_and_copy_candidates_equals_the_full_forward(model, monkeypatch):
    """The untrained model rarely speaks, so the sampler replays an echo episode's targets (a fake
    sampler: the property is the forward, which sees real history and candidate ids either way)."""
    import interaction_actor.model.session as S
    from interaction_actor.training import synth

    ep = synth.episode(3, "echo", model.config)
    monkeypatch.setattr(S, "_choose", lambda m, logits, sessions, slot: [ep.targets[sessions[0].turn][slot]])
    s = new_session(model, "copy", record=True)
    for inp in ep.inputs:
        step_batch(model, [s], [inp])
    seq = s.record.sequence()
    assert int((seq.cand[..., 0] >= 0).sum()) > 5 and int((seq.hist[..., 0] >= 0).sum()) > 10
    with torch.no_grad():
        hidden, _ = model.forward_sequence(seq)
    torch.testing.assert_close(s.record.hidden(), hidden[0], rtol=1e-4, atol=1e-4)


def test_listen_yields_the_floor_at_once_its_own_turn_plays_no_audio(monkeypatch):
    """<listen> (the model heard the user barge in) silences the turn it is emitted in, not only the next
    one: the stop comes from the audio alone, one turn sooner than <stop_speaking>. The model's choices are
    scripted here (a tiny untrained model would not choose them); the forward, the flow head and the
    vocoder are real."""
    from interaction_actor.model import session as S

    model = build_model("tiny", seed=0)
    plan = iter([[T.START_SPEAKING, T.EMPTY, T.EMPTY], [ord("o"), ord("k"), T.EMPTY], [T.LISTEN, T.EMPTY, T.EMPTY],
                 [T.EMPTY] * 3])
    real = S._decode_outputs

    def scripted(m, sessions, hidden):
        real(m, sessions, hidden)  # the decode steps run (cache written); their tokens are replaced
        toks = next(plan)
        for s in sessions:
            for t in toks:
                s.speech.history.push(t)
        return [list(toks)]

    monkeypatch.setattr(S, "_decode_outputs", scripted)
    s = new_session(model, "listen")
    outs = [step_batch(model, [s], [TurnInput()])[0] for _ in range(4)]
    assert outs[1].pcm is not None and outs[1].speaking  # voiced after <start_speaking>
    assert outs[2].pcm is None and not outs[2].speaking and "listen" in outs[2].controls
    assert outs[3].pcm is None and not outs[3].speaking
