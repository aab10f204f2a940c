"""The audio the ears are tested and measured on: espeak-ng speech, and non-speech with named seeds.

`say(text, voice, rate, pitch)` synthesizes with the libespeak-ng that `espeakng-loader` ships
(the library and its `espeak-ng-data`; no apt package needed), through ctypes: espeak speaks at
22 050 Hz, PyAV resamples to 16 kHz, and the result is float32 in [-1, 1]. Results are cached on
disk (`~/.cache/interplay/espeak`, or `cache_dir=`, or `$INTERPLAY_SPEECH_CACHE`), keyed by the text,
voice, rate, pitch and the library's version. libespeak-ng is process-global and not reentrant:
one lock serialises synthesis.

Two disjoint sets: `TEST_SENTENCES`/`TEST_VOICES` for tests, `HELDOUT_SENTENCES`/`HELDOUT_VOICES`
for `bench.measure_transcriber` (no sentence and no voice is shared; a test checks that).
Non-speech: `room_tone`, `noise`, `music` are generated from a seed so each figure names its input.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000

# Tests: commands of the four kinds (weather in a city, timers, math, chit-chat) in voices the bench never uses.
TEST_SENTENCES = (
    "what is the weather in London today",
    "set a timer for ten minutes",
    "what is seven times eight",
    "hello how are you",
    "will it rain in Paris tomorrow",
    "remind me to call my mother",
)
TEST_VOICES = ("en-us", "en-us+m3")

# The bench's held-out set: other sentences, other voices.
HELDOUT_SENTENCES = (
    "what is the weather like in Berlin",
    "how cold is it in Madrid right now",
    "is it going to snow in Chicago this weekend",
    "tell me the forecast for Tokyo",
    "how windy is it in Boston today",
    "do I need an umbrella in Seattle",
    "start a timer for five minutes",
    "set an alarm for seven in the morning",
    "cancel the kitchen timer",
    "how much time is left on my timer",
    "wake me up at six thirty",
    "what is twelve plus nineteen",
    "what is the square root of eighty one",
    "divide one hundred by four",
    "how many days are in a leap year",
    "what is fifteen percent of two hundred",
    "good morning",
    "thank you very much",
    "tell me a joke",
    "what is your name",
    "play some music in the living room",
    "turn off the lights in the bedroom",
    "add milk to my shopping list",
    "what time is it in New York",
)
HELDOUT_VOICES = ("en-us+f2", "en+m7", "en-us+f4", "en-gb-x-rp", "en-us+m5")

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)  # events: _Event*


class SpeechError(RuntimeError):
    pass


class _Event(ctypes.Structure):
    """espeak_EVENT (speak_lib.h): type, unique id, text position (1-based, in characters), length,
    audio position (ms from the start of the synthesis), sample, user data, id union."""

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_EVENT_END_OF_LIST, _EVENT_WORD = 0, 1


class _Espeak:
    """libespeak-ng from espeakng-loader, initialised once for synchronous synthesis into a buffer."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        self.rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.rate <= 0:
            raise SpeechError(f"espeak_Initialize failed ({self.rate})")
        self.version = (lib.espeak_Info(None) or b"?").decode()
        self._chunks: list[np.ndarray] = []
        self._words: list[tuple[int, int, int]] = []  # (text position, length, audio ms) of each word event
        self._callback = _CALLBACK(self._collect)  # kept referenced: the library holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        if events:
            ev = ctypes.cast(events, ctypes.POINTER(_Event))
            i = 0
            while ev[i].type != _EVENT_END_OF_LIST and i < 4096:
                if ev[i].type == _EVENT_WORD:
                    self._words.append((ev[i].text_position, ev[i].length, ev[i].audio_position))
                i += 1
        return 0

    def synth(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        """PCM16 at self.rate."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise SpeechError(f"espeak-ng has no voice {voice!r}")
        self.lib.espeak_SetParameter(_RATE, int(rate), 0)
        self.lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        data = text.encode()
        self._chunks, self._words = [], []
        err = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if err != 0:
            raise SpeechError(f"espeak_Synth failed ({err})")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


_engine: _Espeak | None = None
_lock = threading.Lock()


def _espeak() -> _Espeak:
    global _engine
    if _engine is None:
        _engine = _Espeak()
    return _engine


def resample(pcm16: np.ndarray, rate: int, to: int = SAMPLE_RATE) -> np.ndarray:
    """PCM16 mono at `rate` → float32 at `to` (PyAV's swresample, as faster-whisper's decoder uses)."""
    import av

    if rate == to:
        return pcm16.astype(np.float32) / 32768.0
    resampler = av.AudioResampler(format="s16", layout="mono", rate=to)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm16, np.int16).reshape(1, -1), format="s16",
                                       layout="mono")
    frame.sample_rate = rate
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.float32) / 32768.0 if out else np.zeros(0, np.float32)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    env = os.environ.get("INTERPLAY_SPEECH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "interplay" / "espeak"


def say(text: str, voice: str = "en-us", rate: int = 165, pitch: int = 50, *,
        cache_dir: str | Path | None = None) -> np.ndarray:
    """`text` spoken by espeak-ng `voice` (e.g. "en-us", "en-us+f2") at `rate` words/min and `pitch`
    (0..99): float32 mono 16 kHz in [-1, 1], no leading or trailing silence added."""
    with _lock:
        engine = _espeak()
        key = hashlib.sha256(f"{engine.version}|{voice}|{rate}|{pitch}|{text}".encode()).hexdigest()[:24]
        path = cache_root(cache_dir) / f"{key}.npy"
        if path.exists():
            try:
                return np.load(path)
            except (OSError, ValueError):
                pass  # a damaged entry: synthesize again
        audio = resample(engine.synth(text, voice, rate, pitch), engine.rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, audio)
    os.replace(tmp, path)
    return audio


def say_timed(text: str, voice: str = "en-us", rate: int = 165, pitch: int = 50) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """`text` spoken as `say` speaks it (not cached) and espeak-ng's word events: (first character,
    characters, start in samples at 16 kHz) of each word, in order. Characters count from 0 in `text`
    (ASCII text: characters are bytes)."""
    with _lock:
        engine = _espeak()
        pcm = engine.synth(text, voice, rate, pitch)
        words = [(max(0, pos - 1), length, ms * SAMPLE_RATE // 1000) for pos, length, ms in engine._words]
        audio = resample(pcm, engine.rate)
    return audio, words


def heldout_set(quick: bool = False) -> list[tuple[str, str]]:
    """(text, voice) pairs for the bench: every held-out sentence in every held-out voice
    (24 × 5 = 120); `quick`: 6 sentences (two of each kind but chit-chat) × 5 voices = 30."""
    sentences = HELDOUT_SENTENCES[::4] if quick else HELDOUT_SENTENCES
    return [(s, v) for s in sentences for v in HELDOUT_VOICES]


def padded(samples: np.ndarray, lead_s: float = 0.4, tail_s: float = 1.0, *, floor: np.ndarray | None = None
           ) -> np.ndarray:
    """`samples` with `lead_s` before and `tail_s` after: digital silence, or `floor` (tiled) mixed in
    under the whole stretch (a mic's room tone)."""
    lead, tail = int(lead_s * SAMPLE_RATE), int(tail_s * SAMPLE_RATE)
    out = np.concatenate([np.zeros(lead, np.float32), samples.astype(np.float32), np.zeros(tail, np.float32)])
    if floor is not None and floor.size:
        out = out + np.resize(floor.astype(np.float32), out.size)
    return np.clip(out, -1.0, 1.0)


# --- non-speech -------------------------------------------------------------------------------------

def room_tone(seconds: float, seed: int, level_db: float = -55.0) -> np.ndarray:
    """A quiet room: pink-ish noise at `level_db` dBFS RMS plus a faint 50 Hz hum and its harmonics."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    pink = _pink(rng, n)
    t = np.arange(n) / SAMPLE_RATE
    hum = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3))
    x = pink / (np.std(pink) + 1e-9) + 0.3 * hum / (np.std(hum) + 1e-9)
    return _at_level(x, level_db)


def noise(seconds: float, seed: int, kind: str = "white", level_db: float = -25.0) -> np.ndarray:
    """Broadband noise ("white", "pink" or "brown") at `level_db` dBFS RMS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":
        x = _pink(rng, n)
    elif kind == "brown":
        x = np.cumsum(rng.standard_normal(n))
        x = x - np.convolve(x, np.ones(801) / 801, mode="same")  # remove the drift
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    return _at_level(x, level_db)


def music(seconds: float, seed: int, level_db: float = -20.0, bpm: float = 120.0) -> np.ndarray:
    """Music-like tones: a random walk of triads (harmonic-rich notes with attack/decay envelopes) on
    a beat, over a sustained bass note; no voice in it."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    beat = int(60.0 / bpm * SAMPLE_RATE)
    out = np.zeros(n)
    root = 57 + int(rng.integers(-5, 6))  # MIDI note near A3
    t_beat = np.arange(beat) / SAMPLE_RATE
    env = np.minimum(1.0, t_beat / 0.01) * np.exp(-t_beat * 4.0)
    for start in range(0, n, beat):
        root += int(rng.choice([-5, -3, 0, 2, 4, 5, 7])) if rng.random() < 0.5 else 0
        root = int(np.clip(root, 48, 72))
        chord = (root, root + (3 if rng.random() < 0.5 else 4), root + 7)
        note = np.zeros(beat)
        for m in chord:
            f = 440.0 * 2 ** ((m - 69) / 12)
            note += sum(np.sin(2 * np.pi * f * h * t_beat) / h ** 1.5 for h in (1, 2, 3, 4))
        seg = (note * env)[: n - start]
        out[start:start + seg.size] += seg
    t = np.arange(n) / SAMPLE_RATE
    out += 0.5 * np.sin(2 * np.pi * 440.0 * 2 ** ((root - 24 - 69) / 12) * t)
    return _at_level(out, level_db)


def _pink(rng: np.random.Generator, n: int) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    return np.fft.irfft(spec / np.sqrt(f), n)


def _at_level(x: np.ndarray, level_db: float) -> np.ndarray:
    x = np.asarray(x, np.float64)
    x = x / (np.sqrt(np.mean(x ** 2)) + 1e-12) * 10 ** (level_db / 20)
    return np.clip(x, -1.0, 1.0).astype(np.float32)
