"""Unit tests of the header rules (no sockets)."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from router.config import parse_config
from router.proxy.headers import (
    connection_tokens,
    request_headers,
    response_headers,
    response_lines,
    sane_request_id,
)
from router.proxy.rewrite import Rewriter


def _h(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def _rewriter(**rewrite: object) -> Rewriter:
    cfg = parse_config(
        {
            "listen": ["127.0.0.1:0"],
            "services": [
                {
                    "name": "app",
                    "backends": [{"name": "a", "url": "http://10.0.0.1:8001"}, {"name": "b", "url": "https://app-b"}],
                    "rewrite": rewrite,
                }
            ],
        }
    )
    return Rewriter(cfg.services[0])


def test_connection_tokens() -> None:
    assert connection_tokens(["keep-alive, X-A", " x-b ,,"]) == frozenset({"keep-alive", "x-a", "x-b"})


def test_request_headers_rules() -> None:
    src = _h(
        ("Host", "lib.example"),
        ("Connection", "close, X-Secret"),
        ("X-Secret", "s"),
        ("Transfer-Encoding", "chunked"),
        ("X-Forwarded-For", "1.1.1.1"),
        ("X-Forwarded-For", "2.2.2.2"),
        ("Via", "1.0 edge"),
        ("X-Hotspare-Epoch", "7"),
        ("Expect", "100-continue"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
    )
    out = request_headers(src, host="be:1", peer="9.9.9.9", proto="https", via="1.1 hotspare", request_id="rid", epoch=3)
    assert out["Host"] == "be:1"
    assert out["X-Forwarded-For"] == "1.1.1.1, 2.2.2.2, 9.9.9.9"
    assert out["X-Forwarded-Proto"] == "https"
    assert out["X-Forwarded-Host"] == "lib.example"
    assert out["Via"] == "1.0 edge, 1.1 hotspare"
    assert out["X-Hotspare-Epoch"] == "3"
    assert out.getall("Cookie") == ["a=1", "b=2"]
    for gone in ("Connection", "X-Secret", "Transfer-Encoding", "Expect"):
        assert gone not in out, gone
    out2 = request_headers(src, host="h", peer="p", proto="http", via="v", request_id="r", epoch=0, expect_continue=True)
    assert out2["Expect"] == "100-continue"


def test_websocket_request_drops_handshake_headers() -> None:
    src = _h(("Host", "h"), ("Upgrade", "websocket"), ("Sec-WebSocket-Key", "k"), ("Sec-WebSocket-Version", "13"), ("Origin", "o"))
    out = request_headers(src, host="h", peer="p", proto="http", via="v", request_id="r", epoch=0, websocket=True)
    assert "Sec-WebSocket-Key" not in out and "Upgrade" not in out
    assert out["Origin"] == "o"


def test_response_headers_rules() -> None:
    src = _h(
        ("Connection", "X-Internal"),
        ("X-Internal", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Location", "http://10.0.0.1:8001/next"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("X-Request-ID", "backend-made"),
    )
    out = response_headers(src, via="1.1 hotspare", request_id="rid", rewriter=_rewriter(), client_origin="https://lib")
    assert "X-Internal" not in out and "Keep-Alive" not in out and "Connection" not in out
    assert out["Location"] == "https://lib/next"
    assert out.getall("Set-Cookie") == ["a=1", "b=2"]
    assert out["X-Request-ID"] == "rid"
    assert out["Via"] == "1.1 hotspare"


def test_sane_request_id() -> None:
    assert sane_request_id("abc-1.2_3") == "abc-1.2_3"
    for bad in (None, "", "has space", "x" * 200, "new\nline"):
        new = sane_request_id(bad)
        assert new != bad and len(new) == 24


def test_response_lines_follow_the_same_rules_as_response_headers() -> None:
    """The raw-bytes twin used with the proxy's own client (issue 12) says exactly what
    response_headers says, in the same order, byte for byte."""
    rw = _rewriter(cookie_domain={"internal": "example.org"}, cookie_path={"/app": "/"})
    heads = [
        [("Content-Type", "text/plain"), ("Content-Length", "5"), ("Date", "Mon, 01 Jan 2024 00:00:00 GMT")],
        [("Connection", "close, X-Secret"), ("X-Secret", "s"), ("Keep-Alive", "timeout=5"), ("Via", "1.0 old"),
         ("X-Request-ID", "theirs"), ("Location", "http://10.0.0.1:8001/x?y"), ("Transfer-Encoding", "chunked"),
         ("Set-Cookie", "a=1; Domain=app.internal; Path=/app/x"), ("Content-Location", "https://app-b/z"),
         ("X-Caf\u00e9", "\udce9t\u00e9")],
        [("Via", "1.1 a"), ("via", "1.1 b"), ("Upgrade", "h2c"), ("Proxy-Authenticate", "Basic")],
    ]
    for pairs in heads:
        raw = [(n.encode("utf-8", "surrogateescape").lower(), n.encode("utf-8", "surrogateescape"),
                v.encode("utf-8", "surrogateescape")) for n, v in pairs]
        kw = {"via": "1.1 hotspare", "request_id": "rid-1", "rewriter": rw, "client_origin": "https://www.example.org"}
        want = response_headers(_h(*pairs), **kw)  # type: ignore[arg-type]
        lines, has_date = response_lines(raw, **kw)  # type: ignore[arg-type]
        assert b"".join(lines) == "".join(f"{n}: {v}\r\n" for n, v in want.items()).encode("utf-8", "surrogateescape")
        assert has_date == ("Date" in want)
