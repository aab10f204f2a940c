"""Long answers as the live loop gives them: a background answer longer than READ_BYTES, read in pieces.

The evaluation's sessions give the model every context message whole (read_bytes 0, as in training);
the live loop's sessions cut a voiced answer longer than pacing.READ_BYTES into pieces and let the next
one in after the model's <stop_speaking> (model/pacing.py). The demo's answer is such a message, and
a model that reads whole messages well can still stop inside a piece ("... with a temperature | of -"
and silence). This measures that path without the wall clock:

  - one session per held-out seed, made with `read_bytes=READ_BYTES`, as the live loop makes them;
  - a typed weather request of the held-out templates and cities at turn 1;
  - the answer, "The weather in C is W, with a temperature of T C." (held-out cities, conditions, and a
    template no training episode uses), arrives WHEN_IDLE (text.CTX_IDLE) `ANSWER_DELAY` turns after
    the model's </delegate>, or at turn DEFAULT_ARRIVAL when it delegated nothing (the answer is
    what is measured here, not the delegation);
  - `said_whole(answer, text)`: the text the model said from the answer's arrival on holds the answer
    to its end, nothing between its words (commas and full stops aside: a cut after a comma drops it,
    pacing.pieces).

`long_answer_scores(model, n)` -> {"long_answers_said": fraction, "long_answers": n,
"long_answer_misses": up to five (answer, said) pairs}.
"""

from __future__ import annotations

import random

from interaction_actor.model import text as T
from interaction_actor.model.fusion import InteractionModel
from interaction_actor.model.pacing import READ_BYTES
from interaction_actor.model.session import SessionState, TurnInput, new_session, step_batch
from interaction_actor.training import spoken

ANSWER_DELAY = 5  # turns from </delegate> to the answer (about the demo's one second at 200 ms a turn)
DEFAULT_ARRIVAL = 20  # the answer's turn in a session whose model delegated nothing
AFTER_TURNS = 90  # turns after the answer's arrival to say it (63 bytes take about 35, pauses included)
KEY = "long-answer-1"  # the held-out draws' key: change it only with the measurement


def answer_for(seed: int) -> tuple[str, str]:
    """(typed request, long answer) of held-out seed `seed`: a pure function of it."""
    rng = random.Random(f"{KEY}:{seed}")
    city = rng.choice(spoken.TYPED_CITIES[spoken.EVAL])
    cond = rng.choice(spoken.CONDITIONS[spoken.EVAL])
    request = rng.choice(spoken.REQUEST_TEMPLATES[spoken.EVAL]).format(city=city)
    return request, f"The weather in {city} is {cond}, with a temperature of {rng.randint(-9, 29)} C."


def _words(text: str) -> list[str]:
    return text.replace(",", " ").replace(".", " ").split()


def said_whole(answer: str, text: str) -> bool:
    """`text` holds `answer`'s words in order to its last one, nothing between them (commas and full
    stops aside: a cut after a comma drops it, and neither is heard as a word)."""
    want, got = _words(answer), _words(text)
    return any(got[i : i + len(want)] == want for i in range(len(got) - len(want) + 1))


def paced_session(model: InteractionModel, seed: int) -> SessionState:
    """A session that reads a voiced context message longer than READ_BYTES in pieces, as the live
    loop's do (runtime settings `[model] read_bytes`)."""
    return new_session(model, f"long-{seed}", read_bytes=READ_BYTES)


def long_answer_scores(model: InteractionModel, n: int = 40, seed_base: int = 0) -> dict:
    """n held-out sessions through the pacer (see the module doc)."""
    seeds = [seed_base + i for i in range(n)]
    pairs = [answer_for(s) for s in seeds]
    sessions = [paced_session(model, s) for s in seeds]
    arrival: list[int | None] = [None] * n
    said = [""] * n
    for turn in range(DEFAULT_ARRIVAL + ANSWER_DELAY + AFTER_TURNS + 1):
        inputs = []
        for i, (request, answer) in enumerate(pairs):
            inp = TurnInput(text=request if turn == 1 else "")
            if arrival[i] is None and turn == DEFAULT_ARRIVAL:
                arrival[i] = turn
            if arrival[i] == turn:
                inp.context = T.CTX_IDLE + answer
            inputs.append(inp)
        for i, out in enumerate(step_batch(model, sessions, inputs)):
            if out.delegate_task and arrival[i] is None:
                arrival[i] = turn + ANSWER_DELAY
            if arrival[i] is not None and turn >= arrival[i] and turn <= arrival[i] + AFTER_TURNS:
                said[i] += out.text + (" " if "stop_speaking" in out.controls else "")  # pieces: utterances
    ok = [said_whole(a, s) for (_, a), s in zip(pairs, said, strict=True)]
    misses = [(a, " ".join(s.split())) for (_, a), s, good in zip(pairs, said, ok, strict=True) if not good]
    return {"long_answers_said": round(sum(ok) / n, 4), "long_answers": n, "long_answer_misses": misses[:5]}
