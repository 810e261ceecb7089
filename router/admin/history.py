"""The last minutes of each service, sampled from the router's own metrics: what the
status page's chart draws and ``GET /v1/history`` answers.

Rules:

1. One named task the admin app owns (``admin:history``, :func:`history_context`, like
   the agents' refresh) takes a sample every ``interval`` seconds (``SAMPLE_SECONDS``)
   from ``router.metrics.REGISTRY`` and keeps at most ``POINTS`` per service: 180 x 5 s,
   the last 15 minutes. Memory is bounded by the config (services x backends x roots).
2. A point holds what happened during its interval: the counters' deltas per backend
   (``requests``; ``errors``: 5xx answers; backend ``none``: answered by the router
   itself), the p99 latency estimated from the histogram buckets' deltas (as
   Prometheus' ``histogram_quantile`` does; null without requests) and the replication
   lag per root as the gauge shows it (null: unknown, the gauge has no series). The first
   sample is only a baseline; a counter that went down (a series removed) counts from 0.
   The registry is the process's: deltas, never totals, so nothing else's counts leak in.
3. Marks come from the event feed (subscribed while the app runs): a service entering
   PROMOTING is a ``switchover`` when an operator asked (cause ``admin``), else a
   ``failover``; entering DEGRADED is ``degraded``. Marks older than the window go.
4. The arithmetic (:func:`read_registry`, :func:`quantile`, :class:`History`) does no
   I/O and takes ``now``; only :class:`Sampler` touches the clock and the registry.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from hotspare.causes import Cause
from router import metrics
from router.failover.feed import FeedEvent, StateChanged

if TYPE_CHECKING:
    from router.admin.control import RouterControl

__all__ = ["POINTS", "SAMPLE_SECONDS", "History", "Reading", "Sampler", "history_context", "quantile",
           "read_registry"]

log = logging.getLogger("hotspare.admin")

SAMPLE_SECONDS = 5.0
POINTS = 180
MARKS = 100  # per router: far more failovers than 15 minutes can hold
_MARK_KINDS = {"promoting": "failover", "degraded": "degraded"}

Key = tuple[str, str]  # (service, backend) or (service, root)
Buckets = tuple[tuple[float, float], ...]  # (upper bound, cumulative count), +Inf last


@dataclass(slots=True)
class Reading:
    """The registry's numbers at one moment (cumulative, as exported)."""

    requests: dict[Key, float] = field(default_factory=dict)
    errors: dict[Key, float] = field(default_factory=dict)
    buckets: dict[Key, Buckets] = field(default_factory=dict)
    lag: dict[Key, float] = field(default_factory=dict)


def read_registry(registry: CollectorRegistry) -> Reading:
    """Sum the request counters over method, group the latency buckets, copy the lag."""
    out = Reading()
    raw: dict[Key, list[tuple[float, float]]] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name == "hotspare_requests_total":
                key = (s.labels["service"], s.labels["backend"])
                out.requests[key] = out.requests.get(key, 0.0) + s.value
                if s.labels.get("code") == "5xx":
                    out.errors[key] = out.errors.get(key, 0.0) + s.value
            elif s.name == "hotspare_request_duration_seconds_bucket":
                key = (s.labels["service"], s.labels["backend"])
                raw.setdefault(key, []).append((float(s.labels["le"]), s.value))
            elif s.name == "hotspare_replication_lag_seconds":
                out.lag[(s.labels["service"], s.labels["root"])] = s.value
    out.buckets = {k: tuple(sorted(v)) for k, v in raw.items()}
    return out


def quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q`` quantile of cumulative ``buckets``, linearly inside its bucket; the
    largest finite bound when it falls in +Inf; None without observations."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = bound, count
    return lower


def _delta(now: float, before: float) -> float:
    return now - before if now >= before else now  # a removed series starts again at 0


def _bucket_delta(now: Buckets, before: Buckets | None) -> Buckets:
    if not before or len(before) != len(now):
        return now if before is None else ()
    return tuple((b, _delta(c, p)) for (b, c), (_, p) in zip(now, before, strict=True))


