"""The data path's own rules for a failed or refused request: which may go again
(replay.py) and the page a refused one gets (answers.py). Pure functions."""

from __future__ import annotations

import pytest

from router.failover.director import NoRoute
from router.proxy.answers import refusal_reply, switching_page, wants_html
from router.proxy.replay import replay_refusal_reason

SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
BUF = 64 * 1024


@pytest.mark.parametrize(
    ("method", "idem", "body", "sent", "expected"),
    [
        # Never sent (connect failed): anything goes, even an unkept body.
        ("POST", False, None, False, True),
        ("DELETE", False, 10**9, False, True),
        # Maybe sent: safe methods with a kept body.
        ("GET", False, 0, True, True),
        ("get", False, 0, True, True),
        ("HEAD", False, 0, True, True),
        ("OPTIONS", False, 0, True, True),
        # Maybe sent: unsafe methods only with an Idempotency-Key.
        ("POST", False, 100, True, False),
        ("POST", True, 100, True, True),
        ("PUT", True, BUF, True, True),
        # ... and only if the body is kept and fits.
        ("POST", True, BUF + 1, True, False),
        ("POST", True, None, True, False),
        ("GET", False, None, True, False),
    ],
)
def test_replay_rule(method: str, idem: bool, body: int | None, sent: bool, expected: bool) -> None:
    reason = replay_refusal_reason(method, idem, body, sent, SAFE, BUF)
    assert (reason is None) is expected


def test_replay_refusal_reasons_explain_themselves() -> None:
    assert "Idempotency-Key" in (replay_refusal_reason("POST", False, 10, True, SAFE, BUF) or "")
    assert "65536-byte replay buffer" in (replay_refusal_reason("GET", False, None, True, SAFE, BUF) or "")


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("text/html;q=0", False),
        ("application/json", False),
        ("*/*", False),
        (None, False),
        ("", False),
        ("TEXT/HTML", True),
        ("text/*;q=0.5", True),
        ("text/html;q=abc", False),
    ],
)
def test_wants_html(accept: str | None, expected: bool) -> None:
    assert wants_html(accept) is expected


def test_switching_page_refreshes_itself_and_escapes_the_name() -> None:
    page = switching_page("<lib>", 5)
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "&lt;lib&gt; is switching to its standby server" in page
    assert "<lib>" not in page
    assert "1 second." in switching_page("x", 0)  # never refresh in a loop at 0s


def test_refusal_reply_html_and_text() -> None:
    r = NoRoute("hold queue full (3 requests)", retry_after=7, status=503)
    browser = refusal_reply(r, "library", "text/html")
    assert browser.status == 503
    assert dict(browser.headers)["Retry-After"] == "7"
    assert dict(browser.headers)["Content-Type"] == "text/html; charset=utf-8"
    assert b'content="7"' in browser.body
    api = refusal_reply(r, "library", "application/json")
    assert dict(api.headers)["Content-Type"] == "text/plain; charset=utf-8"
    assert api.body == b"library is switching to its standby server (hold queue full (3 requests)); retry in 7 s\n"
