"""The vocoder's learned mel -> magnitude net: its contract, that the runtime vocoder uses the shipped
one (and falls back to the filterbank inversion without it), that it rebuilds a held-out utterance's
magnitude closer than the inversion does, and that its trainer learns."""

from __future__ import annotations

import pytest
import torch

from interaction_actor.model import magnitude
from interaction_actor.model.config import preset
from interaction_actor.model.magnitude import MagnitudeConfig, MagnitudeNet
from interaction_actor.model.vocoder import VocoderState, mel_to_magnitude, vocode_turns

CFG = preset("small")
shipped = pytest.mark.skipif(not magnitude.SHIPPED.is_file(), reason="no shipped vocoder net (interplay train-vocoder)")


def test_the_net_maps_each_frame_of_a_turn_to_a_bounded_log_magnitude_per_bin():
    torch.manual_seed(0)
    net = MagnitudeNet(MagnitudeConfig.of(CFG, hidden=32))
    for mel in (torch.randn(2, 16, 80) - 3, torch.full((2, 16, 80), -30.0), torch.full((2, 16, 80), 9.0)):
        y = net(mel)
        assert y.shape == (2, 16, 513) and bool(torch.isfinite(y).all())
        assert float(y.min()) >= net.config.floor and float(y.max()) <= magnitude.MAG_MAX


def test_a_frame_depends_only_on_frames_of_its_own_turn_and_its_neighbours():
    """A turn is vocoded alone (no frame of another turn): a change at frame 0 moves frames 0..3 only."""
    torch.manual_seed(0)
    net = MagnitudeNet(MagnitudeConfig.of(CFG, hidden=32))
    mel = torch.randn(1, 16, 80) - 3
    moved = mel.clone()
    moved[0, 0] += 1.0
    diff = (net(mel) - net(moved)).abs().amax(-1)[0]
    assert bool((diff[:4] > 0).all()) and bool((diff[4:] == 0).all())


@shipped
def test_the_runtime_vocoder_uses_the_shipped_net():
    mel = [torch.full((16, 80), -6.0)]
    mel[0][4:12, 5:30] = -1.0
    net = magnitude.load(CFG)
    assert net is not None
    a = vocode_turns([VocoderState()], mel, CFG)[0]
    b = vocode_turns([VocoderState()], mel, CFG, net=net)[0]
    c = vocode_turns([VocoderState()], mel, CFG, net=False)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_without_a_shipped_net_the_vocoder_inverts_the_filterbank(monkeypatch, tmp_path):
    monkeypatch.setattr(magnitude, "SHIPPED", tmp_path / "absent.pt")
    assert magnitude.load(CFG) is None
    mel = [torch.full((16, 80), -2.0)]
    assert torch.equal(vocode_turns([VocoderState()], mel, CFG)[0], vocode_turns([VocoderState()], mel, CFG, net=False)[0])


@shipped
def test_the_shipped_net_rebuilds_a_held_out_utterances_magnitude_closer_than_the_filterbank_inversion():
    """espeak-ng's own audio of held-out words (never trained on): mean |log10| error of the magnitude over
    bins above 1e-3, the net vs the pseudo-inverse + NNLS the vocoder used before."""
    from interaction_actor.ears import speech
    from interaction_actor.training import voice
    from interaction_actor.training.train_vocoder import eval_texts, frame_pairs

    a = voice.ASSISTANT
    net = magnitude.load(CFG)
    err_net = err_fb = 0.0
    for i, text in enumerate(eval_texts()[:6]):
        mel, mag = frame_pairs(speech.say(text, a.voice, a.rate, a.pitch), CFG, seed=i)
        n = mel.shape[0] // 16 * 16
        turns = mel[:n].reshape(-1, 16, 80)
        keep = mag[:n] > -3
        got_net = net(turns).reshape(n, -1)
        got_fb = mel_to_magnitude(turns, CFG).reshape(n, -1).clamp(min=1e-10).log10()
        err_net += float((got_net - mag[:n]).abs()[keep].mean())
        err_fb += float((got_fb - mag[:n]).abs()[keep].mean())
    assert err_net < 0.8 * err_fb, (err_net, err_fb)


def test_a_short_vocoder_training_run_lowers_its_loss(tmp_path):
    from interaction_actor.training.train_vocoder import VocoderTrainConfig, train_vocoder

    tc = VocoderTrainConfig(texts=24, steps=60, batch=8, hidden=32, threads=1, max_minutes=0)
    card = train_vocoder(tmp_path / "v.pt", tc, measure_after=False)
    hist = card["loss_history"]
    assert card["steps"] == 60 and hist[-1]["l1"] < 0.8 * hist[0]["l1"]
    assert magnitude.load(CFG, tmp_path / "v.pt") is not None


@shipped
def test_with_the_net_voiced_turns_still_join_into_one_continuous_waveform():
    from interaction_actor.model.vocoder import DELAY_SAMPLES
    from interaction_actor.training import voice

    mel = voice.utterance("marble thunder").mel[:64]
    st = VocoderState()
    pcm = torch.cat([vocode_turns([st], [mel[i : i + 16]], CFG)[0] for i in range(0, 64, 16)])
    y = pcm[DELAY_SAMPLES:]
    jumps = (y[1:] - y[:-1]).abs()
    seams = jumps[[3200 * k - DELAY_SAMPLES - 1 for k in (1, 2, 3)]]
    assert seams.max() < 4 * jumps.mean() + 0.05
