"""The status page rendering: pure function from the /v1/status JSON to HTML."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from router.admin.page import render_status_page, spare_readiness


def snapshot(**service_overrides: Any) -> dict[str, Any]:
    service: dict[str, Any] = {
        "name": "app",
        "active": "a",
        "epoch": 3,
        "state": "active",
        "backends": [
            {"name": "a", "url": "http://127.0.0.1:8001", "healthy": True},
            {
                "name": "b",
                "url": "http://127.0.0.1:8002",
                "healthy": True,
                "replication": {"lag_seconds": 0.4},
                "last_probe": {"ok": True, "at": 1_700_000_000.0, "detail": "200 in 3 ms"},
            },
        ],
        "events": [
            {"at": 1_700_000_100.0, "kind": "failover", "message": "a DOWN (connect refused); now b"},
            {"at": 1_700_000_000.0, "kind": "probe", "message": "b UP"},
        ],
    }
    service.update(service_overrides)
    return {"generated_at": 1_700_000_200.0, "services": [service]}


class _Checker(HTMLParser):
    """Collects tags and every URL-bearing attribute, to prove there are no external assets."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href") and v is not None:
                self.urls.append(v)


def text_of(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def test_page_shows_service_active_epoch_backends_and_events() -> None:
    page = render_status_page(snapshot())
    text = text_of(page)
    assert "app" in text and "ACTIVE" in text
    assert re.search(r"Active\s+a\b", text)
    assert re.search(r"Epoch\s+3\b", text)
    assert "http://127.0.0.1:8001" in text and "http://127.0.0.1:8002" in text
    assert "200 in 3 ms" in text
    assert "400 ms" in text  # b's replication lag
    # newest event first
    assert text.index("a DOWN (connect refused)") < text.index("b UP")
    assert 'data-backend="a"' in page


def test_spare_ready_and_not_ready() -> None:
    assert spare_readiness(snapshot()["services"][0]) == ("b", True, [])
    svc = snapshot()["services"][0]
    svc["backends"][1] = {**svc["backends"][1], "healthy": False, "replication": {"roots": {"jobs": 300.0}}}
    name, ready, reasons = spare_readiness(svc)
    assert (name, ready) == ("b", False)
    assert reasons == ["failing its health checks", "files 5.0 min behind"]
    page = render_status_page({"services": [svc]})
    assert "NOT ready" in page and "5.0 min behind" in page


def test_unprobed_spare_is_not_called_failing() -> None:
    svc = snapshot()["services"][0]
    svc["backends"][1] = {"name": "b", "url": "http://127.0.0.1:8002", "healthy": None}
    assert spare_readiness(svc) == ("b", False, ["not probed yet"])


def test_router_given_spare_readiness_wins() -> None:
    svc = snapshot(spare={"name": "b", "ready": False, "reasons": ["agent unreachable"]})["services"][0]
    assert spare_readiness(svc) == ("b", False, ["agent unreachable"])


def test_degraded_promoting_held_and_fencing_hold_are_visible() -> None:
    page = render_status_page(snapshot(state="degraded", held_requests=7, fencing_on_hold=True))
    assert 'class="state bad">DEGRADED' in page
    assert "7 request(s) held" in page
    assert "fencing on hold" in page
    assert 'class="state warn">PROMOTING' in render_status_page(snapshot(state="promoting"))
    page = render_status_page(snapshot(state="fence_hold"))
    assert 'class="state bad">FENCE_HOLD' in page and "fencing on hold: operator action needed" in page


def test_values_are_escaped() -> None:
    evil = "<script>alert(1)</script>"
    page = render_status_page(snapshot(name=evil, events=[{"at": 1.0, "message": evil}]))
    assert evil not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_minimal_design_shape_renders_with_dashes_for_missing_keys() -> None:
    page = render_status_page(
        {"services": [{"name": "app", "active": "a", "epoch": 0, "state": "active",
                       "backends": [{"name": "a", "url": "http://127.0.0.1:1", "healthy": True}]}]}
    )
    assert "no spare configured" in page
    assert "No events yet." in page
    assert render_status_page({}).count("No services.") == 1


def test_self_refreshing_and_no_external_assets() -> None:
    page = render_status_page(snapshot())
    checker = _Checker()
    checker.feed(page)
    assert checker.tags[0] == "html"
    assert "script" in checker.tags and "style" in checker.tags
    assert checker.urls == []  # no <script src>, <link href>, <img src>: nothing external
    assert not re.search(r"https?://(?!127\.0\.0\.1)", page)
    assert '<meta http-equiv="refresh" content="2">' in page
    assert "setTimeout(refresh, 2000)" in page
    assert 'id="status"' in page
