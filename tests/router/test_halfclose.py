"""A client that half-closes after its request (``shutdown(SHUT_WR)``, as ``nc -N`` does)
still gets its answer, then the connection closes (router/proxy/limits.py, rule 6). A real
``hotspare router`` subprocess (uvloop) in front of two recording backends.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fuzzkit import RECORDED_BODY, connect, parse_responses, read_until_closed
from .fuzzstack import Stack

HEADER_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(Path(tmp_path_factory.mktemp("halfclose")), limits={"header_timeout": f"{HEADER_TIMEOUT}s"})
    yield s
    s.close()


def send_then_half_close(port: int, data: bytes) -> tuple[bytes, bool, float]:
    """(everything the router sent, whether it closed, seconds from EOF to its close)."""
    s = connect(port)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        eof_at = time.monotonic()
        raw, closed = read_until_closed(s, eof_at + 10)
        return raw, closed, time.monotonic() - eof_at
    finally:
        s.close()


@pytest.mark.timeout(60)
def test_get_then_half_close_is_answered_and_closed(stack: Stack) -> None:
    raw, closed, _ = send_then_half_close(stack.port, b"GET /hc HTTP/1.1\r\nHost: app\r\n\r\n")
    responses, rest, whole = parse_responses(raw, ["GET"])
    assert closed and whole and rest == b"", raw[:300]
    assert [(r.status, r.recorded, r.body_len) for r in responses] == [(200, True, len(RECORDED_BODY))]
    assert raw.endswith(RECORDED_BODY)


@pytest.mark.timeout(60)
def test_post_with_body_then_half_close_is_answered(stack: Stack) -> None:
    before = stack.backends[0].snapshot()[0]
    body = b"x" * 5000
    raw, closed, _ = send_then_half_close(
        stack.port, b"POST /hc HTTP/1.1\r\nHost: app\r\nContent-Length: 5000\r\n\r\n" + body)
    responses, _, whole = parse_responses(raw, ["POST"])
    assert closed and whole, raw[:300]
    assert [(r.status, r.recorded) for r in responses] == [(200, True)]
    assert stack.backends[0].snapshot()[0] == before + 1


@pytest.mark.timeout(60)
def test_pipelined_requests_before_half_close_are_all_answered(stack: Stack) -> None:
    one = b"GET /hc1 HTTP/1.1\r\nHost: app\r\n\r\n"
    raw, closed, _ = send_then_half_close(stack.port, one + one.replace(b"/hc1", b"/hc2") + one)
    responses, rest, whole = parse_responses(raw, ["GET"] * 3)
    assert closed and whole and rest == b"", raw[:500]
    assert [r.status for r in responses] == [200, 200, 200]


@pytest.mark.timeout(60)
def test_half_close_mid_head_closes_at_once(stack: Stack) -> None:
    raw, closed, took = send_then_half_close(stack.port, b"GET /never HTTP/1.1\r\nHost: ap")
    assert closed and raw == b""
    assert took < HEADER_TIMEOUT / 2, f"closed {took:.2f}s after EOF: the head timer, not the EOF, closed it"


@pytest.mark.timeout(60)
def test_half_close_mid_body_closes_without_an_answer_from_the_backend(stack: Stack) -> None:
    raw, closed, took = send_then_half_close(
        stack.port, b"POST /short HTTP/1.1\r\nHost: app\r\nContent-Length: 100\r\n\r\nonly-part")
    assert closed and b"X-Recorded" not in raw, raw[:300]
    assert took < HEADER_TIMEOUT / 2
