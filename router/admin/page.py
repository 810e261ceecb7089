"""The status page at the admin root: ``render_status_page(snapshot) -> str``.

Rules:

1. The page is drawn from exactly the JSON that ``GET /v1/status`` returns (and, for
   its charts, ``GET /v1/history``: :mod:`.chart`), so the page and the API can never
   disagree. Keys beyond DESIGN.md's minimum (``name``, ``active``, ``epoch``, ``state``,
   ``backends[].name/url/healthy``) are optional; a missing one shows as a dash, never
   as an error.
2. No external assets: styles and the refresh script are inline; the page works
   offline, behind a proxy and on a laptop with no network.
3. It refreshes itself every ``REFRESH_SECONDS``: a small script fetches the page again
   and swaps the ``#status`` block (no flicker, the scroll position stays); without
   JavaScript a ``<noscript>`` meta refresh does the same. If the router stops
   answering, the page says so instead of freezing on stale data.
4. Every value from the snapshot is HTML-escaped: backend names and event messages come
   from config files and logs, not from us.
5. A router of a pair shows a Cluster panel first (:mod:`.clusterpage`): etcd's health,
   the decider of each service, each router's view of each backend.
6. Nothing unknown looks healthy: a spare's lag that is not known reads "unknown (why)"
   (:func:`lag_text`, shared with ``hotspare status``), and every alarm comes with what
   to do and its runbook section (``alarm_hints``, :mod:`.hints`).

Optional snapshot keys understood here (``/v1/status`` may add more)::

    {"generated_at": 1700000000.0,                 # unix seconds
     "services": [{
        "name": "app", "active": "a", "epoch": 3, "state": "active",
        "held_requests": 0, "fencing_on_hold": false,
        "spare": {"name": "b", "ready": true, "reasons": []},
        "backends": [{"name": "a", "url": "http://...", "healthy": true,
                      "role": "active", "last_probe": {"ok": true, "at": 1700000000.0,
                      "detail": "200 in 3 ms"},
                      "replication": {"lag_seconds": 0.4, "roots": {"jobs": 0.4}}}],
        "events": [{"at": 1700000000.0, "kind": "failover", "message": "..."}]}],
     "events": [...],                              # router-wide events
     "cluster": {...} | null}                      # a pair: router/admin/clusterpage.py
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping
from importlib import resources
from string import Template
from typing import Any

from .chart import render_chart
from .clusterpage import render_cluster
from .status import SPARE_LAG_LIMIT_SECONDS

__all__ = [
    "REFRESH_SECONDS",
    "backend_lag",
    "format_lag",
    "lag_text",
    "render_status_page",
    "spare_readiness",
]

REFRESH_SECONDS = 2
MAX_EVENTS = 20

_STATE_CLASS = {"active": "ok", "promoting": "warn", "degraded": "bad", "fence_hold": "bad"}


def _e(value: object) -> str:
    return html.escape("—" if value is None or value == "" else str(value), quote=True)


def _fmt_time(ts: object) -> str:
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def format_lag(lag: object) -> str:
    if not isinstance(lag, (int, float)) or isinstance(lag, bool):
        return "—"
    if lag < 1:
        return f"{lag * 1000:.0f} ms"
    if lag < 120:
        return f"{lag:.1f} s"
    return f"{lag / 60:.1f} min"


def _clock(ts: object) -> str:
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        return "?"
    return time.strftime("%H:%M:%S", time.localtime(ts))


def lag_text(backend: Mapping[str, Any], is_active: bool) -> str:
    """A backend's replication lag for people (rule 5): ``source`` for the active, a
    dash with no agent, a duration when its agent said one, else ``unknown (why)``."""
    if is_active:
        return "source"
    repl = backend.get("replication")
    if not isinstance(repl, Mapping):
        return "unknown (agent not asked yet)" if backend.get("agent") else "—"
    if repl.get("reachable") is False:
        since = repl.get("unreachable_since")
        return f"unknown (agent unreachable since {_clock(since)})" if since else "unknown (agent unreachable)"
    if repl.get("error"):
        return f"unknown (agent: {str(repl['error'])[:100]})"
    if repl.get("role") not in (None, "sink"):
        return f"unknown (agent is {repl.get('role')}, not mirroring)"
    lag = backend_lag(backend)
    return "unknown (agent gave no lag)" if lag is None else format_lag(lag)


def backend_lag(backend: Mapping[str, Any]) -> float | None:
    repl = backend.get("replication")
    if isinstance(repl, Mapping):
        lag = repl.get("lag_seconds")
        if isinstance(lag, (int, float)) and not isinstance(lag, bool):
            return float(lag)
        roots = repl.get("roots")
        if isinstance(roots, Mapping):
            lags = [float(v) for v in roots.values() if isinstance(v, (int, float))]
            if lags:
                return max(lags)
    return None


def spare_readiness(service: Mapping[str, Any]) -> tuple[str | None, bool, list[str]]:
    """(spare name, ready?, reasons it is not). Uses ``service["spare"]`` when the router
    gives it; otherwise derives it: a spare is ready when it passes its health checks and
    its files are no more than ``SPARE_LAG_LIMIT_SECONDS`` behind."""
    given = service.get("spare")
    if isinstance(given, Mapping):
        reasons = [str(r) for r in given.get("reasons") or []]
        return (given.get("name"), bool(given.get("ready")), reasons)
    active = service.get("active")
    spares = [b for b in service.get("backends") or [] if b.get("name") != active]
    if not spares:
        return (None, False, ["no spare configured"])
    spare = spares[0]
    reasons = []
    if spare.get("healthy") is None:
        reasons.append("not probed yet")
    elif not spare.get("healthy"):
        reasons.append("failing its health checks")
    lag = backend_lag(spare)
    if lag is not None and lag > SPARE_LAG_LIMIT_SECONDS:
        reasons.append(f"files {format_lag(lag)} behind")
    return (spare.get("name"), not reasons, reasons)


def _backend_rows(service: Mapping[str, Any]) -> str:
    rows = []
    active = service.get("active")
    for b in service.get("backends") or []:
        is_active = b.get("name") == active
        role = b.get("role") or ("active" if is_active else "spare")
        healthy = b.get("healthy")
        health = "up" if healthy else ("down" if healthy is not None else "—")
        health_cls = "ok" if healthy else "bad"
        probe = b.get("last_probe") if isinstance(b.get("last_probe"), Mapping) else {}
        probe_text = _e(probe.get("detail")) if probe else "—"
        if probe and probe.get("at") is not None:
            probe_text += f' <span class="dim">at {_e(_fmt_time(probe.get("at")))}</span>'
        lag = lag_text(b, is_active)
        lag_cls = "warn" if lag.startswith("unknown") else ""
        rows.append(
            f'<tr class="{"active" if is_active else ""}" data-backend="{_e(b.get("name"))}">'
            f"<td>{_e(b.get('name'))}{' ★' if is_active else ''}</td>"
            f"<td>{_e(role)}</td>"
            f'<td class="{health_cls}">{health}</td>'
            f"<td><code>{_e(b.get('url'))}</code></td>"
            f"<td>{probe_text}</td>"
            f'<td class="lag {lag_cls}">{_e(lag)}</td>'
            "</tr>"
        )
    return "\n".join(rows)


def _events(events: Iterable[Any]) -> str:
    items = [e for e in events if isinstance(e, Mapping)]
    items.sort(key=lambda e: e.get("at") or 0, reverse=True)
    if not items:
        return '<p class="dim">No events yet.</p>'
    lis = [
        f'<li><span class="dim">{_e(_fmt_time(ev.get("at")))}</span> '
        f'<b>{_e(ev.get("kind") or "event")}</b>'
        f"{' [' + _e(ev.get('service')) + ']' if ev.get('service') else ''} "
        f"{_e(ev.get('message'))}</li>"
        for ev in items[:MAX_EVENTS]
    ]
    return '<ul class="events">' + "".join(lis) + "</ul>"


def _alarms(service: Mapping[str, Any]) -> str:
    """Each alarm with its hint (rule 5); the hints are the router's, paired by position."""
    alarms = [str(a) for a in service.get("alarms") or []]
    if not alarms:
        return ""
    hints = [h if isinstance(h, Mapping) else {} for h in service.get("alarm_hints") or []]
    items = []
    for i, alarm in enumerate(reversed(alarms)):  # newest first, as the events
        h = hints[len(alarms) - 1 - i] if len(alarms) - 1 - i < len(hints) else {}
        todo = (f'<br><span class="todo">What to do: {_e(h.get("todo"))} '
                f'(read <code>{_e(h.get("runbook"))}</code>)</span>') if h.get("todo") else ""
        items.append(f'<li class="alarm"><b class="bad">ALARM</b> {_e(alarm)}{todo}</li>')
    return '<h3>Alarms</h3><ul class="alarms">' + "".join(items) + "</ul>"


