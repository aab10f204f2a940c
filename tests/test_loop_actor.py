"""The InteractionActor in a real local Ray instance, driven over real gRPC on 127.0.0.1.

One actor (tiny model, 100 ms turns, 4-chunk output queues) serves every test of this file; each
bad-input test runs a second, well-behaved session beside the victim to show it is not touched.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import ray
import torch

from interaction_actor.runtime.actor import spawn
from interaction_actor.runtime.bench import busy_processes
from interplay.client import SessionClient, audio_chunk, control
from interplay.v1 import session_pb2 as spb

TURN_MS = 100
PCM_100MS = (torch.sin(torch.arange(1600) / 4.0) * 6000).to(torch.int16).numpy().tobytes()
# a tiny receive window so that a client that stops reading backs up within a second, not 64 KB later
SMALL_WINDOW = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]


@pytest.fixture(scope="module")
def actor(ray_local):
    # admission off: one test here burns every core on purpose, and admission by measured compute would
    # then (rightly) refuse the sessions the next tests open; it has its own test (test_loop_hardening)
    handle, address = spawn(preset="tiny", seed=0, turn_ms=TURN_MS, output_queue=4, log_level="warning",
                            admission=False)
    yield handle, address
    ray.get(handle.stop.remote(), timeout=30)
    ray.kill(handle)


async def stream(address: str, seconds: float, client: SessionClient | None = None) -> list[spb.OutputChunk]:
    """Send 100 ms of audio per 100 ms for `seconds`, half-close, and read every chunk to the end."""
    got: list[spb.OutputChunk] = []
    async with client or SessionClient(address) as c:
        async def produce() -> None:
            t0 = time.monotonic()
            k = 0
            while time.monotonic() - t0 < seconds:
                await c.send(audio_chunk(PCM_100MS))
                k += 1
                await asyncio.sleep(max(0.0, t0 + k * TURN_MS / 1000 - time.monotonic()))
            await c.finish()

        task = asyncio.get_running_loop().create_task(produce())
        async for chunk in c.chunks():
            got.append(chunk)
        await task
    return got


def assert_gapless(chunks: list[spb.OutputChunk]) -> None:
    assert chunks, "no output"
    assert [c.turn for c in chunks] == list(range(len(chunks)))
    assert [c.time_ms for c in chunks] == [TURN_MS * c.turn for c in chunks] or all(
        b.time_ms > a.time_ms for a, b in zip(chunks, chunks[1:], strict=False))


def errors(chunks: list[spb.OutputChunk]) -> list[str]:
    return [e.error.code for c in chunks for e in c.events if e.kind == spb.EVENT_KIND_ERROR]


async def test_a_session_streamed_for_five_seconds_has_every_turn_stamped_in_order_without_gaps(actor):
    chunks = await stream(actor[1], 5.0)
    assert_gapless(chunks)
    # the session lasted the whole stream (a turn that overruns on a loaded machine skips the slots it
    # ran over, so 80% of the 50 slots are required, not all)
    assert len(chunks) >= 0.8 * 5000 / TURN_MS
    assert spb.EVENT_KIND_SESSION_STARTED in [e.kind for e in chunks[0].events]
    assert spb.EVENT_KIND_SESSION_ENDED in [e.kind for e in chunks[-1].events]


@pytest.mark.slow  # 31 s; the five-second test below holds the same property in the default suite
async def test_a_session_streamed_for_thirty_seconds_has_every_turn_stamped_in_order_without_gaps(actor):
    """Over three times the tiny preset's KV capacity (89 turns): the session compacts its cache as it goes."""
    chunks = await stream(actor[1], 31.0)
    assert_gapless(chunks)
    assert len(chunks) >= 0.8 * 31_000 / TURN_MS  # the whole stream, allowing for skipped slots as above


async def test_no_turn_starts_a_whole_turn_late_while_other_processes_burn_every_core(actor):
    """The bound is one turn (100 ms), far above the ~2 ms the README measures, so that a shared
    machine does not fail it; a clock that drifted, or waited behind the busy processes, would exceed
    it within seconds.

    Turns whose compute overruns under the load skip the slots they ran over (measured on 2 shared cores:
    up to ~100 ms a turn and 66 of the 80 slots run), so the sample is only required to cover half of them."""
    with busy_processes(max_s=30):
        runs = await asyncio.gather(stream(actor[1], 4.0), stream(actor[1], 4.0))
    late = [c.timing.lateness_ms for chunks in runs for c in chunks]
    assert len(late) >= 30  # of 80 slots; a loaded host overruns (and skips) more of them
    assert max(late) < TURN_MS, sorted(late)[-5:]


