"""TurnLoop: many sessions, one clock; every slot steps all live sessions as one batch.

Per turn: wait for the slot (clock.py) → take each session's raw inputs and background updates
that arrived in the window → in ONE worker thread: decode/validate inputs (inputs.py), admit new
sessions, one `backend.step` for all of them (backend.py: the InteractionBackend seam; the native
model by default), build OutputChunks → back on the asyncio loop: stamp timing, put chunks in the
per-client OutputSinks (never blocks), and hand each turn to the delegation side (delegating.py:
the policy's decision starts a delegation as a task, or steers a running one).
The model runs in the worker thread (torch releases the GIL), so gRPC and Ray work on the
asyncio loop cannot delay the step, and the step cannot starve the loop's I/O. Nothing the loop
awaits is anyone else's work: delegations are tasks, updates are deques drained at boundaries.

Background updates go through the session's Weaver (weave.py, around delegation's
InterleaveScheduler): at each boundary they are offered to the scheduler (TOOL_CALL, PROGRESS and
ERROR events go out at once); in the worker, before the model step, the scheduler decides from the
user's state (speaking / silent / barge-in) what enters this turn's context slots — INTERRUPT now,
WHEN_IDLE at the user's pause, SILENT as context only — and each is reported as RESULT_SURFACED.

Tracing (interplay.tracing): each session is one `session` span, started in `open` and ended in
`close` (`stop` closes every session; a process that exits without that still ends it at tracing's
shutdown); its delegations' `delegate` spans and its transcripts' `transcribe` spans are children.

Recording and replay (interplay.replay): with `record_dir` set, a Recorder is told, per session and
turn, what `_gather` took (raw inputs, background updates, the ears' results) and what `_emit_one`
sent (the chunk, the backend's task and confidence), and writes the session in the replay format.
A replay drives this same loop with a virtual clock (the `clock` argument) and feeds it the recorded
inputs: there is no second loop implementation.

Back-pressure: each client's chunks wait in a bounded OutputSink (sink.py) that drops the oldest.
Inputs: at most `max_inbox` raw items wait per session; beyond that items are refused with an
`input_overflow` error event. A refused input never touches the session's other inputs or others.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

import kernels
from delegation import ConversationLog, Delegation, UserState
from delegation.scheduler import TERMINAL
from delegation.transcript import LogConfig
from interaction_actor.ears.contract import Ears
from interaction_actor.model.session import InputRejected, TurnInput, TurnOutput
from interaction_actor.runtime.backend import InteractionBackend, NativeBackend, load_backend
from interaction_actor.runtime.clock import TurnClock
from interaction_actor.runtime.delegating import Delegating
from interaction_actor.runtime.delegator import Delegator
from interaction_actor.runtime.hearing import Hearing
from interaction_actor.runtime.inputs import InputError, InputLimits, WindowBuilder
from interaction_actor.runtime.metrics import LoopMetrics
from interaction_actor.runtime.sink import OutputSink
from interaction_actor.runtime.weave import Weaver, event, marked_context, user_state
from interplay import tracing
from interplay.log import get_logger
from interplay.priority import raise_priority
from interplay.v1 import background_pb2 as bpb
from interplay.v1 import session_pb2 as spb
from kernels import threads as kernel_pool

log = get_logger("interaction_actor.runtime.loop")

CONTROL_TOKENS = {"delegate": spb.CONTROL_TOKEN_DELEGATE, "start_speaking": spb.CONTROL_TOKEN_START_SPEAKING,
                  "stop_speaking": spb.CONTROL_TOKEN_STOP_SPEAKING, "listen": spb.CONTROL_TOKEN_LISTEN}


@dataclass
class LoopConfig:
    turn_ms: int = 200
    max_sessions: int = 64
    output_queue: int = 50  # chunks per client before the oldest is dropped
    max_inbox: int = 512  # raw input items per session per window
    torch_threads: int = 1
    kernel_threads: int = 2  # threads a batched turn's attention and big linears run on (kernels.threads); 1: the step's own
    deterministic: bool = True  # batch-invariant kernels: a session's bits do not depend on its batch-mates
    niceness: int | None = 0  # best effort: lower the loop threads' niceness to this (Ray starts workers at 15)
    send_mel: bool = False  # also send mel frames in AudioOutput
    background_address: str | None = None
    delegation_deadline_ms: int = 30_000
    package_budget_bytes: int = 16_384  # a context package's serialized size limit
    allowed_tools: list[str] = field(default_factory=list)  # tools a delegation may use (the package's allow-list)
    steer_window_turns: int = 10  # typed text this soon after a delegation started is a follow-up: Steer it
    policy: object = "model_token"  # a name, "module:attr", {"policy": name, **options}, or an object with decide()
    policy_options: dict = field(default_factory=dict)
    admission: bool = True  # refuse a session when measured compute + its share would pass the budget
    admission_headroom: float = 0.2  # the budget: (1 - this) of a turn
    admission_window_s: float = 60.0  # admission judges the turns of this last while (older ones expire)
    idle_timeout_s: float = 8.0  # a session that sends nothing for this long ends (a frozen or vanished client)
    transcript_entries: int = 4096  # conversation entries a session's window keeps; older ones go to its digest
    limits: InputLimits = field(default_factory=InputLimits)
    record_dir: str | None = None  # record every session here in the replay format (interplay.replay); None: off
    requested_record_dir: str | None = None  # where a session whose client asks (open(record=True)) is recorded


class SessionError(Exception):
    """A session cannot be opened (duplicate id, actor full)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class LiveSession:
    id: str
    sink: OutputSink | None
    window: WindowBuilder
    state: object | None = None  # the backend's streaming state, opened in the worker at the first turn
    turn: int = 0  # turns this session has stepped (the next turn's index)
    inbox: deque = field(default_factory=deque)  # raw client items, appended by the service
    updates: deque = field(default_factory=deque)  # background Updates, appended by delegation tasks
    events: list[spb.Event] = field(default_factory=list)  # attached to the next chunk
    refused: int = 0
    origin: float | None = None  # clock time of its first turn
    last_input: float = field(default_factory=time.monotonic)  # when the client last sent anything
    stopping: bool = False
    stop_reason: str = ""  # the SESSION_ENDED event's text (a STOP: empty; a server drain says so)
    closed: bool = False
    failed: bool = False  # a stage failed and left its state unsafe: ended after this turn's emit
    tasks: dict[str, int] = field(default_factory=dict)  # running delegations (task id -> turn), oldest first
    log: ConversationLog = field(default_factory=ConversationLog)  # both sides, spans by turn (delegation)
    weave: Weaver = field(default_factory=Weaver)
    policy: object | None = None  # this session's delegation policy (policies keep per-session state)
    span: tracing.Span = tracing.INVALID_SPAN  # the session's trace root (a long span: ended in close)
    recorder: object | None = None  # the interplay.replay Recorder writing this session, if any
    last: spb.OutputChunk | None = None  # for tests and the actor's inspection
    speaking: bool = False  # its last turn's output was speech (text or audio): no pause for WHEN_IDLE yet


