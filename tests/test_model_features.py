"""Featurizers and heads of the interaction model: dMel, hMLP, flow head, vocoder, byte text."""

from __future__ import annotations

import pytest
import torch

from interaction_actor.model import text as T
from interaction_actor.model.config import preset
from interaction_actor.model.dmel import (
    DMelStream,
    dmel_stream_push,
    dmel_tokens,
    log_mel,
    mel_filterbank,
    undiscretize,
)
from interaction_actor.model.flow_head import FlowHead, frame_noise
from interaction_actor.model.hmlp import HMLPStem, frame_to_patches
from interaction_actor.model.vocoder import DELAY_SAMPLES, VocoderState, griffin_lim, mel_error, vocode_turns

CFG = preset("tiny")
SR = 16000


def chirp(seconds: float = 1.6, f0: float = 150.0, f1: float = 6000.0) -> torch.Tensor:
    t = torch.arange(int(SR * seconds), dtype=torch.float64) / SR
    phase = 2 * torch.pi * (f0 * t + 0.5 * (f1 - f0) / seconds * t**2)
    return (0.4 * torch.sin(phase) + 0.1 * torch.sin(2 * torch.pi * 440 * t)).float()


def test_dmel_tokens_match_the_dmel_package_on_a_chirp():
    dmel = pytest.importorskip("dmel")
    pytest.importorskip("librosa")
    x = chirp()
    ref = dmel.DiscretizedLogMelFbank(dmel.LogMelFbank(frame_stride_ms=12.5), n_bits=4)
    ref_tokens, _ = ref(x[None], torch.tensor([x.shape[0]]))
    ref_tokens = ref_tokens[0, 1:-1]  # strip the package's <bos> / <eos>
    ours = dmel_tokens(x, CFG)
    # ours omits the package's last frames, whose windows reach past the signal's end (end reflect-pad)
    assert ours.shape[0] == (x.shape[0] + 512 - 1024) // 200 + 1 == ref_tokens.shape[0] - 3
    assert torch.equal(ours, ref_tokens[: ours.shape[0]])


def test_mel_filterbank_equals_librosa_slaney_filters():
    librosa = pytest.importorskip("librosa")
    ref = torch.from_numpy(librosa.filters.mel(sr=SR, n_fft=1024, n_mels=80, fmin=80, fmax=7600))
    torch.testing.assert_close(mel_filterbank(), ref, rtol=0, atol=1e-7)


def test_streaming_dmel_equals_whole_signal_dmel():
    x = chirp(2.0)
    state = DMelStream()
    turns = [dmel_stream_push(state, x[k * 3200 : (k + 1) * 3200], CFG) for k in range(10)]
    tokens = torch.cat([t for t, _ in turns])
    has_audio = torch.cat([h for _, h in turns])
    assert all(t.shape[0] == 16 for t, _ in turns)
    assert not has_audio[:2].any() and has_audio[2:].all()  # turn 0 starts with the two-frame lag
    whole = dmel_tokens(x, CFG)
    assert torch.equal(tokens[2:], whole[: tokens.shape[0] - 2])


def test_dmel_of_a_chirp_decodes_back_near_its_mel():
    x = chirp()
    mel = log_mel(x, CFG)
    back = undiscretize(dmel_tokens(x, CFG), CFG)
    inside = (mel > -7) & (mel < 2)
    assert inside.float().mean() > 0.5
    err = (back - mel)[inside].abs()
    assert err.max() <= 0.3 + 1e-5  # half a quantisation step
    assert (back - mel.clamp(-7, 2)).abs().mean() < 0.2


def test_turns_without_audio_are_silence_frames_and_keep_alignment():
    x = chirp(0.6)
    state = DMelStream()
    _, h0 = dmel_stream_push(state, x[:3200], CFG)
    _, h1 = dmel_stream_push(state, None, CFG)
    _, h2 = dmel_stream_push(state, None, CFG)
    assert h0[2:].all() and h1[:4].any() and not h2.any()
    assert state.frames == 48 and state.buf.shape[0] == 912


