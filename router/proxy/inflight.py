"""Requests waiting for a backend's response headers: the abort registry and the SLOW
timer (handler.py rule 7).

Rules:

1. Every attempt is watched from the moment it is sent until its response headers came
   (or it failed): :meth:`Inflight.watch` registers it under (service, backend),
   :meth:`Inflight.end` takes it out. Nothing else is kept per request: the SLOW timer
   is one per (service, backend), armed at the oldest watch's deadline, and re-arms
   itself to the next one when it fires (no timer per request).
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

    __slots__ = ("aborted", "key", "since", "slow", "task")

    def __init__(self, task: asyncio.Task[object], key: tuple[str, str], since: float) -> None:
        self.task = task
        self.key = key
        self.since = since
        self.slow = False  # reported SLOW already
        self.aborted = False

    def ours(self) -> bool:
        """Was the CancelledError being handled our abort (rule 2)? If so it is taken
        back, and the attempt fails over instead of dying."""
        return self.aborted and self.task.uncancel() == 0


class Inflight:
    """The registry of one proxy: (service, backend) -> the attempts waiting on it, in
    the order they started."""

    __slots__ = ("_timers", "_waiting")

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], dict[Watch, None]] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}

    def watch(
        self, service: str, backend: str, director: Director, slow_after: float,
        task: asyncio.Task[object] | None = None,
    ) -> Watch:
        """``task``: the one waiting (default: the current one)."""
        if task is None:
            task = asyncio.current_task()
            assert task is not None
        key = (service, backend)
        loop = task.get_loop()
        w = Watch(task, key, loop.time())
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = {}
        waiting[w] = None
        if key not in self._timers:
            self._timers[key] = loop.call_at(w.since + slow_after, self._sweep, key, director, slow_after)
        return w

    def end(self, w: Watch) -> None:
        waiting = self._waiting.get(w.key)
        if waiting is not None:
            waiting.pop(w, None)

    def _sweep(self, key: tuple[str, str], director: Director, slow_after: float) -> None:
        """Rule 3: SLOW once for each watch past its deadline; re-armed for the next."""
        del self._timers[key]
        waiting = self._waiting.get(key)
        if not waiting:
            self._waiting.pop(key, None)
            return
        loop = asyncio.get_running_loop()
        limit = loop.time() - slow_after
        for w in waiting:
            if w.slow:
                continue
            if w.since > limit:
                self._timers[key] = loop.call_at(w.since + slow_after, self._sweep, key, director, slow_after)
                return
            w.slow = True
            director.report(key[1], _SLOW)

    def abort(self, service: str, backend: str) -> None:
        """``backend`` of ``service`` is declared dead: every request waiting on it for
        response headers stops waiting now (it is replayed or answered 502)."""
        waiting = self._waiting.pop((service, backend), {})
        timer = self._timers.pop((service, backend), None)
        if timer is not None:
            timer.cancel()
        for w in waiting:
            w.aborted = True
            w.task.cancel()
        if waiting:
            log.warning("service %s: backend %s declared dead; %d request(s) waiting on it stopped",
                        service, backend, len(waiting))
