"""`interplay demo`: the whole runtime on this machine, playing a scripted conversation in real time.

Starts Ray, a pool of background actors (the demo's tools; the local engine by default) and the
interaction actor wired to them over gRPC, then plays the script through the real client: speech
(WAVs in examples/assets), typed text, video frames and a barge-in. Prints one line per turn,
writes `timeline.jsonl` (one JSON record per input and output chunk: `chunk_record`, integers as
numbers, enums by name) and `assistant.wav` into the output folder, and returns a summary (modes by
name, what the assistant said one utterance per entry: `summarize`).
Everything the assistant says is the interaction model's own output; nothing is scripted on its side.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import wave
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from interplay.client import SessionClient, Timeline, audio_chunk, control, text_chunk, wav_source
from interplay.log import get_logger
from interplay.v1 import common_pb2 as cpb
from interplay.v1 import session_pb2 as spb

log = get_logger("interplay.demo")

ASSETS = Path(__file__).resolve().parent.parent / "examples" / "assets"
VOICE_PROMPT = ("You are the background assistant of a live voice assistant. A small voice model reads your "
                "answer aloud word for word: reply with the tool's result exactly as the tool gave it, nothing else.")


@dataclass
class DemoConfig:
    turn_ms: int = 200
    engine: str = "local"  # background engine: local | openai | vllm
    engine_options: dict = field(default_factory=dict)  # e.g. {"base_url": ..., "model": ...} for openai
    background_actors: int = 1
    checkpoint: str | None = None  # interaction model weights (default: the shipped checkpoint)
    preset: str = "small"
    backend: str = "native"  # interaction backend: a registered name or module:attr (interaction_actor.runtime.backend)
    backend_options: dict = field(default_factory=dict)  # its options (cascade: the [model.cascade] settings)
    out_dir: str = "runs/demo"
    ray_address: str | None = None
    tail_s: float = 3.0  # keep listening after the last cue, then until every delegation has come back
    max_s: float = 90.0  # hard stop
    voice_s: float = 8.0  # once every delegation is back, wait at most this long for the voiced answer
    # the assistant has finished speaking after this long without sound: a long answer reaches the model
    # in pieces ([model] read_bytes) and it pauses a turn or two between them
    quiet_s: float = 1.0
    city: str = "Oslo"
    # What a delegation may use. The demo asks only for weather, and a 135M background model picks
    # far more reliably among few tools; widen this (calculator, clock) with a larger engine.
    allowed_tools: tuple[str, ...] = ("weather",)
    # Who decides to delegate: the model's own <delegate> token; it reads the spoken request as the ears
    # heard it and names the city in its task ("weather Oslo." in the README's run). An intent rule on
    # the transcript is an explicit opt-in: [delegation] policy = "first_of" (the model, then the rule).
    policy: str = "model_token"
    policy_options: dict = field(default_factory=dict)
    # the spoken request: espeak-ng in a voice and wording the model never trained on (training/spoken.py EVAL)
    request: str = "tell me the weather in {city}"
    # also send the client's barge-in flag: the model can hear a barge-in from audio alone (eval: stop p50
    # 157 ms), but in the demo, over its reply to "hello", it did not (README)
    barge_hint: bool = True
    # The background writes for the ear: the interaction model voices what it returns, so a short
    # line in the tool's own words ("Oslo snow, -3 C") is what it can say back.
    agent_prompt: str = VOICE_PROMPT
    assets: str = str(ASSETS)
    # the settings' ears group (interplay.runtime._ears_data); None: no transcripts, and then the spoken
    # request reaches neither the model nor the policies. Default: the default settings' ears
    ears: dict | None = field(default_factory=lambda: _default_ears())
    trace_file: str | None = None  # every actor appends its OpenTelemetry spans here (JSON lines); None: off
    record: bool = True  # the loop saves the session in the replay format into <out_dir>/replay (interplay.replay)
    otlp_endpoint: str | None = None  # every actor also sends its spans to this OTLP/gRPC collector; None: not


def _default_ears() -> dict | None:
    from interplay.runtime import _ears_data
    from interplay.settings import Settings

    s = Settings()
    return _ears_data(s) if s.ears.enabled else None


def spoken_request(text: str) -> np.ndarray:
    """`text` as the user says it: espeak-ng's plain "en-us" voice (no training episode of the model uses
    it; Whisper tiny.en hears it well, where it garbles "weather" in the evaluation split's voices),
    float32 16 kHz."""
    from interaction_actor.ears.speech import say

    return say(text, "en-us", 165, 50)


def heard_in_audio(chunks: list[spb.OutputChunk], from_turn: int, text: str, turns: int = 60) -> tuple[float, str]:
    """(fraction of `text`'s words the ears' transcriber hears in the assistant's audio from `from_turn`
    on, its transcript): the assistant's voice measured as a user would hear it, not its text."""
    from interaction_actor.ears.bench import normalise
    from interaction_actor.training import spoken

    pcm = b"".join(c.audio.pcm16 for c in chunks if from_turn <= c.turn < from_turn + turns)
    want = normalise(text)
    if not pcm or not want:
        return 0.0, ""
    got = spoken.transcribe(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0)
    heard = normalise(got)
    hits = sum(1 for w in want if w in heard)
    return round(hits / len(want), 3), got


