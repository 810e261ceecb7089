"""Unit tests of Location and Set-Cookie rewriting (ProxyPassReverse semantics)."""

from __future__ import annotations

import pytest

from router.config import parse_config
from router.proxy.rewrite import Rewriter


def _rw(urls: list[str], **rewrite: object) -> Rewriter:
    cfg = parse_config(
        {
            "listen": ["127.0.0.1:0"],
            "services": [
                {
                    "name": "app",
                    "backends": [{"name": f"b{i}", "url": u} for i, u in enumerate(urls)],
                    "rewrite": rewrite,
                }
            ],
        }
    )
    return Rewriter(cfg.services[0])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://10.0.0.1:8001/a?b=1", "https://pub/a?b=1"),
        ("http://10.0.0.1:8001", "https://pub/"),
        ("HTTP://10.0.0.1:8001/x", "https://pub/x"),
        ("http://10.0.0.1:80011/x", "http://10.0.0.1:80011/x"),  # another port: not ours
        ("http://spare/y", "https://pub/y"),  # the spare's URL too, default port omitted
        ("http://spare:80/y", "https://pub/y"),
        ("http://based:9/base/z", "https://pub/z"),  # backend path maps to /
        ("http://based:9/basement", "http://based:9/basement"),
        ("/relative", "/relative"),
        ("http://elsewhere/x", "http://elsewhere/x"),
    ],
)
def test_location(value: str, expected: str) -> None:
    rw = _rw(["http://10.0.0.1:8001", "http://spare", "http://based:9/base"])
    assert rw.location(value, "https://pub") == expected


def test_location_rewriting_can_be_off() -> None:
    rw = _rw(["http://10.0.0.1:8001"], location=False)
    assert rw.location("http://10.0.0.1:8001/a", "https://pub") == "http://10.0.0.1:8001/a"


def test_set_cookie_like_apache() -> None:
    rw = _rw(["http://h"], cookie_domain={"backend.internal": "public.example"}, cookie_path={"/app": "/"})
    assert rw.cookies
    assert rw.set_cookie("s=1; Domain=backend.internal; Path=/app/x; HttpOnly") == "s=1; Domain=public.example; Path=/; HttpOnly"
    assert rw.set_cookie("s=1; domain=WWW.Backend.Internal") == "s=1; domain=public.example"
    assert rw.set_cookie("s=1; Path=/other") == "s=1; Path=/other"
    assert rw.set_cookie("Path=/app; x=1") == "Path=/app; x=1"  # the cookie's own name/value is never touched


def test_no_cookie_maps() -> None:
    assert not _rw(["http://h"]).cookies
