"""The status page's chart: one service's history in, inline SVG out (router/admin/chart.py)."""

from __future__ import annotations

import json
import re
from typing import Any

from router.admin.chart import COLORS, NONE_COLOR, nice_ceiling, render_chart
from router.admin.page import render_status_page


def point(at: float, a: int, b: int = 0, errors: int = 0, p99: float | None = 12.5,
          lag: float | None = 0.5) -> dict[str, Any]:
    return {"at": at, "seconds": 5.0, "requests": {"a": a, "b": b}, "errors": {"a": errors, "b": 0},
            "p99_ms": {"a": p99, "b": None}, "lag_seconds": {"jobs": lag}}


def service(**over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "name": "app", "backends": ["a", "b"], "roots": ["jobs"],
        "points": [point(1000.0 + 5 * i, a=50) for i in range(10)],
        "marks": [{"at": 1020.0, "kind": "failover", "service": "app", "message": "promoting b in place of a",
                   "active": "a", "epoch": 1}],
    }
    s.update(over)
    return s


def clock(ts: float) -> str:
    return f"t{ts:g}"


def test_nice_ceiling() -> None:
    assert [nice_ceiling(v) for v in (0, 0.3, 1, 1.1, 2.2, 3, 7, 10, 11, 480)] == [1, 1, 1, 2, 2.5, 5, 10, 10, 20, 500]


def test_panels_lines_marks_and_axis() -> None:
    svg = render_chart(service(), window=60.0, now=1045.0, clock=clock)
    for title in ("requests/s", "errors/s (5xx)", "p99 latency (ms)", "replication lag (s; gap = unknown)"):
        assert f">{title}</text>" in svg
    # a's requests/s: 50 per 5 s = 10/s, on a 0..10 axis
    lines = re.findall(r'<polyline class="series" data-series="a" fill="none" stroke="([^"]+)"', svg)
    assert lines and set(lines) == {COLORS[0]}
    assert '<text x="58" y="70" class="ylabel">10</text>' in svg
    mark = re.search(r'<g class="mark mark-failover" data-kind="failover" data-at="1020.0">'
                     r"<title>promoting b in place of a</title>", svg)
    assert mark, svg
    assert ">failover t1020</text>" in svg
    assert ">t985</text>" in svg and ">t1045</text>" in svg  # the axis: now - window .. now
    assert "xmlns" not in svg and "http" not in svg  # inline only, nothing fetched


def test_missing_values_are_gaps_never_zeros() -> None:
    pts = [point(1000.0, 5, lag=1.0), point(1005.0, 5, lag=None), point(1010.0, 5, lag=None),
           point(1015.0, 5, lag=2.0), point(1020.0, 5, lag=2.0)]
    svg = render_chart(service(points=pts, marks=[]), window=30.0, now=1020.0, clock=clock)
    lag_lines = re.findall(r'data-series="jobs"[^>]*points="([^"]+)"', svg)
    assert len(lag_lines) == 1 and len(lag_lines[0].split()) == 2  # 1015..1020 only
    assert svg.count("<circle") == 1  # the lone 1000 point: a dot
    empty = render_chart(service(points=[], marks=[]), window=30.0, now=1020.0, clock=clock)
    assert empty.count(">no data</text>") == 4


def test_embedded_data_is_the_history_and_names_are_escaped() -> None:
    evil = "</script><b>x"
    s = service(backends=["a", "none"], roots=[evil])
    out = render_chart(s, window=60.0, now=1045.0, clock=clock)
    data = re.search(r'<script type="application/json" class="chart-data">(.*?)</script>', out, re.S)
    assert data is not None
    parsed = json.loads(data.group(1))
    assert parsed["points"] == s["points"] and parsed["marks"] == s["marks"] and parsed["window_seconds"] == 60.0
    assert "<b>x" not in out and "lag &lt;/script&gt;&lt;b&gt;x" in out
    assert f"background:{NONE_COLOR}\"></span>router itself" in out


def test_page_draws_the_chart_of_each_service_from_the_history() -> None:
    status = {"services": [{"name": "app", "active": "a", "epoch": 1, "state": "active", "backends": []}]}
    history = {"generated_at": 1045.0, "window_seconds": 60.0, "services": [service()]}
    page = render_status_page(status, history)
    assert page.count('<figure class="chart" data-service="app">') == 1
    assert "<figcaption>Last 1 min</figcaption>" in page
    assert "chart-data" not in render_status_page(status)
