"""What ``GET /v1/status`` (and the status page, and ``hotspare status``) show.

Rules:

1. :func:`build_status` reads only snapshots: ``router.statistics()`` (the DESIGN fields),
   each controller's machine and health checker, the agent freshness cache and the event
   log. It does no I/O and never waits, so a dead agent never slows the status.
2. Agents' replication freshness comes from their own ``GET /v1/status`` (bearer
   replication token). :class:`AgentFreshness` keeps the last answer of each agent and
   refreshes at most every ``ttl`` seconds in ONE named task it owns (single flight);
   each fetch is bounded by ``timeout``. A caller may wait a short while for a refresh
   (:meth:`AgentFreshness.refresh`), never longer than it asked.
3. Recent events are the operator lines the failover controller and the health checker
   already log (state changes, alarms, backends DOWN/UP), kept in a bounded ring by a
   logging handler (:class:`EventLog`), plus what the admin API itself did.
4. Alarms and events are shown without a token: they pass the DSN/NAME=value redaction
   patterns of :mod:`promote.redact` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp

from promote.redact import Redactor
from router import metrics
from router.failover.machine import State
from router.health.detector import Health

if TYPE_CHECKING:
    from router.admin.control import RouterControl
    from router.failover.controller import ServiceController

__all__ = ["AgentFreshness", "EventLog", "build_status", "spare_status"]

# A spare whose files are further behind than this is not called ready.
SPARE_LAG_READY_SECONDS = 30.0
EVENT_LOGGERS = ("hotspare.failover", "hotspare.health", "hotspare.admin")
# Patterns only (DSN passwords, NAME=value secrets): what reaches /v1/status needs no token.
_SCRUB = Redactor()
_SERVICE_PREFIX = re.compile(r"^service (?P<service>[^:\s]+):? (?P<message>.*)$", re.S)


# -- events ---------------------------------------------------------------------------------


class EventLog(logging.Handler):
    """The last ``size`` operator lines (WARNING and above) of the failover, health and
    admin loggers, as ``{"at", "kind", "service", "message"}``."""

    def __init__(self, size: int = 100) -> None:
        super().__init__(logging.WARNING)
        self.events: deque[dict[str, Any]] = deque(maxlen=size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: set[asyncio.Future[None]] = set()

    async def next_event(self) -> None:
        """Returns after the next event is recorded (for callers waiting on a change)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            await fut
        finally:
            self._waiters.discard(fut)

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string in a log call must not break the router
            text = str(record.msg)
        m = _SERVICE_PREFIX.match(text)
        service, message = (m["service"], m["message"]) if m else (None, text)
        kind = record.name.rsplit(".", 1)[-1]
        if record.levelno >= logging.ERROR:
            kind = "alarm" if "ALARM" in message else "error"
        message = _SCRUB.text(message)  # events are shown without a token
        self.events.append({"at": record.created, "kind": kind, "service": service, "message": message})
        if self._loop is not None and self._waiters:
            self._loop.call_soon_threadsafe(self._wake)

    def attach(self) -> None:
        self._loop = asyncio.get_running_loop()
        for name in EVENT_LOGGERS:
            logging.getLogger(name).addHandler(self)

    def detach(self) -> None:
        for name in EVENT_LOGGERS:
            logging.getLogger(name).removeHandler(self)

    def for_service(self, service: str, limit: int = 20) -> list[dict[str, Any]]:
        return [e for e in self.events if e["service"] == service][-limit:]

    def router_wide(self, services: Iterable[str], limit: int = 20) -> list[dict[str, Any]]:
        names = set(services)
        return [e for e in self.events if e["service"] is None or e["service"] not in names][-limit:]


# -- agents -----------------------------------------------------------------------------------


