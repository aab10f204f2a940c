"""One FD-bench episode played to a pipecat pipeline in real time: the script the peer virtualenv runs.

Run by `.venv-peers/bin/python pipecat_runner.py JOB.json` (interplay/fdbench/pipecat_peer.py writes the
job and reads the result). It imports only pipecat (and loguru, its logger), numpy, espeakng_loader and
the standard library — never `interplay`: pipecat-ai 1.14 caps protobuf below 7 and the project needs 7,
so pipecat lives in a virtualenv of its own (`make peers`, constraints-peers.txt), unmodified.

Given the job (the episode's audio as an .npz: `room` under everything, `layer` the user's request,
optionally `interrupt`; the request's end, the tail, the interruption rule; the Whisper model folder,
the llama.cpp server's /v1 URL and model alias, the system prompt, the espeak voice), it builds the
pipeline pipecat's documentation builds for a voice agent:

    FeedInput -> WhisperSTTService -> user aggregator (SileroVADAnalyzer) -> OpenAILLMService
              -> EspeakTTSService -> CaptureOutput -> assistant aggregator

`FeedInput` (ours) is a BaseInputTransport that sends the episode as a microphone does: 20 ms PCM16
frames, each once its 20 ms have passed (the same room tone, the same interruption rule as stream.py:
the user talks over the assistant INTERRUPT_AFTER_S after it is first heard, or INTERRUPT_WAIT_S after
the request when it never speaks). `CaptureOutput` (ours) is a BaseOutputTransport that plays what it
is given as a sound card does — each frame starts when the previous one has finished, and the write
returns once it has played — and records each frame's start on the episode's clock (seconds from the
moment the user's first frame was due). `EspeakTTSService` (ours) is a TTSService over libespeak-ng
(espeakng-loader), the cascade's voice and rate. Everything else is pipecat's own, with its defaults.

A job with `delegation` is one of delegation.py's scenarios instead: the user follows userplan.py's rules
(imported by file path: the same rules interplay's client follows), the scenarios' slow tool is registered
with pipecat's own `llm.register_function` (cancel_on_interruption and cancellable_by_llm as the job says)
and offered in the LLMContext's ToolsSchema; its handler sleeps the city's delay and returns the answer,
and every call's start, return or cancellation on the episode's clock goes into `tool_calls`.

It writes RESULT.npz (`sent`: each user frame's send time; `out_pcm`: the captured audio, PCM16 16 kHz;
`out_at`/`out_len`: each written frame's start and length) and RESULT.json (`interrupt_at`, `heard_at`,
`error`, what was transcribed and said, pipecat's version and the settings), and exits 0; a failure is
an `error` in the JSON (exit 1 only when even that cannot be written). It ends by itself: the feed
stops after the tail (then an EndFrame: the user hangs up) and a pipeline still going at the job's
`limit_s` is cancelled (`cut`), CANCEL_S more at most.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import sys
import time
from pathlib import Path

import numpy as np

SR = 16_000
CHUNK = 320  # 20 ms
CANCEL_S = 10.0  # after the job's limit: how long a cancelled pipeline may take to stop
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class Espeak:
    """libespeak-ng from espeakng-loader, synchronous synthesis into a buffer (as interaction_actor/ears/speech.py)."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.rate = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)  # synchronous
        if self.rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.rate})")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced: the library holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n, _events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def synth(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        """PCM16 at self.rate."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        self.lib.espeak_SetParameter(1, int(rate), 0)
        self.lib.espeak_SetParameter(3, int(pitch), 0)
        data = text.encode()
        self._chunks = []
        if self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 1, None, None) != 0:
            raise RuntimeError("espeak_Synth failed")
        self.lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def _loud_offset(pcm: bytes, rms_floor: float) -> float | None:
    """Seconds into 16-bit audio `pcm` of its first 20 ms chunk louder than `rms_floor`, else None."""
    x = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    n = x.size // CHUNK
    if not n:
        return None
    loud = np.flatnonzero(np.sqrt(np.mean(x[: n * CHUNK].reshape(n, CHUNK) ** 2, axis=1)) > rms_floor)
    return float(loud[0] * CHUNK / SR) if loud.size else None


