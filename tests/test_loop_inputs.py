"""Input decoding: each bad input is a typed InputError that leaves the open window untouched."""

from __future__ import annotations

import io
import math

import pytest
import torch
from PIL import Image

from interaction_actor.runtime.inputs import (
    FloatAudio,
    InputError,
    StreamResampler,
    WindowBuilder,
    safe_parse,
)
from interplay.v1 import session_pb2 as spb


def pcm(n: int, rate: int = 16000, channels: int = 1) -> bytes:
    t = torch.arange(n) / rate
    x = (torch.sin(2 * math.pi * 440 * t) * 8000).to(torch.int16)
    return x.repeat_interleave(channels).numpy().tobytes()


def window_with_audio() -> WindowBuilder:
    w = WindowBuilder()
    w.add(spb.InputChunk(audio=spb.AudioChunk(pcm16=pcm(1600), sample_rate_hz=16000, channels=1)))
    w.add(spb.InputChunk(text=spb.TextInput(text="hi")))
    return w


@pytest.mark.parametrize("bad, code", [
    (safe_parse(b"\xff\xff\xff\xff"), "malformed_message"),
    (spb.InputChunk(), "malformed_message"),
    (spb.InputChunk(audio=spb.AudioChunk(pcm16=pcm(400, 4000), sample_rate_hz=4000)), "bad_sample_rate"),
    (spb.InputChunk(audio=spb.AudioChunk(pcm16=b"\x00\x01\x02", sample_rate_hz=16000)), "bad_pcm_length"),
    (spb.InputChunk(audio=spb.AudioChunk(pcm16=pcm(10, channels=16), channels=16)), "bad_channels"),
    (spb.InputChunk(video=spb.VideoFrame(data=b"x" * 12, encoding=spb.FRAME_ENCODING_RAW_RGB, width=5000,
                                         height=5000)), "oversize_frame"),
    (spb.InputChunk(video=spb.VideoFrame(data=b"not a jpeg", encoding=spb.FRAME_ENCODING_JPEG)), "bad_frame"),
    (spb.InputChunk(text=spb.TextInput(raw=b"abc", encoding="klingon-8")), "unknown_text_encoding"),
    (spb.InputChunk(text=spb.TextInput(raw=b"\xff\xfe\xfa", encoding="utf-8")), "bad_text_encoding"),
    (FloatAudio(torch.tensor([0.1, float("nan"), 0.2])), "nan_samples"),
])
def test_each_bad_input_is_refused_with_its_code_and_the_window_keeps_the_rest(bad, code):
    w = window_with_audio()
    with pytest.raises(InputError) as err:
        w.add(bad)
    assert err.value.code == code
    inp, counts = w.take()
    assert inp.audio is not None and inp.audio.numel() == 1600 and inp.text == "hi"


def test_a_png_too_large_in_pixels_is_refused_before_it_is_decoded():
    buf = io.BytesIO()
    Image.new("RGB", (5000, 4000)).save(buf, format="PNG")  # small file, 20 Mpx once decoded
    with pytest.raises(InputError) as err:
        WindowBuilder().add(spb.InputChunk(video=spb.VideoFrame(data=buf.getvalue(), encoding=spb.FRAME_ENCODING_PNG)))
    assert err.value.code == "oversize_frame"


def test_stereo_44k_audio_is_downmixed_and_resampled_to_16k():
    w = WindowBuilder()
    w.add(spb.InputChunk(audio=spb.AudioChunk(pcm16=pcm(44100, 44100, channels=2), sample_rate_hz=44100,
                                              channels=2)))
    inp, _ = w.take()
    ref = torch.sin(2 * math.pi * 440 * torch.arange(inp.audio.numel()) / 16000) * 8000 / 32768
    assert abs(inp.audio.numel() - 16000) <= 32
    assert float((inp.audio[100:-100] - ref[100:-100]).abs().max()) < 2e-3


def test_chunked_resampling_equals_resampling_in_one_piece():
    x = torch.randn(48000, generator=torch.Generator().manual_seed(0)) * 0.2
    whole = StreamResampler(48000).push(x)
    rs = StreamResampler(48000)
    parts = torch.cat([rs.push(x[i : i + 777]) for i in range(0, 48000, 777)])
    assert parts.numel() == whole.numel()
    assert torch.allclose(parts, whole, atol=1e-6)


def test_jpeg_frames_decode_to_rgb_uint8():
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(buf, format="JPEG")
    w = WindowBuilder()
    w.add(spb.InputChunk(video=spb.VideoFrame(data=buf.getvalue(), encoding=spb.FRAME_ENCODING_JPEG)))
    inp, _ = w.take()
    assert inp.frame.shape == (48, 64, 3) and inp.frame.dtype == torch.uint8 and int(inp.frame[..., 0].float().mean()) > 150
