"""The synthetic episode generator: deterministic, held-out seeds apart, and featurized as the session sees it."""

from __future__ import annotations

import pytest
import torch

from interaction_actor.model import text as T
from interaction_actor.model.config import ModelConfig
from interaction_actor.model.fusion import build_model
from interaction_actor.model.layout import TurnLayout
from interaction_actor.model.session import new_session, step_batch
from interaction_actor.training import synth
from interaction_actor.training.train import featurize, train_seeds


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return build_model("tiny", seed=4)


def _same(a: synth.Episode, b: synth.Episode) -> bool:
    for x, y in zip(a.inputs, b.inputs, strict=True):
        if (x.text, x.context, x.barge_in) != (y.text, y.context, y.barge_in):
            return False
        if not torch.equal(x.audio, y.audio):
            return False
        if (x.frame is None) != (y.frame is None) or (x.frame is not None and not torch.equal(x.frame, y.frame)):
            return False
    return a.targets == b.targets and a.expect == b.expect


@pytest.mark.parametrize("task", synth.TASKS)
def test_an_episode_is_a_pure_function_of_its_task_and_seed(task):
    assert _same(synth.episode(123, task), synth.episode(123, task))


def test_different_seeds_give_different_episodes():
    eps = [synth.episode(s, "turn_taking") for s in range(6)]
    assert len({e.expect["end_sample"] for e in eps}) > 1
    assert not _same(eps[0], eps[1])


def test_training_seeds_never_reach_the_held_out_seeds():
    held = min(synth.held_out_seeds(10))
    assert all(max(train_seeds(step, 64, seed)) < held for step in (0, 10**6, 10**12) for seed in (0, 7))


def test_each_expected_utterance_starts_with_start_speaking_at_its_expected_turn():
    tasks_with_utterances = set()
    for task in synth.TASKS:
        for s in range(20):
            ep = synth.episode(s, task)
            assert ep.turns == synth.EPISODE_TURNS
            if ep.expect.get("say") and ep.expect["turn"] is not None:
                row = ep.targets[ep.expect["turn"]]
                assert row[0] == T.START_SPEAKING
                toks = [t for r in ep.targets[ep.expect["turn"]:] for t in r]
                ends = [i for i, t in enumerate(toks) if t in (T.STOP_SPEAKING, T.LISTEN)]
                said = [t for t in toks[: ends[0] if ends else None] if 0 <= t < T.N_BYTES]
                assert said and ep.expect["say"].startswith(T.decode(said))  # the voice plan's pace, cut at the end
                tasks_with_utterances.add(task)
    assert tasks_with_utterances == set(synth.TASKS)  # the check above ran, on utterances of every task


def test_the_featurized_episode_is_exactly_what_the_streaming_session_writes(tiny):
    """Teacher forcing with the session's own outputs must rebuild the session's recorded sequence."""
    lay = tiny.layout
    for task in synth.TASKS:
        ep = synth.episode(31, task, tiny.config)
        s = new_session(tiny, "feat", record=True)
        for inp in ep.inputs:
            step_batch(tiny, [s], [inp])
        seq = s.record.sequence()
        toks = torch.cat([seq.tokens[0], torch.tensor([s.pending.token])])
        outs = [[int(toks[lay.turn_start(k) + lay.out + 1 + j]) for j in range(lay.out_slots)]
                for k in range(ep.turns)]
        c = featurize(ep, tiny.config, outs).chunk
        n = seq.tokens.shape[1]
        for name in ("tokens", "dmel", "audio_mask", "image_mask", "mel_mask", "hist", "cand"):
            assert torch.equal(getattr(c, name)[:, :n], getattr(seq, name)), (task, name)
        assert torch.equal(c.patches, seq.patches), task


