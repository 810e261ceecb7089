"""The source's view of a root: known files, the numbered change feed, and the
debouncer that decides when a written file may be shipped. No I/O, no clock.

Rules:

1. ``ChangeLog.known`` is the source's manifest; every difference recorded into it gets
   the next sequence number. The manifest and the feed are therefore one story: a sink
   that read the manifest at ``seq`` N and applies every change after N is in step.
2. A feed is identified by ``run_id`` (new at each start of the source). A sink that
   asks with another ``run_id``, or for changes older than the retained window, is told
   to ``reset`` (reconcile from a fresh manifest) rather than given a partial story.
3. The debouncer ships a path only once it has been quiet for ``quiet`` seconds; the
   shell then checks the file is closed (a read lease) and, if it is still open for
   writing, touches it again instead of shipping it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .planner import Entry

__all__ = ["Change", "ChangeLog", "Debouncer"]


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    path: str
    entry: Entry | None  # None: deleted
    at: float  # wall-clock time the source noticed it (for lag)


class ChangeLog:
    def __init__(self, run_id: str, capacity: int = 200_000) -> None:
        self.run_id = run_id
        self.known: dict[str, Entry] = {}
        self._log: deque[Change] = deque()
        self._capacity = capacity
        self.head = 0

    def record(self, path: str, entry: Entry | None, now: float) -> Change | None:
        """Note the state of one path; return the change, or None if nothing changed."""
        old = self.known.get(path)
        if old == entry:
            return None
        if entry is None:
            del self.known[path]
        else:
            self.known[path] = entry
        self.head += 1
        change = Change(self.head, path, entry, now)
        self._log.append(change)
        if len(self._log) > self._capacity:
            self._log.popleft()
        return change

    def replace_all(
        self, scan: Mapping[str, Entry], now: float, hold: Iterable[str] = ()
    ) -> list[Change]:
        """Record a full rescan. Paths in ``hold`` (still being written) keep their old
        state until they are closed."""
        held = set(hold)
        out: list[Change] = []
        for path in sorted(set(self.known) - set(scan) - held):
            c = self.record(path, None, now)
            if c:
                out.append(c)
        for path in sorted(scan):
            if path in held:
                continue
            c = self.record(path, scan[path], now)
            if c:
                out.append(c)
        return out

    def since(self, seq: int, run_id: str, limit: int = 5000) -> list[Change] | None:
        """Changes after ``seq``; None when the caller must reset."""
        if run_id != self.run_id or seq > self.head:
            return None
        if seq == self.head:
            return []
        first = self._log[0].seq if self._log else self.head + 1
        if seq + 1 < first:
            return None
        start = seq + 1 - first
        return [self._log[i] for i in range(start, min(len(self._log), start + limit))]


class Debouncer:
    def __init__(self, quiet: float) -> None:
        self.quiet = quiet
        self._last: dict[str, float] = {}

    def touch(self, path: str, now: float) -> None:
        self._last[path] = now

    def due(self, now: float) -> list[str]:
        ready = sorted(p for p, t in self._last.items() if now - t >= self.quiet)
        for p in ready:
            del self._last[p]
        return ready

    def next_due(self) -> float | None:
        """The earliest time a path becomes due (None: nothing pending)."""
        if not self._last:
            return None
        return min(self._last.values()) + self.quiet

    def __len__(self) -> int:
        return len(self._last)

    def pending(self) -> set[str]:
        return set(self._last)
