"""bench_ears: what the user would observe of the ears — words right, and soon, without costing turns.

- `wer`, `rtf`: the ears alone on the held-out espeak-ng set (interaction_actor/ears/bench.py:
  sentences and voices no test uses), through the real segmenter and faster-whisper tiny.en.
- `final_latency_ms_p50/p99`: at the loop, as `serve` runs it: the ears in a Ray actor of their own
  (start_ears), the shipped interaction model in a TurnLoop served over gRPC on 127.0.0.1, and n
  clients streaming held-out utterances in real time (200 ms chunks, room tone between them). For each
  utterance: from the moment its speech ended (the client plays the audio in real time, sending each
  200 ms chunk once it has been spoken, as a microphone does) to the moment the client received the
  USER_TRANSCRIPT FINAL event.
  The headline is one session speaking; `_4_sessions` is four sessions whose utterances end at about
  the same moment (they queue on the one transcriber thread).
- `runs`: for n = 1 and 4 sessions, the turns, missed turns and transcripts while transcribing.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from interaction_actor.ears import speech
from interaction_actor.ears.bench import measure_transcriber
from interaction_actor.runtime.loop import LoopConfig, TurnLoop
from interaction_actor.runtime.metrics import percentile
from interaction_actor.runtime.service import serve
from interplay.client import SessionClient, audio_chunk
from interplay.log import get_logger
from interplay.v1 import session_pb2 as spb

log = get_logger("interaction_actor.runtime.ears_bench")

TURN = 3200  # samples in one 200 ms chunk


def _script(utterances: list[tuple[str, str]], seed: int) -> tuple[np.ndarray, list[int]]:
    """The utterances one after another, each with 0.6 s before and 2.0 s after, over room tone; returns
    the audio and the sample index where each utterance's speech ends."""
    parts, ends, at = [], [], 0
    for i, (text, voice) in enumerate(utterances):
        s = speech.padded(speech.say(text, voice), lead_s=0.6, tail_s=2.0,
                          floor=speech.room_tone(0.4, seed=seed * 100 + i))
        ends.append(at + int(0.6 * speech.SAMPLE_RATE) + len(s) - int(2.6 * speech.SAMPLE_RATE))
        parts.append(s)
        at += len(s)
    return np.concatenate(parts), ends


async def _session(address: str, sid: str, audio: np.ndarray, ends: list[int]) -> dict:
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    sent_end: list[float] = []  # the moment each utterance's speech ended, on the client's real-time clock
    heard: list[tuple[float, str]] = []
    chunks: list[spb.OutputChunk] = []
    async with SessionClient(address, sid) as client:
        async def send() -> None:  # as a microphone: a chunk goes out once its 200 ms have been spoken
            t0 = time.monotonic()
            sent_end.extend(t0 + e / speech.SAMPLE_RATE for e in ends)
            for k, i in enumerate(range(0, pcm.size, TURN)):
                await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.2 - time.monotonic()))
                await client.send(audio_chunk(pcm[i:i + TURN].tobytes()))
            await asyncio.sleep(1.0)
            await client.finish()

        sender = asyncio.get_running_loop().create_task(send())
        async for chunk in client.chunks():
            chunks.append(chunk)
            for e in chunk.events:
                if e.kind == spb.EVENT_KIND_USER_TRANSCRIPT and e.update == spb.EVENT_UPDATE_FINAL:
                    heard.append((time.monotonic(), e.text))
        await sender
    latencies = []
    for t_end in sent_end:  # the first final after each utterance's end
        later = [t for t, _ in heard if t >= t_end]
        if later:
            latencies.append(1000 * (later[0] - t_end))
    return {"turns": len(chunks), "missed": sum(int(c.timing.missed) for c in chunks),
            "gaps": sum(1 for a, b in zip(chunks, chunks[1:], strict=False) if b.turn != a.turn + 1),
            "utterances": len(ends), "transcripts": len(heard), "latencies": latencies}


async def _run(n: int, per_session: int, preset: str, offset: int) -> dict:
    from interaction_actor.ears.actor import start_ears
    from interaction_actor.runtime.backend import load_backend

    handle, ears = await asyncio.to_thread(start_ears)
    loop = TurnLoop(load_backend("native", preset=preset), LoopConfig(turn_ms=200, policy="never", admission=False),
                    ears=ears)
    loop.start()
    server, address = await serve(loop)
    pool = speech.heldout_set()
    try:
        jobs = []
        for s in range(n):
            utts = [pool[(offset + s * per_session + k) % len(pool)] for k in range(per_session)]
            audio, ends = _script(utts, seed=offset + s)
            jobs.append(_session(address, f"ears-{n}-{s}", audio, ends))
        results = await asyncio.gather(*jobs)
    finally:
        await server.stop(None)
        await loop.stop()
        ears.stop()
    return {"n": n, "missed": sum(r["missed"] for r in results), "turn_gaps": sum(r["gaps"] for r in results),
            "turns": sum(r["turns"] for r in results), "utterances": sum(r["utterances"] for r in results),
            "transcripts": sum(r["transcripts"] for r in results),
            "latencies": [x for r in results for x in r["latencies"]]}


def bench_ears(quick: bool = False, preset: str = "small") -> dict:
    from interplay.raylocal import ensure_ray

    alone = measure_transcriber(quick=quick)
    ensure_ray()
    runs = []
    for i, n in enumerate((1, 4)):
        per = (3 if n == 1 else 2) if quick else (8 if n == 1 else 4)
        runs.append(asyncio.run(_run(n, per, preset, offset=7 * i)))
    for r in runs:
        r["final_latency_ms_p50"] = round(percentile(r["latencies"], 50), 1) if r["latencies"] else None
    one = runs[0].pop("latencies")
    four = runs[1].pop("latencies")
    return {
        "wer": alone["wer"],
        "rtf": alone["rtf"],
        # the headline: one session speaking (what one user observes); four sessions that finish speaking
        # at about the same moment queue on the one transcriber thread: their figure is beside it
        "final_latency_ms_p50": round(percentile(one, 50), 1) if one else None,
        "final_latency_ms_p99": round(percentile(one, 99), 1) if one else None,
        "final_latency_ms_p50_4_sessions": round(percentile(four, 50), 1) if four else None,
        "final_latency_ms_p99_4_sessions": round(percentile(four, 99), 1) if four else None,
        "final_latencies": len(one) + len(four),
        "segment_to_result_ms_p50": alone.get("latency_ms_p50"),
        "heldout_utterances": alone.get("utterances"),
        "runs": runs,
    }
