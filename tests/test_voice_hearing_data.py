"""The training data of the native model's voice and hearing: the assistant's speech is espeak-ng's
rendering of what it says, aligned to the bytes it emits (training/voice.py); the user's speech is
espeak-ng in many voices with the ears' real transcripts (training/spoken.py), split between training
and evaluation; background results carry their surfacing mode into the context slots."""

from __future__ import annotations

import pytest
import torch

from interaction_actor.model import text as T
from interaction_actor.model.config import preset
from interaction_actor.model.featurize import InputStreams, featurize_turn
from interaction_actor.model.layout import Lookup, TurnLayout
from interaction_actor.model.session import TurnInput
from interaction_actor.training import spoken, synth, voice

REPLIES = ("ok, sure.", "Oslo hail, -3 C", "red!", "3", "Kyiv snow, 21 C", "hello")


def test_espeak_reports_where_each_word_starts_in_its_audio():
    from interaction_actor.ears.speech import say_timed

    audio, words = say_timed("Rome rain today", "en-us", 175, 50)
    assert [w[0] for w in words] == [0, 5, 10]  # first character of each word
    starts = [w[2] for w in words]
    assert starts == sorted(starts) and starts[-1] < audio.size and starts[1] > 1600  # "Rome" lasts > 100 ms


@pytest.mark.parametrize("text", REPLIES)
def test_an_utterance_plan_emits_every_byte_in_the_turn_whose_audio_starts_saying_it(text):
    u = voice.utterance(text)
    assert u.turns[0][0] == T.START_SPEAKING and T.STOP_SPEAKING in u.turns[-1]
    assert all(len(row) == 3 for row in u.turns)  # K slots a turn, <empty> pads
    said = [t for row in u.turns for t in row if 0 <= t < T.N_BYTES]
    assert T.decode(said) == text
    assert u.voiced_turns == len(u.turns)  # every turn of the plan plays audio, the <start_speaking> one too
    assert u.mel.shape == (16 * u.voiced_turns, 80)
    assert float(u.turn_mel(0).max()) > -4.0  # the first turn already sounds


def test_the_assistant_speaks_about_three_bytes_a_turn_and_slows_only_where_the_text_cannot_keep_up():
    plans = [voice.utterance(t) for t in REPLIES]
    bytes_, turns = sum(len(T.encode(u.text)) for u in plans), sum(u.voiced_turns for u in plans)
    assert 1.0 <= bytes_ / turns <= 3.0
    assert all(1.0 <= u.stretch <= 1.6 for u in plans)


def test_each_turns_letters_start_evenly_over_the_turn_and_punctuation_anchors_nothing():
    anchors = voice._even([*b"ab, c"], [0, 0, 0, 0, 1], [0.0, 100.0, 200.0, 200.0, 3000.0])
    assert anchors == [(0.0, 0.0), (1600.0, 100.0), (3200.0, 3000.0)]


def test_the_planned_voice_is_speech_the_transcriber_understands():
    """The targets of the flow head, through the project's own vocoder, are heard as the words they say
    (the ceiling of the model's voice, `voice_wer_reference`'s kin)."""

    from interaction_actor.ears.bench import word_errors
    from interaction_actor.model.vocoder import griffin_lim

    for text in ("hello", "red!"):
        wave = griffin_lim(voice.utterance(text).mel, preset("small")).numpy()
        got = spoken.transcribe(wave)
        assert word_errors(text, got)[0] == 0, got


def _whole(ep) -> bool:
    """Every utterance of the episode ends inside it (one cut by the episode's end is another text)."""
    flat = [t for row in ep.targets for t in row]
    return flat.count(T.START_SPEAKING) == flat.count(T.STOP_SPEAKING)


def test_voice_mels_rebuild_an_episodes_own_voice_from_its_tokens():
    ep = next(e for e in (synth.episode(s, "delegation") for s in range(30)) if e.says and _whole(e))
    rebuilt = voice.voice_mels(ep.targets)
    assert set(rebuilt) == set(ep.voice) - {t for t in ep.voice if t >= ep.turns}
    assert all(torch.equal(rebuilt[t], ep.voice[t]) for t in rebuilt)