def test_a_session_saying_the_targets_writes_the_byte_history_the_trainer_feeds(tiny, monkeypatch):
    """The untrained model rarely speaks, so the sampler is replaced by one that replays the episode's
    targets (the property is about what the session writes, whoever chose the tokens)."""
    import interaction_actor.model.session as S

    for task in ("echo", "delegation", "time_speak"):
        ep = synth.episode(5, task, tiny.config)
        monkeypatch.setattr(S, "_choose", lambda m, logits, sessions, slot, ep=ep: [ep.targets[sessions[0].turn][slot]])
        s = new_session(tiny, "hist", record=True)
        for inp in ep.inputs:
            step_batch(tiny, [s], [inp])
        seq = s.record.sequence()
        c = featurize(ep, tiny.config).chunk
        n = seq.tokens.shape[1]
        assert torch.equal(c.tokens[:, :n], seq.tokens), task
        assert torch.equal(c.hist[:, :n], seq.hist), task
        assert torch.equal(c.cand[:, :n], seq.cand), task
        assert int((seq.hist[..., 0] >= 0).sum()) > 10, task  # the history was exercised
        assert int((seq.cand[..., 0] >= 0).sum()) > 3, task


def test_a_slot_byte_and_the_output_about_to_say_it_carry_the_same_history():
    cfg = build_model("tiny", seed=0).config
    lay = TurnLayout.from_config(cfg)
    # an episode where nobody talks: heard text would add its own (typed-argument) candidates
    # and one whose first string is voiced (a SILENT one is not said)
    ep = next(e for e in (synth.episode(s, "echo", cfg) for s in range(80)) if not e.expect["heard"]
              and next(i.context for i in e.inputs if i.context)[0] != T.CTX_SILENT)
    c = featurize(ep, cfg).chunk
    body, turn = ep.expect["says"][0]
    arrive = next(k for k, inp in enumerate(ep.inputs) if inp.context)  # the first string's turn
    assert ep.inputs[arrive].context[0] in T.MODE_MARKERS and ep.inputs[arrive].context[1:] == body
    # the mode marker is a message of its own, so the body starts a message (and the copy offers it)
    first = lay.turn_start(arrive) + lay.ctx + 1
    src = c.hist[0, first : first + len(body)]
    # the output position holding <start_speaking> predicts the first byte: history (START, START)
    at = lay.turn_start(turn) + lay.out + 1
    assert int(c.tokens[0, at]) == T.START_SPEAKING
    assert c.hist[0, at].tolist() == [256, 256]
    assert src[0].tolist() == [256, 256] and src[1].tolist() == [ord(body[0]), 256]
    # ... and its copy candidate is the string's first byte; the next position's is the second byte
    assert c.cand[0, at].tolist() == [ord(body[0])] * 2
    assert int(c.cand[0, at + 1, 0]) == ord(body[1])  # by (h1, h2); by h1 alone: the newest byte after it


def test_rep_count_aux_targets_count_the_floor_hits_seen_so_far_at_each_frames_last_patch():
    cfg = build_model("tiny", seed=0).config
    lay = TurnLayout.from_config(cfg)
    for s in range(10):
        ep = synth.episode(s, "rep_count", cfg)
        f = featurize(ep, cfg)
        counts = [int(f.aux_targets[0, lay.turn_start(k) + lay.image + lay.patches - 1]) - ord("0") for k in range(10)]
        assert counts == sorted(counts) and counts[0] in (0, 1)
        assert counts[-1] == int(ep.expect["say"])
        assert int((f.aux_targets != -100).sum()) == 10


def test_time_speak_counts_down_in_silent_state_tokens_until_the_turn_it_speaks():
    cfg = build_model("tiny", seed=0).config
    for s in range(10):
        ep = synth.episode(s, "time_speak", cfg)
        turn, wait = ep.expect["turn"], 5 * ep.expect["n"]
        states = [T.state_value(y[0]) for y in ep.targets]
        assert states[turn - wait : turn] == list(range(wait, 0, -1))
        assert all(v is None for v in states[: turn - wait] + states[turn:])
        assert ep.targets[turn][0] == T.START_SPEAKING


def test_rep_count_keeps_a_silent_tally_that_ends_at_the_answer():
    cfg = build_model("tiny", seed=0).config
    for s in range(10):
        ep = synth.episode(s, "rep_count", cfg)
        turn = ep.expect["turn"]
        tally = [T.state_value(y[0]) for y in ep.targets[:turn]]
        assert tally[0] == 0 and tally == sorted(tally)
        assert tally[-1] == int(ep.expect["say"])
        assert all(b - a in (0, 1) for a, b in zip(tally, tally[1:], strict=False))
        assert ep.targets[turn][:2] == [T.START_SPEAKING, ord(ep.expect["say"])]


