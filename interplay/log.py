"""structlog setup: key-value events, rendered as JSON when stderr is not a TTY.

Call `configure_logging()` once per process (the CLI and each actor do); `get_logger(name)`
anywhere after. Events are plain dicts: `log.info("turn", session=..., compute_ms=...)`.
"""

from __future__ import annotations

import contextlib
import json as _json
import logging
import os
import sys
from pathlib import Path

import structlog

from interplay.secrets import redact_processor

_configured = False


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the moment of writing, never a stale object: a test
    runner (pytest, typer's CliRunner) swaps stderr per test and closes the old one."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


class _FileSink:
    """A processor that also appends each event as one JSON line to a file (a --log-dir), then passes
    it on unchanged to the console renderer. Line-buffered: a crash loses at most the current line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = path.open("a", buffering=1, encoding="utf-8")

    def __call__(self, _logger, _name, event_dict: dict) -> dict:
        with contextlib.suppress(OSError, ValueError):  # a full disk or a closed file never breaks the caller
            self.file.write(_json.dumps(event_dict, default=str) + "\n")
        return event_dict


_sink: _FileSink | None = None


def log_file(log_dir: str | Path, process: str) -> Path:
    """Where a process's log goes in `log_dir`: <process>-<pid>.jsonl."""
    return Path(log_dir) / f"{process}-{os.getpid()}.jsonl"


def configure_logging(level: str = "info", json: bool | None = None, stream=None, log_dir: str | Path | None = None,
                      process: str = "cli") -> None:
    """Configure structlog and the stdlib root logger; safe to call again to reconfigure.

    Without `stream`, events go to the current sys.stderr (looked up at each write). With `log_dir`,
    every event is also a JSON line in `log_file(log_dir, process)` (secrets redacted there too)."""
    global _configured, _sink
    stream = stream or _CurrentStderr()
    if log_dir is not None and (_sink is None or _sink.path != log_file(log_dir, process)):
        _sink = _FileSink(log_file(log_dir, process))
    elif log_dir is None:
        _sink = None
    if json is None:
        json = not stream.isatty()
    lvl = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,  # after exceptions are text, before anything is rendered
            *([_sink] if _sink is not None else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=lvl, stream=stream, format="%(levelname)s %(name)s %(message)s", force=True)
    _configured = True


def get_logger(name: str | None = None, **bound: object) -> structlog.stdlib.BoundLogger:
    """A structlog logger bound to `component=name` and any extra keys."""
    if name:
        bound = {"component": name, **bound}
    # Lazy: structlog resolves the configuration at first use, so loggers made at import time
    # (before configure_logging runs) still follow the CLI's --log-level / --log-json.
    return structlog.get_logger(**bound)
