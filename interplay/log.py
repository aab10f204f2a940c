"""structlog setup: key-value events, rendered as JSON when stderr is not a TTY.

Call `configure_logging()` once per process (the CLI and each actor do); `get_logger(name)`
anywhere after. Events are plain dicts: `log.info("turn", session=..., compute_ms=...)`.
"""

from __future__ import annotations

import logging
import sys

import structlog

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


def configure_logging(level: str = "info", json: bool | None = None, stream=None) -> None:
    """Configure structlog and the stdlib root logger; safe to call again to reconfigure.

    Without `stream`, events go to the current sys.stderr (looked up at each write)."""
    global _configured
    stream = stream or _CurrentStderr()
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
