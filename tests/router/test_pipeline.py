"""Pipelined requests on one connection (router/proxy/connection.py rule 1): answered in
order; a malformed message after valid ones gets the valid ones answered, then its own
refusal, then the close (aiohttp's parser lost the valid ones). A real ``hotspare
router`` subprocess (uvloop) in front of two recording backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .fuzzkit import exchange
from .fuzzstack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(Path(tmp_path_factory.mktemp("pipeline")))
    yield s
    s.close()


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: app\r\n\r\n".encode()


@pytest.mark.timeout(60)
def test_pipelined_requests_are_answered_in_order(stack: Stack) -> None:
    before = stack.backends[0].snapshot()[0]
    post = b"POST /p2 HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\n\r\nabc"
    ex = exchange(stack.port, _get("/p1") + post + b"HEAD /p3 HTTP/1.1\r\nHost: app\r\n\r\n" + _get("/p4"),
                  ["GET", "POST", "HEAD", "GET"])
    assert ex.heads == [(200, True)] * 4, ex.raw[:600]
    targets = [r.target for r in stack.backends[0].requests[-4:]]
    assert targets == ["/p1", "/p2", "/p3", "/p4"]
    assert stack.backends[0].snapshot()[0] == before + 4


@pytest.mark.timeout(60)
def test_a_malformed_message_after_valid_ones_is_refused_after_their_answers(stack: Stack) -> None:
    before = stack.backends[0].snapshot()[0]
    bad = b"GET /bad HTTP/1.1\r\nHost: app\r\nNo colon here\r\n\r\n"
    ex = exchange(stack.port, _get("/v1") + _get("/v2") + bad + _get("/never"), ["GET"] * 4)
    assert ex.heads == [(200, True), (200, True), (400, False)], ex.raw[:600]
    assert ex.ended in ("closed", "eof"), ex.ended
    assert stack.backends[0].snapshot()[0] == before + 2


@pytest.mark.timeout(60)
def test_a_refused_framing_after_a_valid_request_never_reaches_a_backend(stack: Stack) -> None:
    """llhttp refuses a Transfer-Encoding other than chunked right after the head: that
    request must not be forwarded (its head is complete, its framing is not)."""
    before = stack.backends[0].snapshot()[0]
    bad = b"POST /te HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: gzip\r\n\r\nxyz"
    ex = exchange(stack.port, _get("/ok") + bad, ["GET", "POST"])
    assert ex.heads == [(200, True), (400, False)], ex.raw[:600]
    assert stack.backends[0].snapshot()[0] == before + 1
    assert [r.target for r in stack.backends[0].requests[-1:]] == ["/ok"]


@pytest.mark.timeout(60)
def test_a_body_broken_in_its_first_packet_sends_nothing_to_a_backend(stack: Stack) -> None:
    """A chunked body that breaks before its first chunk is relayed: the router answers
    400 and the backend never sees the head (it leaves with the first body bytes)."""
    before = stack.backends[0].snapshot()[0]
    broken = b"POST /broken HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nX0\r\n\r\n"
    for _ in range(5):
        ex = exchange(stack.port, broken, ["POST"])
        assert ex.heads == [(400, False)], ex.raw[:600]
    assert stack.backends[0].snapshot()[0] == before
