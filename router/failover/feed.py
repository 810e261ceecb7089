"""What happened, as typed events: the one record that the admin API, the event log, the
metrics and the status page read. Nobody parses log lines.

Rules:

1. The failover controllers (and the router for router-wide notices) publish; observers
   subscribe with a callback, or read the bounded history. A callback runs synchronously
   in ``publish`` and must not block; one that raises is logged and kept.
2. Every event carries ``at`` (wall-clock seconds, for people), the service it concerns
   (None: the router as a whole) and ``message``: the operator's one line, the same
   text the log gets.
3. The kinds are a closed set of frozen dataclasses; :attr:`FeedEvent.kind` is the short
   name the admin API shows ("state", "health", "alarm", "promotion", "notice").
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from hotspare.causes import Cause

__all__ = [
    "AlarmRaised",
    "EventFeed",
    "FeedEvent",
    "HealthChanged",
    "Notice",
    "PromotionStep",
    "StateChanged",
]

log = logging.getLogger("hotspare.failover")


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedEvent:
    kind: ClassVar[str] = "notice"
    at: float
    service: str | None
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChanged(FeedEvent):
    """The service's failover state or active backend changed (a committed transition)."""

    kind: ClassVar[str] = "state"
    old: str
    new: str
    active: str
    epoch: int
    cause: Cause


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthChanged(FeedEvent):
    """The detector moved a backend between up, suspect and down."""

    kind: ClassVar[str] = "health"
    backend: str
    old: str
    new: str
    cause: Cause


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmRaised(FeedEvent):
    """Something needs a person (docs/runbook.md): ``code`` names which alarm."""

    kind: ClassVar[str] = "alarm"
    code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PromotionStep(FeedEvent):
    """One step of a promotion run ended (``outcome``: ok, failed, timeout)."""

    kind: ClassVar[str] = "promotion"
    run: str
    index: int
    name: str
    outcome: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice(FeedEvent):
    """Anything else an operator should see (an operator's command, a refused reload)."""

    kind: ClassVar[str] = "notice"


Subscriber = Callable[[FeedEvent], None]


class EventFeed:
    """The router's events, newest last, at most ``size`` kept."""

    def __init__(self, size: int = 200, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._events: deque[FeedEvent] = deque(maxlen=size)
        self._subscribers: list[Subscriber] = []

    def publish(self, event: FeedEvent) -> None:
        self._events.append(event)
        for fn in list(self._subscribers):
            try:
                fn(event)
            except Exception:  # an observer's bug must not stop the controller
                log.exception("event feed: subscriber %r failed on %s", fn, event.kind)

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call ``fn`` with every later event; returns the unsubscribe function."""
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def recent(self, service: str | None = None, limit: int = 20) -> list[FeedEvent]:
        """The last ``limit`` events of ``service`` (None: of every service)."""
        events: Iterable[FeedEvent] = self._events
        if service is not None:
            events = (e for e in events if e.service == service)
        return list(events)[-limit:]

    def router_wide(self, services: Iterable[str], limit: int = 20) -> list[FeedEvent]:
        """The last events that concern no known service."""
        names = set(services)
        return [e for e in self._events if e.service is None or e.service not in names][-limit:]
