"""`memory`: a per-session key-value store on SQLite (sqlite3, stdlib).

Rows are keyed by (session_id, key), so sessions never see each other's entries; a file path
persists across restarts (":memory:" does not). Key/value sizes and keys per session are bounded.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tools.errors import ToolError
from tools.outcome import ToolContext
from tools.spec import Tool, tool

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memory (
    session_id TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (session_id, key)
)
"""


@dataclass
class MemoryConfig:
    path: str = ":memory:"  # a file path persists across restarts
    max_key_chars: int = 128
    max_value_chars: int = 4000
    max_keys_per_session: int = 200


class MemoryStore:
    """Thread-safe (one connection behind a lock); every method scoped to a session."""

    def __init__(self, config: MemoryConfig | None = None) -> None:
        self.config = config or MemoryConfig()
        if self.config.path != ":memory:":
            Path(self.config.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.config.path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL" if self.config.path != ":memory:" else "PRAGMA foreign_keys=ON")
            self._db.execute(_SCHEMA)

    def set(self, session_id: str, key: str, value: str) -> None:
        self._check_key(key)
        if len(value) > self.config.max_value_chars:
            raise ToolError(f"value is longer than {self.config.max_value_chars} characters")
        with self._lock:
            exists = self._db.execute("SELECT 1 FROM memory WHERE session_id=? AND key=?", (session_id, key)).fetchone()
            if not exists:
                (count,) = self._db.execute("SELECT COUNT(*) FROM memory WHERE session_id=?", (session_id,)).fetchone()
                if count >= self.config.max_keys_per_session:
                    raise ToolError(f"memory is full ({self.config.max_keys_per_session} keys); delete some first")
            self._db.execute(
                "INSERT INTO memory(session_id, key, value, updated_at) VALUES (?,?,?,?) "
                "ON CONFLICT(session_id, key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
                (session_id, key, value, time.time()),
            )

    def get(self, session_id: str, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM memory WHERE session_id=? AND key=?", (session_id, key)).fetchone()
        return None if row is None else row[0]

    def delete(self, session_id: str, key: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM memory WHERE session_id=? AND key=?", (session_id, key))
        return cur.rowcount > 0

    def keys(self, session_id: str) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT key FROM memory WHERE session_id=? ORDER BY key", (session_id,)).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _check_key(self, key: str) -> None:
        if not key.strip():
            raise ToolError("key must not be empty")
        if len(key) > self.config.max_key_chars:
            raise ToolError(f"key is longer than {self.config.max_key_chars} characters")


def make_memory_tool(store: MemoryStore) -> Tool:
    """The `memory` tool bound to `store`; the session comes from the caller's ToolContext."""

    @tool(timeout_s=2.0, max_concurrency=4, max_result_chars=4000)
    def memory(
        action: Literal["set", "get", "delete", "list"],
        context: ToolContext,
        key: str = "",
        value: str = "",
    ) -> str:
        """Remember facts for this conversation: set, get or delete a value by key, or list the keys.

        Args:
            action: "set" stores value under key; "get" returns it; "delete" forgets it; "list" shows all keys.
            key: Short name of the fact, e.g. "favourite_colour" (not needed for "list").
            value: Text to store (only for "set").
        """
        session = context.session_id
        if not session:
            raise ToolError("memory is only available inside a session")
        if action == "list":
            keys = store.keys(session)
            return "Stored keys: " + ", ".join(keys) if keys else "Nothing is stored yet."
        if not key:
            raise ToolError(f"action '{action}' needs a key")
        if action == "set":
            store.set(session, key, value)
            return f"Stored '{key}'."
        if action == "get":
            found = store.get(session, key)
            return found if found is not None else f"Nothing is stored under '{key}'."
        return f"Forgot '{key}'." if store.delete(session, key) else f"Nothing was stored under '{key}'."

    memory.store = store  # type: ignore[attr-defined]
    return memory
