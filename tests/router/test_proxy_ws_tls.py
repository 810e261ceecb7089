"""WebSocket pass-through, https backends with a CA made here, HTTPS listeners and the
plain->HTTPS redirect, admin /metrics and /v1/status."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from tests.helpers import wait_for

from .conftest import svc


async def ws_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("chat",), autoping=False)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            if msg.data == "close-4001":
                await ws.close(code=4001, message=b"backend says bye")
                break
            await ws.send_str("echo:" + msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data[::-1])
        elif msg.type is WSMsgType.PING:
            await ws.pong(b"pong:" + msg.data)
    return ws


async def test_websocket_echo_both_ways_with_close_codes(backend, router, client) -> None:
    url = await backend(ws_echo)
    _, base = await router([svc(url)])
    async with client.ws_connect(base + "/ws", protocols=("chat",), autoping=False) as ws:
        assert ws.protocol == "chat"
        await ws.send_str("hi")
        assert (await ws.receive()).data == "echo:hi"
        await ws.send_bytes(b"\x01\x02\x03")
        assert (await ws.receive()).data == b"\x03\x02\x01"
        await ws.ping(b"p")
        msg = await ws.receive()
        assert (msg.type, msg.data) == (WSMsgType.PONG, b"pong:p")
        await ws.send_str("close-4001")
        msg = await ws.receive()
        assert msg.type is WSMsgType.CLOSE
        assert (msg.data, msg.extra) == (4001, "backend says bye")
    # The client closing with its own code reaches the backend.
    codes: list[int | None] = []

    async def record(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        codes.append(ws.close_code)
        return ws

    url2 = await backend(record)
    _, base2 = await router([svc(url2)])
    async with client.ws_connect(base2 + "/ws") as ws:
        await ws.close(code=4002, message=b"client bye")
    from tests.helpers import wait_for

    await wait_for(lambda: codes, what="backend saw the close")
    assert codes == [4002]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA and a server cert for 127.0.0.1 signed by it (openssl CLI)."""
    d = tmp_path_factory.mktemp("pki")

    def sh(*args: str) -> None:
        subprocess.run(args, cwd=d, check=True, capture_output=True)

    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
       "-days", "2", "-subj", "/CN=hotspare test CA")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    sh("openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
       "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf")
    return d


def _server_ctx(pki: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki / "srv.pem", pki / "srv.key")
    return ctx


async def test_https_backend_verified_against_ca_file(backend, router, client, pki: Path) -> None:
    async def h(request: web.Request) -> web.Response:
        return web.Response(text="secure")

    url = await backend(h, ssl_context=_server_ctx(pki))
    _, base = await router(
        [
            {"name": "trusted", "path_prefix": "/t", "backends": [{"name": "a", "url": url, "ca_file": str(pki / "ca.pem")}]},
            {"name": "untrusted", "path_prefix": "/u", "backends": [{"name": "a", "url": url}]},
            {"name": "unverified", "path_prefix": "/n", "backends": [{"name": "a", "url": url, "verify_tls": False}]},
        ]
    )
    async with client.get(base + "/t") as resp:
        assert (resp.status, await resp.text()) == (200, "secure")
    async with client.get(base + "/u") as resp:
        assert resp.status == 502
        assert "certificate" in await resp.text()
    async with client.get(base + "/n") as resp:
        assert resp.status == 200


async def test_https_listener_and_redirect(backend, router, client, pki: Path) -> None:
    url = await backend()
    r, _ = await router(
        [svc(url)],
        listen=[
            {"address": "127.0.0.1:0", "cert": str(pki / "srv.pem"), "key": str(pki / "srv.key")},
            {"address": "127.0.0.1:0", "redirect_to_https": True, "https_port": 8443},
        ],
    )
    assert r.bound is not None
    (_, p1), (_, p2) = r.bound.listeners
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    async with client.get(f"https://127.0.0.1:{p1}/s", ssl=ctx) as resp:
        assert resp.status == 200
        doc = await resp.json()
        proto = [v for k, v in doc["headers"] if k.lower() == "x-forwarded-proto"]
        assert proto == ["https"]
    async with client.post(f"http://127.0.0.1:{p2}/login?x=1", headers={"Host": "lib.example"}, allow_redirects=False) as resp:
        assert resp.status == 308
        assert resp.headers["Location"] == "https://lib.example:8443/login?x=1"