def summarize_agent(body: Any) -> dict[str, Any]:
    """An agent's ``/v1/status`` reduced to what the router shows: its role and, for each
    root it mirrors, the lag; ``lag_seconds`` is the worst root's."""
    if not isinstance(body, Mapping):
        return {"reachable": True, "error": f"unexpected answer {str(body)[:80]!r}"}
    roots: dict[str, float] = {}
    in_sync = True
    pending = 0
    errors = []
    for r in body.get("roots") or []:
        if not isinstance(r, Mapping) or r.get("role") != "sink":
            continue
        lag = r.get("lag_seconds")
        if isinstance(lag, (int, float)) and not isinstance(lag, bool):
            roots[str(r.get("name"))] = float(lag)
        in_sync = in_sync and bool(r.get("in_sync"))
        pending += int(r.get("pending") or 0)
        if r.get("error"):
            errors.append(f"{r.get('name')}: {r.get('error')}")
    mirroring = body.get("role") == "sink"
    return {
        "reachable": True,
        "role": body.get("role"),
        "epoch": body.get("epoch"),
        "in_sync": in_sync if mirroring else None,
        "pending": pending if mirroring else None,
        "lag_seconds": max(roots.values()) if roots else None,
        "roots": roots,
        "error": "; ".join(errors) or None,
    }