@dataclass
class Cue:
    at_s: float
    kind: str  # wav | text | frame | barge_in
    value: object = None
    note: str = ""


def _frame(red: bool, rng: random.Random) -> spb.InputChunk:
    """An 80x80 RGB frame of one or two shapes (a red one when `red`): the cue_speak task's scene."""
    from interaction_actor.training.synth import draw

    def shape(colour: str) -> tuple[str, str, int, int, int]:
        r = rng.randint(8, 12)
        return (rng.choice(("circle", "square")), colour, rng.randint(r, 79 - r), rng.randint(r, 79 - r), r)

    shapes = [shape(rng.choice(("blue", "green", "yellow")))]
    if red:
        shapes.append(shape("red"))
    img = draw(shapes, 110)
    return spb.InputChunk(video=spb.VideoFrame(data=img.numpy().tobytes(), encoding=spb.FRAME_ENCODING_RAW_RGB,
                                               width=80, height=80))


def script(cfg: DemoConfig) -> list[Cue]:
    """The conversation: greeting by voice, a tool-backed question, a follow-up while it runs,
    a visual cue, and (reactively, see `Player`) a barge-in over the assistant's reply."""
    a = Path(cfg.assets)
    rng = random.Random(7)
    cues = [Cue(0.0, "wav", a / "hello.wav", "user says hello"),
            Cue(5.0, "speech", cfg.request.format(city=cfg.city), "spoken: needs the weather tool, a delegation"),
            Cue(8.0, "text", "keep it short", "follow-up while the background task runs: a steer"),
            Cue(10.0, "text", "tell me when red", "a visual cue task")]
    # the cue task starts once the weather answer is usually back (~7 s), so each shows on its own in
    # the timeline: no training episode has a result arrive while the model watches for a cue
    cues += [Cue(10.8 + 0.2 * i, "frame", _frame(i >= 6, rng), "red shape appears" if i == 6 else "")
             for i in range(10)]
    return cues


