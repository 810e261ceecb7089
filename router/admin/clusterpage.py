"""The status page's Cluster panel: ``render_cluster(snapshot["cluster"]) -> str``.

Rules:

1. Drawn from the ``cluster`` object of ``GET /v1/status`` only (:mod:`.status`, rule
   5); nothing at all without one (a router alone), so a single router's page is as
   before.
2. Nothing unknown looks healthy: etcd unreachable is a red banner with its error; a
   service nobody decides reads "nobody" in red; a member whose lease expired is "gone";
   a view neither up nor down (suspect, unknown, missing) is amber.
3. Every value is HTML-escaped: router and backend names come from config files on other
   machines, errors from the network.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

__all__ = ["render_cluster"]

_VIEW_CLASS = {"up": "ok", "down": "bad"}


def _e(value: object) -> str:
    return html.escape("—" if value is None or value == "" else str(value), quote=True)


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _columns(members: list[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Every (service, backend) any member has a view of, in first-seen order."""
    seen: dict[tuple[str, str], None] = {}
    for m in members:
        for svc, view in _map(m.get("views")).items():
            for backend in _map(view):
                seen[(str(svc), str(backend))] = None
    return list(seen)


def _view_cell(member: Mapping[str, Any], svc: str, backend: str) -> str:
    value = _map(_map(member.get("views")).get(svc)).get(backend)
    text = "—" if value is None else str(value)
    return f'<td class="view {_VIEW_CLASS.get(text, "warn")}">{_e(text)}</td>'


def _members(cluster: Mapping[str, Any]) -> str:
    members = [m for m in cluster.get("members") or [] if isinstance(m, Mapping)]
    if not members:
        return '<p class="bad">No member is registered in etcd (not even this router).</p>'
    cols = _columns(members)
    head = "".join(f"<th>{_e(s)}/{_e(b)}</th>" for s, b in cols)
    rows = []
    for m in members:
        here = " (this router)" if m.get("name") == cluster.get("name") else ""
        live = '<td class="ok">live</td>' if m.get("live") else '<td class="bad">gone</td>'
        cells = "".join(_view_cell(m, s, b) for s, b in cols)
        rows.append(f'<tr data-member="{_e(m.get("name"))}"><td>{_e(m.get("name"))}{here}</td>{live}'
                    f"<td><code>{_e(m.get('admin'))}</code></td>{cells}</tr>")
    return ("<table><thead><tr><th>Router</th><th>Lease</th><th>Admin</th>" + head +
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _deciders(cluster: Mapping[str, Any]) -> str:
    deciders = _map(cluster.get("deciders"))
    if not deciders:
        return '<p class="dim">No service.</p>'
    items = []
    for svc, router in deciders.items():
        if router is None:
            who = '<span class="bad">nobody</span> (no failover, no operator command until one is elected)'
        else:
            who = _e(router) + (" (this router)" if router == cluster.get("name") else "")
        items.append(f'<dt>{_e(svc)}</dt><dd class="decider" data-service="{_e(svc)}">{who}</dd>')
    return "<dl>" + "".join(items) + "</dl>"


def render_cluster(cluster: object) -> str:
    """The panel's HTML, or "" without a cluster (rule 1)."""
    if not isinstance(cluster, Mapping):
        return ""
    etcd = _map(cluster.get("etcd"))
    endpoints = ", ".join(str(e) for e in etcd.get("endpoints") or [])
    if etcd.get("ok"):
        health = f'<span class="ok">reachable</span> <span class="dim">({_e(endpoints)})</span>'
        banner = ""
    else:
        health = f'<span class="bad">UNREACHABLE</span> <span class="dim">({_e(endpoints)})</span>'
        banner = (f'<p class="bad etcd-down">etcd is unreachable from this router: {_e(etcd.get("error"))}. '
                  "It keeps forwarding to the last known active and will not fail over until etcd "
                  "answers again.</p>")
    return f"""
<section class="cluster" data-router="{_e(cluster.get("name"))}">
  <h2>Cluster <span class="dim">seen from {_e(cluster.get("name"))}</span></h2>
  {banner}
  <dl><dt>etcd</dt><dd class="etcd">{health}</dd></dl>
  <h3>Deciders</h3>
  {_deciders(cluster)}
  <h3>Routers and their view of each backend</h3>
  {_members(cluster)}
</section>"""