def test_training_and_evaluation_share_no_content_voice_or_template():
    assert spoken.content_overlap() == 0.0
    for pool in (spoken.CITIES, spoken.TYPED_CITIES, spoken.CONDITIONS, spoken.WORDS, spoken.CHAT, spoken.BARGE,
                 spoken.VOICES, spoken.REQUEST_TEMPLATES):
        assert not set(pool[spoken.TRAIN]) & set(pool[spoken.EVAL])


def test_every_training_sentence_has_its_transcripts_shipped_so_training_never_runs_the_transcriber(
        monkeypatch, tmp_path):
    def refuse(_audio):
        raise AssertionError("training asked the transcriber")

    monkeypatch.setattr(spoken, "_transcribe", refuse)
    monkeypatch.setattr(spoken, "_user_cache", lambda: tmp_path)  # heard.json alone, not this machine's cache
    got = [spoken.heard(s, spoken.TRAIN, v) for s in spoken.sentences(spoken.TRAIN) for v in range(spoken.VARIANTS)]
    assert all(isinstance(x, str) for x in got) and sum(bool(x) for x in got) > 0.9 * len(got)


def test_a_spoken_request_arrives_as_heard_text_only_after_the_speech_ends():
    eps = [synth.episode(s, "delegation") for s in range(40)]
    spoken_eps = [e for e in eps if e.expect["spoken"]]
    assert spoken_eps
    for ep in spoken_eps:
        end_turn = ep.speech[0][1] // 3200
        arrive, text = ep.expect["heard"][0]
        assert arrive - end_turn in spoken.HEARD_LAG_TURNS and ep.inputs[arrive].heard.startswith(text)
        assert ep.expect["ack_turn"] is not None and ep.expect["task_turn"] >= arrive


def test_a_silent_result_is_never_voiced_in_the_targets():
    eps = [synth.episode(s, "delegation") for s in range(60)]
    silent = [e for e in eps if e.expect["mode"] == "silent" and e.expect["result_turn"] is not None]
    assert silent
    for ep in silent:
        assert ep.inputs[ep.expect["result_turn"]].context[0] == T.CTX_SILENT
        assert not any(t == T.START_SPEAKING for row in ep.targets[ep.expect["result_turn"]:] for t in row)


def test_held_out_barge_ins_come_without_the_clients_hint():
    eps = [synth.episode(s, "turn_taking") for s in synth.held_out_seeds(20)]
    barged = [e for e in eps if e.expect["barge_in"] is not None]
    assert barged and not any(inp.barge_in for e in barged for inp in e.inputs)
    assert all(e.targets[e.expect["listen_turn"]][0] == T.LISTEN for e in barged)


def test_heard_text_fills_the_text_slots_after_typed_text_and_markers_are_stripped_from_it():
    cfg = preset("tiny")
    lay = TurnLayout.from_config(cfg)
    streams, look = InputStreams(), Lookup()
    f = featurize_turn(streams, TurnInput(text="ab", heard="c\x1dd"), cfg, lay, 1, look)
    assert T.decode(f.text_ids) == "abcd"[: lay.text_in]


def test_a_context_line_is_queued_as_its_mode_marker_then_its_text():
    cfg = preset("tiny").replace(context_slots=12)
    lay = TurnLayout.from_config(cfg)
    streams, look = InputStreams(), Lookup()
    f = featurize_turn(streams, TurnInput(context=T.CTX_SILENT + "Lima" + "\n" + "Rome"), cfg, lay, 1, look)
    assert T.decode(f.ctx_ids) == T.CTX_SILENT + "Lima" + T.CTX_IDLE + "Rome"  # an unmarked line: when idle
    # the text starts a message of its own: the copy lookup offers "L", not the marker
    assert f.ctx_hist[1] == f.ctx_hist[0] == (256, 256)


def test_the_voice_learns_to_read_real_words_but_never_a_held_out_one():
    words = voice.reading_vocabulary()
    assert len(words) > 5000 and len(set(words)) == len(words)
    held = {w.lower() for pool in (spoken.CITIES, spoken.CONDITIONS, spoken.WORDS) for w in pool[spoken.EVAL]}
    assert not held & {w.lower() for w in words}
    echoed = [body for s in range(40) for body, _ in synth.episode(s, "echo").expect["says"]]
    assert any(" " in b and b.split()[0] in words for b in echoed)  # read-aloud strings are among the echoes