def _overlay(x, clip, a: int) -> None:
    """Add the part of `clip` that falls in the chunk x, the clip starting a samples before the chunk."""
    if -CHUNK < a < clip.size:
        lo = max(0, a)
        part = clip[lo:a + CHUNK]
        x[lo - a:lo - a + part.size] += part


def build_pipeline(job: dict, state: dict):
    """The pipecat pipeline of the module docstring, as a PipelineWorker (also kept in state["worker"])."""
    from pipecat.audio.utils import create_stream_resampler
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.frames.frames import (
        EndFrame,
        ErrorFrame,
        InputAudioRawFrame,
        LLMTextFrame,
        OutputAudioRawFrame,
        StartFrame,
        TranscriptionFrame,
        TTSAudioRawFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.task import PipelineParams
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.services.settings import TTSSettings
    from pipecat.services.tts_service import TTSService
    from pipecat.services.whisper.stt import WhisperSTTService
    from pipecat.transports.base_input import BaseInputTransport
    from pipecat.transports.base_output import BaseOutputTransport
    from pipecat.transports.base_transport import TransportParams

    ep = np.load(job["episode"])
    room, layer = ep["room"], ep["layer"]
    interrupt = ep["interrupt"] if "interrupt" in ep.files else None
    user_end, tail = int(job["user_end"]), int(job["tail_s"] * SR)
    scenario = job.get("delegation")  # a delegation scenario: the user follows userplan.py's rules
    plan = None
    if scenario is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import userplan  # standard library only: the rules interplay's client follows too

        plan = state["plan"] = userplan.Plan(**scenario["plan"])
        clips = [(int(scenario["lead"]), ep["request"])] + [None] * len(plan.steps)

    def since_t0() -> float:
        return time.monotonic() - state["t0"] if state["t0"] else 0.0

    class EspeakTTSService(TTSService):
        """espeak-ng behind pipecat's TTS interface (ours): one sentence's audio per run_tts."""

        def __init__(self, voice: str, rate: int, pitch: int, **kwargs) -> None:
            super().__init__(push_start_frame=True, push_stop_frames=True, sample_rate=SR,
                             settings=TTSSettings(model=None, voice=voice, language=None), **kwargs)
            self._espeak, self._voice, self._rate, self._pitch = Espeak(), voice, rate, pitch
            self._resampler = create_stream_resampler()

        async def run_tts(self, text: str, context_id: str):
            try:
                state["said"].append([round(time.monotonic() - state["t0"], 3) if state["t0"] else None, text])
                pcm = await asyncio.to_thread(self._espeak.synth, text, self._voice, self._rate, self._pitch)
                audio = await self._resampler.resample(pcm.astype(np.int16).tobytes(), self._espeak.rate, SR)
                audio += b"\0\0" * int(0.12 * SR)  # the cascade's 120 ms gap after a sentence
                yield TTSAudioRawFrame(audio=audio, sample_rate=SR, num_channels=1, context_id=context_id)
            except Exception as exc:  # noqa: BLE001 - reported in the pipeline, as pipecat's own services do
                yield ErrorFrame(error=f"espeak: {exc}")

    class FeedInput(BaseInputTransport):
        """The episode as a microphone sends it (see the module docstring)."""

        async def start(self, frame: StartFrame):
            await super().start(frame)
            await self.set_transport_ready(frame)
            self._feed = self.create_task(self._feed_audio())

        async def _feed_plan(self) -> None:
            """A delegation scenario: the request, then each step where userplan.Plan places it."""
            t0 = state["t0"] = time.monotonic()
            j, limit = 0, int(scenario["max_s"] * SR)
            while True:
                i0 = j * CHUNK
                before = len(plan.placed)
                plan.advance(i0, CHUNK)
                for k, at in plan.placed[before:]:
                    clips[k + 1] = (at, ep[f"step{k}"])
                if plan.done(i0) or i0 >= limit or i0 + CHUNK > room.size:
                    break
                x = room[i0:i0 + CHUNK].copy()
                for placed in clips:
                    if placed is None:
                        continue
                    at, clip = placed
                    _overlay(x, clip, i0 - at)
                await self._push(x, t0, j)
                j += 1
            state["placed"] = plan.placed
            state["fed"] = True
            await state["worker"].queue_frame(EndFrame())

        async def _push(self, x, t0: float, j: int) -> None:
            """Send chunk j (float samples x) at its real time after t0."""
            await asyncio.sleep(max(0.0, t0 + (j + 1) * CHUNK / SR - time.monotonic()))
            state["sent"].append(time.monotonic() - t0)
            pcm = np.clip(np.round(np.clip(x, -1, 1) * 32767.0), -32768, 32767).astype("<i2").tobytes()
            await self.push_audio_frame(InputAudioRawFrame(audio=pcm, sample_rate=SR, num_channels=1))

        async def _feed_audio(self) -> None:
            await asyncio.sleep(job.get("warmup_s", 0.0))
            if plan is not None:
                await self._feed_plan()
                return
            t0 = state["t0"] = time.monotonic()
            j = 0
            while True:
                i0 = j * CHUNK
                if interrupt is not None and state["interrupt_at"] is None:
                    if state["heard_at"] is not None:
                        at = (state["heard_at"] + job["interrupt_after_s"]) * SR
                        state["interrupt_at"] = max(i0, int(np.ceil(at / CHUNK)) * CHUNK)
                    elif i0 >= user_end + int(job["interrupt_wait_s"] * SR):
                        state["interrupt_at"] = i0
                last = layer.size if interrupt is None else (
                    None if state["interrupt_at"] is None else state["interrupt_at"] + interrupt.size)
                if (last is not None and i0 >= last + tail) or i0 + CHUNK > room.size:
                    break
                x = room[i0:i0 + CHUNK].copy()
                if i0 < layer.size:
                    part = layer[i0:i0 + CHUNK]
                    x[:part.size] += part
                ia = state["interrupt_at"]
                if ia is not None and interrupt is not None:
                    _overlay(x, interrupt, i0 - ia)
                await self._push(x, t0, j)
                j += 1
            state["fed"] = True
            await state["worker"].queue_frame(EndFrame())  # the user hangs up: the pipeline ends by itself

    class CaptureOutput(BaseOutputTransport):
        """A sound card that records what it plays, on the episode's clock (see the module docstring)."""

        async def start(self, frame: StartFrame):
            await super().start(frame)
            await self.set_transport_ready(frame)
            self._until = 0.0

        async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
            now = time.monotonic()
            if state["t0"] is None or not frame.audio:
                return True
            begin = max(now, self._until)
            self._until = begin + len(frame.audio) / 2 / frame.sample_rate
            at = begin - state["t0"]
            state["out"].append((at, frame.audio, frame.sample_rate))
            off = _loud_offset(frame.audio, job["heard_rms"])
            if off is not None:
                if plan is not None:
                    plan.heard(int((at + off) * SR))
                if state["heard_at"] is None and len(state["sent"]) * CHUNK >= user_end:
                    state["heard_at"] = at + off
            await asyncio.sleep(max(0.0, self._until - time.monotonic()))
            return True

    class Notes(FrameProcessor):
        """What pipecat transcribed and what its LLM wrote (for the report; passes every frame on)."""

        async def process_frame(self, frame, direction: FrameDirection):
            await super().process_frame(frame, direction)
            if isinstance(frame, TranscriptionFrame):
                state["heard"].append([round(time.monotonic() - (state["t0"] or 0), 3), frame.text])
            elif isinstance(frame, LLMTextFrame):
                state["llm_text"] += frame.text
            elif isinstance(frame, ErrorFrame):
                state["errors"].append(str(frame.error))
            await self.push_frame(frame, direction)

    params = TransportParams(audio_in_enabled=True, audio_in_sample_rate=SR, audio_out_enabled=True,
                             audio_out_sample_rate=SR)
    feed, capture = FeedInput(params), CaptureOutput(params)
    stt = WhisperSTTService(settings=WhisperSTTService.Settings(model=job["whisper_model"]), device="cpu",
                            compute_type="int8")
    llm = OpenAILLMService(base_url=job["llm_url"], api_key="none", settings=OpenAILLMService.Settings(
        model=job["llm_model"], system_instruction=job["system_prompt"], max_tokens=job["max_tokens"],
        temperature=job["temperature"]))
    tts = EspeakTTSService(job["voice"], job["rate"], job["pitch"])
    context = LLMContext()
    if scenario is not None:  # the slow tool through pipecat's own function calling (see delegation_settings)
        from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
        from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema

        table = scenario["tools"]

        async def weather(params) -> None:
            city = str(params.arguments.get("city", ""))
            name = next((c for c in table if c.lower() in city.lower().replace(",", " ").split()), None)
            call = {"city": name, "arguments": dict(params.arguments), "started_s": round(since_t0(), 3),
                    "returned_s": None, "result": None, "cancelled_s": None}
            state["tool_calls"].append(call)
            plan.tool_seen(int(since_t0() * SR), table[name]["delay_s"] if name else 0.0)
            try:
                if name is None:
                    call["returned_s"] = round(since_t0(), 3)
                    await params.result_callback({"error": f"no forecast for {city!r}"})
                    return
                await asyncio.sleep(table[name]["delay_s"])
                call["returned_s"], call["result"] = round(since_t0(), 3), table[name]["answer"]
                await params.result_callback(table[name]["answer"])
            except asyncio.CancelledError:
                call["cancelled_s"] = round(since_t0(), 3)
                raise

        context = LLMContext(tools=ToolsSchema(standard_tools=[FunctionSchema(
            name="weather", description="Today's weather for a city: the condition and the temperature.",
            properties={"city": {"type": "string", "enum": list(table), "description": "City name."}},
            required=["city"])]))
        llm.register_function("weather", weather, cancel_on_interruption=scenario["cancel_on_interruption"],
                              cancellable_by_llm=scenario["cancellable_by_llm"])
    users, assistant = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer()))
    pipeline = Pipeline([feed, stt, Notes(), users, llm, Notes(), tts, capture, assistant])
    state["worker"] = PipelineWorker(pipeline, params=PipelineParams(audio_in_sample_rate=SR,
                                                                     audio_out_sample_rate=SR))
    return state["worker"]


