"""A module-level logger for the tools package that resolves `interplay.log.get_logger` at each
event, so `configure_logging()` called after import (level, stream) still applies."""

from __future__ import annotations

from typing import Any

from interplay.log import get_logger


class LazyLogger:
    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, method: str) -> Any:
        return getattr(get_logger(self.name), method)


def tools_logger(name: str) -> LazyLogger:
    return LazyLogger(name)
