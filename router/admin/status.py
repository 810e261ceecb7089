"""What ``GET /v1/status`` (and the status page, and ``hotspare status``) show.

Rules:

1. :func:`build_status` reads only snapshots: ``router.statistics()`` (the router's one
   snapshot: states, health, last probes, held requests, alarms), the agents' freshness
   as last fetched (agent URL -> summary; :mod:`.agents` refreshes it on its own timer),
   the maintenance flags and the router's typed event feed. It does no I/O and never
   waits, so a dead agent never slows the status.
2. Events come from the feed (:mod:`router.failover.feed`), shown as
   ``{"at", "kind", "service", "message"}``; nothing parses log lines.
3. Alarms and events are shown without a token: they pass the DSN/NAME=value redaction
   patterns of :mod:`promote.redact` first.
4. Next to ``alarms`` (``"code: message"``), ``alarm_hints`` gives, at the same
   position, ``{"code", "todo", "runbook"}``: what to do and the runbook section
   (:mod:`.hints`).
5. ``cluster`` is the pair as this router sees it (``router.cluster_statistics()``,
   docs/cluster.md): etcd's health, the members and each one's view of each backend,
   the decider of each service. It is ``null`` without a ``cluster:`` section. Endpoint
   URLs lose any user:password part; etcd's error passes the redaction patterns.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from promote.redact import Redactor

from .hints import alarm_hint

if TYPE_CHECKING:
    from router.admin.control import (
        BackendStatistics,
        ClusterStatistics,
        RouterControl,
        ServiceStatistics,
    )
    from router.failover.feed import FeedEvent

__all__ = ["SPARE_LAG_LIMIT_SECONDS", "build_status", "cluster_view", "event_view", "spare_status"]

# A spare whose files are further behind than this is not called ready, and a switchover
# to it is warned about: the one freshness threshold (status, page, plan, CLI).
SPARE_LAG_LIMIT_SECONDS = 30.0
EVENTS_SHOWN = 20  # per service, and router-wide
ALARMS_SHOWN = 10
# Patterns only (DSN passwords, NAME=value secrets): what reaches /v1/status needs no token.
_SCRUB = Redactor()

Replication = Mapping[str, Mapping[str, Any]]  # agent URL -> its last summary (.agents)


def event_view(event: FeedEvent) -> dict[str, Any]:
    """One feed event as the API shows it (redacted: events are shown without a token)."""
    return {"at": event.at, "kind": event.kind, "service": event.service, "message": _SCRUB.text(event.message)}


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
            if isinstance(lag, (int, float)) and lag > SPARE_LAG_LIMIT_SECONDS:
                reasons.append(f"files {lag:.0f}s behind")
    return {"name": spare["name"], "ready": not reasons, "reasons": reasons}


def _bare_url(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def cluster_view(c: ClusterStatistics | None) -> dict[str, Any] | None:
    """Rule 5: the ``cluster`` object of ``/v1/status`` (None without a cluster)."""
    if c is None:
        return None
    return {
        "name": c.name,
        "etcd": {"ok": c.etcd_ok, "endpoints": [_bare_url(e) for e in c.endpoints],
                 "error": None if c.etcd_error is None else _SCRUB.text(c.etcd_error)},
        "members": [{"name": m.name, "live": m.live, "admin": m.admin,
                     "views": {svc: dict(view) for svc, view in m.views.items()}} for m in c.members],
        "deciders": dict(c.deciders),
        "this_router_decides": list(c.decides),
    }


def _backend_view(
    s: ServiceStatistics, b: BackendStatistics, agent: str | None, replication: Replication,
    maintenance: Mapping[tuple[str, str], float],
) -> dict[str, Any]:
    p = b.probe
    return {
        "name": b.name,
        "url": b.url,
        "healthy": b.healthy,
        "role": "active" if b.name == s.active else "spare",
        "maintenance": (s.name, b.name) in maintenance,
        "last_probe": None if p is None else {
            "ok": p.ok, "health": p.health, "detail": p.detail,
            "failures": p.failures, "successes": p.successes, "probes_sent": p.probes_sent,
        },
        "agent": agent,
        "replication": replication.get(agent) if agent else None,
    }


def build_status(
    router: RouterControl,
    replication: Replication | None = None,
    maintenance: Mapping[tuple[str, str], float] | None = None,
) -> dict[str, Any]:
    stats = router.statistics()
    feed = router.events
    replication = replication or {}
    maintenance = maintenance or {}
    agents = {(sc.name, b.name): b.agent for sc in router.config.services for b in sc.backends}
    out = []
    for s in stats.services:
        backends = [_backend_view(s, b, agents.get((s.name, b.name)), replication, maintenance)
                    for b in s.backends]
        out.append({
            "name": s.name,
            "active": s.active,
            "epoch": s.epoch,
            "state": s.state,
            "backends": backends,
            "held_requests": s.held_requests,
            "fencing_on_hold": s.state == "fence_hold",
            "target": s.target,
            "cause": s.cause,
            "spare": spare_status(s.active, backends, any(b["agent"] for b in backends)),
            "alarms": [_SCRUB.text(a) for a in s.alarms[-ALARMS_SHOWN:]],
            "alarm_hints": [alarm_hint(a) for a in s.alarms[-ALARMS_SHOWN:]],
            "events": [event_view(e) for e in feed.recent(s.name, EVENTS_SHOWN)],
        })
    names = [s.name for s in stats.services]
    return {
        "generated_at": time.time(),
        "services": out,
        "unfinished_promotions": list(stats.unfinished_promotions),
        "events": [event_view(e) for e in feed.router_wide(names, EVENTS_SHOWN)],
        "cluster": cluster_view(router.cluster_statistics()),
    }