class History:
    """The rings of points and the marks (rules 2 and 3); no I/O."""

    def __init__(self, interval: float = SAMPLE_SECONDS, points: int = POINTS) -> None:
        self.interval = interval
        self.points = points
        self._base: tuple[float, Reading] | None = None
        self._rings: dict[str, deque[dict[str, Any]]] = {}
        self._marks: deque[dict[str, Any]] = deque(maxlen=MARKS)

    @property
    def window(self) -> float:
        return self.interval * self.points

    def add(self, now: float, reading: Reading, services: Mapping[str, Sequence[str]], roots: Sequence[str]) -> None:
        """One sample: a point per service from the deltas since the last one."""
        base, self._base = self._base, (now, reading)
        if base is None:
            return  # rule 2: the baseline
        then, before = base
        for name, configured in services.items():
            seen = [b for (s, b) in reading.requests if s == name and b not in configured]
            point: dict[str, Any] = {"at": now, "seconds": round(now - then, 3),
                                     "requests": {}, "errors": {}, "p99_ms": {}, "lag_seconds": {}}
            for b in [*configured, *sorted(seen)]:
                key = (name, b)
                point["requests"][b] = round(_delta(reading.requests.get(key, 0.0), before.requests.get(key, 0.0)))
                point["errors"][b] = round(_delta(reading.errors.get(key, 0.0), before.errors.get(key, 0.0)))
                p99 = quantile(0.99, _bucket_delta(reading.buckets.get(key, ()), before.buckets.get(key)))
                point["p99_ms"][b] = None if p99 is None else round(p99 * 1000, 3)
            for r in roots:
                point["lag_seconds"][r] = reading.lag.get((name, r))
            ring = self._rings.setdefault(name, deque(maxlen=self.points))
            ring.append(point)
        for gone in set(self._rings) - set(services):
            del self._rings[gone]  # a service a reload removed

    def mark(self, event: FeedEvent) -> None:
        """A feed subscriber (rule 3): keep failovers, switchovers and degradations."""
        if not isinstance(event, StateChanged) or event.new not in _MARK_KINDS or event.service is None:
            return
        kind = _MARK_KINDS[event.new]
        if kind == "failover" and event.cause is Cause.ADMIN:
            kind = "switchover"
        self._marks.append({"at": event.at, "kind": kind, "service": event.service,
                            "message": event.message, "active": event.active, "epoch": event.epoch})

    def view(self, now: float) -> dict[str, Any]:
        """The ``GET /v1/history`` document."""
        start = now - self.window
        services = []
        for name, ring in self._rings.items():
            points = [p for p in ring if p["at"] >= start]
            services.append({
                "name": name,
                "backends": list(points[-1]["requests"]) if points else [],
                "roots": list(points[-1]["lag_seconds"]) if points else [],
                "points": points,
                "marks": [m for m in self._marks if m["service"] == name and m["at"] >= start],
            })
        return {"generated_at": now, "interval_seconds": self.interval, "window_seconds": self.window,
                "services": services}


class Sampler:
    """The I/O shell (rule 4): the clock, the registry, the router's config."""

    def __init__(self, interval: float | None = None) -> None:
        self.history = History(SAMPLE_SECONDS if interval is None else interval)

    def sample(self, router: RouterControl) -> None:
        config = router.config
        services = {s.name: [b.name for b in s.backends] for s in config.services}
        roots = [r.name for r in config.replication.roots] if config.replication else []
        self.history.add(time.time(), read_registry(metrics.REGISTRY), services, roots)

    async def run(self, router: RouterControl) -> None:
        for event in router.events.recent(None, MARKS):
            self.history.mark(event)
        unsubscribe = router.events.subscribe(self.history.mark)
        try:
            while True:
                try:
                    self.sample(router)
                except Exception:  # a bug in one sample must not end the history
                    log.exception("history sample failed")
                await asyncio.sleep(self.history.interval)  # pacing, not a wait for a condition
        finally:
            unsubscribe()


def history_context(sampler: Sampler, router: RouterControl) -> Callable[[Any], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` entry: the sampling task lives as long as the app."""

    async def ctx(app: Any) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(sampler.run(router), name="admin:history")
        try:
            yield
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    return ctx
