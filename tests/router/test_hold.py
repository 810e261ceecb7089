"""The hold queue's bookkeeping, the replay rule and the refusal page: pure functions
and a fake clock."""

from __future__ import annotations

import pytest

from router.config import FailoverConfig
from router.hold import (
    Admitted,
    HoldLimits,
    HoldQueue,
    Refusal,
    may_replay,
    refusal_reply,
    replay_refusal_reason,
    switching_page,
    wants_html,
)

SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
BUF = 64 * 1024


def queue(max_requests: int = 3, max_bytes: int = 100, max_time: float = 10.0) -> HoldQueue[int]:
    return HoldQueue(HoldLimits(max_requests, max_bytes, max_time), retry_after=5)


def test_limits_come_from_the_config() -> None:
    assert HoldLimits.from_config(FailoverConfig()) == HoldLimits(1000, 64 * 1024 * 1024, 10.0)


def test_admit_until_the_count_bound_then_refuse_with_503_and_retry_after() -> None:
    q = queue()
    assert [q.admit(i, 0, 1.0) for i in range(3)] == [Admitted(11.0)] * 3
    assert q.admit(3, 0, 1.0) == Refusal(503, 5, "hold queue full (3 requests)")
    assert len(q) == 3


def test_byte_bound_counts_kept_bodies_and_frees_them_on_remove() -> None:
    q = queue()
    assert q.admit(1, 60, 0.0) == Admitted(10.0)
    assert q.admit(2, 41, 0.0) == Refusal(503, 5, "hold queue over its 100 bytes")
    assert q.admit(3, 40, 0.0) == Admitted(10.0)
    assert q.bytes == 100
    assert q.remove(1) is True
    assert q.remove(1) is False
    assert q.bytes == 40
    assert q.admit(2, 41, 0.0) == Admitted(10.0)


def test_expired_requests_leave_the_queue_at_their_deadline() -> None:
    q = queue()
    q.admit(1, 10, 0.0)
    q.admit(2, 10, 4.0)
    assert q.next_deadline() == 10.0
    assert q.expired(9.99) == []
    assert q.expired(10.0) == [1]
    assert (len(q), q.bytes, q.next_deadline()) == (1, 10, 14.0)


def test_release_is_in_arrival_order_and_empties_the_queue() -> None:
    q = queue(max_requests=10)
    for key in (5, 3, 9):
        q.admit(key, 1, 0.0)
    q.remove(3)
    assert q.release_all() == [5, 9]
    assert (len(q), q.bytes, q.next_deadline()) == (0, 0, None)


def test_refuse_all_empties_the_queue() -> None:
    q = queue()
    q.admit(1, 1, 0.0)
    q.admit(2, 1, 0.0)
    assert q.refuse_all() == [1, 2]
    assert len(q) == 0
    assert q.refusal("promotion failed") == Refusal(503, 5, "promotion failed")


def test_zero_max_requests_holds_nothing() -> None:
    assert isinstance(queue(max_requests=0).admit(1, 0, 0.0), Refusal)


def test_admitting_a_key_twice_or_a_negative_size_is_a_bug() -> None:
    q = queue()
    q.admit(1, 0, 0.0)
    with pytest.raises(ValueError, match="request 1 is already held"):
        q.admit(1, 0, 0.0)
    with pytest.raises(ValueError, match="size: expected bytes >= 0, got -1"):
        q.admit(2, -1, 0.0)


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
    assert may_replay(method, idem, body, sent, SAFE, BUF) is expected
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
    r = Refusal(503, 7, "hold queue full (3 requests)")
    browser = refusal_reply(r, "library", "text/html")
    assert browser.status == 503
    assert dict(browser.headers)["Retry-After"] == "7"
    assert dict(browser.headers)["Content-Type"] == "text/html; charset=utf-8"
    assert b'content="7"' in browser.body
    api = refusal_reply(r, "library", "application/json")
    assert dict(api.headers)["Content-Type"] == "text/plain; charset=utf-8"
    assert api.body == b"library is switching to its standby server (hold queue full (3 requests)); retry in 7 s\n"
