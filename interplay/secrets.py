"""Secrets for tools: a store of named values, injected into the tools that declare them, and
redacted from everything that leaves the process in text.

Contract:
- `SecretStore({name: value})` holds the values; `store.get(name)` reads one (None when absent);
  `repr()` and `str()` never show a value.
- `store.redact(text)` replaces every occurrence of every value with `[secret:NAME]` (longest value
  first, so a value that contains another is replaced whole). Values shorter than
  `MIN_REDACTABLE_CHARS` are refused at construction: replacing "abc" everywhere would corrupt
  ordinary text and still not hide much.
- `register(store)` / `unregister(store)` add a store's values to the process-wide redactor that
  `redact_processor` (a structlog processor, installed by interplay.log) applies to every string in
  every log event — event names, values, formatted tracebacks — and to strings nested in lists and
  dicts. `redact_text(text)` applies the same process-wide redaction anywhere else.
- `scrub(text, max_chars)` makes a message fit to show a model or a client: redacted, control
  characters removed (newlines and tabs become spaces), whitespace collapsed, cut to `max_chars`
  with an ellipsis.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

MIN_REDACTABLE_CHARS = 4
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class SecretStore:
    """Named secret values. Never printed; looked up by name; redacted by value."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values: dict[str, str] = {}
        for name, value in (values or {}).items():
            if not _NAME_RE.match(str(name)):
                raise ValueError(f"secret name {name!r} must match {_NAME_RE.pattern}")
            if not isinstance(value, str):
                raise TypeError(f"secret {name!r}: the value must be a str, got {type(value).__name__}")
            if len(value) < MIN_REDACTABLE_CHARS:
                raise ValueError(f"secret {name!r} is shorter than {MIN_REDACTABLE_CHARS} characters and "
                                 "could not be redacted safely")
            self._values[name] = value
        self._pattern = _compile(self._values.items())

    def names(self) -> list[str]:
        return sorted(self._values)

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"SecretStore(names={self.names()!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (Ray ships configs to actors)
        return (SecretStore, (dict(self._values),))

    def items(self) -> Iterable[tuple[str, str]]:
        return self._values.items()

    def redact(self, text: str) -> str:
        """`text` with every secret value replaced by `[secret:NAME]`."""
        if self._pattern is None or not text:
            return text
        return _substitute(self._pattern, text)


def _compile(pairs: Iterable[tuple[str, str]]) -> tuple[re.Pattern[str], dict[str, str]] | None:
    by_value: dict[str, str] = {}
    for name, value in pairs:
        by_value.setdefault(value, name)
    if not by_value:
        return None
    ordered = sorted(by_value, key=len, reverse=True)
    return re.compile("|".join(re.escape(v) for v in ordered)), by_value


def _substitute(compiled: tuple[re.Pattern[str], dict[str, str]], text: str) -> str:
    pattern, by_value = compiled
    return pattern.sub(lambda m: f"[secret:{by_value[m.group(0)]}]", text)


# ----------------------------------------------------------------------------- process-wide redaction

_lock = threading.Lock()
_stores: list[SecretStore] = []
_global: tuple[re.Pattern[str], dict[str, str]] | None = None


def register(store: SecretStore) -> None:
    """Redact `store`'s values from every log event (and `redact_text`) of this process."""
    global _global
    with _lock:
        if not any(s is store for s in _stores):
            _stores.append(store)
        _global = _compile((n, v) for s in _stores for n, v in s.items())


def unregister(store: SecretStore) -> None:
    global _global
    with _lock:
        _stores[:] = [s for s in _stores if s is not store]
        _global = _compile((n, v) for s in _stores for n, v in s.items())


def redact_text(text: str) -> str:
    """`text` with the values of every registered store replaced by `[secret:NAME]`."""
    compiled = _global
    if compiled is None or not text:
        return text
    return _substitute(compiled, text)


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {k: _redact_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v, depth + 1) for v in value)
    if isinstance(value, BaseException):  # exc_info objects are formatted later; their text must not leak
        return _redact_value(repr(value), depth + 1)
    return value


def redact_processor(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: redact registered secret values from every string of the event."""
    if _global is None:
        return event_dict
    return {k: (v if k == "exc_info" else _redact_value(v)) for k, v in event_dict.items()}


# ----------------------------------------------------------------------------- messages

_WS_RE = re.compile(r"\s+")


def scrub(text: str, max_chars: int = 400, store: SecretStore | None = None) -> str:
    """A message safe to show: redacted (by `store` and the registered stores), no control characters,
    whitespace collapsed, at most `max_chars` characters (ending with "…" when cut)."""
    text = str(text)
    if store is not None:
        text = store.redact(text)
    text = redact_text(text)
    cleaned = "".join(" " if ch in "\n\r\t\v\f" else ch for ch in text
                      if ch in "\n\r\t\v\f" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co"))
    cleaned = _WS_RE.sub(" ", cleaned).strip()
    if len(cleaned) > max_chars:
        cleaned = cleaned[: max(0, max_chars - 1)].rstrip() + "…"
    return cleaned