def test_a_training_batch_draws_its_tasks_from_the_mix_in_order():
    from interaction_actor.training.train import TrainConfig, batch_tasks

    tc = TrainConfig(batch=3, episodes_per_row=1, mix=("cue_speak", "delegation"))
    assert batch_tasks(tc) == ["cue_speak", "delegation", "cue_speak"]
    assert batch_tasks(tc, step=1) == ["delegation", "cue_speak", "delegation"]  # the mix rotates on
    with pytest.raises(ValueError, match="unknown task"):
        batch_tasks(TrainConfig(mix=("juggling",)))


def test_an_utterance_s_first_byte_is_looked_up_in_context_messages_then_typed_arguments():
    from interaction_actor.model.layout import HIST_NONE, HIST_START, Lookup, message_hist

    look = Lookup()
    typed, ctx = T.encode("say go"), T.encode("Oslo")
    look.add(10, typed, message_hist(typed), context=False)
    start = (HIST_START, HIST_START)
    assert look.cand(start) == (ord("g"), HIST_NONE)  # only the typed command's argument, first
    assert look.cand((ord("g"), HIST_START)) == (HIST_NONE, ord("o"))  # by the last byte alone
    look.add(20, ctx, message_hist(ctx), context=True)
    assert look.cand(start) == (ord("O"), ord("O"))
    assert look.cand((ord("O"), HIST_START)) == (ord("s"), ord("s"))


def test_compaction_forgets_the_copy_candidates_it_drops():
    from interaction_actor.model.layout import HIST_NONE, HIST_START, Lookup, message_hist

    look = Lookup()
    a, b = T.encode("ab"), T.encode("cd")
    look.add(100, a, message_hist(a), context=True)
    look.add(200, b, message_hist(b), context=True)
    look.drop(50, 150)
    assert look.cand((ord("a"), HIST_START)) == (HIST_NONE, HIST_NONE)
    assert look.cand((HIST_START, HIST_START)) == (ord("c"), ord("c"))
    assert [p for p, *_ in look.sources] == [100, 101]


def test_a_voiced_result_is_not_offered_again_once_its_utterance_has_ended():
    from interaction_actor.model.layout import HIST_NONE, HIST_START, History, Lookup, message_hist

    look, history = Lookup(), History()
    start = (HIST_START, HIST_START)
    res = T.encode("Oslo snow")
    look.add(10, res, message_hist(res), context=True)
    assert _say(look, history, [T.START_SPEAKING]) == (ord("O"), ord("O"))  # offered as the utterance starts
    _say(look, history, [*res, T.STOP_SPEAKING])  # the model says it
    assert look.cand(start) == (HIST_NONE, HIST_NONE)  # the next reply ("ok, sure.") is not offered it
    assert look.cand((ord(" "), ord("o"))) == (HIST_NONE, HIST_NONE)  # nor any byte of it
    look.drop(0, 5)  # compaction rebuilds the index: what was spent stays spent
    assert look.cand(start) == (HIST_NONE, HIST_NONE) and look.spent == len(res)
    new = T.encode("Rome")
    look.add(30, new, message_hist(new), context=True)
    assert look.cand(start) == (ord("R"), ord("R"))  # a message after the utterance is offered


def test_a_result_the_model_has_not_said_is_still_offered_after_another_utterance():
    """The cue_with_result collision: a WHEN_IDLE result arrives, the red frame comes, the model says
    "red!" (not copying the result); the result is still owed, so the next utterance's first byte is
    offered its start (before, everything that arrived before an utterance ended was spent, and the
    model trained on collisions said "red!" and then garbled the result: "Daen  sn.")."""
    from interaction_actor.model.layout import HIST_NONE, HIST_START, History, Lookup, message_hist

    look, history = Lookup(), History()
    start = (HIST_START, HIST_START)
    res = T.encode("Oslo snow")
    look.add(10, res, message_hist(res), context=True, complete=True)
    _say(look, history, [T.START_SPEAKING, *T.encode("red!"), T.STOP_SPEAKING])
    assert look.cand(start)[0] == ord("O")
    assert look.cand((ord(" "), ord("o")))[0] == HIST_NONE  # its start only: no byte of it by history
    look.drop(0, 5)  # compaction keeps it owed
    assert look.cand(start)[0] == ord("O")
    assert _say(look, history, [T.START_SPEAKING, *T.encode("Oslo")])[0] == ord(" ")  # the pointer reads on
    _say(look, history, [*T.encode(" snow"), T.STOP_SPEAKING])
    assert look.cand(start) == (HIST_NONE, HIST_NONE)  # said: no longer owed