async def run(job: dict) -> dict:
    from pipecat.workers.runner import WorkerRunner

    state: dict = {"t0": None, "sent": [], "out": [], "interrupt_at": None, "heard_at": None, "heard": [],
                   "said": [], "llm_text": "", "errors": [], "fed": False, "cut": False, "tool_calls": [],
                   "placed": []}
    error = ""
    try:
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(build_pipeline(job, state))
        running = asyncio.get_running_loop().create_task(runner.run())
        done, _ = await asyncio.wait({running}, timeout=job["limit_s"])
        if not done:  # still playing a long reply after the user hung up (or stuck): cut it, as a hang-up does
            state["cut"] = True
            await runner.cancel("the episode's time is up")
            done, _ = await asyncio.wait({running}, timeout=CANCEL_S)
            if not done:
                running.cancel()
                error = f"no end within {job['limit_s'] + CANCEL_S:.0f} s"
        if done:
            running.result()
    except Exception as exc:  # noqa: BLE001 - the parent reports it as the episode's error
        error = f"{type(exc).__name__}: {exc}"
    if not error and not state["fed"]:
        error = "the pipeline ended before the episode was fed"
    return {**state, "error": error}


def main(argv: list[str]) -> int:
    import importlib.metadata

    from loguru import logger  # pipecat's logger: its warnings and errors only, into the parent's runner.log

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    job = json.loads(Path(argv[1]).read_text())
    state = asyncio.run(run(job))
    out = state.pop("out")
    pcm = [np.frombuffer(a, "<i2") if r == SR else
           np.interp(np.arange(int(len(a) / 2 * SR / r)) * r / SR, np.arange(len(a) // 2),
                     np.frombuffer(a, "<i2")).astype("<i2") for _, a, r in out]
    np.savez(job["result"] + ".npz", sent=np.asarray(state.pop("sent"), np.float64),
             out_at=np.asarray([t for t, _, _ in out], np.float64), out_len=np.asarray([p.size for p in pcm], np.int64),
             out_pcm=np.concatenate(pcm) if pcm else np.zeros(0, "<i2"))
    state.pop("t0")
    state.pop("worker", None)
    state.pop("plan", None)
    state["pipecat_version"] = importlib.metadata.version("pipecat-ai")
    Path(job["result"] + ".json").write_text(json.dumps(state))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