async def test_a_client_that_stops_reading_does_not_delay_other_sessions_and_its_drops_are_counted(actor):
    address = actor[1]
    stalled = SessionClient(address, options=SMALL_WINDOW)
    async with stalled:
        await stalled.send(audio_chunk(PCM_100MS))
        others = await stream(address, 3.0)  # meanwhile the stalled client reads nothing
        dropped = ray.get(actor[0].metrics.remote())["dropped_outputs"]
        seen: list[spb.OutputChunk] = []
        async for chunk in stalled.chunks():  # it reads again: first what the transport held, then the report
            seen.append(chunk)
            if spb.EVENT_KIND_OUTPUT_DROPPED in [e.kind for e in chunk.events] or len(seen) > 300:
                break
    assert_gapless(others)
    # No turn of the others started a whole turn late (a generous bound for a shared machine): the loop sends
    # after the turn's clock has finished, so a send that waited on the stalled client would make the next
    # turn late. A turn that overran its slot (`missed`: its compute and the process's own scheduling) is the host's doing, not the stalled
    # client's: the landing CI of stop 49, on a loaded host (compute ~1.7x this machine's), had one such turn
    # of ~30 at 7 ms lateness, and a run here after three other test files three (compute 20-40 ms; the rest
    # of those turns is the actor process's own scheduling); a bystander that waited on the stalled client
    # would miss every turn.
    assert max(c.timing.lateness_ms for c in others) < TURN_MS
    assert sum(c.timing.missed for c in others) <= max(2, len(others) // 8), \
        [(round(c.timing.compute_ms), c.timing.missed) for c in others]
    assert dropped > 0
    report = seen[-1]
    ev = next(e for e in report.events if e.kind == spb.EVENT_KIND_OUTPUT_DROPPED)
    assert report.dropped_chunks == ev.dropped > 0
    assert report.turn - seen[-2].turn - 1 == report.dropped_chunks  # the gap is exactly what was counted


async def victim_and_bystander(address: str, bad: bytes) -> tuple[list[spb.OutputChunk], list[spb.OutputChunk]]:
    """The victim sends audio, then `bad` raw bytes at its 3rd turn, then audio; a bystander streams beside it."""
    channel = grpc.aio.insecure_channel(address)
    call = channel.stream_stream("/interplay.v1.Session/Converse", request_serializer=lambda b: b,
                                 response_deserializer=spb.OutputChunk.FromString)()
    bystander = asyncio.get_running_loop().create_task(stream(address, 1.6))
    good = spb.InputChunk(session_id="", audio=spb.AudioChunk(pcm16=PCM_100MS, sample_rate_hz=16000, channels=1))
    await call.write(control(spb.CONTROL_KIND_START).SerializeToString())
    got: list[spb.OutputChunk] = []
    async for chunk in call:
        got.append(chunk)
        if len(got) == 3:
            await call.write(bad)
        if len(got) >= 10:
            await call.done_writing()
        else:
            await call.write(good.SerializeToString())
    await channel.close()
    return got, await bystander


@pytest.mark.parametrize("bad, code", [
    (b"\xff\xff\xff\xff", "malformed_message"),
    (spb.InputChunk(audio=spb.AudioChunk(pcm16=PCM_100MS[:800], sample_rate_hz=4000)).SerializeToString(),
     "bad_sample_rate"),
    (spb.InputChunk(video=spb.VideoFrame(data=b"\x00" * 30, encoding=spb.FRAME_ENCODING_RAW_RGB, width=8000,
                                         height=8000)).SerializeToString(), "oversize_frame"),
    (spb.InputChunk(text=spb.TextInput(raw=b"\x93hello\x94", encoding="x-unknown-9")).SerializeToString(),
     "unknown_text_encoding"),
], ids=["malformed", "sample_rate", "oversize_frame", "text_encoding"])
async def test_a_bad_input_returns_its_error_event_and_the_next_turn_still_happens_for_that_session_only(
        actor, bad, code):
    victim, bystander = await victim_and_bystander(actor[1], bad)
    assert errors(victim) == [code]
    at = next(c.turn for c in victim if errors([c]))
    assert_gapless(victim)
    assert victim[-1].turn >= at + 2
    assert_gapless(bystander)
    assert errors(bystander) == []


async def test_talk_streams_a_stereo_44k_wav_and_a_script_and_prints_one_line_per_turn(actor, tmp_path):
    import io
    import math
    import wave

    from interplay.client import talk

    t = torch.arange(44100) / 44100.0
    tone = (torch.sin(2 * math.pi * 330 * t) * 8000).to(torch.int16)
    with wave.open(str(tmp_path / "a.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(tone.repeat_interleave(2).numpy().tobytes())
    (tmp_path / "s.txt").write_text("0.3: hello there\nwhat time is it\n", encoding="utf-8")
    out = io.StringIO()
    summary = await talk(actor[1], wav=str(tmp_path / "a.wav"), script=str(tmp_path / "s.txt"), tail_s=0.3, out=out)
    lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("turn")]
    assert summary["turns"] == len(lines) >= 10
    assert "hello there" in out.getvalue() and "audio" in out.getvalue() and "error" not in out.getvalue()