def _say(look, history, tokens):
    """Push tokens as the session does (each with the History ids it was chosen under); the candidates
    offered after the last one."""
    for t in tokens:
        look.push(t, history.ids())
        history.push(t)
    return look.cand(history.ids())


def test_a_copy_follows_its_message_past_a_repeated_pair():
    from interaction_actor.model.layout import HIST_NONE, History, Lookup, message_hist

    look, history = Lookup(), History()
    res = T.encode("Oslo clouds")
    look.add(10, res, message_hist(res), context=True)
    # by history alone, "lo" was last followed by "u" (clo-u-ds); the pointer stays in "Oslo"
    assert _say(look, history, [T.START_SPEAKING, *T.encode("Oslo")])[0] == ord(" ")
    assert _say(look, history, T.encode(" clouds"))[0] == HIST_NONE  # the message's end


def test_a_copy_paused_by_an_empty_slot_resumes_where_it_stopped():
    """The result came in before the model's previous utterance ("red!") ended, so by history it offers
    nothing; only the pointer knows the next byte. An <empty> slot (the voice's pace) must not lose it."""
    from interaction_actor.model.layout import History, Lookup, message_hist

    look, history = Lookup(), History()
    res = T.encode("Lima hail, -1 C")
    look.add(10, res, message_hist(res), context=True, complete=True)
    _say(look, history, [T.START_SPEAKING, *T.encode("red!"), T.STOP_SPEAKING])  # the result is spent
    assert _say(look, history, [T.START_SPEAKING, *T.encode("Lima hail, -")])[0] == ord("1")
    assert _say(look, history, [T.EMPTY, T.EMPTY])[0] == ord("1")
    assert _say(look, history, [ord("1")])[0] == ord(" ")


def test_a_copy_is_offered_the_end_of_its_message_once_the_message_is_complete():
    from interaction_actor.model.layout import CAND_END, History, Lookup, message_hist

    look, history = Lookup(), History()
    res = T.encode("Oslo clouds")
    look.add(10, res, message_hist(res), context=True, complete=True)
    assert _say(look, history, [T.START_SPEAKING, *T.encode("Oslo clouds")])[0] == CAND_END


def test_a_message_still_arriving_offers_no_end_where_its_arrived_bytes_stop():
    from interaction_actor.model.layout import HIST_NONE, History, Lookup, message_hist

    look, history = Lookup(), History()
    res = T.encode("Oslo clouds")
    hist = message_hist(res)
    look.add(10, res[:6], hist[:6], context=True, complete=False)  # "Oslo c", the rest waits for slots
    assert _say(look, history, [T.START_SPEAKING, *T.encode("Oslo c")])[0] == HIST_NONE
    look.add(40, res[6:], hist[6:], context=True, complete=True)
    assert look.cand(history.ids())[0] == ord("l")


def test_a_typed_request_s_city_ends_where_the_typed_message_ends():
    """Through the featurizer: the request takes slots over four turns; once its last byte is in, a task
    that copied the city is offered the end (the model learns to close the task there)."""
    from interaction_actor.model.config import preset
    from interaction_actor.model.featurize import InputStreams, featurize_turn
    from interaction_actor.model.layout import CAND_END, History, Lookup, TurnLayout
    from interaction_actor.model.session import TurnInput

    cfg = preset("small")
    lay = TurnLayout.from_config(cfg)
    streams, look, history = InputStreams(), Lookup(), History()
    featurize_turn(streams, TurnInput(text="tell me the weather in Oslo"), cfg, lay, lay.turn_start(0), look)
    for k in range(1, 4):
        featurize_turn(streams, TurnInput(), cfg, lay, lay.turn_start(k), look)
    assert _say(look, history, [T.DELEGATE, *T.encode("weather ")])[0] == ord("O")
    assert _say(look, history, T.encode("Oslo"))[0] == CAND_END


