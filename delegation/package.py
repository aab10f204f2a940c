"""The context package builder: a session's conversation, fitted into a byte budget in linear time.

`build_package(task, transcript=log_or_entries, ...)` returns an `interplay.v1.ContextPackage` of
at most `budget_bytes` serialized bytes. What is left out, in this order, each step only while the
package is still over budget (the rule of `fit_to_budget`):

  0. observations beyond the newest `max_observations`;
  1. observation images, oldest first, the newest image last;
  2. older observations (all but the newest), oldest first;
  3. transcript entries, oldest first, folded into the digest — except the newest `keep_entries`;
  4. the newest observation;
  5. the digest's gists (down to a header, then a bare count, then nothing);
  6. the newest entries themselves, oldest first.

Never left out: the task, ids, user state, tools, deadline, priority, origin turn, mode, metadata
(when these alone exceed the budget, PackageTooLarge). A kept entry is never cut, and the kept ones
are always the newest. Whatever was left out is accounted for: `omitted` (counts and the time span),
`dropped_entries`, and `earlier_summary`: an extractive digest (delegation/digest.py — speaker-tagged
first words of some entries, no model) of the entries the live log had already folded out of its
window plus the ones dropped here, capped at min(summary_max_bytes, budget / 8).

Time: linear in the number of entries at worst; in practice proportional to the entries kept plus
the few whose gists enter the digest (entries are read newest first and only as far as the budget
reaches). Pure CPU work with no I/O: the interaction side runs it off its event-loop thread.
The pydantic mirror of the package (ContextPackageModel ...) is delegation/mirror.py.
"""

from __future__ import annotations

import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from delegation.digest import Digest, DigestConfig
from delegation.mirror import (  # noqa: F401 - re-exported: the package's public names live here too
    INT64,
    UINT32_MAX,
    ContextPackageModel,
    EntryKind,
    OmittedModel,
    PackageError,
    PackageTooLarge,
    Priority,
    Speaker,
    SurfacingMode,
    TranscriptEntryModel,
    UserState,
    VisualObservationModel,
)
from interplay.log import get_logger
from interplay.v1 import common_pb2 as cpb
from interplay.v1 import context_pb2 as xpb

log = get_logger("delegation.package")


@runtime_checkable
class ConversationSource(Protocol):
    """What build_package reads from a conversation recorder: `snapshot()` gives an immutable view
    (delegation.transcript.ConversationLog and its LogSnapshot are ones) with session_id, user_state,
    `len()`, `entry(i)` (oldest first, a TranscriptEntry), `digest` and `observations()`."""

    session_id: str

    def snapshot(self) -> Any: ...


@dataclass
class PackageConfig:
    """Budget and truncation knobs of `build_package`."""

    budget_bytes: int = 16_384         # serialized size limit of the whole package
    max_observations: int = 4          # newest observations kept before the byte budget applies
    summary_max_bytes: int = 1_024     # the earlier_summary never exceeds this (nor budget / 8)
    summary_words: int = 12            # words kept per entry inside the summary
    keep_entries: int = 4              # newest entries dropped only after everything else


def _varint_len(n: int) -> int:
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def _ld(n: int) -> int:
    """Bytes a length-delimited field of payload n costs (field numbers < 16: one tag byte)."""
    return 1 + _varint_len(n) + n


# Upper bounds of the accounting fields: `omitted` (field 17: a two-byte tag) and dropped_entries.
_OMITTED_MAX = 2 + 1 + 4 * (1 + 5) + 4 * (1 + 10)
_DROPPED_MAX = 1 + 5
_SHRUNK_CAPS = (200, 64, 0)  # step 5: the digest's cap, shrinking


class _Entries:
    """Oldest-first random access to a conversation's entries; each proto made once, on demand."""

    def __init__(self, n: int, make: Callable[[int], xpb.TranscriptEntry]) -> None:
        self.n = n
        self._make = make
        self._made: dict[int, xpb.TranscriptEntry] = {}

    def __len__(self) -> int:
        return self.n

    def get(self, i: int) -> xpb.TranscriptEntry:
        e = self._made.get(i)
        if e is None:
            e = self._made[i] = self._make(i)
        return e


def fit_to_budget(pkg: xpb.ContextPackage, config: PackageConfig | None = None) -> xpb.ContextPackage:
    """Truncate `pkg` in place by the rule of the module docstring so that its size is at most
    `budget_bytes`; returns it. What `pkg` already accounts for as left out (earlier_summary,
    dropped_entries, omitted) is carried over. On PackageTooLarge `pkg` is left as it was."""
    cfg = config or PackageConfig()
    src = xpb.ContextPackage()
    src.CopyFrom(pkg)
    rest = xpb.ContextPackage()
    rest.CopyFrom(pkg)
    for name in ("transcript", "observations", "earlier_summary", "dropped_entries", "omitted"):
        rest.ClearField(name)
    prior = Digest(DigestConfig(words=cfg.summary_words))
    if src.dropped_entries or src.earlier_summary:
        o = src.omitted
        prior.entries = max(src.dropped_entries, o.entries)
        prior.start_ms, prior.end_ms, prior.start_turn, prior.end_turn = o.start_ms, o.end_ms, o.start_turn, o.end_turn
        if src.earlier_summary:  # the earlier text, kept whole as the digest's opening when it fits
            prior.head, prior.head_closed = [src.earlier_summary], True
    entries = list(src.transcript)
    out = _fit(rest, _Entries(len(entries), entries.__getitem__), list(src.observations), cfg, prior,
               images=src.omitted.images, observations_left=src.omitted.observations)
    pkg.CopyFrom(out)
    return pkg