async def test_admin_status_and_metrics(backend, router, client) -> None:
    url = await backend()
    r, base = await router([svc(url, "http://127.0.0.1:9")])
    async with client.get(base + "/m") as resp:
        assert resp.status == 200
    host, port = r.bound.admin

    async def status() -> dict[str, Any]:
        async with client.get(f"http://{host}:{port}/v1/status") as resp:
            doc: dict[str, Any] = await resp.json()
            return doc

    async def b_down() -> bool:  # nothing listens on port 9: its probes are refused
        return (await status())["services"][0]["backends"][1]["healthy"] is False

    await wait_for(b_down, what="b probed down")
    full = await status()
    # The contract keys of DESIGN.md (the admin API adds more of its own).
    doc = {"services": [
        {**{k: sv[k] for k in ("name", "active", "epoch", "state")},
         "backends": [{k: bv[k] for k in ("name", "url", "healthy")} for bv in sv["backends"]]}
        for sv in full["services"]
    ]}
    assert doc == {
        "services": [
            {
                "name": "app",
                "active": "a",
                "epoch": 0,
                "state": "active",
                "backends": [
                    {"name": "a", "url": url, "healthy": True},
                    {"name": "b", "url": "http://127.0.0.1:9", "healthy": False},
                ],
            }
        ]
    }
    async with client.get(f"http://{host}:{port}/metrics") as resp:
        text = await resp.text()
    assert 'hotspare_requests_total{backend="a",code="2xx",method="GET",service="app"}' in text
    assert 'hotspare_active_backend{backend="a",service="app"} 1.0' in text
    assert 'hotspare_active_backend{backend="b",service="app"} 0.0' in text
    assert 'hotspare_epoch{service="app"} 0.0' in text


async def test_websocket_upgrade_while_promoting_gets_503_retry_after(backend, router, client, tmp_path: Path) -> None:
    """Issue 11: the handler asked director.route() unguarded before the WebSocket
    pass-through, so an upgrade during a switch got aiohttp's generic 500 (logged 499).
    It gets the same 503 + Retry-After as a plain request (a held upgrade would be no
    use to anyone)."""
    import sys

    from router.failover.machine import AdminSwitchover

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    def app() -> web.Application:
        a = web.Application()
        a.router.add_get("/health", health)
        a.router.add_get("/ws", ws_echo)
        return a

    ua, ub = await backend(app()), await backend(app())
    gate = tmp_path / "gate"  # the promotion step waits until the test removes it
    gate.touch()
    step = {"name": "wait", "exec": [sys.executable, "-c",
            f"import os,time\nwhile os.path.exists({str(gate)!r}): time.sleep(0.02)"], "timeout": "20s"}
    r, base = await router([svc(ua, ub, promote=[step], health={"interval": "100ms", "fast_interval": "20ms"},
                                failover={"retry_after": 6})])
    ctl = r.controllers["app"]
    await wait_for(lambda: r.statistics().services[0].backends[1].healthy is True, what="b probed")
    ctl.submit(AdminSwitchover(0.0, "b"))
    await wait_for(lambda: ctl.director.mode == "hold", what="promoting (holding)")
    try:
        headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
        async with client.get(base + "/ws", headers=headers) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "6"
            assert resp.headers["X-Request-ID"]
        log = tmp_path / "access.log"
        line = await wait_for(lambda: log.exists() and log.read_text(), what="the access-log line")
        assert " 503 " in line and " 499 " not in line
    finally:
        gate.unlink()
    await wait_for(lambda: ctl.director.mode == "route", what="promotion over")


async def test_websocket_upgrade_to_a_degraded_service_gets_503_retry_after(backend, router, client) -> None:
    from router.failover.hold import Refusal

    url = await backend(ws_echo)
    r, base = await router([svc(url)])
    r.controllers["app"].director.set_mode("refuse", Refusal(503, 7, "no backend passes its probes"))
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect(base + "/ws")
    assert info.value.status == 503
    assert info.value.headers is not None and info.value.headers["Retry-After"] == "7"
