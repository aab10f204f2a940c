"""A voice assistant in one file: your tools, your engine, your delegation policy.

    .venv/bin/python examples/voice_assistant.py                 # local engine, plays a short conversation
    .venv/bin/python examples/voice_assistant.py --policy rule   # only the intent rule decides
    .venv/bin/python examples/voice_assistant.py --policy model_token  # only the model's <delegate> token
    .venv/bin/python examples/voice_assistant.py --engine openai --base-url http://127.0.0.1:8000/v1
    .venv/bin/python examples/voice_assistant.py --serve         # keep running; `interplay talk ADDRESS --wav F`

It starts Ray on this machine, one background actor serving YOUR tools with the engine you pick,
and the interaction actor with YOUR policy, then streams a WAV and two typed messages through the
real client and prints the per-turn timeline (about 20 s). The default policy is the demo's: the
interaction model's own <delegate> token first, an intent rule on typed requests as its backup (the
shipped model has never been trained on these requests, so alone it delegates none of them). A run
in which nothing was delegated ends with exit code 1 and says why, instead of passing as a success.
Copy it and change the three marked places.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path

from interplay.log import configure_logging

configure_logging("warning")  # before the runtime modules bind their loggers

from background_actor.actor import start_background  # noqa: E402
from interaction_actor.runtime.actor import spawn  # noqa: E402
from interplay.client import SessionClient, Timeline, text_chunk, wav_source  # noqa: E402
from interplay.raylocal import ensure_ray  # noqa: E402
from interplay.v1 import session_pb2 as spb  # noqa: E402
from tools import Registry, ToolError, tool  # noqa: E402

ASSETS = Path(__file__).resolve().parent / "assets"


# 1. YOUR TOOLS: what the background model may call. Here an order lookup over an in-file table
#    (stand-in for your backend) and the built-in calculator.
ORDERS = {"A17": "shipped Monday, arrives Thursday", "B42": "packed, ships tomorrow"}


@tool(timeout_s=2.0, idempotent=True)
def order_status(order_id: str) -> str:
    """Where an order is.

    Args:
        order_id: The order number, e.g. "A17".
    """
    status = ORDERS.get(order_id.strip().upper())
    if status is None:
        raise ToolError(f"no order {order_id!r}; known orders: {', '.join(ORDERS)}")
    return f"order {order_id.upper()}: {status}"


def my_tools() -> Registry:
    from tools.builtin import default_registry

    return Registry([order_status], name="shop") | default_registry(include=("calculator",))


# 2. YOUR ENGINE: "local" (SmolLM2-135M on this CPU), "openai" (any OpenAI-compatible server), "vllm" (GPU).
def engine_options(args: argparse.Namespace) -> dict:
    if args.engine == "openai":
        return {"base_url": args.base_url, "model": args.model}
    return {}


# 3. YOUR POLICY: "first_of" (the default: the first of several policies that decides), "model_token" (the
#    interaction model decides), "rule" (intent patterns on what the user typed), "always", "never", or
#    "my_module:MyPolicy" (any object with decide(TurnState)).
INTENTS = [r"\border\b", r"\bhow much\b", r"\bweather\b"]
POLICY_OPTIONS = {"rule": {"patterns": INTENTS},
                  "first_of": {"policies": ["model_token", {"policy": "rule", "patterns": INTENTS}]}}


async def converse(address: str, max_wait_s: float = 60.0) -> dict:
    """Say hello (audio, in real time), then type two requests; print one line per turn. Ends once
    every delegation has come back (a result surfaced or an error), or after `max_wait_s`."""
    tl, said, events = Timeline(), [], []
    open_tasks: set[str] = set()
    sent_all = asyncio.Event()
    async with SessionClient(address) as c:
        async def produce() -> None:
            t0 = asyncio.get_running_loop().time()
            for t, ch in wav_source(ASSETS / "hello.wav"):
                await asyncio.sleep(max(0.0, t0 + t - asyncio.get_running_loop().time()))
                tl.sent(ch)
                await c.send(ch)
            # text typed within LoopConfig.steer_window_turns (2 s) of a delegation is a follow-up to it
            # (a Steer), so the second, separate request comes 3 s after the first
            for gap_s, msg in ((1.5, "where is my order A17?"), (3.0, "how much is 12 * 7?")):
                await asyncio.sleep(gap_s)
                ch = text_chunk(msg)
                tl.sent(ch)
                await c.send(ch)
            await asyncio.sleep(1.0)
            sent_all.set()

        async def finish_when_answered() -> None:
            await sent_all.wait()
            while open_tasks:
                await asyncio.sleep(0.2)
            await asyncio.sleep(2.0)  # let the assistant voice the last answer
            await c.finish()

        tasks = [asyncio.get_running_loop().create_task(f()) for f in (produce, finish_when_answered)]
        async with asyncio.timeout(max_wait_s):
            async for chunk in c.chunks():
                print(tl.line(chunk), flush=True)
                said.append(chunk.text)
                for e in chunk.events:
                    events.append(e)
                    if e.kind == spb.EVENT_KIND_DELEGATION_STARTED:
                        open_tasks.add(e.task_id)
                    elif e.kind == spb.EVENT_KIND_ERROR or (e.kind == spb.EVENT_KIND_RESULT_SURFACED
                                                          and e.update == spb.EVENT_UPDATE_FINAL):
                        open_tasks.discard(e.task_id)
        for t in tasks:
            t.cancel()
    return {"turns": len(said), "said": "".join(said), "events": events}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="local", choices=("local", "openai", "vllm"))
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--model", default="default")
    ap.add_argument("--policy", default="first_of")
    ap.add_argument("--serve", action="store_true", help="keep the actors running until Ctrl-C")
    ap.add_argument("--json", action="store_true", help="end with one JSON line: the run's summary")
    args = ap.parse_args(argv)

    ensure_ray()
    bg, bg_address = start_background(engine=args.engine, engine_options=engine_options(args),
                                      registry_factory=my_tools)
    ia, address = spawn(background_address=bg_address, policy=args.policy,
                        policy_options=POLICY_OPTIONS.get(args.policy, {}),
                        allowed_tools=["order_status", "calculator"])
    print(f"session service {address}, background {bg_address} ({args.engine}), policy {args.policy}", flush=True)
    if args.serve:
        print(f"connect with: interplay talk {address} --wav examples/assets/hello.wav", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(asyncio.Event().wait())
        return {}
    out = asyncio.run(converse(address))
    delegated = [e.text for e in out["events"] if e.kind == spb.EVENT_KIND_DELEGATION_STARTED]
    surfaced = [e.text for e in out["events"]
                if e.kind == spb.EVENT_KIND_RESULT_SURFACED and e.update == spb.EVENT_UPDATE_FINAL]
    tool_results = [e.text for e in out["events"] if e.update == spb.EVENT_UPDATE_TOOL_RESULT]
    print(f"\n{out['turns']} turns; delegated {delegated}; background results {surfaced}", flush=True)
    summary = {"policy": args.policy, "turns": out["turns"], "delegated": delegated, "surfaced": surfaced,
               "tool_results": tool_results, "errors": [e.error.code for e in out["events"] if e.kind == spb.EVENT_KIND_ERROR]}
    if args.json:
        print(json.dumps(summary), flush=True)
    return summary


def exit_code(summary: dict) -> int:
    """0 when something was delegated (or the actors were only served); 1, with the reason on stderr,
    when the conversation ran and the policy delegated none of its requests."""
    if not summary or summary["delegated"]:
        return 0
    print(f"nothing was delegated: policy {summary['policy']!r} decided no delegation for either request. "
          "The shipped interaction model was never trained on these requests, so model_token alone "
          "stays silent; use the default policy (first_of: the model, then the intent rule) or --policy rule, "
          "or give your policy patterns that match what the user says.", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(exit_code(main(sys.argv[1:])))