def test_hmlp_token_depends_only_on_its_own_patch():
    cfg = CFG.replace(image_grid=(2, 3))
    torch.manual_seed(0)  # the stem's initial weights
    stem = HMLPStem(cfg)
    frame = torch.randint(0, 256, (80, 120, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    patches = frame_to_patches(frame, cfg)
    assert patches.shape == (6, 40, 40, 3)
    changed = frame.clone()
    changed[40:80, 40:80] = 255 - changed[40:80, 40:80]  # patch (row 1, col 1) = index 4
    with torch.no_grad():
        a, b = stem(patches), stem(frame_to_patches(changed, cfg))
    differs = (a - b).abs().amax(-1) > 0
    assert differs.tolist() == [False, False, False, False, True, False]


def test_frame_that_is_not_rgb_uint8_is_a_typed_error():
    with pytest.raises(TypeError):
        frame_to_patches(torch.zeros(40, 40, 3), CFG)
    with pytest.raises(TypeError):
        frame_to_patches(torch.zeros(40, 40, dtype=torch.uint8), CFG)


def _windows(n: int) -> torch.Tensor:
    """n random read windows [n, 4K + 1]: byte ids, then each one's frame index."""
    ids = torch.randint(0, 259, (n, 4 * CFG.text_out_slots))
    return torch.cat([ids, (torch.arange(n) % CFG.frames_per_turn)[:, None]], dim=1)


def test_flow_head_loss_falls_on_a_toy_fit():
    torch.manual_seed(0)
    head = FlowHead(CFG)
    cond = _windows(4)  # four read windows (model/reader.py), each a different target
    target = torch.linspace(-6, 1, 80).repeat(4, 1) + torch.arange(4)[:, None] * 0.5
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(150):
        noise = torch.randn(64, 80, generator=g)
        t = torch.rand(64, generator=g)
        loss = head.loss(cond.repeat(16, 1), target.repeat(16, 1), noise, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.4 * sum(losses[:10]) / 10
    sampled = head.sample(cond, frame_noise(7, 0, 4, 80), steps=8)
    baseline = (torch.full_like(target, -2.5) - target).abs().mean()
    assert (sampled - target).abs().mean() < 0.7 * baseline


def test_flow_sampler_replays_for_a_seed_and_differs_across_seeds():
    torch.manual_seed(0)  # the head's weights and the conditioning
    head = FlowHead(CFG)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.1)
    cond = _windows(16)
    a = head.sample(cond, frame_noise(11, 5, 16, 80), 4)
    b = head.sample(cond, frame_noise(11, 5, 16, 80), 4)
    c = head.sample(cond, frame_noise(11, 6, 16, 80), 4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_vocoder_waveform_has_a_mel_near_the_input_mel():
    """With the filterbank inversion (net=False): any sound, not only the assistant's voice the shipped
    magnitude net knows (tests/test_vocoder_magnitude.py)."""
    x = chirp()
    mel = log_mel(x, CFG)
    y = griffin_lim(mel, CFG, n_iter=8, net=False)
    assert mel_error(y, mel, CFG) < 0.35  # mean |log10| error over bins above 1e-4
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 0.1
    assert mel_error(noise, mel, CFG) > 1.0  # what "not near" looks like


def test_vocoder_turns_join_into_one_continuous_waveform():
    x = chirp(1.2)
    mel = log_mel(x, CFG)[:64]
    st = VocoderState()
    pcm = torch.cat([vocode_turns([st], [mel[i : i + 16]], CFG, net=False)[0] for i in range(0, 64, 16)])
    assert pcm.shape[0] == 4 * 3200
    y = pcm[DELAY_SAMPLES:]
    jumps = (y[1:] - y[:-1]).abs()
    seams = jumps[[3200 * k - DELAY_SAMPLES - 1 for k in (1, 2, 3)]]
    assert seams.max() < 4 * jumps.mean() + 0.05
    assert mel_error(y, mel, CFG) < 0.4


def test_byte_text_roundtrips_and_streams_split_characters():
    ids = T.encode("héllo, wörld ✓")
    assert T.decode(ids) == "héllo, wörld ✓"
    s = T.Utf8Stream()
    assert s.feed(ids[:2]) + s.feed(ids[2:]) == "héllo, wörld ✓"
    assert max(T.OUTPUT_TOKENS) < T.VOCAB_SIZE


def test_every_preset_validates_and_a_saved_checkpoint_rebuilds_the_same_model(tmp_path):
    from interaction_actor.model.config import PRESETS
    from interaction_actor.model.fusion import build_model, save_checkpoint

    for name in PRESETS:
        assert preset(name).validate().head_dim % 2 == 0
    with pytest.raises(KeyError):
        preset("huge")
    m = build_model("tiny", seed=3)
    save_checkpoint(m, tmp_path / "m.pt")
    again = build_model("tiny", checkpoint=str(tmp_path / "m.pt"))
    assert again.config == m.config
    for (n, a), (_, b) in zip(m.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    with pytest.raises(FileNotFoundError):
        build_model("tiny", checkpoint=str(tmp_path / "missing.pt"))
