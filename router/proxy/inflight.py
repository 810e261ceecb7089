"""Requests waiting for a backend's response headers: the abort registry and the SLOW
timer (handler.py rule 7).

Rules:

1. Every attempt is watched from the moment it is sent until its response headers came
   (or it failed): :meth:`Inflight.watch` registers it under (service, backend) and arms
   the SLOW timer; :meth:`Inflight.end` disarms both. Nothing else is kept per request.
2. When the failover layer declares a backend dead, :meth:`Inflight.abort` cancels every
   task watched on it, marking each watch ``aborted`` first: the attempt then knows the
   CancelledError is ours (:meth:`Watch.ours`), takes back exactly that one cancellation
   (``uncancel()``) and fails over. A cancellation from anyone else (the client went
   away, shutdown) always propagates.
3. No first byte after ``health.timeout``: the director hears SLOW once (evidence for a
   confirming probe, never a failure by itself); the request goes on waiting.
"""

from __future__ import annotations

import asyncio
import logging

from router.failover.director import Director, Outcome
from router.failures import Failure

__all__ = ["Inflight", "Watch"]

log = logging.getLogger("hotspare.router")

_SLOW = Outcome.failed(Failure.SLOW)


class Watch:
    """One attempt waiting for response headers."""

    __slots__ = ("aborted", "key", "slow", "task")

    def __init__(self, task: asyncio.Task[object], key: tuple[str, str], slow: asyncio.TimerHandle) -> None:
        self.task = task
        self.key = key
        self.slow = slow
        self.aborted = False

    def ours(self) -> bool:
        """Was the CancelledError being handled our abort (rule 2)? If so it is taken
        back, and the attempt fails over instead of dying."""
        return self.aborted and self.task.uncancel() == 0


class Inflight:
    """The registry of one proxy: (service, backend) -> the attempts waiting on it."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], set[Watch]] = {}

    def watch(self, service: str, backend: str, director: Director, slow_after: float) -> Watch:
        task = asyncio.current_task()
        assert task is not None
        key = (service, backend)
        slow = asyncio.get_running_loop().call_later(slow_after, director.report, backend, _SLOW)
        w = Watch(task, key, slow)
        self._waiting.setdefault(key, set()).add(w)
        return w

    def end(self, w: Watch) -> None:
        w.slow.cancel()
        ws = self._waiting.get(w.key)
        if ws is not None:
            ws.discard(w)
            if not ws:
                del self._waiting[w.key]

    def abort(self, service: str, backend: str) -> None:
        """``backend`` of ``service`` is declared dead: every request waiting on it for
        response headers stops waiting now (it is replayed or answered 502)."""
        waiting = self._waiting.pop((service, backend), set())
        for w in waiting:
            w.aborted = True
            w.task.cancel()
        if waiting:
            log.warning("service %s: backend %s declared dead; %d request(s) waiting on it stopped",
                        service, backend, len(waiting))