def test_a_delegate_task_is_offered_the_name_the_user_said_after_a_space_first():
    from interaction_actor.model.layout import History, Lookup, message_hist

    look, history = Lookup(), History()
    heard = T.encode("Tell me the weather in Denver.")
    look.add(10, heard, message_hist(heard), context=False)
    # first, where the copy habit looks; the byte the message goes on with ("i" of "in") second
    assert _say(look, history, [T.DELEGATE, *T.encode("weather ")]) == (ord("D"), ord("i"))
    assert _say(look, history, T.encode("Denve"))[0] == ord("r")  # then the pointer reads on


def test_a_task_copying_the_name_is_offered_its_end_where_the_name_s_letters_end():
    from interaction_actor.model.layout import CAND_END, History, Lookup, message_hist

    look, history = Lookup(), History()
    heard = T.encode("What's the weather in Oslo, please?")
    look.add(10, heard, message_hist(heard), context=False)
    assert _say(look, history, [T.DELEGATE, *T.encode("weather Oslo")]) == (CAND_END, ord(","))
    assert _say(look, history, T.encode(","))[0] == ord(" ")  # copied on anyway: plain copying again


def test_a_task_copying_another_word_is_not_offered_an_end_at_the_word_s_end():
    from interaction_actor.model.layout import CAND_END, History, Lookup, message_hist

    look, history = Lookup(), History()
    heard = T.encode("tell me the weather in Oslo")
    look.add(10, heard, message_hist(heard), context=False)
    assert _say(look, history, [T.DELEGATE, *T.encode("weather")])[0] != CAND_END


def test_a_silent_result_is_never_offered_as_a_copy_candidate():
    from interaction_actor.model.config import preset
    from interaction_actor.model.featurize import InputStreams, featurize_turn
    from interaction_actor.model.layout import HIST_NONE, History, Lookup, TurnLayout
    from interaction_actor.model.session import TurnInput

    cfg = preset("small")
    lay = TurnLayout.from_config(cfg)
    streams, look, history = InputStreams(), Lookup(), History()
    featurize_turn(streams, TurnInput(text="say wait in 1s"), cfg, lay, lay.turn_start(0), look)
    featurize_turn(streams, TurnInput(context=T.CTX_SILENT + "Lima fog, 14 C"), cfg, lay, lay.turn_start(1), look)
    for k in range(2, 5):
        featurize_turn(streams, TurnInput(), cfg, lay, lay.turn_start(k), look)
    # a reply starts with the typed argument, as with no result on offer, not "Lima" nor the marker
    assert _say(look, history, [T.START_SPEAKING]) == (ord("w"), HIST_NONE)
    assert look.cand((ord("f"), ord(" "))) == (HIST_NONE, HIST_NONE)  # "o" of "fog" is not offered
    assert look.cand((ord("i"), ord("L")))[0] == HIST_NONE  # nor "m" of "Lima"


def test_a_mode_marker_whose_result_has_not_arrived_is_not_offered():
    from interaction_actor.model.layout import HIST_NONE, HIST_START, Lookup, message_hist

    look = Lookup()
    mark = T.encode(T.CTX_IDLE)
    look.add(10, mark, message_hist(mark), context=True)  # the result's text takes the next turn's slots
    assert look.cand((HIST_START, HIST_START)) == (HIST_NONE, HIST_NONE)


def test_a_voiced_result_after_a_silent_one_is_offered():
    from interaction_actor.model.config import preset
    from interaction_actor.model.featurize import InputStreams, featurize_turn
    from interaction_actor.model.layout import History, Lookup, TurnLayout
    from interaction_actor.model.session import TurnInput

    cfg = preset("small")
    lay = TurnLayout.from_config(cfg)
    streams, look, history = InputStreams(), Lookup(), History()
    ctx = T.CTX_SILENT + "Lima fog, 14 C\n" + T.CTX_IDLE + "Oslo snow, -3 C"
    for k in range(6):
        featurize_turn(streams, TurnInput(context=ctx if k == 0 else ""), cfg, lay, lay.turn_start(k), look)
    assert _say(look, history, [T.START_SPEAKING])[0] == ord("O")
    assert _say(look, history, T.encode("Oslo snow, -3 "))[0] == ord("C")