@dataclass
class Player:
    """Streams the cues at their times and watches the replies; barges in once over the assistant."""

    cfg: DemoConfig
    out: TextIO
    timeline: Timeline = field(default_factory=Timeline)
    records: list[dict] = field(default_factory=list)
    chunks: list[spb.OutputChunk] = field(default_factory=list)
    sent_at_turn: dict[str, int] = field(default_factory=dict)
    barged_at: int | None = None
    t0: float = 0.0
    _settled_at: float | None = None
    _wav_playing: int = 0

    def _note(self, kind: str, **what: object) -> None:
        self.records.append({"t_s": round(time.monotonic() - self.t0, 3), "dir": "in", "kind": kind, **what})

    async def _send(self, client: SessionClient, cue: Cue) -> None:
        if cue.kind in ("wav", "speech"):
            await self._done_speaking()
        turn = self.chunks[-1].turn + 1 if self.chunks else 0
        if cue.kind == "wav":
            await self._wav(client, Path(cue.value))
        elif cue.kind == "speech":
            self.sent_at_turn.setdefault(str(cue.value), turn)
            await self._pcm(client, spoken_request(str(cue.value)))
        elif cue.kind == "frame" and cue.note == "red shape appears":
            self.sent_at_turn.setdefault("red frame", turn)
            self.timeline.sent(cue.value)
            await client.send(cue.value)
        elif cue.kind == "text":
            self.sent_at_turn.setdefault(str(cue.value), turn)
            ch = text_chunk(str(cue.value))
            self.timeline.sent(ch)
            await client.send(ch)
        elif cue.kind == "frame":
            self.timeline.sent(cue.value)
            await client.send(cue.value)
        self._note(cue.kind, value=str(cue.value) if cue.kind != "frame" else "80x80 rgb", note=cue.note, turn=turn)

    async def _done_speaking(self, gap_s: float = 0.6) -> None:
        """A user says one thing at a time: wait until the user's audio still playing (the barge-in, which
        comes when the assistant happens to reply) has ended, then a breath. Two overlapping streams
        reached the ears as one garbled utterance ("Tell me that when they're in the hospital")."""
        if not self._wav_playing:
            return
        while self._wav_playing:
            await asyncio.sleep(0.02)
        await asyncio.sleep(gap_s)

    async def _wav(self, client: SessionClient, path: Path) -> None:
        await self._stream(client, wav_source(path))

    async def _pcm(self, client: SessionClient, samples) -> None:
        """float32 16 kHz samples, streamed in real time in turn-sized chunks."""
        n = 16000 * self.cfg.turn_ms // 1000
        pcm16 = (np.clip(samples, -1, 1) * 32767).astype("<i2")
        await self._stream(client, [(i / 16000, audio_chunk(pcm16[i : i + n].tobytes(), 16000, 1))
                                    for i in range(0, pcm16.size, n)])

    async def _stream(self, client: SessionClient, pieces: list) -> None:
        start = time.monotonic()
        self._wav_playing += 1
        try:
            for t, ch in pieces:
                delay = start + t - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.timeline.sent(ch)
                await client.send(ch)
        finally:
            self._wav_playing -= 1

    async def _room_tone(self, client: SessionClient) -> None:
        """A live microphone never goes silent: between the WAV cues it streams the room's noise floor
        (std 0.002 of full scale, as in training; not shown in the timeline). Runs until cancelled."""
        rng = random.Random(11)
        n = 16000 * self.cfg.turn_ms // 1000
        nxt = time.monotonic()
        while True:
            if not self._wav_playing:
                pcm = array("h", (max(-32768, min(32767, round(rng.gauss(0.0, 65.5)))) for _ in range(n)))
                await client.send(audio_chunk(pcm.tobytes(), 16000, 1))
            nxt += self.cfg.turn_ms / 1000
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    async def _barge(self, client: SessionClient) -> None:
        if self.cfg.barge_hint:
            ch = control(spb.CONTROL_KIND_BARGE_IN)
            self.timeline.sent(ch)
            await client.send(ch)
        self._note("barge_in", turn=self.barged_at, note="user talks over the assistant",
                   hint=self.cfg.barge_hint)
        await self._wav(client, Path(self.cfg.assets) / "barge_in.wav")

    def _waiting(self) -> bool:
        """True while a delegation has not come back (result surfaced or error), while the assistant
        speaks (sound in the last `quiet_s`), and, once every delegation is back, until the assistant has spoken after that (a WHEN_IDLE
        result is voiced a few turns after it surfaces; the caller bounds this wait by `voice_s`)."""
        open_tasks: set[str] = set()
        back = None  # the turn the last delegation came back in
        for c in self.chunks:
            for e in c.events:
                if e.kind == spb.EVENT_KIND_DELEGATION_STARTED:
                    open_tasks.add(e.task_id)
                elif e.kind == spb.EVENT_KIND_ERROR or (e.kind == spb.EVENT_KIND_RESULT_SURFACED
                                                      and e.update == spb.EVENT_UPDATE_FINAL):
                    open_tasks.discard(e.task_id)
                    back = c.turn
        quiet = max(1, round(self.cfg.quiet_s * 1000 / self.cfg.turn_ms))
        speaking = any(c.audio.pcm16 for c in self.chunks[-quiet:])
        if not open_tasks and self._settled_at is None:
            self._settled_at = time.monotonic()
        answered = back is None or any(c.audio.pcm16 for c in self.chunks if c.turn > back)
        return bool(open_tasks) or speaking or not answered

    async def play(self, address: str) -> list[spb.OutputChunk]:
        cues = script(self.cfg)
        end_s = max(c.at_s for c in cues) + self.cfg.tail_s
        async with SessionClient(address, "demo") as client:
            self.t0 = time.monotonic()

            async def produce() -> None:
                for cue in cues:
                    delay = self.t0 + cue.at_s - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await self._send(client, cue)
                await asyncio.sleep(max(0.0, self.t0 + end_s - time.monotonic()))
                while self._waiting():  # a delegation still out, or the assistant still voicing its result
                    await asyncio.sleep(self.cfg.turn_ms / 1000)
                    if self._settled_at is not None and time.monotonic() - self._settled_at > self.cfg.voice_s:
                        break  # every delegation is back; do not wait on a voice that runs on
                await asyncio.sleep(2 * self.cfg.turn_ms / 1000)
                tone.cancel()
                await client.finish()

            tasks = {asyncio.get_running_loop().create_task(produce())}
            tone = asyncio.get_running_loop().create_task(self._room_tone(client))
            tasks.add(tone)
            try:
                async with asyncio.timeout(self.cfg.max_s):
                    async for c in client.chunks():
                        self.chunks.append(c)
                        print(self.timeline.line(c), file=self.out, flush=True)
                        self.records.append({"t_s": round(time.monotonic() - self.t0, 3), "dir": "out",
                                             **chunk_record(c)})
                        if (self.barged_at is None and c.audio.pcm16 and c.turn * self.cfg.turn_ms > 1000
                                and not any("weather" in k for k in self.sent_at_turn)):
                            self.barged_at = c.turn  # the assistant replies to "hello": talk over it
                            tasks.add(asyncio.get_running_loop().create_task(self._barge(client)))
            except TimeoutError:
                log.warning("demo_timeout", seconds=self.cfg.max_s)
            finally:
                for t in tasks:
                    t.cancel()
        return self.chunks


