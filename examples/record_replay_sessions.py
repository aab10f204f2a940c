"""Record the shipped replay sessions (examples/replay/): the demo's script, live, through the real stack.

Each session is the demo's own Player (interplay.demo: hello.wav spoken, "weather in <city>?" typed, a
follow-up while the task runs, "tell me when red" and frames, a barge-in over the reply, the room's
noise floor between) streamed in real time over Session gRPC on 127.0.0.1 to a real TurnLoop with the
shipped native model, recording (LoopConfig.record_dir). The background is a small gRPC servicer
here that answers like the demo's weather tool ("<city> <condition>, <T> C" after ~1.5 s) instead of
the local LLM engine, so recording takes seconds, not minutes; the recording stores its updates, so a
replay reproduces the session with no background at all. Run:  .venv/bin/python examples/record_replay_sessions.py
"""

from __future__ import annotations

import asyncio
import io
import shutil
import sys
import tempfile
from pathlib import Path

import grpc

from interaction_actor.model.fusion import build_model
from interaction_actor.model.weights import resolve_checkpoint
from interaction_actor.runtime.loop import LoopConfig, TurnLoop
from interaction_actor.runtime.service import serve
from interplay.demo import DemoConfig, Player
from interplay.replay.format import annotate
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import background_pb2_grpc as bgrpc

OUT = Path(__file__).resolve().parent / "replay"
ANSWERS = {"Oslo": "Oslo snow, -3 C", "Lima": "Lima fog, 17 C"}


class WeatherBackground(bgrpc.BackgroundServicer):
    def __init__(self, answer: str) -> None:
        self.answer = answer

    async def Delegate(self, request, context):  # noqa: N802
        yield bpb.Update(task_id=request.task_id, seq=0, kind=bpb.UPDATE_KIND_ACCEPTED)
        await asyncio.sleep(1.5)
        yield bpb.Update(task_id=request.task_id, seq=1, kind=bpb.UPDATE_KIND_FINAL, text=self.answer)

    async def Steer(self, request, context):  # noqa: N802
        return bpb.SteerResponse(accepted=True)


async def record(model, city: str, folder: Path) -> Path:
    bg = grpc.aio.server()
    bgrpc.add_BackgroundServicer_to_server(WeatherBackground(ANSWERS[city]), bg)
    port = bg.add_insecure_port("127.0.0.1:0")
    await bg.start()
    cfg = DemoConfig(city=city, tail_s=2.0, max_s=40.0, voice_s=4.0)
    loop = TurnLoop(model, LoopConfig(turn_ms=cfg.turn_ms, background_address=f"127.0.0.1:{port}",
                                      policy=cfg.policy, policy_options=cfg.policy_options, record_dir=str(folder)))
    loop.start()
    server, address = await serve(loop)
    player = Player(cfg, io.StringIO())
    try:
        await player.play(address)
    finally:
        await server.stop(0.2)
        await loop.stop()
        await bg.stop(0.2)
    [path] = folder.glob("demo*.replay.jsonl.gz")
    reqs = [{"turn": turn, "text": text, "needs_background": "weather" in text, "answer": ANSWERS[city]}
            for text, turn in sorted(player.sent_at_turn.items(), key=lambda x: x[1])]
    annotate(path, requests=reqs, source="demo", meta={"city": city, "background": "test servicer (fixed answer)"})
    return path


def main() -> None:
    model = build_model("small", resolve_checkpoint("small", None), 0)
    OUT.mkdir(parents=True, exist_ok=True)
    for city in ANSWERS:
        with tempfile.TemporaryDirectory() as tmp:
            path = asyncio.run(record(model, city, Path(tmp)))
            dest = OUT / f"demo-{city.lower()}.replay.jsonl.gz"
            shutil.copy(path, dest)
            print(dest, dest.stat().st_size, "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