def test_a_delegate_task_is_still_offered_the_name_after_a_message_without_one():
    from interaction_actor.model.layout import History, Lookup, message_hist

    look, history = Lookup(), History()
    for i, msg in enumerate(("Tell me the weather in Oslo.", "keep it short")):
        ids = T.encode(msg)
        look.add(10 + 40 * i, ids, message_hist(ids), context=False)
    assert _say(look, history, [T.DELEGATE, *T.encode("weather ")])[0] == ord("O")


def test_a_paused_opening_in_training_chit_chat_is_held_through():
    eps = [synth.episode(s, "turn_taking") for s in range(40)]
    paused = [e for e in eps if any(g == "out" for _, g, _, _ in e.aux)]
    assert paused and len(paused) < len(eps)
    for ep in paused:
        held = [t for t, g, _, _ in ep.aux if g == "out"]
        assert all(all(x == T.EMPTY for x in ep.targets[t]) for t in held)
        assert ep.expect["turn"] is None or ep.expect["turn"] > max(held)


def test_an_utterance_is_not_offered_the_name():
    from interaction_actor.model.layout import History, Lookup, message_hist

    look, history = Lookup(), History()
    heard = T.encode("I met Sam today")
    look.add(10, heard, message_hist(heard), context=False)
    assert _say(look, history, [T.START_SPEAKING, *T.encode("hi ")])[1] == ord("t")  # by h1 alone, not "S"


def test_echo_strings_arrive_in_context_and_are_voiced_whole_once_complete():
    for s in range(10):
        ep = synth.episode(s, "echo")
        voiced = [i.context[1:] for i in ep.inputs if i.context and i.context[0] != T.CTX_SILENT]
        assert [b for b, _ in ep.expect["says"]] == voiced[: len(ep.expect["says"])]
        for body, turn in ep.expect["says"]:
            said = [t for row in ep.targets[turn:] for t in row]
            assert said[0] == T.START_SPEAKING
            text = T.decode([t for t in said[: said.index(T.STOP_SPEAKING)] if 0 <= t < T.N_BYTES]) \
                if T.STOP_SPEAKING in said else None
            assert text == body or text is None  # whole, or cut by the episode's end


def test_echo_teaches_reading_messages_as_long_as_a_background_answer_to_the_end():
    """The shipped synth-12 model voiced no context message over 30 bytes (4 turns of slots): the
    background's 63-byte demo answer went unsaid. Some echo strings must be that long, and said whole."""
    long = []
    for s in range(40):
        ep = synth.episode(s, "echo")
        for body, turn in ep.expect["says"]:
            said = [t for row in ep.targets[turn:] for t in row]
            if len(body) > 4 * ModelConfig().context_slots:
                assert T.STOP_SPEAKING in said  # a long string is said to its end inside the episode
                long.append(body)
    assert len(long) >= 10 and max(map(len, long)) >= 56  # 7 turns of slots: the demo answer is 63


def test_a_paced_echo_gives_the_next_piece_the_turn_after_the_model_stops_as_the_live_pacer_does():
    """paced_echo trains what the live loop's ReadPacer does to a long answer: pieces of at most
    READ_BYTES, each said once complete, the next one (a sentence ends with its full stop) entering
    the turn after the utterance that said the last one stopped."""
    from interaction_actor.model.pacing import READ_BYTES

    cut = four = 0
    for s in range(20):
        ep = synth.episode(s, "paced_echo")
        arrivals = [(k, i.context[1:]) for k, i in enumerate(ep.inputs) if i.context]
        assert all(len(body.encode()) <= READ_BYTES for _, body in arrivals)
        assert [b for b, _ in ep.expect["says"]] == [b for _, b in arrivals][: len(ep.expect["says"])]
        for (body, turn), (nxt, _) in zip(ep.expect["says"], arrivals[1:], strict=False):
            stop = next(k for k in range(turn, ep.turns) if T.STOP_SPEAKING in ep.targets[k])
            if not body.endswith("."):  # more of its sentence follows
                assert nxt == stop + 1
                cut += 1
        four += sum(1 for _, b in arrivals[:4]) == 4 and not any(b.endswith(".") for _, b in arrivals[:3])
    assert cut >= 20 and four >= 2  # about two cuts a sentence; some in four pieces, as the demo's answer