_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}


def _ints(msg: Message, d: dict) -> dict:
    """`d` (MessageToDict of `msg`) with its 64-bit integers as JSON numbers: proto3's JSON mapping
    writes them as strings, which would make `turn` "12" in the timeline."""
    for f in msg.DESCRIPTOR.fields:
        if f.name not in d:
            continue
        if f.type in _INT64:
            d[f.name] = [int(x) for x in d[f.name]] if isinstance(d[f.name], list) else int(d[f.name])
        elif f.message_type is not None and not f.message_type.GetOptions().map_entry:
            value = getattr(msg, f.name)
            if isinstance(d[f.name], list):
                d[f.name] = [_ints(m, x) for m, x in zip(value, d[f.name], strict=True)]
            else:
                d[f.name] = _ints(value, d[f.name])
    return d


def chunk_record(c: spb.OutputChunk) -> dict:
    """One output chunk as a timeline.jsonl record: proto field names, enums by name (the events'
    `mode` "SURFACING_MODE_WHEN_IDLE"), integers as numbers, booleans as booleans, `turn` always
    present; without the audio. Zero-valued fields other than `turn` are left out."""
    d = _ints(c, MessageToDict(c, preserving_proto_field_name=True, always_print_fields_with_no_presence=False))
    d.pop("audio", None)
    return {"turn": int(c.turn), **d}  # turn 0 too (proto3's JSON leaves a zero out)