def _fit(pkg: xpb.ContextPackage, entries: _Entries, observations: list[xpb.VisualObservation],
         cfg: PackageConfig, prior: Digest | None, *, images: int = 0,
         observations_left: int = 0) -> xpb.ContextPackage:
    """`fit_to_budget` on a package whose transcript, observations and prior digest come separately."""
    budget = cfg.budget_bytes
    base = pkg.ByteSize()
    if base > budget:
        raise PackageTooLarge("package_too_large",
                              f"the task and fixed fields need {base} bytes; the budget is {budget}")
    digest = prior.copy() if prior is not None else Digest(DigestConfig(words=cfg.summary_words))
    log_entries = digest.entries
    lost = observations_left
    obs = sorted(observations, key=lambda o: (o.turn, o.time_ms))
    keep_obs = len(obs) if cfg.max_observations >= len(obs) else max(0, cfg.max_observations)
    for o in obs[:len(obs) - keep_obs]:  # step 0
        images += bool(o.image)
        lost += 1
    obs = obs[len(obs) - keep_obs:]
    obs_sizes = [_ld(o.ByteSize()) for o in obs]
    cap = max(0, min(cfg.summary_max_bytes, budget // 8))
    n = len(entries)
    cum = [0]  # cum[j]: bytes of the newest j entries, extended only as far as a question needs

    def newest_fit(room: int) -> int:
        """How many of the newest entries fit in `room` bytes."""
        while len(cum) <= n and cum[-1] <= room:
            cum.append(cum[-1] + _ld(entries.get(n - len(cum)).ByteSize()))
        return max(0, bisect_right(cum, room) - 1)

    def room(reserve: int) -> int:
        return budget - base - sum(obs_sizes) - reserve

    def accounting(text: str, omitted: xpb.Omitted | None) -> int:
        if omitted is None:
            return 0
        return (_ld(len(text.encode())) if text else 0) + 2 + _varint_len(omitted.ByteSize()) + \
            omitted.ByteSize() + (1 + _varint_len(omitted.entries) if omitted.entries else 0)

    def omitted_of(d: Digest) -> xpb.Omitted | None:
        if not (d.entries or images or lost):
            return None
        return xpb.Omitted(entries=d.entries, log_entries=log_entries, images=images, observations=lost,
                           start_ms=d.start_ms, end_ms=d.end_ms, start_turn=d.start_turn, end_turn=d.end_turn)

    def all_fit() -> bool:  # every entry, the digest of what the log folded, and nothing dropped here
        return newest_fit(room(accounting(digest.render(cap, images, lost), omitted_of(digest)))) >= n

    def strip_image(i: int) -> None:  # copy on write: the caller's messages stay intact
        bare = xpb.VisualObservation()
        bare.CopyFrom(obs[i])
        bare.image, bare.mime_type = b"", ""
        obs[i], obs_sizes[i] = bare, _ld(bare.ByteSize())

    kept = n
    if not all_fit():
        for i in range(len(obs)):  # step 1: images, oldest first, the newest last
            if obs[i].image:
                strip_image(i)
                images += 1
                if all_fit():
                    break
        while len(obs) > 1 and not all_fit():  # step 2: older observations
            obs.pop(0)
            obs_sizes.pop(0)
            lost += 1
        if not all_fit():
            def reserve(c: int) -> int:
                return (_ld(c) if c else 0) + _OMITTED_MAX + _DROPPED_MAX

            protect = min(n, max(0, cfg.keep_entries))
            kept = newest_fit(room(reserve(cap)))  # step 3: the oldest entries
            if kept < protect and obs:  # step 4: the newest observation
                obs.pop()
                obs_sizes.pop()
                lost += 1
                kept = newest_fit(room(reserve(cap)))
            for c in _SHRUNK_CAPS:  # step 5: the digest's gists, then its header
                if kept >= protect or c >= cap:
                    continue
                cap = c
                kept = newest_fit(room(reserve(cap)))
            # step 6: what still does not fit of the protected newest entries is dropped, oldest first
            digest.fold(n - kept, entries.get)
    text = digest.render(cap, images, lost)
    omitted = omitted_of(digest)
    pkg.transcript.extend(entries.get(i) for i in range(n - kept, n))
    pkg.observations.extend(obs)
    if omitted is not None:
        pkg.earlier_summary = text
        pkg.dropped_entries = digest.entries
        pkg.omitted.CopyFrom(omitted)
    if pkg.ByteSize() > budget:  # only the accounting is left to give up: the task takes the rest
        for name in ("earlier_summary", "dropped_entries", "omitted"):
            pkg.ClearField(name)
        if pkg.ByteSize() > budget:
            raise PackageTooLarge("package_too_large", f"{pkg.ByteSize()} bytes after truncation > {budget}")
    if n - kept or images or lost:
        log.debug("package_truncated", task_id=pkg.task_id, dropped_entries=n - kept, images=images,
                  observations=lost, size=pkg.ByteSize())
    return pkg


# ---- the builder -------------------------------------------------------------------------------

def _entry(e: Any) -> xpb.TranscriptEntry:
    if isinstance(e, xpb.TranscriptEntry):
        return e
    if isinstance(e, TranscriptEntryModel):
        return e.to_proto()
    if isinstance(e, Mapping):
        return TranscriptEntryModel.model_validate(dict(e)).to_proto()
    raise PackageError("bad_transcript_entry", f"expected TranscriptEntry, model or mapping, got {type(e).__name__}")


def _observation(o: Any) -> xpb.VisualObservation:
    if isinstance(o, xpb.VisualObservation):
        return o
    if isinstance(o, VisualObservationModel):
        return o.to_proto()
    if isinstance(o, Mapping):
        return VisualObservationModel.model_validate(dict(o)).to_proto()
    if callable(getattr(o, "to_observation", None)):  # a received video frame (delegation.frames)
        return o.to_observation()
    raise PackageError("bad_observation", f"expected VisualObservation, model or mapping, got {type(o).__name__}")


def check_request(task: Any, deadline_ms: int) -> None:
    """The cheap checks of build_package (PackageError when they fail), for a caller that wants a
    refusal at once and the build later."""
    if not isinstance(task, str) or not task.strip():
        raise PackageError("empty_task", "a delegation needs a non-empty task")
    if deadline_ms < 0:
        raise PackageError("bad_deadline", f"deadline_ms must be >= 0, got {deadline_ms}")


def build_package(
    task: str,
    *,
    task_id: str | None = None,
    session_id: str = "",
    transcript: ConversationSource | Iterable[Any] = (),
    user_state: int | None = None,
    observations: Iterable[Any] | None = None,
    allowed_tools: Iterable[str] = (),
    deadline_ms: int = 30_000,
    priority: int = Priority.NORMAL,
    origin_turn: int = 0,
    created_unix_ms: int | None = None,
    preferred_mode: int = SurfacingMode.WHEN_IDLE,
    idempotent: bool = False,
    metadata: Mapping[str, str] | None = None,
    budget_bytes: int | None = None,
    config: PackageConfig | None = None,
) -> xpb.ContextPackage:
    """Assemble a ContextPackage from a session's state and fit it to the byte budget.

    `transcript` is a ConversationLog or a LogSnapshot (then its observations, user state, session
    id and rolling digest are used unless given) or an iterable of TranscriptEntry protos /
    TranscriptEntryModel / dicts, oldest first. `observations` may also hold delegation.frames
    FrameObservations. `task` must be non-empty. Returns the protobuf message, at most
    `budget_bytes` long.
    """
    check_request(task, deadline_ms)
    cfg = config or PackageConfig()
    if budget_bytes is not None:
        cfg = PackageConfig(budget_bytes=budget_bytes, max_observations=cfg.max_observations,
                            summary_max_bytes=cfg.summary_max_bytes, summary_words=cfg.summary_words,
                            keep_entries=cfg.keep_entries)
    prior: Digest | None = None
    if isinstance(transcript, ConversationSource):
        snap = transcript.snapshot()
        entries = _Entries(len(snap), snap.entry)
        prior = snap.digest
        session_id = session_id or snap.session_id
        if user_state is None:
            user_state = int(snap.user_state)
        if observations is None:
            observations = snap.observations()
    else:
        protos = [_entry(e) for e in transcript]
        entries = _Entries(len(protos), protos.__getitem__)
    pkg = xpb.ContextPackage(
        task_id=task_id or uuid.uuid4().hex[:16], session_id=session_id, task=task,
        user_state=int(user_state if user_state is not None else cpb.USER_STATE_SILENT),
        allowed_tools=list(allowed_tools), deadline_ms=int(deadline_ms), priority=int(priority),
        origin_turn=int(origin_turn),
        created_unix_ms=int(created_unix_ms if created_unix_ms is not None else time.time() * 1000),
        preferred_mode=int(preferred_mode), idempotent=bool(idempotent), metadata=dict(metadata or {}),
    )
    return _fit(pkg, entries, [_observation(o) for o in (observations or ())], cfg, prior)