def test_a_chained_episode_is_the_second_task_continuing_the_first_ones_session():
    cfg = build_model("tiny", seed=0).config
    a, b = synth.episode(3, "delegation", cfg), synth.episode(4, "time_speak", cfg)
    ab = synth.chain(a, b)
    assert ab.turns == a.turns + b.turns and ab.task == "time_speak" and ab.expect["offset"] == a.turns
    assert ab.targets[a.turns + b.expect["turn"]][0] == T.START_SPEAKING
    assert ab.aux[-1] == (b.aux[-1][0] + a.turns, *b.aux[-1][1:])
    assert ab.inputs[a.turns].text == b.inputs[0].text


def test_a_held_out_delegation_episode_finishes_voicing_its_result_before_it_ends():
    """synth-11: 40 turns hold a spoken request's whole business (24 cut most spoken results, so a chained
    session's next episode began mid-result); of 200 held-out episodes one is still cut at 40 turns."""
    voiced = cut = 0
    for s in synth.held_out_seeds(60, offset=synth.TASKS.index("delegation") * 1_000_000):
        ep = synth.episode(s, "delegation")
        if ep.expect["turn"] is None:
            continue
        voiced += 1
        cut += not any(t in (T.STOP_SPEAKING, T.LISTEN) for toks in ep.targets[ep.expect["turn"]:] for t in toks)
    assert voiced >= 25 and cut <= 1


def _holds(ep: synth.Episode) -> list[int]:
    return [t for t, group, i, tok in ep.aux if group == "out" and i == 0 and tok == T.EMPTY]


def test_a_pause_episode_holds_every_turn_whose_output_would_reach_the_user_inside_the_pause():
    for seed in range(6):
        ep = synth.episode(seed, "pause_handling")
        lo, hi = ep.expect["pause"]
        inside = [k for k in range(ep.turns) if lo <= (k + 1) * 3200 <= hi]
        assert inside and set(_holds(ep)) >= set(inside)
        assert all(ep.targets[k] == [T.EMPTY] * len(ep.targets[k]) for k in inside)


def test_a_result_arriving_at_the_red_frame_is_said_after_red_and_a_silent_one_never():
    """The demo's answer surfaced the turn before its red frame and the model said neither
    (cue_with_result, a situation evaluated apart)."""
    seen = {"when_idle": 0, "silent": 0}
    for s in range(0, 60):
        ep = synth.episode(s, "cue_with_result")
        ex = ep.expect
        seen[ex["mode"]] += 1
        assert ex["result_ready"] >= ex["turn"]  # still arriving when the red frame comes
        assert [x for _, x in ep.says] == (["red!", ex["result"]] if ex["mode"] == "when_idle" else ["red!"])
        if ex["mode"] == "when_idle":
            assert ex["result_say"] >= max(ex["result_ready"], ex["turn"] + 2)  # after red! and complete
    assert seen["when_idle"] >= 10 and seen["silent"] >= 3


def test_a_silent_result_is_held_for_six_turns_and_a_voiced_one_not_at_all():
    seen = set()
    for seed in range(120):
        ep = synth.episode(seed, "delegation")
        mode = ep.expect.get("mode")
        if mode is None:
            continue
        seen.add(mode)
        holds = _holds(ep)
        if mode == "silent":
            arrive = ep.expect["result_turn"]
            assert holds and min(holds) == arrive and max(holds) <= arrive + 5
        else:
            assert holds == []
        assert all(ep.targets[k] == [T.EMPTY] * len(ep.targets[k]) for k in holds)  # only where the plan is silent
    assert seen == {"silent", "interrupt", "when_idle"}


def test_a_hold_target_sits_at_the_out_slot_of_its_turn(tiny):
    ep = next(e for e in (synth.episode(s, "pause_handling", cfg=tiny.config) for s in range(10)) if _holds(e))
    lay = TurnLayout.from_config(tiny.config)
    aux = featurize(ep, tiny.config).aux_targets[0]
    for k in _holds(ep):
        assert int(aux[lay.turn_start(k) + lay.out]) == T.EMPTY