def mode_name(mode: int) -> str:
    """A SurfacingMode by its short name: WHEN_IDLE, INTERRUPT, SILENT (UNSPECIFIED for 0)."""
    return cpb.SurfacingMode.Name(mode).removeprefix("SURFACING_MODE_")


def said_fraction(answer: str, said: str) -> float:
    """The share of `answer`'s words (ears.bench.normalise: lower case, no punctuation) whose longest
    prefix stands, word for word and in a row, in `said`: words, not bytes, since a long answer is
    said in pieces (model/pacing.py) that drop a comma at the cut."""
    from interaction_actor.ears.bench import normalise

    want, got = normalise(answer), normalise(said)
    if not want:
        return 0.0
    k = max((k for k in range(1, len(want) + 1)
             if any(got[i:i + k] == want[:k] for i in range(len(got) - k + 1))), default=0)
    return round(k / len(want), 3)


def utterances(chunks: list[spb.OutputChunk], gap_turns: int = 4) -> list[dict]:
    """What the assistant said, one entry per utterance: {"turn": its first turn, "text"}. An utterance
    runs from the first turn with text until a STOP_SPEAKING or LISTEN control or `gap_turns` turns
    without text (the eval suite's rule, training/evaluate.utterances: the voice paces its bytes, so a
    long word can leave a turn or two without text)."""
    out: list[dict] = []
    cur: dict | None = None
    idle = 0
    for c in chunks:
        if cur is None and c.text:
            cur, idle = {"turn": int(c.turn), "text": ""}, 0
        if cur is None:
            continue
        cur["text"] += c.text
        idle = 0 if c.text else idle + 1
        if spb.CONTROL_TOKEN_STOP_SPEAKING in c.controls or spb.CONTROL_TOKEN_LISTEN in c.controls \
                or idle >= gap_turns:
            out.append(cur)
            cur = None
    if cur is not None:
        out.append(cur)
    return out


def _first_said(chunks: list[spb.OutputChunk], word: str, since: int | None) -> int | None:
    """The turn whose text starts `word` in what the assistant wrote from turn `since` on, across turns
    ("re" then "d!" is "red" said at the first of them); None when it never wrote it."""
    if since is None:
        return None
    turns = [(c.turn, ch) for c in chunks if c.turn >= since for ch in c.text]
    at = "".join(ch for _, ch in turns).find(word)
    return turns[at][0] if at >= 0 else None

