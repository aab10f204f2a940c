"""The delegation scenarios of `eval fdbench`: a slow tool's result, and what the user hears of it.

Every system gets the same slow tool (slow_weather.py: `weather(city)`, 3-8 s per city from a named
seed, a distinctive answer such as "In Berlin, snow, minus three degrees.") registered in its own tool
machinery, and the same scenarios, spoken by espeak-ng over room tone as episodes.py speaks:

- `user_speaking`: "what is the weather in Berlin today"; the user starts telling a story USER_TALK_BEFORE_S
  before the tool is due back, so its result arrives while the user is speaking;
- `assistant_speaking`: the weather in London; the user asks a chit-chat question that ends CHAT_END_BEFORE_S
  before the tool is due, so the assistant is (meant to be) answering it when the result arrives;
- `barge_in`: the weather in Boston; a chit-chat question ends BARGE_CHAT_END_BEFORE_S before the tool is
  due, and BARGE_AFTER_S after the assistant is first heard answering it the user talks over it
  ("wait, stop ..."), so the result arrives after a barge-in;
- `follow_up`: the weather in Chicago, and FOLLOW_UP_AFTER_S after the tool started, the weather in Paris:
  two results;
- `cancel`: the weather in Moscow, and CANCEL_AFTER_S after the tool started, "never mind, cancel that":
  the result should not be voiced.

The client reacts to the system as a user would to a screen showing the tool running: the moment the
tool was called (interplay: the TOOL_CALL event of the session stream; pipecat: the runner's function
handler) anchors when the user speaks next; the expected return is that moment plus the city's delay.
If no tool is called within TOOL_WAIT_S of the request's end the user goes on as if it had been
(`tool_called` False). The scenario listens until TAIL_S after the last result was due (and after the
user's last word), at most MAX_S.

Scoring (`score`) reads only the output audio and the moments the tool returned: the output is cut into
speech regions by the Silero VAD (merged over gaps up to REGION_GAP_S, so sentences stay apart), each
transcribed by Whisper tiny.en (scoring.Scorer), then read as phrases (regions within PHRASE_GAP_S joined;
a phrase starts at its first region naming the result). A result is *voiced* once per saying of it in a
phrase that starts no earlier than SLACK_S before the tool returned: its condition word (spellings in
KEYWORDS) or its temperature (TEMPERATURE), with its city's name within VOICING_WINDOW words (`voicings`).
`voiced_once`: exactly one saying; `voiced_twice`: two or more; `lost`: none by the end of the scenario,
or a call that never returned (pipecat with cancel_on_interruption=True cancels a running call when the
user speaks). result_to_voiced is the onset of the phrase holding the first saying minus the moment the
tool returned (interplay: the start of the turn whose output chunk carried the TOOL_RESULT progress
event, within one 200 ms turn of the return; pipecat: the runner's clock at the handler's return). The
cancel scenario's result is not counted among them: it is `cancel_voiced` when voiced. A user turn is
*blocked* when it ended while a tool call was in flight and no output speech region that is not a
saying of a result starts within REPLY_WAIT_S of its end. The conditions the scenario aimed at (user or
assistant speaking when the result came back, a barge-in before it) depend on each system's timing: they
are checked on the aligned audio and reported per scenario (`ready_while`), not assumed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import statistics
import time
import uuid
from dataclasses import dataclass, field

import grpc
import numpy as np

from interplay.client import SessionClient, audio_chunk
from interplay.fdbench import episodes as E
from interplay.fdbench import slow_weather as W
from interplay.fdbench.stream import END_GRACE_S, OutTurn, Recording, _loud_offset, _pcm16
from interplay.fdbench.userplan import Plan
from interplay.log import get_logger
from interplay.v1 import common_pb2 as cpb
from interplay.v1 import session_pb2 as spb

log = get_logger("interplay.fdbench.delegation")

SR = E.SR
CHUNK = E.CHUNK
TOOL_WAIT_S = 10.0  # no tool call this long after the request: the user goes on as if there had been one
USER_TALK_BEFORE_S = 1.5  # user_speaking: the story starts this long before the tool is due
CHAT_END_BEFORE_S = 2.0  # assistant_speaking: the question ends this long before the tool is due
BARGE_CHAT_END_BEFORE_S = 3.5  # barge_in: the question ends this long before the tool is due
BARGE_AFTER_S = 0.4  # barge_in: the user talks over the answer this long after first hearing it
BARGE_WAIT_S = 4.0  # ... or this long after the question when the assistant says nothing
FOLLOW_UP_AFTER_S = 1.0  # follow_up: the second request starts this long after the first tool call
CANCEL_AFTER_S = 0.8  # cancel: "never mind" starts this long after the tool call
TAIL_S = 12.0  # listening after the last result was due and after the user's last word (9 s cut the cascade's
# voicing of a result re-offered after a barge-in)
MAX_S = 60.0  # a scenario never streams longer
REGION_GAP_S = 0.1  # speech regions merged over gaps up to this (the cascade leaves 120 ms between sentences)
SLACK_S = 0.3  # a voicing region may start this long before the recorded return (its turn's resolution)
VOICING_WINDOW = 10  # the city within this many words of the evidence ("the weather in Boston today is quite
# pleasant, with four degrees of cloudiness": the background model words the result its own way)
EVIDENCE_GAP = 4  # evidence words this close together are one saying of the result ("snow, minus three")
PHRASE_GAP_S = 0.5  # regions this close are read as one phrase (FD-bench's merge gap): "In Paris." + "Storms..."
REPLY_WAIT_S = 4.0  # a user turn with no reply this long after its end, a tool in flight: blocked

VOICE = "en-us"  # a plain voice the ears (Whisper tiny.en) hear well: in episodes.VOICES' Scottish one "what's the
# weather like in Oslo" came out as "What's the weather like it also?" and was not delegated; the cascade
# speaks en-us+f3
REQUEST = "what is the weather in {city} today"
STORY = "so this morning I walked all the way along the river to the old bridge and back again"
CHAT = "tell me a fun fact about elephants"
BARGE = "wait, stop, hold on a second"
FOLLOW_UP = "and what about the weather in {city}"
CANCEL = "never mind, cancel that, I don't need it anymore"

# What a transcript may hold for each word of an answer (Whisper tiny.en's spellings of espeak-ng's words).
KEYWORDS: dict[str, tuple[str, ...]] = {
    "Berlin": ("berlin",), "London": ("london",), "Boston": ("boston",), "Chicago": ("chicago",),
    "Moscow": ("moscow",), "Paris": ("paris",),
    "snow": ("snow", "snowy", "snowing"), "rain": ("rain", "rainy", "raining"),
    "clouds": ("clouds", "cloud", "cloudy", "cloudiness"),
    "sunshine": ("sunshine",), "strong wind": ("wind", "winds", "windy"), "storms": ("storms", "storm", "stormy"),
}
SCENARIOS: dict[str, tuple[str, ...]] = {  # name -> the cities asked for, in order
    "user_speaking": ("Berlin",), "assistant_speaking": ("London",), "barge_in": ("Boston",),
    "follow_up": ("Chicago", "Paris"), "cancel": ("Moscow",),
}
# The temperature as Whisper writes it: the second piece of evidence beside the condition ("In Berlin, snow,
# minus three degrees." came back as "in Berlin" + "So minus 3 degrees.", and in the cascade's voice three
# times of three as "... Berlin is no minus free degrees").
TEMPERATURE: dict[str, tuple[str, ...]] = {
    "Berlin": ("3", "three", "free"), "London": ("11", "eleven"), "Boston": ("4", "four"),
    "Chicago": ("19", "nineteen"),
    "Moscow": ("20", "twenty"), "Paris": ("16", "sixteen"),
}


@dataclass
class Step:
    """One thing the user says after the request: `text` when `anchor` (see Scenario) plus `offset_s`."""

    role: str  # story | chat | barge | follow_up | cancel
    text: str
    anchor: str  # "start": the tool call; "due": the expected return; "due_end": ends at the expected return;
    # "heard": after the assistant is first heard since the previous step ended
    offset_s: float
    expects_reply: bool
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)


@dataclass
class Scenario:
    name: str
    cities: tuple[str, ...]
    request: np.ndarray
    steps: list[Step]
    seed: int
    voice: str = VOICE
    repeat: int | None = None  # the k-th (1-based) of several runs of this scenario (`repeated`); None: the only one

    @property
    def run_name(self) -> str:
        """The name with `-r<k>` for the k-th of several runs: what session ids and output folders are named by
        (`name` stays the scenario's kind, which the scoring reads)."""
        return self.name if self.repeat is None else f"{self.name}-r{self.repeat}"

    def episode(self, spans: list[tuple[int, int]] | None = None) -> E.Episode:
        """An episodes.Episode standing for this scenario (stream.align reads its spans)."""
        lead = int(E.LEAD_S * SR)
        return E.Episode(f"delegation-{self.run_name}", "delegation", self.voice,
                         (REQUEST.format(city=self.cities[0]), *(s.text for s in self.steps)),
                         np.concatenate([np.zeros(lead, np.float32), self.request]),
                         spans or [(lead, lead + self.request.size)], seed=self.seed, tail_s=TAIL_S)

    def describe(self) -> dict:
        return {"name": self.name, **({} if self.repeat is None else {"repeat": self.repeat}),
                "cities": list(self.cities), "voice": self.voice,
                "said": [REQUEST.format(city=self.cities[0]), *(s.text for s in self.steps)],
                "tool_delay_s": {c: W.delay_s(c) for c in self.cities},
                "answers": {c: W.answer(c) for c in self.cities}}


def _said(text: str) -> np.ndarray:
    return E.trim(E.speech.say(text, VOICE))


def scenario(name: str) -> Scenario:
    """One scenario of the module docstring, its speech synthesized (cached on disk by speech.say)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown delegation scenario {name!r}; choose from {tuple(SCENARIOS)}")
    cities = SCENARIOS[name]
    steps = {
        "user_speaking": [Step("story", STORY, "due", -USER_TALK_BEFORE_S, False)],
        "assistant_speaking": [Step("chat", CHAT, "due_end", -CHAT_END_BEFORE_S, True)],
        "barge_in": [Step("chat", CHAT, "due_end", -BARGE_CHAT_END_BEFORE_S, True),
                     Step("barge", BARGE, "heard", BARGE_AFTER_S, False)],
        "follow_up": [Step("follow_up", FOLLOW_UP.format(city=cities[-1]), "start", FOLLOW_UP_AFTER_S, True)],
        "cancel": [Step("cancel", CANCEL, "start", CANCEL_AFTER_S, True)],
    }[name]
    for s in steps:
        s.audio = _said(s.text)
    return Scenario(name, cities, _said(REQUEST.format(city=cities[0])), steps,
                    seed=4000 + list(SCENARIOS).index(name))


REPEAT_SEED_STEP = 100  # the k-th run of a scenario has its room tone from seed + (k - 1) x this


def repeated(scs: list[Scenario], repeats: int) -> list[Scenario]:
    """`scs` run `repeats` times, round after round (every scenario once, then again): the k-th copy has
    `repeat` k, so its session id and output folder are `<name>-r<k>`, and its own room tone (seed +
    (k - 1) x REPEAT_SEED_STEP); its speech, rules and scoring are the scenario's. One: `scs` unchanged."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    if repeats == 1:
        return list(scs)
    return [dataclasses.replace(sc, repeat=k, seed=sc.seed + (k - 1) * REPEAT_SEED_STEP)
            for k in range(1, repeats + 1) for sc in scs]


def build(names: tuple[str, ...] | None = None, repeats: int = 1) -> list[Scenario]:
    """The named scenarios (None: all five, in SCENARIOS' order), each `repeats` times (`repeated`)."""
    return repeated([scenario(n) for n in (names or tuple(SCENARIOS))], repeats)


# ---- the user's side, reacting to the system (userplan.py: the same rules in pipecat_runner.py) -------
def plan_for(sc: Scenario) -> Plan:
    lead = int(E.LEAD_S * SR)
    return Plan(lead + sc.request.size, [(s.anchor, s.offset_s, s.audio.size) for s in sc.steps],
                W.delay_s(sc.cities[0]), TOOL_WAIT_S, BARGE_WAIT_S, TAIL_S)


@dataclass
class DelegationRecording(Recording):
    scenario: Scenario | None = None
    plan: Plan | None = None
    tool_calls: list[dict] = field(default_factory=list)  # {turn, task_id, name, arguments}
    tool_results: list[dict] = field(default_factory=list)  # {turn, task_id, text}
    surfaced: list[dict] = field(default_factory=list)  # RESULT_SURFACED events
    delegations: list[dict] = field(default_factory=list)  # DELEGATION_STARTED events
    transcripts: list[dict] = field(default_factory=list)  # final USER_TRANSCRIPT events (what the ears heard)
    runner: dict = field(default_factory=dict)  # pipecat: the runner's own notes


def _event_dict(turn: int, e: spb.Event) -> dict:
    return {"turn": turn, "task_id": e.task_id, "text": e.text}


async def play(address: str, sc: Scenario, session_id: str) -> DelegationRecording:
    """Stream `sc` to the Session service at `address` in real time (see the module docstring)."""
    plan = plan_for(sc)
    room = E.speech.room_tone(MAX_S + 2.0, seed=sc.seed)
    rec = DelegationRecording(sc.episode(), session_id, scenario=sc, plan=plan)
    try:
        await asyncio.wait_for(_converse(address, sc, rec, plan, room), MAX_S + END_GRACE_S)
    except TimeoutError:
        rec.error = rec.error or f"no end within {MAX_S + END_GRACE_S:.0f} s"
    except grpc.aio.AioRpcError as exc:
        rec.error = f"{exc.code().name}: {exc.details()}"
    except (grpc.RpcError, OSError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
    rec.episode = sc.episode(plan.spans(int(E.LEAD_S * SR)))
    if rec.error:
        log.warning("fdbench_delegation_failed", scenario=sc.run_name, session_id=session_id, error=rec.error)
    return rec


def clips(sc: Scenario, plan: Plan) -> list[tuple[int, np.ndarray]]:
    """The user's speech placed so far: (start sample, audio)."""
    return [(int(E.LEAD_S * SR), sc.request)] + [(a, sc.steps[k].audio) for k, a in plan.placed]


def mix(placed: list[tuple[int, np.ndarray]], room: np.ndarray, i0: int) -> np.ndarray:
    """The user's 20 ms chunk at sample i0: room tone and the placed speech."""
    x = room[i0 % room.size:i0 % room.size + CHUNK].copy()
    if x.size < CHUNK:
        x = np.pad(x, (0, CHUNK - x.size))
    for at, clip in placed:
        a = i0 - at
        if -CHUNK < a < clip.size:
            lo = max(0, a)
            part = clip[lo:a + CHUNK]
            x[lo - a:lo - a + part.size] += part
    return np.clip(x, -1.0, 1.0)


async def _converse(address: str, sc: Scenario, rec: DelegationRecording, plan: Plan, room: np.ndarray) -> None:
    opened = asyncio.Event()
    limit = int(MAX_S * SR)

    def sample_now() -> int:
        return int((time.monotonic() - rec.started) * SR) if rec.started else 0

    async with SessionClient(address, rec.session_id) as client:
        async def send() -> None:
            await opened.wait()
            t0 = rec.started = time.monotonic()
            j = 0
            while True:
                i0 = j * CHUNK
                plan.advance(i0, CHUNK)
                if plan.done(i0) or i0 >= limit:
                    break
                x = mix(clips(sc, plan), room, i0)
                await asyncio.sleep(max(0.0, t0 + (j + 1) * CHUNK / SR - time.monotonic()))
                rec.sent.append(time.monotonic())
                await client.send(audio_chunk(_pcm16(x)))
                j += 1
            await client.finish()

        sender = asyncio.get_running_loop().create_task(send())
        try:
            async for c in client.chunks():
                now = time.monotonic()
                opened.set()
                rec.turns.append(OutTurn.of(c, now))
                for e in c.events:
                    _note_event(rec, plan, c.turn, e, sample_now() if rec.started else None)
                if rec.started and c.audio.pcm16:
                    off = _loud_offset(c.audio.pcm16)
                    if off is not None:
                        plan.heard(sample_now() + int(off * SR))
        finally:
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)


def _note_event(rec: DelegationRecording, plan: Plan, turn: int, e: spb.Event, sample: int | None) -> None:
    if e.kind == spb.EVENT_KIND_SESSION_ENDED:
        rec.ended = True
    elif e.kind == spb.EVENT_KIND_ERROR and e.error.code in ("turn_failed", "idle_timeout"):
        rec.error = rec.error or f"{e.error.code}: {e.text}"
    elif e.kind == spb.EVENT_KIND_TOOL_CALL:
        rec.tool_calls.append({**_event_dict(turn, e), "name": e.tool_call.name,
                               "arguments": e.tool_call.arguments_json})
        if sample is not None:
            plan.tool_seen(sample, W.delay_s(city_of(e.tool_call.arguments_json) or rec.scenario.cities[0]))
    elif e.kind == spb.EVENT_KIND_PROGRESS and e.update == spb.EVENT_UPDATE_TOOL_RESULT:
        rec.tool_results.append(_event_dict(turn, e))
    elif e.kind == spb.EVENT_KIND_RESULT_SURFACED:
        rec.surfaced.append({**_event_dict(turn, e), "voiced": e.voiced, "mode": cpb.SurfacingMode.Name(e.mode),
                             "redelivery": e.redelivery, "update": spb.EventUpdate.Name(e.update)})
    elif e.kind == spb.EVENT_KIND_USER_TRANSCRIPT and e.update == spb.EVENT_UPDATE_FINAL:
        rec.transcripts.append(_event_dict(turn, e))
    elif e.kind == spb.EVENT_KIND_DELEGATION_STARTED:
        rec.delegations.append({**_event_dict(turn, e), "policy": e.policy})


def city_of(arguments: str) -> str | None:
    """The table's city named in a tool call's arguments JSON (None when none is)."""
    try:
        args = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return None
    city = args.get("city") if isinstance(args, dict) else None
    return W.known(city) if isinstance(city, str) else None


def city_in_result(text: str) -> str | None:
    """The city whose answer `text` is (a tool result), None when it is none of the table's."""
    return next((c for c in W.FORECAST if W.answer(c).lower() in text.lower()), None)


async def play_all(address: str, scs: list[Scenario], concurrency: int, stagger_s: float,
                   tag: str = "") -> list[DelegationRecording]:
    from interplay.fdbench.stream import staggered

    run = uuid.uuid4().hex[:6]

    async def one(sc: Scenario) -> DelegationRecording:
        return await play(address, sc, f"fdb-{tag}del-{sc.run_name}-{run}")

    return await staggered(scs, one, concurrency, stagger_s)


# ---- scoring: what the user heard ----------------------------------------------------------------------
_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    return [w.strip("'") for w in _WORD.findall(text.lower())]


def voicings(text: str, city: str) -> int:
    """How many times `text` (a transcript) says `city`'s result. Evidence is its condition word (any spelling
    in KEYWORDS) or its temperature (TEMPERATURE); evidence words at most EVIDENCE_GAP words apart are one
    saying, which counts when the city's name is within VOICING_WINDOW words of it."""
    ws = words(text)
    names = set(KEYWORDS[city])
    evidence = set(KEYWORDS[W.FORECAST[city][0]]) | set(TEMPERATURE[city])
    hits = [i for i, w in enumerate(ws) if w in evidence]
    clusters: list[list[int]] = []
    for i in hits:
        if clusters and i - clusters[-1][-1] <= EVIDENCE_GAP:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    near = [i for i, w in enumerate(ws) if w in names]
    return sum(any(abs(i - j) <= VOICING_WINDOW for i in c for j in near) for c in clusters)


def phrases(regions: list, gap_s: float = PHRASE_GAP_S, cities: tuple[str, ...] = ()) -> list:
    """Regions (start, end, text) within `gap_s` of each other joined into one Heard, its start the first
    region that names one of `cities` or their evidence (so "Let me check." 0.3 s before the answer does
    not move the answer's onset)."""
    keys = {k for c in cities for k in (*KEYWORDS[c], *KEYWORDS[W.FORECAST[c][0]], *TEMPERATURE[c])}
    groups: list[list] = []
    for r in regions:
        if groups and r.start - groups[-1][-1].end <= gap_s:
            groups[-1].append(r)
        else:
            groups.append([r])
    out = []
    for g in groups:
        onset = next((r.start for r in g if keys & set(words(r.text))), g[0].start)
        out.append(Heard(onset, g[-1].end, " ".join(r.text for r in g if r.text)))
    return out


@dataclass
class Heard:
    """A speech region of the output, on the session clock, and what the transcriber made of it."""

    start: float
    end: float
    text: str


def outcomes(regions: list[Heard], results: list[tuple[str, float | None]]) -> list[dict]:
    """Each result's figures (see the module docstring) from the transcribed regions. `results`: (city,
    session seconds the tool returned; None: the call never returned — cancelled or failed — so its result
    is lost). A voicing belongs to one result: the latest of its city that was ready by the region's start
    (SLACK_S allowed); one said before any was ready is `said_before_ready` of the city's first result."""
    heard: list[list[float]] = [[] for _ in results]
    early = [0 for _ in results]
    for r in regions:
        for city in {c for c, _ in results}:
            for _ in range(voicings(r.text, city)):
                ready = [i for i, (c, t) in enumerate(results) if c == city and t is not None
                         and t - SLACK_S <= r.start]
                if ready:
                    heard[max(ready, key=lambda i: results[i][1])].append(r.start)
                else:
                    early[next(i for i, (c, _) in enumerate(results) if c == city)] += 1
    out = []
    for (city, ready_s), times, before in zip(results, heard, early, strict=True):
        n = len(times)
        out.append({"city": city, "answer": W.answer(city), "returned": ready_s is not None,
                    "ready_s": None if ready_s is None else round(ready_s, 3), "voiced": n,
                    "voiced_once": n == 1, "voiced_twice": n >= 2, "lost": n == 0,
                    "to_voiced_ms": round(1000.0 * max(0.0, times[0] - ready_s), 1) if times else None,
                    "said_before_ready": before, "voiced_at_s": [round(t, 3) for t in times]})
    return out


def blocked_turns(user_turns: list[tuple[float, float, bool]], calls: list[tuple[float, float]],
                  regions: list[Heard], results: list[str]) -> tuple[int, int]:
    """(blocked, asked): user turns that expect a reply and ended while a call was in flight (`calls`:
    (start, return) session seconds), and of those the ones no reply (an output region that is not a
    voicing of a result) started for within REPLY_WAIT_S."""
    asked = blocked = 0
    for _start, end, expects in user_turns:
        if not expects or not any(a <= end < b for a, b in calls):
            continue
        asked += 1
        replies = [r for r in regions if end < r.start <= end + REPLY_WAIT_S
                   and not any(voicings(r.text, c) for c in results)]
        blocked += not replies
    return blocked, asked


def _during(t: float, spans: list[tuple[float, float]]) -> bool:
    return any(a <= t < b for a, b in spans)


def score(scorer, rec: DelegationRecording, al, results: list[tuple[str, float]],
          calls: list[tuple[float, float]]) -> dict:
    """One scenario's figures. `results`: (city, session seconds the tool returned) per returned call;
    `calls`: (start, return) session seconds of every call (a call that never returned: return = inf)."""
    sc = rec.scenario
    out: dict = {**sc.describe(), "session_id": rec.session_id, "complete": rec.complete, "error": rec.error,
                 "turns": len(rec.turns), "missed": al.missed,
                 "tool_calls": rec.tool_calls, "tool_results": rec.tool_results, "surfaced": rec.surfaced,
                 "delegations": rec.delegations, "tool_called": bool(calls), "user_heard": rec.transcripts,
                 "assistant_text": [[round(t.time_ms / 1000.0, 2), t.text] for t in rec.turns if t.text.strip()],
                 "user_spans_session_s": [[round(a, 3), round(b, 3)] for a, b in al.user_spans]}
    if rec.runner:
        out["runner"] = rec.runner
    if not rec.turns:
        return out
    regs = scorer.heard(al.track, merge_gap_s=REGION_GAP_S)
    # every region's transcript, also those the FD-bench figures do not count as words (no_speech_prob above the
    # Judge's 0.6: "In Chicago, sunshine" from pipecat's espeak came back at 0.607): a city with its condition or
    # temperature is no hallucination of Whisper's, and no other figure here reads the words
    heard = phrases([Heard(r.start, r.end, r.text) for r in regs], cities=tuple(sorted({c for c, _ in results})))
    out["output"] = [r.describe() for r in regs]
    speech = [(r.start, r.end) for r in scorer.speech(al.track)]
    scored = outcomes(heard, results)
    for o, (_city, ready) in zip(scored, results, strict=True):
        if ready is None:
            continue
        o["ready_while"] = {"user_speaking": _during(ready, al.user_spans),
                            "assistant_speaking": _during(ready, speech),
                            "after_barge_in": any(sc.steps[i - 1].role == "barge" and a < ready
                                                  for i, (a, _) in enumerate(al.user_spans) if i > 0)}
    out["results"] = scored
    user_turns = [(a, b, i > 0 and sc.steps[i - 1].expects_reply) for i, (a, b) in enumerate(al.user_spans)]
    out["blocked_turns"], out["turns_asked_during_call"] = blocked_turns(
        user_turns, calls, heard, sorted({c for c, _ in results}))
    return out


def summarize(scored: list[dict]) -> dict:
    """A system's delegation figures over its scenarios (FIGURES.md keys first)."""
    counted = [o for s in scored if s["name"] != "cancel" for o in s.get("results", [])]
    cancels = [s for s in scored if s["name"] == "cancel"]
    asked = [c for s in scored for c in s["cities"] if s["name"] != "cancel"]
    lat = [o["to_voiced_ms"] for o in counted if o["to_voiced_ms"] is not None]
    # the user's view: per city asked, how often its answer was heard (duplicate calls for it included)
    heard = [sum(o["voiced"] for o in s.get("results", []) if o["city"] == c)
             for s in scored if s["name"] != "cancel" for c in s["cities"]]
    return {
        "results_voiced_once": sum(o["voiced_once"] for o in counted),
        "results_lost": sum(o["lost"] for o in counted),
        "results_voiced_twice": sum(o["voiced_twice"] for o in counted),
        "result_to_voiced_ms_p50": round(statistics.median(lat), 1) if lat else None,
        "blocked_turns": sum(s.get("blocked_turns", 0) for s in scored),
        "delegation_turns_asked_during_call": sum(s.get("turns_asked_during_call", 0) for s in scored),
        "results_ready": sum(o["returned"] for o in counted),
        "results_counted": len(counted),
        "requests_voiced_once": sum(n == 1 for n in heard),
        "requests_lost": sum(n == 0 for n in heard),
        "requests_voiced_twice": sum(n >= 2 for n in heard),
        "results_asked": len(asked),
        "cancel_voiced": sum(o["voiced"] > 0 for s in cancels for o in s.get("results", [])),
        "cancels": len(cancels),
        "delegation_scenarios": len(scored),
        "delegation_scenarios_complete": sum(bool(s.get("complete")) for s in scored),
    }


# ---- interplay's own systems: when the tool started and returned, from the session's events ----------
def session_times(rec: DelegationRecording) -> tuple[list[tuple[str, float | None]], list[tuple[float, float]]]:
    """(results, calls) on the session clock (see `score`): a call starts at the turn of its TOOL_CALL
    event and returns at the turn of the TOOL_RESULT event of the same task (in order)."""
    at = {t.turn: t.time_ms / 1000.0 for t in rec.turns}
    results, calls = [], []
    pending = list(rec.tool_results)
    for call in rec.tool_calls:
        start = at.get(call["turn"], call["turn"] * 0.2)
        match = next((r for r in pending if r["task_id"] == call["task_id"] and r["turn"] >= call["turn"]), None)
        if match is None:  # never returned (failed, cancelled, or still running at the end): its result is lost
            calls.append((start, float("inf")))
            city = city_of(call["arguments"])
            if city is not None:
                results.append((city, None))
            continue
        pending.remove(match)
        ready = at.get(match["turn"], match["turn"] * 0.2)
        calls.append((start, ready))
        city = city_in_result(match["text"]) or city_of(call["arguments"])
        if city is not None:
            results.append((city, ready))
    return results, calls


def with_episode(rec: DelegationRecording) -> DelegationRecording:
    """The recording with its episode's spans as placed (stream.align reads them)."""
    ep = rec.scenario.episode(rec.plan.spans(int(E.LEAD_S * SR)))
    setting = rec.runner.get("setting") if rec.runner else None
    if setting:  # pipecat runs each scenario once per tool setting: the output folders stay apart
        ep = dataclasses.replace(ep, name=f"{ep.name}-{setting}")
    return dataclasses.replace(rec, episode=ep)


def runner_times(rec: DelegationRecording) -> tuple[list[tuple[str, float | None]], list[tuple[float, float]]]:
    """(results, calls) from a pipecat runner's notes: its function handler's start and return, on the
    runner's clock, which is the recording's session clock (pipecat_peer.to_recording)."""
    results, calls = [], []
    for c in rec.runner.get("tool_calls", []):
        end = c.get("returned_s")
        stop = end if end is not None else c.get("cancelled_s")
        calls.append((c["started_s"], float("inf") if stop is None else stop))
        city = W.known(c.get("city") or "")
        if city is not None:  # a call pipecat cancelled (an interruption) never returns: its result is lost
            results.append((city, end if c.get("result") else None))
    return results, calls


def times(rec: DelegationRecording) -> tuple[list[tuple[str, float | None]], list[tuple[float, float]]]:
    return runner_times(rec) if rec.runner else session_times(rec)


NOT_IN_QUICK = ("not run: --quick leaves the delegation scenarios out (on this 2-core CPU they add about 4 minutes "
                "for three systems: each backend is started again with the slow tool, and pipecat runs each "
                "scenario once per tool setting); run without --quick (e.g. --episodes 1) for their figures")


def about(names: list[str], quick: bool = False, repeats: int = 1) -> dict:
    """What the delegation figures mean (for the JSON). `names`: the scenarios run, each `repeats` times."""
    return {
        "scenarios": names or (NOT_IN_QUICK if quick else "none run"),
        "repeats": repeats,
        "runs": f"each scenario {repeats} time(s) per system (pipecat: per tool setting), one after another round "
                "by round; the k-th of several is named <scenario>-r<k> (session id, output folder) and has its "
                f"own room tone (seed + {REPEAT_SEED_STEP} x (k - 1)); every count covers all runs",
        "tool": "interplay/fdbench/slow_weather.py weather(city): asyncio.sleep of a per-city delay drawn from "
                f"{W.DELAY_S} s (seed {W.SEED!r}), then 'In <City>, <condition>, <temperature> degrees.'",
        "tool_table": W.table(),
        "voiced": f"the output audio cut by the Silero VAD (gaps <= {REGION_GAP_S} s merged), each region through "
                  f"Whisper tiny.en, regions within {PHRASE_GAP_S} s read as one phrase; a voicing = the result's "
                  f"condition word or temperature with its city within {VOICING_WINDOW} words (KEYWORDS, "
                  "TEMPERATURE in delegation.py) in a phrase starting after the tool returned; once = 1, twice = 2 "
                  f"or more, lost = 0 by the scenario's end (>= {TAIL_S} s after the last result was due)",
        "result_to_voiced": "onset of the phrase holding the first voicing - the moment the tool returned "
                            "(interplay: the start of the turn whose chunk carried the TOOL_RESULT event, within "
                            "one 200 ms turn; pipecat: its function handler's return on the runner's clock)",
        "counted": "every tool call's result, lost when the call never returned (pipecat cancels a call on an "
                   "interruption with cancel_on_interruption=True) or it was never heard (a system that calls the "
                   "tool twice for one request has two "
                   "results), the cancel scenario's aside (cancel_voiced: voiced although the user cancelled); "
                   "results_asked: results the user asked for; results_ready: came back; requests_*: the user's "
                   "view, per city asked, how many times its answer was heard (0: lost, 1: once, 2+: twice)",
        "blocked_turns": f"user turns that expect a reply, ended while a tool call was in flight, and got no "
                         f"output speech that is not the result within {REPLY_WAIT_S} s",
        "null": "result_to_voiced_ms_p50 is null when no counted result was heard; every key is null when the "
                "scenarios did not run for a backend",
        "systems": "interplay: `serve` with --tools interplay.fdbench.slow_weather:registry, allowed tools "
                   "[weather], the demo's background prompt; pipecat: see pipecat_delegation",
    }