class AgentFreshness:
    """Last known status of every agent named in the config, refreshed on demand."""

    def __init__(self, ttl: float = 1.0, timeout: float = 1.0) -> None:
        self.ttl = ttl
        self.timeout = timeout
        self._cache: dict[str, dict[str, Any]] = {}  # agent URL -> summary (+ checked_at)
        self._fetched_at = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def get(self, agent_url: str) -> dict[str, Any] | None:
        return self._cache.get(agent_url)

    async def refresh(self, router: RouterControl, wait: float) -> None:
        """Start a refresh if the cache is older than ``ttl`` (one at a time) and wait
        for it at most ``wait`` seconds; the cache keeps what it had meanwhile."""
        loop = asyncio.get_running_loop()
        if self._task is None and loop.time() - self._fetched_at >= self.ttl:
            self._task = loop.create_task(self._fetch_all(router), name="admin:agent-status")
            self._task.add_done_callback(self._done)
        if self._task is not None and wait > 0:
            # shield: a caller that stops waiting must not cancel the shared refresh
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), wait)

    def _done(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None
        if not task.cancelled() and task.exception() is not None:
            logging.getLogger("hotspare.admin").error("agent status refresh failed: %r", task.exception())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _fetch_all(self, router: RouterControl) -> None:
        config = router.config
        if config.replication is None:
            self._fetched_at = asyncio.get_running_loop().time()
            return
        token = config.replication.token
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        urls = sorted({b.agent for s in config.services for b in s.backends if b.agent})
        results = await asyncio.gather(*(self._fetch(u, token) for u in urls))
        self._cache = dict(zip(urls, results, strict=True))
        self._fetched_at = asyncio.get_running_loop().time()

    async def _fetch(self, url: str, token: str | None) -> dict[str, Any]:
        assert self._session is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        checked = time.time()
        try:
            async with self._session.get(url.rstrip("/") + "/v1/status", headers=headers) as r:
                if r.status != 200:
                    text = (await r.text())[:200]
                    return {"reachable": True, "checked_at": checked,
                            "error": f"agent answered {r.status}: {text}"}
                body = await r.json(content_type=None)
        except TimeoutError:
            return {"reachable": False, "checked_at": checked, "error": f"no answer within {self.timeout:g}s"}
        except (aiohttp.ClientError, ValueError) as exc:
            return {"reachable": False, "checked_at": checked,
                    "error": f"unreachable: {type(exc).__name__}: {exc}".rstrip(": ")}
        return {**summarize_agent(body), "checked_at": checked}


# -- the document -----------------------------------------------------------------------------


def _probe_view(ctl: ServiceController, backend: str) -> tuple[bool | None, dict[str, Any] | None]:
    """(healthy, last_probe) from the health checker; (None, None) before any probe."""
    if not ctl.checker.started:
        return None, None
    prober = ctl.checker.prober(backend)
    snap = prober.detector.snapshot()
    if snap.probe_failures == 0 and snap.probe_successes == 0 and prober.probes_sent == 0:
        return None, None
    detail = snap.last_detail or (f"{snap.probe_successes} good in a row" if snap.probe_successes else "")
    return snap.health is not Health.DOWN, {
        "ok": snap.probe_failures == 0,
        "health": snap.health.value,
        "detail": detail or "-",
        "failures": snap.probe_failures,
        "successes": snap.probe_successes,
        "probes_sent": prober.probes_sent,
    }


def spare_status(active: str, backends: list[dict[str, Any]], has_agents: bool) -> dict[str, Any]:
    """Is the spare ready to take over? (name, ready, reasons it is not)."""
    spares = [b for b in backends if b["name"] != active]
    if not spares:
        return {"name": None, "ready": False, "reasons": ["no spare configured"]}
    spare = spares[0]
    reasons = []
    if spare.get("maintenance"):
        reasons.append("in maintenance (drained by an operator)")
    if spare["healthy"] is None:
        reasons.append("not probed yet")
    elif not spare["healthy"]:
        reasons.append("failing its health checks")
    repl = spare.get("replication")
    if has_agents and repl is not None:
        if repl.get("error") and not repl.get("reachable", True):
            reasons.append(f"agent {repl['error']}")
        elif repl.get("role") not in (None, "sink"):
            reasons.append(f"agent role is {repl.get('role')}, not mirroring")
        else:
            lag = repl.get("lag_seconds")
            if isinstance(lag, (int, float)) and lag > SPARE_LAG_READY_SECONDS:
                reasons.append(f"files {lag:.0f}s behind")
    return {"name": spare["name"], "ready": not reasons, "reasons": reasons}


def build_status(
    router: RouterControl,
    agents: AgentFreshness | None = None,
    events: EventLog | None = None,
    maintenance: Mapping[tuple[str, str], float] | None = None,
) -> dict[str, Any]:
    stats = router.statistics()
    maintenance = maintenance or {}
    out = []
    for s in stats.services:
        ctl = router.controllers.get(s.name)
        backends: list[dict[str, Any]] = []
        for b in s.backends:
            healthy, probe = _probe_view(ctl, b.name) if ctl is not None else (b.healthy, None)
            cfg = next((bc for bc in router.config.service(s.name).backends if bc.name == b.name), None)
            repl = agents.get(cfg.agent) if (agents and cfg is not None and cfg.agent) else None
            backends.append({
                "name": b.name,
                "url": b.url,
                "healthy": healthy if probe is not None else b.healthy,
                "role": "active" if b.name == s.active else "spare",
                "maintenance": (s.name, b.name) in maintenance,
                "last_probe": probe,
                "agent": cfg.agent if cfg is not None else None,
                "replication": repl,
            })
        has_agents = any(b["agent"] for b in backends)
        spare = spare_status(s.active, backends, has_agents)
        for bv in backends:  # the router's view of replication, in the one registry
            lags = (bv["replication"] or {}).get("roots") if bv["name"] == spare["name"] else None
            for root, value in (lags or {}).items():
                metrics.REPLICATION_LAG.labels(s.name, root).set(value)
        snap = ctl.machine.snapshot() if ctl is not None else None
        out.append({
            "name": s.name,
            "active": s.active,
            "epoch": s.epoch,
            "state": s.state,
            "backends": backends,
            "held_requests": len(ctl.director.hold) if ctl is not None else 0,
            "fencing_on_hold": s.state == State.FENCE_HOLD.value,
            "target": snap.target if snap else None,
            "cause": snap.cause.value if snap and snap.cause else None,
            "spare": spare,
            "alarms": [_SCRUB.text(a) for a in s.alarms[-10:]],
            "events": events.for_service(s.name) if events else [],
        })
    names = [s.name for s in stats.services]
    return {
        "generated_at": time.time(),
        "services": out,
        "unfinished_promotions": list(stats.unfinished_promotions),
        "events": events.router_wide(names) if events else [],
    }
