"""The Apache half of the parity suite on its own: proves the harness (real httpd with
mod_proxy in front of the recording backend) shows the behaviours hotspare must match."""

from __future__ import annotations

import aiohttp

from .conftest import COOKIE_DOMAIN, Apache, Backend
from .exchange import BIG, CASES, exchange


async def test_apache_forwards_every_case_to_the_backend(apache: Apache, backend: Backend) -> None:
    for case in CASES:
        r = await exchange(apache.origin, apache.port, backend, case)
        assert r.seen is not None, f"{case.name}: the backend saw nothing"
        assert r.seen.method == case.method, case.name
        if case.body is not None:
            assert r.seen.body_len == len(case.body), case.name
    big = next(c for c in CASES if c.name == "put-large")
    r = await exchange(apache.origin, apache.port, backend, big)
    assert r.seen is not None and r.seen.body_len == len(BIG)


async def test_apache_rewrites_location_and_cookie_domain(apache: Apache, backend: Backend) -> None:
    case = next(c for c in CASES if c.name == "redirect")
    r = await exchange(apache.origin, apache.port, backend, case)
    assert r.status == 302
    assert dict(r.headers)["location"] == "http://{proxy}/target?a=1"
    case = next(c for c in CASES if c.name == "cookies")
    r = await exchange(apache.origin, apache.port, backend, case)
    cookies = [v for k, v in r.headers if k == "set-cookie"]
    # httpd replaces the whole Path when it starts with the mapped prefix (/app/x -> /).
    assert f"sid=abc; Domain={COOKIE_DOMAIN[1]}; Path=/; HttpOnly" in cookies


async def test_apache_preserves_host_and_adds_forwarded_headers(apache: Apache, backend: Backend) -> None:
    case = next(c for c in CASES if c.name == "get-with-xff")
    r = await exchange(apache.origin, apache.port, backend, case)
    assert r.seen is not None
    h = {k.lower(): v for k, v in r.seen.headers}
    assert h["host"] == f"127.0.0.1:{apache.port}"
    assert h["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert h["x-forwarded-host"] == f"127.0.0.1:{apache.port}"


async def test_apache_websocket(apache: Apache, backend: Backend) -> None:
    async with aiohttp.ClientSession() as s, s.ws_connect(apache.origin + "/ws") as ws:
        await ws.send_str("hi")
        assert (await ws.receive_str()) == "echo:hi"
        await ws.send_bytes(b"abc")
        assert (await ws.receive_bytes()) == b"cba"
        await ws.send_str("close")
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4001
