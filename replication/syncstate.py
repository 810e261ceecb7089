"""The replica's memory, per root, in ``.hotspare/state.sqlite``: the sync point (what
each path looked like right after the agent applied the source's version) and small
facts (the role this node last had, the epoch, the feed position).

The sync point is written after each batch of files is renamed into place, so a
killed sink restarts knowing what it had finished. SQLite gives atomic commits without
a hand-written journal; blocking calls, so async callers use a worker thread.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from .paths import AGENT_DIR
from .planner import Entry

__all__ = ["SyncState"]


class SyncState:
    def __init__(self, root: Path) -> None:
        folder = root / AGENT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(folder / "state.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS synced (path BLOB PRIMARY KEY, size INTEGER, "
            "mtime_ns INTEGER, mode INTEGER, link BLOB)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def synced(self) -> dict[str, Entry] | None:
        """The sync point, or None if this replica never completed a sync."""
        if self.get("synced_once") != "1":
            return None
        with self._lock:
            rows = self._db.execute("SELECT path, size, mtime_ns, mode, link FROM synced").fetchall()
        return {
            _dec(p): Entry(s, m, mode, _dec(link) if link is not None else None)
            for p, s, m, mode, link in rows
        }

    def update(self, applied: Iterable[tuple[str, Entry | None]]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for path, e in applied:
                    if e is None:
                        self._db.execute("DELETE FROM synced WHERE path = ?", (_enc(path),))
                    else:
                        self._db.execute(
                            "INSERT OR REPLACE INTO synced VALUES (?, ?, ?, ?, ?)",
                            (_enc(path), e.size, e.mtime_ns, e.mode, _enc(e.link) if e.link else None),
                        )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


def _enc(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _dec(raw: bytes | str) -> str:
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