def summarize(chunks: list[spb.OutputChunk], player: Player, turn_ms: int) -> dict:
    """Turns, misses, delegations, the tool calls, how results surfaced, barge-in handling, and the
    time from the tool-backed request to the first turn the assistant voices after its result surfaced."""
    ev = [(c.turn, e) for c in chunks for e in c.events]

    def of(kind: int) -> list[tuple[int, spb.Event]]:
        return [(t, e) for t, e in ev if e.kind == kind]

    surfaced = of(spb.EVENT_KIND_RESULT_SURFACED)
    voiced = [(t, e) for t, e in surfaced if e.voiced and e.update == spb.EVENT_UPDATE_FINAL]
    req = next((t for k, t in player.sent_at_turn.items() if k.startswith("weather")), None)
    voice_turn = None
    if voiced:
        voice_turn = next((c.turn for c in chunks if c.turn >= voiced[0][0] and c.audio.pcm16), None)
    bt = player.barged_at  # the client starts talking over the assistant after this turn (audio, no flag)
    stopped = None
    if bt is not None:
        stopped = next((c.turn for c in chunks if c.turn > bt and not c.audio.pcm16), None)
    red = player.sent_at_turn.get("red frame")
    asked = player.sent_at_turn.get("tell me when red")
    said_red = _first_said(chunks, "red", asked)
    answer = voiced[0][1].text if voiced else ""
    said_after = " ".join(u["text"] for u in utterances(chunks) if voiced and u["turn"] >= voiced[0][0])
    return {
        "turns": len(chunks),
        "missed_deadlines": sum(int(c.timing.missed) for c in chunks),
        "turn_gaps": sum(1 for a, b in zip(chunks, chunks[1:], strict=False) if b.turn != a.turn + 1),
        "compute_ms_p50": sorted(c.timing.compute_ms for c in chunks)[len(chunks) // 2] if chunks else 0.0,
        "delegations": len(of(spb.EVENT_KIND_DELEGATION_STARTED)),
        "delegated_tasks": [e.text for _, e in of(spb.EVENT_KIND_DELEGATION_STARTED)],
        "delegated_by": [e.policy for _, e in of(spb.EVENT_KIND_DELEGATION_STARTED)],
        "tool_calls": [e.text for _, e in of(spb.EVENT_KIND_TOOL_CALL)],
        "steers": len({(e.task_id, e.text) for _, e in of(spb.EVENT_KIND_PROGRESS)
                       if e.update == spb.EVENT_UPDATE_STEERED}),
        "results_surfaced": [{"turn": t, "mode": mode_name(e.mode), "voiced": e.voiced,
                              "update": spb.EventUpdate.Name(e.update).removeprefix("EVENT_UPDATE_"), "text": e.text}
                             for t, e in surfaced],
        "errors": [e.error.code for _, e in of(spb.EVENT_KIND_ERROR)],
        "barge_in_turn": bt,
        "barge_in_stop_turns": (stopped - bt) if bt is not None and stopped is not None else None,
        "cue": {"red_frame_turn": red, "said_turn": said_red,
                "in_time": red is not None and said_red is not None and red <= said_red <= red + 3},
        "request_to_voiced_ms": (voice_turn - req) * turn_ms if req is not None and voice_turn is not None else None,
        "assistant_said": utterances(chunks),  # one entry per utterance, with its first turn
        "answer": answer,  # the tool-backed result the scheduler surfaced for voicing
        "answer_said_fraction": said_fraction(answer, said_after),  # its longest prefix of words, as text
        "answer_voiced_fraction": 0.0,  # filled by run_demo from the assistant's audio (heard_in_audio)
    }


def write_outputs(chunks: list[spb.OutputChunk], records: list[dict], out_dir: Path, sample_rate: int = 16000,
                  turn_ms: int = 200) -> tuple[Path, Path]:
    """timeline.jsonl (every input and output chunk) and assistant.wav (silence where it said nothing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path, wav_path = out_dir / "timeline.jsonl", out_dir / "assistant.wav"
    with log_path.open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    per_turn = sample_rate * turn_ms // 1000
    with wave.open(str(wav_path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        for c in chunks:
            pcm = c.audio.pcm16
            w.writeframes(pcm + b"\x00\x00" * max(0, per_turn - len(pcm) // 2))
    return log_path, wav_path


def start_runtime(cfg: DemoConfig) -> tuple[list, str, list[str]]:
    """Ray, the background pool and the interaction actor, as `serve` starts them (interplay.runtime) with
    the demo's tools and prompt; returns (handles, session address, bg addresses)."""
    from interplay.runtime import BackgroundPlan, InteractionPlan, RuntimePlan, start

    plan = RuntimePlan(
        interaction=InteractionPlan(backend=cfg.backend, backend_options=dict(cfg.backend_options),
                                    preset=cfg.preset, checkpoint=cfg.checkpoint,
                                    turn_ms=cfg.turn_ms, allowed_tools=list(cfg.allowed_tools), policy=cfg.policy,
                                    policy_options=dict(cfg.policy_options), ears=cfg.ears,
                                    record_dir=str((Path(cfg.out_dir) / "replay").resolve()) if cfg.record else None),
        background=BackgroundPlan(engine=cfg.engine, engine_options=dict(cfg.engine_options),
                                  registry="interplay.demo_tools:demo_registry", system_prompt=cfg.agent_prompt,
                                  actors=cfg.background_actors),
        ray_address=cfg.ray_address, trace_file=cfg.trace_file, otlp_endpoint=cfg.otlp_endpoint)
    return start(plan, log_to_driver=False)  # the demo's console is its timeline


def label_recording(folder: Path, player: Player, cfg: DemoConfig) -> str | None:
    """The recorded session's file, its header given the script's typed requests (the replay study's
    ground truth: which need the background); None when the loop saved none."""
    from interplay.replay.format import annotate

    files = sorted(folder.glob("demo*.replay.jsonl.gz"), key=lambda f: f.stat().st_mtime)
    if not files:
        return None
    reqs = [{"turn": turn, "text": text, "needs_background": "weather" in text, "answer": cfg.city}
            for text, turn in sorted(player.sent_at_turn.items(), key=lambda x: x[1])]
    return str(annotate(files[-1], requests=reqs, source="demo"))


def sent_packages(interaction_actor) -> list[dict]:
    """What the interaction actor handed to the background: task, conversation size, allowed tools."""
    import ray

    from interplay.v1 import context_pb2 as xpb

    out = []
    for raw in ray.get(interaction_actor.recent_packages.remote(), timeout=10):
        p = xpb.ContextPackage.FromString(raw)
        out.append({"task_id": p.task_id, "task": p.task, "transcript_entries": len(p.transcript),
                    # its non-empty entries: the model may delegate many turns after the request, so the
                    # newest few would not show the request the package carries
                    "transcript": [e.text for e in p.transcript if e.text.strip()], "allowed_tools": list(p.allowed_tools),
                    "bytes": len(raw)})
    return out


def run_demo(cfg: DemoConfig | None = None, out: TextIO | None = None, address: str | None = None) -> dict:
    """Play the demo; with `address` against an already running Session service, else start everything."""
    cfg = cfg or DemoConfig()
    out = out or sys.stdout  # the stdout of now, not of import time (a test runner swaps and closes it)
    handles: list = []
    if address is None:
        print("starting Ray, the background pool and the interaction actor ...", file=out, flush=True)
        handles, address, bg = start_runtime(cfg)
        print(f"session service {address}; background {', '.join(bg)} (engine {cfg.engine})", file=out, flush=True)
    packages: list[dict] = []
    try:
        player = Player(cfg, out)
        chunks = asyncio.run(player.play(address))
        if handles:
            packages = sent_packages(handles[-1])
    finally:
        if handles:
            from interplay.runtime import drain

            drain(handles, 1.0)
    summary = summarize(chunks, player, cfg.turn_ms)
    surfaced = [c.turn for c in chunks for e in c.events if e.kind == spb.EVENT_KIND_RESULT_SURFACED
                and e.update == spb.EVENT_UPDATE_FINAL]
    if summary["answer"] and surfaced:
        summary["answer_voiced_fraction"], summary["answer_heard_as"] = heard_in_audio(chunks, surfaced[0],
                                                                                       summary["answer"])
    summary["packages"] = packages
    log_path, wav_path = write_outputs(chunks, player.records, Path(cfg.out_dir), turn_ms=cfg.turn_ms)
    summary.update(timeline=str(log_path), audio=str(wav_path), config=asdict(cfg))
    if cfg.record and handles:
        summary["replay"] = label_recording(Path(cfg.out_dir) / "replay", player, cfg)
    try:  # the picture is a bonus: a failure to draw it never fails the demo
        from interplay.pictures import draw

        summary["report"] = str(draw(cfg.out_dir, turn_ms=cfg.turn_ms, trace=cfg.trace_file))
    except Exception as exc:  # noqa: BLE001
        log.warning("report_not_drawn", error=repr(exc))
    return summary