def test_a_paused_request_ends_its_first_half_on_a_continuation_and_its_second_starts_with_the_city():
    assert spoken.pause_split("what is the weather in {city}", "Rome") == ("what is the weather in,", "Rome")
    assert spoken.pause_split("give me the {city} weather", "Rome") == ("give me the,", "Rome weather")


def test_the_model_is_taught_to_stay_quiet_through_a_pause_in_a_request():
    eps = [synth.episode(s, "pause_handling") for s in range(12)]
    for ep in eps:
        lo, hi = ep.expect["pause"]
        assert 0.6 * 16000 <= hi - lo <= 1.5 * 16000
        last = hi // 3200
        assert not any(t == T.START_SPEAKING for row in ep.targets[: last + 1] for t in row)
        assert ep.expect["ack_turn"] is None or ep.expect["ack_turn"] > last
    assert any(ep.expect["task_turn"] < len(ep.targets) for ep in eps)  # and then delegates the request


@pytest.mark.parametrize(("heard", "name"), [("Tell me the weather in Denver.", "Denver."),
                                             ("Give me the Paris Weather", "Paris"),
                                             ("Oslo, please.", "Oslo,"), ("tell me the weather in the lobby", "")])
def test_the_name_a_delegate_task_is_offered_is_the_first_capitalised_word_after_the_first(heard, name):
    from interaction_actor.model.layout import first_name

    assert first_name(heard) == name


def test_every_training_delegation_can_copy_its_city_from_what_the_model_was_given():
    """Training never asks for a city the copy candidates do not offer (a misheard city is not taught
    by recall): at every target byte of the city in a <delegate> task, the byte is a candidate."""
    from interaction_actor.training.train import featurize

    cfg = preset("small")
    checked = 0
    for s in range(30):
        ep = synth.episode(s, "delegation", cfg)
        f = featurize(ep, cfg)
        tgt, cand = f.text_targets[0].tolist(), f.chunk.cand[0].tolist()
        task = [(y, c) for y, c in zip(tgt, cand, strict=True) if y >= 0]
        if T.DELEGATE not in [y for y, _ in task] or T.DELEGATE_END not in [y for y, _ in task]:
            continue  # no task, or one the episode's end cuts (a long request heard late: "weather Lon")
        i = [y for y, _ in task].index(T.DELEGATE)
        city = task[i + 1 + len("weather ") : i + 1 + len(ep.expect["task"])]
        assert T.decode([y for y, _ in city]) == ep.expect["task"].split(" ", 1)[1]
        assert all(y in c for y, c in city)
        checked += 1
    assert checked >= 20


def test_typed_training_requests_name_many_cities_and_spoken_ones_only_cities_with_shipped_transcripts():
    """A name learnt by heart is not copied: typed requests draw from spoken.TYPED_CITIES (text only),
    spoken ones from the cities whose audio and transcripts heard.json ships (spoken.request_pairs)."""
    typed, said = set(), set()
    for s in range(200):
        ex = synth.episode(s, "delegation").expect
        (said if ex["spoken"] else typed).add(ex["task"].split(" ", 1)[1])
    assert len(typed - set(spoken.CITIES[spoken.TRAIN])) >= 40
    assert said <= {c for _, c in spoken.request_pairs(spoken.TRAIN)} and len(said) >= 30
    assert all(c.isascii() and c.isalpha() and c[0].isupper() for c in spoken.TYPED_CITIES[spoken.TRAIN])


def test_spoken_training_requests_name_sixty_cities_and_held_out_ones_keep_their_six_in_both_phrasings():
    train = spoken.request_pairs(spoken.TRAIN)
    assert len({c for _, c in train}) == len(spoken.CITIES[spoken.TRAIN]) + len(spoken.SPOKEN_EXTRA) == 60
    assert {t for t, _ in train} == set(spoken.REQUEST_TEMPLATES[spoken.TRAIN])
    assert not {c for _, c in train} & set(spoken.CITIES[spoken.EVAL])
    assert spoken.request_pairs(spoken.EVAL) == [(t, c) for t in spoken.REQUEST_TEMPLATES[spoken.EVAL]
                                                 for c in spoken.CITIES[spoken.EVAL]]
