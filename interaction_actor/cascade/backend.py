"""CascadeBackend: VAD endpointing → speech recognition → reply model → TTS, behind the backend seam.

Contract (interaction_actor/runtime/backend.py). Each micro-turn `step` is given every session's
`TurnInput` and returns at once with what is ready: 200 ms of the assistant's voice (TurnOutput.pcm,
float32 16 kHz, zero-padded to the turn while the next sentence is still being synthesized; None when
it says nothing), the text of the sentences whose first sample is in this turn, `start_speaking` /
`stop_speaking` controls, and a `delegate` control with `delegate_task` when the reply model handed a
task to the background. Per session the step only runs the endpointer (endpoint.py: ~1 ms of Silero)
and moves queued audio; the reply model and the TTS run on two worker threads of the backend
(`cascade-reply`, `cascade-tts`), so a slow model never delays a turn. It never waits for either.

The chain, one small step each:
  1. endpoint.py — the session's streaming Silero VAD: is the user talking, has their turn ended
     (`min_silence_ms` of quiet), did they just start (barge-in);
  2. speech recognition — `TurnInput.heard`, the loop's ears (see below);
  3. reply.py — the ReplyModel (SmolLM2-135M by default, or an OpenAI-compatible server) streams a
     short reply or calls `delegate(task)`;
  4. tts.py — the TTS (espeak-ng) turns each finished sentence into audio as the reply streams.
A reply starts when the user's words are in (heard or typed) and the endpointer says their turn
ended; typed text needs no endpoint. Barge-in: while the assistant talks (audio queued or a reply in
flight), a speech onset from the VAD — or the client's barge_in hint — cuts it within the turn: the
queue is emptied, the reply is stopped, everything older is dropped (an epoch counter), and the turn
reports `stop_speaking`. The conversation the reply model reads holds what the assistant actually
said (the sentences that went out), so a reply cut short is remembered as cut.

Why the loop's ears and not ears of its own: one transcript path. The loop's ears already feed the
conversation log, the context package a delegation carries, the client's USER_TRANSCRIPT events and
the policies; a second recogniser in the backend would spend the CPU twice (Whisper is the costliest
stage here) and could disagree with what the package says the user said. So `serve --backend cascade`
needs the ears on, and `check_plan` refuses it with them off.

Background results: the loop's weaver (runtime/weave.py) decides when a result surfaces and in which
mode; `TurnInput.voice` holds the lines to be voiced this turn (INTERRUPT now, WHEN_IDLE at the
user's pause), and the rest of `TurnInput.context` is context only. The cascade speaks the voiced
lines word for word (after what it is already saying) and keeps the others as notes in the
conversation; a SILENT result is never voiced (`voices_results=True`).
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from interaction_actor.cascade.endpoint import EndpointConfig, Endpointer
from interaction_actor.cascade.reply import (
    SYSTEM_PROMPT,
    EngineReply,
    ReplyConfig,
    ReplyModel,
    delegation_messages,
    example_messages,
)
from interaction_actor.cascade.tts import TTS, EspeakConfig, EspeakTTS
from interaction_actor.model import text as T
from interaction_actor.model.session import TurnInput, TurnOutput
from interaction_actor.runtime.backend import Capabilities
from interplay.log import get_logger

log = get_logger("interaction_actor.cascade")

SAMPLE_RATE = 16_000


@dataclass
class CascadeConfig:
    turn_ms: int = 200  # the loop's turn: the audio each step emits
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    reply: ReplyConfig = field(default_factory=ReplyConfig)
    tts: EspeakConfig = field(default_factory=EspeakConfig)
    system_prompt: str = SYSTEM_PROMPT
    history_messages: int = 16  # conversation messages the reply model reads (examples and prompt aside)
    max_timings: int = 64  # per-reply stage timings kept per session (measure.py reads them)

    @classmethod
    def from_options(cls, *, min_silence_ms: int = 500, reply_engine: str = "local",
                     base_url: str = "http://127.0.0.1:8000/v1", reply_model: str = "default", api_key: str = "",
                     voice: str = "en-us+f3", max_reply_tokens: int = 48, turn_ms: int = 200) -> CascadeConfig:
        """The config from the flat `[model.cascade]` settings (interplay/settings.py: CascadeSettings)."""
        engine_options: dict[str, Any] = {}
        if reply_engine == "openai":
            engine_options = {"base_url": base_url, "model": reply_model}
            if api_key:
                engine_options["api_key"] = api_key
        return cls(turn_ms=turn_ms, endpoint=EndpointConfig(min_silence_ms=min_silence_ms),
                   reply=ReplyConfig(engine=reply_engine, engine_options=engine_options, max_tokens=max_reply_tokens),
                   tts=EspeakConfig(voice=voice))


@dataclass
class Piece:
    """One sentence the assistant is saying, and how much of it has gone out."""

    text: str
    audio: np.ndarray
    marks: dict[str, float]
    pos: int = 0


@dataclass
class CascadeState:
    """One session's state. The step owns `endpointer`, `turn`, `pending` and `speaking`; the fields
    under `lock` are shared with the worker threads."""

    session_id: str
    endpointer: Endpointer
    turn: int = 0
    pending: list[str] = field(default_factory=list)  # the user's words not yet answered
    typed: bool = False  # some of them were typed (no endpoint needed)
    heard_at: float = 0.0
    speech_end_at: float | None = None  # the last ended user turn's last speech (monotonic)
    ended_at: float | None = None  # when the endpointer said that turn ended
    speaking: bool = False  # audio went out on the previous turn
    lock: threading.Lock = field(default_factory=threading.Lock)
    epoch: int = 0  # a barge-in bumps it: worker output of an older epoch is dropped
    stop: threading.Event = field(default_factory=threading.Event)  # the reply in flight's stop
    pieces: deque[Piece] = field(default_factory=deque)
    busy: int = 0  # replies and voicings queued or in flight (their audio is still coming)
    history: list[dict[str, Any]] = field(default_factory=list)
    delegations: deque[str] = field(default_factory=deque)
    timings: deque[dict[str, float]] = field(default_factory=lambda: deque(maxlen=64))
    barge_ins: int = 0
    closed: bool = False


class CascadeBackend:
    """See the module docstring. `reply` / `tts` / `vad` replace the default parts (tests, other engines)."""

    def __init__(self, config: CascadeConfig | None = None, *, reply: ReplyModel | None = None,
                 tts: TTS | None = None, vad: Any = None) -> None:
        from interaction_actor.ears.segmenter import VadModel

        self.config = cfg = config or CascadeConfig()
        self.capabilities = Capabilities(name="cascade", inputs=("audio", "text", "context", "heard"),
                                         outputs=("text", "audio", "controls"), max_sessions_per_step=0,
                                         turn_ms=cfg.turn_ms, sample_rate=SAMPLE_RATE, voices_results=True)
        self.samples_per_turn = SAMPLE_RATE * cfg.turn_ms // 1000
        self.metrics = None  # the loop's LoopMetrics, which it sets (runtime/metrics.py): each synthesis's time
        self.vad = vad or VadModel()
        self.tts = tts or EspeakTTS(cfg.tts)
        self.reply_model = reply or EngineReply(cfg.reply)
        self.reply_model.start()
        self._prefix = [{"role": "system", "content": cfg.system_prompt}, *example_messages()]
        # one throw-away reply over the prompt and its examples: a local model keeps their prefix in its
        # cache, so a session's first reply does not pay for reading them (~4 s with SmolLM2 here)
        for _ in self.reply_model.reply([*self._prefix, {"role": "user", "content": "hello"}], threading.Event()):
            pass
        self._replies: queue.Queue = queue.Queue()
        self._speech: queue.Queue = queue.Queue()
        self._ids = itertools.count()
        self._stopping = False
        self._threads = [threading.Thread(target=self._reply_loop, name="cascade-reply", daemon=True),
                         threading.Thread(target=self._tts_loop, name="cascade-tts", daemon=True)]
        for t in self._threads:
            t.start()

    @classmethod
    def from_options(cls, **options: Any) -> CascadeBackend:
        """What `load_backend("cascade", **options)` calls: the flat settings of CascadeConfig.from_options."""
        return cls(CascadeConfig.from_options(**options))

    # ---- the seam ----------------------------------------------------------------------------------
    def open(self, session_id: str) -> CascadeState:
        state = CascadeState(session_id, Endpointer(session_id, self.vad, self.config.endpoint))
        state.timings = deque(maxlen=self.config.max_timings)
        return state

    def step(self, states: list[CascadeState], inputs: list[TurnInput]) -> list[TurnOutput]:
        return [self._step_one(s, inp) for s, inp in zip(states, inputs, strict=True)]

    def close(self, state: CascadeState) -> None:
        with state.lock:
            state.closed = True
            state.epoch += 1
            state.stop.set()
            state.pieces.clear()

    def shutdown(self) -> None:
        """Stop the worker threads and free the reply model (the backend is not used afterwards)."""
        self._stopping = True
        self._replies.put(None)
        self._speech.put(None)
        for t in self._threads:
            t.join(timeout=10)
        self.reply_model.close()

    # ---- one session's turn (the loop's worker thread; never waits) -------------------------------
    def _step_one(self, s: CascadeState, inp: TurnInput) -> TurnOutput:
        now = time.monotonic()
        audio = inp.audio.numpy() if inp.audio is not None and inp.audio.numel() else None
        ep = s.endpointer.push(audio, now)
        if ep.ended:
            s.speech_end_at, s.ended_at = ep.speech_end_at, now
        controls: list[str] = []
        cut = False
        with s.lock:
            talking = bool(s.pieces) or s.busy > 0
            if talking and (ep.onset or inp.barge_in):
                self._cut(s)
                cut = True
            words = " ".join(w for w in (inp.heard.strip(), inp.text.strip()) if w)
            if words:
                s.pending.append(words)
                s.typed = s.typed or bool(inp.text.strip())
                s.heard_at = s.heard_at or now
            voiced = [line for line in inp.voice.splitlines() if line.strip()]
            lines = [x.lstrip(T.MODE_MARKERS) for x in inp.context.splitlines()]  # the loop marks each line's mode
            for line in [x for x in lines if x.strip() and x not in voiced]:
                s.history.append({"role": "user", "content": f"(A note from the background, not said aloud: {line})"})
            for line in voiced:
                s.busy += 1
                self._speech.put((s, s.epoch, line, {"result_at": now}))
                self._speech.put((s, s.epoch, None, {}))
            if s.pending and (s.typed or (not ep.in_turn and not ep.speaking)):
                self._submit(s, now)
            text, pcm = self._take_audio(s, now)
            task = s.delegations.popleft() if s.delegations else None
        speaking = pcm is not None
        if cut and s.speaking:
            controls.append("stop_speaking")
        elif speaking and not s.speaking:
            controls.append("start_speaking")
        elif not speaking and s.speaking:
            controls.append("stop_speaking")
        if task is not None:
            controls.append("delegate")
        s.speaking = speaking
        out = TurnOutput(session_id=s.session_id, turn=s.turn, text=text, mel=torch.zeros(0, 80),
                         pcm=None if pcm is None else torch.from_numpy(pcm), controls=controls,
                         delegate_task=task, speaking=speaking)
        s.turn += 1
        return out

    def _cut(self, s: CascadeState) -> None:
        """Barge-in (under s.lock): stop the reply in flight, drop its audio and everything queued."""
        s.epoch += 1
        s.stop.set()
        s.pieces.clear()
        s.barge_ins += 1

    def _submit(self, s: CascadeState, now: float) -> None:
        """The user's turn is complete (under s.lock): queue a reply to everything they said."""
        said = " ".join(s.pending)
        s.pending, s.typed = [], False
        s.history.append({"role": "user", "content": said})
        self._trim(s)
        s.stop = threading.Event()
        s.busy += 1
        marks = {"submit": now, "heard": s.heard_at}
        if s.speech_end_at is not None and s.ended_at is not None:
            marks["speech_end"], marks["endpoint"] = s.speech_end_at, s.ended_at
        s.heard_at, s.speech_end_at, s.ended_at = 0.0, None, None
        history = [{k: v for k, v in m.items() if not k.startswith("_")} for m in s.history]
        self._replies.put((s, s.epoch, s.stop, [*self._prefix, *history], marks))

    def _trim(self, s: CascadeState) -> None:
        n = self.config.history_messages
        if len(s.history) > n:
            h = s.history[-n:]
            while h and h[0]["role"] != "user":
                h = h[1:]
            s.history = h

    def _take_audio(self, s: CascadeState, now: float) -> tuple[str, np.ndarray | None]:
        """This turn's audio (under s.lock): up to one turn of queued samples, zero-padded when the queue
        runs dry mid-turn; the text of each sentence whose first sample goes out now."""
        if not s.pieces:
            return "", None
        out = np.zeros(self.samples_per_turn, np.float32)
        filled, said = 0, []
        while s.pieces and filled < out.size:
            p = s.pieces[0]
            if p.pos == 0:
                said.append(p.text)
                self._said(s, p, now)
            n = min(out.size - filled, p.audio.size - p.pos)
            out[filled:filled + n] = p.audio[p.pos:p.pos + n]
            filled += n
            p.pos += n
            if p.pos >= p.audio.size:
                s.pieces.popleft()
        return " ".join(said) + (" " if said else ""), out

    def _said(self, s: CascadeState, p: Piece, now: float) -> None:
        """A sentence starts going out: it becomes part of what the assistant said."""
        last = s.history[-1] if s.history else None
        if last is not None and last["role"] == "assistant" and last.get("content") and last.get("_reply") == id(p.marks):
            last["content"] += " " + p.text
        else:
            s.history.append({"role": "assistant", "content": p.text, "_reply": id(p.marks)})
        if "first_sample" not in p.marks:
            p.marks["first_sample"] = now
            p.marks["first_sample_turn"] = float(s.turn)
            s.timings.append(p.marks)

    # ---- the worker threads -------------------------------------------------------------------------
    def _reply_loop(self) -> None:
        while True:
            job = self._replies.get()
            if job is None or self._stopping:
                return
            s, epoch, stop, messages, marks = job
            try:
                self._reply(s, epoch, stop, messages, marks)
            except Exception as exc:  # noqa: BLE001 - one reply's failure must not stop the thread
                log.error("cascade_reply_failed", session_id=s.session_id, error=repr(exc), exc_info=exc)
            finally:
                self._speech.put((s, epoch, None, {}))  # the reply's end: its `busy` is released after its audio

    def _reply(self, s: CascadeState, epoch: int, stop: threading.Event, messages: list[dict], marks: dict) -> None:
        from interaction_actor.cascade.tts import split_ready

        if s.epoch != epoch or s.closed:
            return
        buffer = ""
        marks["reply_start"] = time.monotonic()
        for ev in self.reply_model.reply(messages, stop):
            if s.epoch != epoch or s.closed:
                stop.set()
                return
            if ev.kind == "text":
                marks.setdefault("first_token", time.monotonic())
                ready, buffer = split_ready(buffer + ev.text)
                for sentence in ready:
                    self._speech.put((s, epoch, sentence, marks))
            elif ev.kind == "delegate":
                marks.setdefault("first_token", time.monotonic())
                marks["delegated"] = 1.0
                with s.lock:
                    if s.epoch != epoch:
                        return
                    s.delegations.append(ev.text)
                    calls = delegation_messages(ev.text, f"call-{next(self._ids)}")
                    s.history.extend(calls[:2])  # the call and its acknowledgement; ACK is said below
                self._speech.put((s, epoch, calls[2]["content"], marks))
            elif ev.kind == "error":
                log.warning("cascade_reply_error", session_id=s.session_id, error=ev.text)
        if buffer.strip():
            self._speech.put((s, epoch, buffer, marks))

    def _tts_loop(self) -> None:
        while True:
            job = self._speech.get()
            if job is None or self._stopping:
                return
            s, epoch, text, marks = job
            if text is None:
                with s.lock:
                    s.busy = max(0, s.busy - 1)
                continue
            if s.epoch != epoch or s.closed:
                continue
            try:
                t0 = time.monotonic()
                for spoken in self.tts.synthesize(text):
                    t1 = time.monotonic()
                    marks.setdefault("first_audio", t1)
                    if self.metrics is not None:
                        self.metrics.tts((t1 - t0) * 1000.0)
                    t0 = t1
                    with s.lock:
                        if s.epoch != epoch or s.closed:
                            break
                        s.pieces.append(Piece(spoken.text, spoken.audio, marks))
            except Exception as exc:  # noqa: BLE001 - a sentence that cannot be said is skipped
                log.error("cascade_tts_failed", session_id=s.session_id, error=repr(exc), exc_info=exc)
