"""The status page's chart of one service's last minutes: history in, inline SVG out.

Rules:

1. Pure: :func:`render_chart` takes one service of ``GET /v1/history``
   (:mod:`.history`), the window and ``now``, and returns HTML text; no clock, no I/O.
2. Four panels on one time axis, ``now - window`` to ``now``: requests/s, 5xx errors/s
   and p99 latency per backend, replication lag per root. A missing value (no request in
   the interval, lag unknown) is a gap in its line, never a zero.
3. Failovers, switchovers and degradations are vertical lines across every panel,
   labelled with their kind and time (``data-kind``, ``data-at``; the feed's message as
   the tooltip).
4. Inline only (the page's rule 2): no ``xmlns`` URL, no external font or script. The
   data drawn is embedded as ``<script type="application/json" class="chart-data">``
   so a test (or a person) can check the drawing against ``/metrics``.
5. Every text from the history is escaped (backend and root names come from config).
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = ["COLORS", "nice_ceiling", "render_chart"]

WIDTH, LEFT, RIGHT = 1000, 64, 16
TOP, PANEL, GAP, BOTTOM = 30, 84, 30, 24
COLORS = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2", "#a16207")
NONE_COLOR = "#6b7280"  # requests the router answered itself
MARK_COLORS = {"failover": "#b3261e", "switchover": "#2563eb", "degraded": "#9a6200"}

Series = tuple[str, str, list[tuple[float, float | None]]]  # (label, colour, (at, value))


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 x 10^k at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    return float(next(m * exp for m in (1, 2, 2.5, 5, 10) if m * exp >= value))


def _fmt(value: float) -> str:
    return f"{value:g}" if value < 10_000 else f"{value / 1000:g}k"


def _colors(names: Sequence[str]) -> dict[str, str]:
    out, i = {}, 0
    for n in names:
        if n == "none":
            out[n] = NONE_COLOR
        else:
            out[n], i = COLORS[i % len(COLORS)], i + 1
    return out


def _series(points: Sequence[Mapping[str, Any]], names: Sequence[str], colors: Mapping[str, str],
            value: Callable[[Mapping[str, Any], str], float | None]) -> list[Series]:
    return [(n, colors[n], [(float(p["at"]), value(p, n)) for p in points]) for n in names]


def _rate(field: str) -> Callable[[Mapping[str, Any], str], float | None]:
    def f(p: Mapping[str, Any], name: str) -> float | None:
        count, seconds = p.get(field, {}).get(name), p.get("seconds") or 0
        return None if count is None or seconds <= 0 else float(count) / float(seconds)
    return f


def _plain(field: str, scale: float = 1.0) -> Callable[[Mapping[str, Any], str], float | None]:
    def f(p: Mapping[str, Any], name: str) -> float | None:
        v = p.get(field, {}).get(name)
        return None if v is None else float(v) * scale
    return f


def _lines(series: Iterable[Series], x: Callable[[float], float], y: Callable[[float], float]) -> list[str]:
    out = []
    for label, color, values in series:
        runs: list[list[str]] = [[]]
        for at, v in values:
            if v is None:
                runs.append([])
            else:
                runs[-1].append(f"{x(at):.1f},{y(v):.1f}")
        for run in (r for r in runs if r):
            if len(run) == 1:  # one point between gaps: a dot, not an invisible line
                cx, cy = run[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
            else:
                out.append(f'<polyline class="series" data-series="{_e(label)}" fill="none" '
                           f'stroke="{color}" stroke-width="1.8" points="{" ".join(run)}"/>')
    return out


def _panel(top: float, title: str, series: list[Series], x: Callable[[float], float]) -> list[str]:
    values = [v for _, _, vs in series for _, v in vs if v is not None]
    ymax = nice_ceiling(max(values, default=0.0))

    def y(v: float) -> float:
        return top + PANEL - min(v, ymax) / ymax * PANEL

    right = WIDTH - RIGHT
    out = [
        f'<text x="{LEFT}" y="{top - 8}" class="title">{_e(title)}</text>',
        f'<rect x="{LEFT}" y="{top}" width="{right - LEFT}" height="{PANEL}" class="plot"/>',
        f'<line x1="{LEFT}" x2="{right}" y1="{top + PANEL / 2}" y2="{top + PANEL / 2}" class="grid"/>',
        f'<text x="{LEFT - 6}" y="{top + 10}" class="ylabel">{_fmt(ymax)}</text>',
        f'<text x="{LEFT - 6}" y="{top + PANEL / 2 + 4}" class="ylabel">{_fmt(ymax / 2)}</text>',
        f'<text x="{LEFT - 6}" y="{top + PANEL}" class="ylabel">0</text>',
    ]
    if not values:
        out.append(f'<text x="{(LEFT + right) / 2}" y="{top + PANEL / 2 + 4}" class="nodata">no data</text>')
    return out + _lines(series, x, y)


def _marks(marks: Iterable[Mapping[str, Any]], x: Callable[[float], float], bottom: float,
           start: float, clock: Callable[[float], str]) -> list[str]:
    out = []
    for m in marks:
        at = m.get("at")
        if not isinstance(at, (int, float)) or at < start:
            continue
        kind = str(m.get("kind") or "event")
        color = MARK_COLORS.get(kind, "#444")
        px = x(float(at))
        anchor = "end" if px > WIDTH - 160 else "start"
        out.append(
            f'<g class="mark mark-{_e(kind)}" data-kind="{_e(kind)}" data-at="{at}">'
            f"<title>{_e(m.get('message') or kind)}</title>"
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP - 18}" y2="{bottom}" stroke="{color}" '
            'stroke-width="1.5" stroke-dasharray="4 3"/>'
            f'<text x="{px + (3 if anchor == "start" else -3):.1f}" y="{TOP - 20}" text-anchor="{anchor}" '
            f'fill="{color}" class="marklabel">{_e(kind)} {_e(clock(float(at)))}</text></g>')
    return out


def _axis(bottom: float, start: float, window: float, x: Callable[[float], float],
          clock: Callable[[float], str]) -> list[str]:
    out = []
    for i in range(6):
        at = start + window * i / 5
        anchor = "start" if i == 0 else ("end" if i == 5 else "middle")
        out.append(f'<text x="{x(at):.1f}" y="{bottom + 16}" text-anchor="{anchor}" class="xlabel">'
                   f"{_e(clock(at))}</text>")
    return out


def _legend(names: Sequence[str], colors: Mapping[str, str], roots: Sequence[str],
            root_colors: Mapping[str, str]) -> str:
    items = [f'<span class="swatch" style="background:{colors[n]}"></span>'
             f"{_e('router itself' if n == 'none' else n)}" for n in names]
    items += [f'<span class="swatch" style="background:{root_colors[r]}"></span>lag {_e(r)}' for r in roots]
    return '<div class="legend">' + " ".join(items) + "</div>"


def render_chart(service: Mapping[str, Any], window: float, now: float,
                 clock: Callable[[float], str] = _clock) -> str:
    """One service's chart (rules 1-5)."""
    points = [p for p in service.get("points") or [] if isinstance(p, Mapping)]
    names = [str(n) for n in service.get("backends") or []]
    roots = [str(r) for r in service.get("roots") or []]
    colors, root_colors = _colors(names), _colors(roots)
    start = now - window

    def x(at: float) -> float:
        return LEFT + max(0.0, min(1.0, (at - start) / window)) * (WIDTH - LEFT - RIGHT)

    panels = [
        ("requests/s", _series(points, names, colors, _rate("requests"))),
        ("errors/s (5xx)", _series(points, names, colors, _rate("errors"))),
        ("p99 latency (ms)", _series(points, names, colors, _plain("p99_ms"))),
        ("replication lag (s; gap = unknown)", _series(points, roots, root_colors, _plain("lag_seconds"))),
    ]
    body: list[str] = []
    for i, (title, series) in enumerate(panels):
        body += _panel(TOP + GAP + i * (PANEL + GAP), title, series, x)
    bottom = TOP + GAP + len(panels) * (PANEL + GAP) - GAP
    body += _marks(service.get("marks") or [], x, bottom, start, clock)
    body += _axis(bottom, start, window, x, clock)
    height = bottom + BOTTOM
    data = json.dumps({"name": service.get("name"), "window_seconds": window, "points": points,
                       "marks": service.get("marks") or []}, separators=(",", ":")).replace("<", "\\u003c")
    minutes = f"{window / 60:g} min" if window >= 60 else f"{window:g} s"
    return (
        f'<figure class="chart" data-service="{_e(service.get("name"))}">'
        f"<figcaption>Last {_e(minutes)}</figcaption>"
        f"{_legend(names, colors, roots, root_colors)}"
        f'<svg viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
        f'aria-label="{_e(service.get("name"))}: last {_e(minutes)}">' + "".join(body) + "</svg>"
        f'<script type="application/json" class="chart-data">{data}</script></figure>'
    )