@dataclass
class _Work:
    """One session's share of a turn, handed to the worker thread."""

    live: LiveSession
    items: list
    events: list[spb.Event]
    time_ms: int
    typed: str = ""  # text the user typed in this window (a follow-up for a running delegation)
    heard: str = ""  # what the ears heard the user say since the session's last turn (hearing.py)
    audio: torch.Tensor | None = None  # the window's decoded audio, for the ears after the step
    early: bool = False  # its audio went to the ears as it arrived (hearing.py)
    user: UserState = UserState.SILENT


class TurnLoop:
    def __init__(self, backend: InteractionBackend | object, config: LoopConfig | None = None,
                 delegator: Delegator | None = None, ears: Ears | None = None,
                 clock: Callable[[float], TurnClock] | None = None) -> None:
        """`backend`: an InteractionBackend, a backend spec for load_backend ("native", "module:attr"),
        or an InteractionModel (stepped through NativeBackend). `clock(period_s)`: the turn clock (default
        TurnClock, real time; interplay.replay passes a virtual one that never sleeps)."""
        if isinstance(backend, str):
            backend = load_backend(backend)
        elif not callable(getattr(backend, "step", None)):
            backend = NativeBackend(backend)
        self.backend: InteractionBackend = backend
        self.model = getattr(backend, "model", None)  # the native model, when that is the backend
        self.config = config or LoopConfig()
        self.metrics = LoopMetrics(turn_ms=float(self.config.turn_ms))
        self.delegator = delegator or Delegator(self.config.background_address, self.config.delegation_deadline_ms,
                                                self.config.allowed_tools, self.config.package_budget_bytes)
        c = self.config
        self.delegator.metrics = self.metrics  # it counts delegations as they settle
        self.delegating = Delegating(self.delegator, self.metrics, turn_ms=c.turn_ms, policy=c.policy,
                                     policy_options=c.policy_options, steer_window_turns=c.steer_window_turns)
        self.sessions: dict[str, LiveSession] = {}
        self.hearing = Hearing(ears, turn_ms=self.config.turn_ms, metrics=self.metrics)
        if getattr(backend, "metrics", False) is None:  # a backend that records its own stages (a TTS)
            backend.metrics = self.metrics
        self.clock: TurnClock | None = None
        self._make_clock = clock or TurnClock
        self.recorder = self._recorder(self.config.record_dir)  # every session's, when record_dir is set
        self._requested = None  # the recorder of sessions whose client asked (made on the first request)
        # (when, sessions stepped, compute ms) of the last minute of turns: long enough that one costly turn
        # (a hostile input) is an outlier the p99 admission check looks past, not a 10 s lock-out for
        # everyone; entries older than admission_window_s expire, so load that has gone (its sessions
        # closed) stops refusing new sessions even when no turn with a session follows it
        self._recent: deque[tuple[float, int, float]] = deque(maxlen=300)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turn-step",
                                            initializer=raise_priority, initargs=(self.config.niceness,))
        self._task: asyncio.Task | None = None
        self._stop = asyncio.Event()
        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        # process-wide like the mode below: a batched turn spreads its sessions' attention and its big linears
        # over these threads (a lone session's turn stays on the step thread); they get the step thread's priority
        kernel_pool.set_threads(self.config.kernel_threads, raise_priority, (self.config.niceness,))
        kernels.set_deterministic_default(self.config.deterministic)  # process-wide: the step runs in a worker thread

    # ---- sessions (called on the asyncio loop) ------------------------------------------------
    def open(self, session_id: str = "", sink: OutputSink | None = None,
             trace_context: object | None = None, record: bool = False) -> LiveSession:
        """A new live session; `trace_context` (an OpenTelemetry Context, e.g. tracing.incoming_context of
        the Converse call's metadata): the parent of its `session` span (None: a trace of its own).
        `record`: the client asks for the session to be saved in the replay format (into
        `requested_record_dir`, or `record_dir` when every session is recorded anyway); the
        SESSION_STARTED event names the file (attrs `replay_file`), or an ERROR event
        `recording_unavailable` says this server records nothing, and the session goes on."""
        sid = session_id or uuid.uuid4().hex[:12]
        if sid in self.sessions:
            raise SessionError("session_exists", f"session {sid!r} is already live")
        if len(self.sessions) >= self.config.max_sessions:
            raise SessionError("too_many_sessions", f"this actor hosts at most {self.config.max_sessions} sessions")
        if (why := self._over_budget()) is not None:
            raise SessionError("too_many_sessions", why)
        live = LiveSession(id=sid, sink=sink, window=WindowBuilder(limits=self.config.limits),
                           log=ConversationLog(sid, LogConfig(turn_ms=self.config.turn_ms, joiner="",
                                                              max_entries=self.config.transcript_entries)),
                           policy=self.delegating.new_policy())
        live.recorder = self.recorder
        if record and live.recorder is None and self.config.requested_record_dir:
            self._requested = self._requested or self._recorder(self.config.requested_record_dir)
            live.recorder = self._requested
        path = live.recorder.start(live) if live.recorder is not None else None
        live.events.append(event(spb.EVENT_KIND_SESSION_STARTED,  # the id is the chunk's session_id
                                 attrs={"replay_file": str(path)} if path is not None else None))
        if record and path is None:
            live.events.append(event(spb.EVENT_KIND_ERROR, "this server does not record sessions (its "
                                     "loop.requested_record_dir is empty); the session goes on unrecorded",
                                     code="recording_unavailable"))
        live.span = tracing.start_long_span("session", context=trace_context,
                                            kind=tracing.SpanKind.SERVER, attributes={"interplay.session_id": sid},
                                            key=f"session:{sid}")
        self.sessions[sid] = live
        self.metrics.live_sessions = len(self.sessions)
        log.info("session_opened", session_id=sid, live=len(self.sessions))
        return live

    def _recorder(self, folder: str | None):
        if not folder:
            return None
        from interplay.replay.recorder import Recorder  # noqa: PLC0415 - only when recording

        return Recorder(folder, turn_ms=self.config.turn_ms, backend=self.backend, policy=self.config.policy,
                        policy_options=self.config.policy_options)

    def _over_budget(self) -> str | None:
        """Admission by measured compute: the recent turns' compute p99 plus one more session's typical
        share (the median of compute per session stepped) against the turn minus the headroom; None when
        a session fits (or too few turns were measured to say). Under 100 turns a p99 is just the maximum,
        which one hostile input's turn sets: the p90 stands in until there are enough turns."""
        if not self.config.admission:
            return None
        figure = self.load()
        if figure["measured_turns"] < 20 or figure["headroom_ms"] >= 0:  # fewer: start-up, too few to say
            return None
        p99, share, budget = figure["compute_ms_p99"], figure["share_ms"], figure["budget_ms"]
        return (f"this actor is at capacity: its turns take {p99:.0f} ms (p99) for {len(self.sessions)} "
                f"sessions, and one more needs about {share:.0f} ms more of a {budget:.0f} ms budget; "
                "try another actor or later")

    def load(self) -> dict:
        """The admission figure, for a router placing sessions: `sessions` live, the recent turns'
        `compute_ms_p99` (p90 under 100 turns), one more session's typical `share_ms`, the `budget_ms`
        (the turn minus the headroom) and `headroom_ms` = budget - (p99 + share): negative means this
        actor refuses a new session (when `admission` is on and `measured_turns` >= 20)."""
        since = time.monotonic() - self.config.admission_window_s
        recent = [(n, ms) for t, n, ms in self._recent if n > 0 and t >= since]
        budget = self.config.turn_ms * (1.0 - self.config.admission_headroom)
        p99 = share = 0.0
        if recent:
            q = 0.99 if len(recent) >= 100 else 0.9
            p99 = sorted(ms for _, ms in recent)[int(q * (len(recent) - 1))]
            share = sorted(ms / n for n, ms in recent)[len(recent) // 2]
        return {"sessions": len(self.sessions), "measured_turns": len(recent), "compute_ms_p99": round(p99, 3),
                "share_ms": round(share, 3), "budget_ms": budget, "headroom_ms": round(budget - p99 - share, 3),
                "max_sessions": self.config.max_sessions, "admission": self.config.admission}

    def sink(self) -> OutputSink:
        return OutputSink(self.config.output_queue, self.metrics)

    def submit(self, session_id: str, item: object) -> None:
        """Queue one raw input for the session's current window (never blocks, never raises)."""
        live = self.sessions.get(session_id)
        if live is None or live.closed:
            return
        live.last_input = time.monotonic()
        if len(live.inbox) >= self.config.max_inbox:
            live.refused += 1
            self.metrics.input_error("input_overflow")
            return
        live.inbox.append(item)
        self.hearing.arrived(session_id, live.turn, item)

    def stop_session(self, session_id: str, reason: str = "") -> None:
        """End the session after its next turn (a STOP, a half-closed stream, a drain: `reason`)."""
        live = self.sessions.get(session_id)
        if live is not None:
            live.stopping, live.stop_reason = True, live.stop_reason or reason

    def close(self, session_id: str) -> None:
        """The client is gone: drop the session now and cancel its delegations."""
        live = self.sessions.pop(session_id, None)
        if live is None:
            return
        self.metrics.live_sessions = len(self.sessions)
        live.closed = True
        if live.sink is not None:
            live.sink.close()
        self.delegator.cancel_all(list(live.tasks))
        live.weave.close(live.turn)
        if live.state is not None:
            self.backend.close(live.state)
        self.hearing.close(session_id)
        if live.recorder is not None:
            live.recorder.closed(live)
        tracing.end_long_span(live.span, {"interplay.turns": live.turn, "interplay.stopped": live.stopping,
                                          "interplay.failed": live.failed})
        log.info("session_closed", session_id=session_id, turns=live.turn)

    def start_delegation(self, session_id: str, task: str, decision: Delegation | None = None) -> str:
        """Start a delegation for the session now (what a policy's decision does); never awaited."""
        return self.delegating.start(self.sessions[session_id], task, decision)

    # ---- the loop -----------------------------------------------------------------------------
    def start(self) -> asyncio.Task:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="turn-loop")
        return self._task

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        for sid in list(self.sessions):
            self.close(sid)
        await self.delegating.stop()
        self._executor.shutdown(wait=True)

    async def run(self, max_turns: int | None = None) -> None:
        raise_priority(self.config.niceness)  # the asyncio thread that owns the clock
        # A full (gen-2) collection walks every object in the process — torch, Ray, gRPC, the model —
        # and took 118-134 ms here, holding the GIL mid-turn. Freezing what exists at start-up leaves
        # the collector only the objects made since, so a collection stays far below a turn.
        gc.collect()
        gc.freeze()
        self.clock = self._make_clock(self.config.turn_ms / 1000.0)
        loop = asyncio.get_running_loop()
        done = 0
        log.info("loop_started", turn_ms=self.config.turn_ms)
        while not self._stop.is_set() and (max_turns is None or done < max_turns):
            tick = await self.clock.wait()
            work: list[_Work] = []
            results: list[tuple[_Work, spb.OutputChunk, str | None]] = []
            compute_ms = 0.0
            try:  # each stage guards each session (_guard); this only catches a fault of the loop itself
                self.hearing.collect(self.sessions)
                for live in list(self.sessions.values()):
                    if not live.closed and (w := self._guard(live, "gather", self._gather, live, tick.scheduled)):
                        work.append(w)
                results, compute_ms = await loop.run_in_executor(self._executor, self._compute, work)
            except Exception as exc:  # noqa: BLE001 - the clock outlives any fault
                self._loop_fault(tick.slot, exc)
            fin = self.clock.finish(tick)
            try:
                self._emit(results, tick.lateness_ms, compute_ms, fin.missed)
            except Exception as exc:  # noqa: BLE001
                self._loop_fault(tick.slot, exc)
            self._recent.append((time.monotonic(), len(work), compute_ms))
            self.metrics.record_turn(slot=tick.slot, sessions=len(work), lateness_ms=tick.lateness_ms,
                                     compute_ms=compute_ms, total_ms=fin.compute_ms, missed=fin.missed,
                                     skipped=fin.skipped)
            done += 1
        log.info("loop_stopped", turns=self.metrics.turns, missed=self.metrics.missed)

    def _gather(self, live: LiveSession, scheduled: float) -> _Work:
        """Take what arrived in the window (asyncio side: cheap, no decoding)."""
        if live.origin is None:
            live.origin = scheduled
        idle = self.config.idle_timeout_s
        if idle and not live.stopping and time.monotonic() - live.last_input > idle:
            live.stopping = True  # its log stays with the loop's record of the session until it closes
            live.events.append(event(spb.EVENT_KIND_ERROR, f"no input for {idle:g} s: the session ends",
                                     code="idle_timeout"))
            log.info("session_idle", session_id=live.id, idle_s=idle)
        items = list(live.inbox)
        live.inbox.clear()
        events, live.events = live.events, []
        refused = live.refused
        if live.refused:
            events.append(event(spb.EVENT_KIND_ERROR, f"{live.refused} inputs refused: more than "
                                f"{self.config.max_inbox} arrived in one turn window", code="input_overflow",
                                retryable=True))
            live.refused = 0
        turn = live.turn
        arrived = []
        while live.updates:
            upd = live.updates.popleft()
            arrived.append(upd)
            if upd.kind in TERMINAL:
                live.tasks.pop(upd.task_id, None)
            if upd.kind == bpb.UPDATE_KIND_FINAL:
                live.log.background(upd.text, turn)
        events.extend(live.weave.offer_all(arrived, turn))
        n = len(events)
        heard = self.hearing.gather(live, events)
        if live.recorder is not None:  # what this turn's step will see (the replay feeds the same)
            live.recorder.gathered(live, turn, items, arrived, events[n:], refused)
        return _Work(live=live, items=items, events=events, time_ms=int(round((scheduled - live.origin) * 1000)),
                     heard=heard, early=self.hearing.took(live.id, items))

    # ---- the supervisor: a failure stays with the session that caused it -----------------------
    def _guard(self, live: LiveSession, stage: str, fn, *args):
        """fn(*args), or None when it raised: the failure is logged with its traceback, counted, and
        reported to this session alone; every other session keeps its turn."""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - contained to this session
            self._fail(live, stage, exc)
            return None

    def _fail(self, live: LiveSession, stage: str, exc: BaseException, *, unsafe: bool = True) -> None:
        """A stage failed for this session: count it, log it, tell its client; an unsafe state ends it."""
        self.metrics.turn_failures += 1
        log.error("session_stage_failed", session_id=live.id, stage=stage, error=repr(exc), exc_info=exc)
        live.events.append(event(spb.EVENT_KIND_ERROR, f"{stage} failed: {type(exc).__name__}: {exc}",
                                 code="turn_failed", retryable=True, stage=stage))
        live.failed = live.failed or unsafe

    def _loop_fault(self, slot: int, exc: BaseException) -> None:
        self.metrics.turn_failures += 1
        log.error("loop_fault", slot=slot, error=repr(exc), exc_info=exc)

    def _compute(self, work: list[_Work]) -> tuple[list[tuple[_Work, spb.OutputChunk, str | None]], float]:
        """Worker thread: decode inputs, admit sessions, one step for all of them, build chunks."""
        t0 = time.perf_counter()
        prepared = [(w, inp) for w in work if (inp := self._guard(w.live, "inputs", self._prepare, w)) is not None]
        results = []
        for w, out in self._step(prepared):
            chunk = self._guard(w.live, "output", self._chunk, w, out)
            if chunk is not None:
                results.append((w, chunk, (out.delegate_task, getattr(out, "delegate_confidence", None))))
        return results, (time.perf_counter() - t0) * 1000.0

    def _prepare(self, w: _Work) -> TurnInput:
        """One session's share before the step: open its state, decode its window, weave updates."""
        live = w.live
        if live.state is None:
            live.state = self.backend.open(live.id)
        for item in w.items:
            try:
                live.window.add(item)
            except InputError as exc:
                self.metrics.input_error(exc.code)
                w.events.append(event(spb.EVENT_KIND_ERROR, exc.message, code=exc.code))
                log.info("input_refused", session_id=live.id, code=exc.code, error=exc.message)
        if live.window.stop:
            live.stopping = True
        frame = live.window.frame  # the window's newest frame: an observation for packages once it decodes
        inp, _counts = live.window.take()
        if frame is not None and inp.frame is not None:
            live.log.observe_frame(live.turn, frame)  # a reference; thumbnailed only when a package is built
        for exc in live.window.refused:
            self.metrics.input_error(exc.code)
            w.events.append(event(spb.EVENT_KIND_ERROR, exc.message, code=exc.code))
        live.window.refused.clear()
        state = user_state(inp.audio, inp.text, inp.barge_in)
        if inp.barge_in:
            w.events.append(event(spb.EVENT_KIND_BARGE_IN, "user barged in"))  # rides this turn's chunk
        woven, surfaced = live.weave.decide(live.turn, state, live.speaking)
        w.events.extend(surfaced)
        self.metrics.results_surfaced(surfaced)
        inp.context, inp.heard = (marked_context(surfaced) if woven else ""), w.heard
        inp.voice = "\n".join(e.text for e in surfaced if e.kind == spb.EVENT_KIND_RESULT_SURFACED and e.voiced)
        w.typed, w.user, w.audio = inp.text, state, inp.audio
        return inp

    def _step(self, prepared: list[tuple[_Work, TurnInput]]) -> list[tuple[_Work, TurnOutput]]:
        """One backend step for every prepared session. A refused input (InputRejected: nothing changed)
        is replaced by an empty one and the batch stepped again; any other failure may have advanced
        the states part way, so those sessions end with an error instead of being stepped twice."""
        batch = list(prepared)
        for _ in range(len(batch) + 1):
            if not batch:
                return []
            try:
                outs = self.backend.step([w.live.state for w, _ in batch], [inp for _, inp in batch])
                return list(zip([w for w, _ in batch], outs, strict=True))
            except InputRejected as exc:
                w, _ = batch[exc.index]
                self.metrics.input_error("bad_input")
                w.events.append(event(spb.EVENT_KIND_ERROR, f"input refused by the model: {exc}", code="bad_input"))
                batch[exc.index] = (w, TurnInput())
            except Exception as exc:  # noqa: BLE001 - the states may be partly advanced: end them
                for w, _ in batch:
                    self._fail(w.live, "step", exc)
                return []
        return []

    def _chunk(self, w: _Work, out: TurnOutput) -> spb.OutputChunk:
        w.live.turn = out.turn + 1
        w.live.speaking = out.speaking or bool(out.text)
        chunk = spb.OutputChunk(session_id=out.session_id, turn=out.turn, time_ms=w.time_ms, text=out.text,
                                controls=[CONTROL_TOKENS[c] for c in out.controls if c in CONTROL_TOKENS],
                                events=w.events)
        if out.state is not None:
            chunk.model_state = out.state
        if out.pcm is not None and out.pcm.numel():
            pcm = (out.pcm.clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16)
            chunk.audio.pcm16 = pcm.numpy().tobytes()
            chunk.audio.sample_rate_hz = self.backend.capabilities.sample_rate
        if self.config.send_mel and out.mel.numel():
            chunk.audio.mel.extend(out.mel.flatten().tolist())
            chunk.audio.n_mels = int(out.mel.shape[1])
        w.live.log.record_turn(out.turn, user_speaking=w.user == UserState.SPEAKING and not w.typed,
                               typed_text=w.typed, assistant_text=out.text,
                               assistant_speaking=w.live.speaking, barge_in=w.user == UserState.INTERRUPTED)
        return chunk

    def _emit(self, results: list, lateness_ms: float, compute_ms: float, missed: bool) -> None:
        """Asyncio side: stamp timing, hand chunks to sinks, start delegations, end stopped and failed sessions."""
        self.hearing.feed([(w.live.id, chunk.turn, w.audio, w.early) for w, chunk, _ in results])
        for w, chunk, task in results:
            if not w.live.closed:
                self._guard(w.live, "emit", self._emit_one, w, chunk, task, lateness_ms, compute_ms, missed)
        for live in [x for x in self.sessions.values() if x.failed and not x.closed]:
            self._end_failed(live)

    def _end_failed(self, live: LiveSession) -> None:
        """A session whose state is unsafe: its client gets the error events and SESSION_ENDED; it closes."""
        chunk = spb.OutputChunk(session_id=live.id, turn=live.turn, events=live.events)
        live.events = []
        chunk.events.append(event(spb.EVENT_KIND_SESSION_ENDED, "the session ended after a failure", turns=live.turn))
        if live.sink is not None:
            live.sink.put(chunk)
        live.last = chunk
        self.close(live.id)

    def _emit_one(self, w: _Work, chunk: spb.OutputChunk, task: tuple[str | None, float | None], lateness_ms: float,
                  compute_ms: float, missed: bool) -> None:
        """Stamp the chunk's timing, hand the turn to the delegation side (the backend's task and its
        confidence), end a stopping session, and queue the chunk to the session's clients."""
        live = w.live
        chunk.timing.lateness_ms = lateness_ms
        chunk.timing.compute_ms = compute_ms
        chunk.timing.missed = missed
        try:  # a failing delegation start or steer is this session's, and does not hold back its chunk
            self.delegating.after_turn(live, chunk, time_ms=w.time_ms, user=w.user, typed=w.typed, task=task[0],
                                       confidence=task[1], heard=w.heard)
        except Exception as exc:  # noqa: BLE001
            self._fail(live, "delegation", exc, unsafe=False)
        if live.stopping:
            chunk.events.append(event(spb.EVENT_KIND_SESSION_ENDED, live.stop_reason, turns=chunk.turn + 1))
        if live.recorder is not None:
            live.recorder.emitted(live, chunk, task, w.user, w.typed)
        live.last = chunk
        if live.sink is not None:
            live.sink.put(chunk)
        if live.stopping:
            self.close(live.id)