def _chart(service: Mapping[str, Any], history: Mapping[str, Any] | None) -> str:
    if not history:
        return ""
    mine = next((h for h in history.get("services") or [] if isinstance(h, Mapping)
                 and h.get("name") == service.get("name")), None)
    if mine is None:
        return ""
    now = float(history.get("generated_at") or time.time())
    return render_chart(mine, float(history.get("window_seconds") or 900), now)


def _service_section(service: Mapping[str, Any], history: Mapping[str, Any] | None = None) -> str:
    state = str(service.get("state") or "unknown")
    spare, ready, reasons = spare_readiness(service)
    spare_text = (
        f'<span class="ok">ready</span> ({_e(spare)})'
        if ready
        else f'<span class="bad">NOT ready</span> ({_e(spare)}: {_e("; ".join(reasons))})'
    )
    extra = []
    held = service.get("held_requests")
    if isinstance(held, int) and held > 0:
        extra.append(f'<span class="warn">{held} request(s) held</span>')
    if service.get("fencing_on_hold") or state == "fence_hold":
        extra.append('<span class="bad">fencing on hold: operator action needed</span>')
    return f"""
<section class="service" data-service="{_e(service.get("name"))}">
  <h2>{_e(service.get("name"))}
    <span class="state {_STATE_CLASS.get(state, "warn")}">{_e(state.upper())}</span></h2>
  <dl>
    <dt>Active</dt><dd class="active-name">{_e(service.get("active"))}</dd>
    <dt>Epoch</dt><dd>{_e(service.get("epoch"))}</dd>
    <dt>Spare</dt><dd class="spare">{spare_text}</dd>
  </dl>
  {"<p>" + " · ".join(extra) + "</p>" if extra else ""}
  {_alarms(service)}
  <table>
    <thead><tr><th>Backend</th><th>Role</th><th>Health</th><th>URL</th>
      <th>Last probe</th><th>Replication lag</th></tr></thead>
    <tbody>
{_backend_rows(service)}
    </tbody>
  </table>
  {_chart(service, history)}
  <h3>Recent events</h3>
  {_events(service.get("events") or [])}
</section>"""


def render_status_page(snapshot: Mapping[str, Any], history: Mapping[str, Any] | None = None) -> str:
    """The whole HTML page for one ``/v1/status`` snapshot (and ``/v1/history``)."""
    services = [s for s in snapshot.get("services") or [] if isinstance(s, Mapping)]
    sections = render_cluster(snapshot.get("cluster"))  # "" for a router alone
    sections += "\n".join(_service_section(s, history) for s in services) or "<p>No services.</p>"
    router_events = snapshot.get("events") or []
    if router_events:
        sections += "\n<section><h2>Router events</h2>" + _events(router_events) + "</section>"
    generated = snapshot.get("generated_at")
    template = Template(
        resources.files("router.admin").joinpath("statuspage.html").read_text(encoding="utf-8")
    )
    return template.substitute(
        refresh=REFRESH_SECONDS,
        refresh_ms=REFRESH_SECONDS * 1000,
        generated=_e(_fmt_time(generated if generated is not None else time.time())),
        sections=sections,
        title=_e(" / ".join(f"{s.get('name')}: {s.get('active')}" for s in services) or "hotspare"),
    )
