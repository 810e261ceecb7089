"""targets.py without sockets: which request targets and Host lines a gateway forwards."""

from __future__ import annotations

import pytest

from router.proxy.targets import Answer, Target, check_host, parse_target


@pytest.mark.parametrize(("method", "raw", "version", "want"), [
    ("GET", "/a/b?c=1", (1, 1), Target("/a/b", "/a/b?c=1", None)),
    ("GET", "//127.0.0.1:9/x", (1, 1), Target("//127.0.0.1:9/x", "//127.0.0.1:9/x", None)),
    ("GET", "http://lib.example:8080/s?q", (1, 1), Target("/s", "/s?q", "lib.example:8080")),
    ("GET", "HTTPS://lib.example", (1, 0), Target("/", "/", "lib.example")),
    ("GET", "http://lib.example?q=1", (1, 1), Target("/", "/?q=1", "lib.example")),
    ("GET", "http://[::1]:80/x", (1, 1), Target("/x", "/x", "[::1]:80")),
])
def test_forwarded_targets(method: str, raw: str, version: tuple[int, int], want: Target) -> None:
    assert parse_target(method, raw, version) == want


@pytest.mark.parametrize(("method", "raw", "version", "status", "cause"), [
    ("CONNECT", "127.0.0.1:22", (1, 1), 405, "connect_method"),
    ("CONNECT", "@127.0.0.1:22", (1, 1), 405, "connect_method"),
    ("GET", "@127.0.0.1:22", (1, 1), 400, "bad_target"),
    ("GET", "127.0.0.1:22/x", (1, 1), 400, "bad_target"),
    ("GET", "http://u:p@127.0.0.1/x", (1, 1), 400, "bad_target"),
    ("GET", "ftp://127.0.0.1/x", (1, 1), 400, "bad_target"),
    ("GET", "http://a b/x", (1, 1), 400, "bad_target"),
    ("GET", "/x#frag", (1, 1), 400, "bad_target"),
    ("GET", "/x\x00", (1, 1), 400, "bad_target"),
    ("GET", "*", (1, 1), 400, "bad_target"),
    ("GET", "/", (0, 9), 400, "http_version"),
    ("GET", "/", (2, 0), 505, "http_version"),
    ("OPTIONS", "*", (1, 1), 200, "options_asterisk"),
])
def test_answered_by_the_router(method: str, raw: str, version: tuple[int, int], status: int, cause: str) -> None:
    got = parse_target(method, raw, version)
    assert isinstance(got, Answer) and (got.status, got.cause) == (status, cause)


def test_host_lines() -> None:
    assert check_host([]) is None and check_host([""]) is None
    assert check_host(["lib.example:8080"]) is None and check_host(["[::1]:80"]) is None
    for bad in (["a", "b"], ["a@b"], ["a/b"], ["a b"], ["a:b:c"]):
        answer = check_host(bad)
        assert answer is not None and answer.status == 400, bad
