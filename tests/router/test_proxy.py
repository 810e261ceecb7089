"""Basic forwarding through a real Router to real backends."""

from __future__ import annotations

from aiohttp import web
from yarl import URL

from .conftest import echo_headers, load, svc


async def test_get_is_forwarded_with_proxy_headers(backend, router, client) -> None:
    url = await backend()
    _, base = await router([svc(url)])
    async with client.get(URL(base + "/x/y?q=1&r=%2F", encoded=True), headers={"X-Forwarded-For": "10.9.9.9"}) as resp:
        assert resp.status == 200
        doc = load(await resp.text())
        rid = resp.headers["X-Request-ID"]
        assert resp.headers["Via"].endswith("1.1 hotspare")
    h = echo_headers(doc)
    assert doc["target"] == "/x/y?q=1&r=%2F"
    assert h["x-forwarded-for"] == ["10.9.9.9, 127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-host"] == [base.removeprefix("http://")]
    assert h["host"] == [base.removeprefix("http://")]
    assert h["via"] == ["1.1 hotspare"]
    assert h["x-hotspare-epoch"] == ["0"]
    assert h["x-request-id"] == [rid]
    assert "user-agent" in h  # the client's own, passed on


async def test_post_body_content_length(backend, router, client) -> None:
    url = await backend()
    _, base = await router([svc(url)])
    body = b"x" * 300_000
    async with client.post(base + "/up", data=body) as resp:
        doc = load(await resp.text())
    assert doc["size"] == len(body)
    assert doc["chunked"] is False
    assert echo_headers(doc)["content-length"] == [str(len(body))]


async def test_backend_error_status_passes_through(backend, router, client) -> None:
    async def h(request: web.Request) -> web.Response:
        return web.Response(status=503, text="maintenance", headers={"X-App": "1"})

    url = await backend(h)
    _, base = await router([svc(url)])
    async with client.get(base + "/") as resp:
        assert resp.status == 503
        assert await resp.text() == "maintenance"
        assert resp.headers["X-App"] == "1"
