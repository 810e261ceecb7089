"""Fixtures for the router core: real backends and a real Router on ephemeral loopback
ports (bound to 127.0.0.1:0, port read back), closed in reverse order."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from router.config import Config, parse_config
from router.server import Router

BackendFactory = Callable[..., Awaitable[str]]
RouterFactory = Callable[..., Awaitable[tuple[Router, str]]]


async def echo(request: web.Request) -> web.StreamResponse:
    """Echo what arrived: method, target, headers, body size and digest."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    doc = {
        "method": request.method,
        "target": request.raw_path,
        "headers": [[k, v] for k, v in request.headers.items()],
        "size": size,
        "sha256": digest.hexdigest(),
        "chunked": "chunked" in request.headers.get("Transfer-Encoding", "").lower(),
    }
    return web.json_response(doc)


def echo_headers(doc: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in doc["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


@pytest.fixture
async def backend() -> AsyncIterator[BackendFactory]:
    """``await backend(app_or_handler)`` -> "http://127.0.0.1:PORT"."""
    runners: list[web.AppRunner] = []

    async def make(app: web.Application | Callable[..., Any] | None = None, **site_kw: Any) -> str:
        if app is None:
            app = echo
        if not isinstance(app, web.Application):
            handler = app
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, **site_kw)
        await site.start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        scheme = "https" if site_kw.get("ssl_context") else "http"
        return f"{scheme}://{host}:{port}"

    yield make
    for r in reversed(runners):
        await r.cleanup()


def make_config(tmp_path: Path, services: list[dict[str, Any]], **top: Any) -> Config:
    data: dict[str, Any] = {
        "listen": ["127.0.0.1:0"],
        "admin": {"listen": "127.0.0.1:0"},
        "state_file": str(tmp_path / "state.json"),
        "log": {"access_log": str(tmp_path / "access.log")},
        "shutdown_grace": "5s",
        "services": services,
    }
    data.update(top)
    return parse_config(data, base_dir=tmp_path)


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[RouterFactory]:
    """``await router(services=[...], **top)`` -> (Router, "http://127.0.0.1:PORT")."""
    routers: list[Router] = []

    async def make(services: list[dict[str, Any]], **top: Any) -> tuple[Router, str]:
        if routers and "state_file" not in top:  # each router holds its state file's lock
            top["state_file"] = str(tmp_path / f"state-{len(routers)}.json")
        r = Router(make_config(tmp_path, services, **top))
        bound = await r.start()
        routers.append(r)
        assert r.bound is not None and bound[-1] == r.bound.admin
        host, port = bound[0]
        return r, f"http://{host}:{port}"

    yield make
    for r in reversed(routers):
        await r.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        yield s


def svc(*urls: str, **kw: Any) -> dict[str, Any]:
    """A service dict with backends a, b, ... at ``urls``."""
    return {
        "name": kw.pop("name", "app"),
        "backends": [{"name": chr(ord("a") + i), "url": u} for i, u in enumerate(urls)],
        **kw,
    }


def load(text: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(text)
    return doc


async def read_response(reader: Any) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response from an asyncio StreamReader (CL, chunked or none)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if status in (100, 204, 304):
        return status, headers, b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", ""):
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    else:
        body = await reader.read()
    return status, headers, body


class RawBackend:
    """A backend that is a bare TCP server: records every byte received and answers
    with a canned response per connection (for framing and smuggling tests)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.received = bytearray()
        self.server: Any = None
        self.port = 0

    async def _serve(self, reader: Any, writer: Any) -> None:
        import asyncio

        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if data.startswith(b"GET /health HTTP/1.1\r\n"):  # the router's health probe
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    await writer.drain()
                    break
                self.received += data
                if b"\r\n\r\n" in data:
                    writer.write(self.answer)
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def start(self) -> str:
        import asyncio

        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def raw_backend() -> AsyncIterator[Callable[[bytes], Awaitable[RawBackend]]]:
    made: list[RawBackend] = []

    async def make(answer: bytes) -> RawBackend:
        b = RawBackend(answer)
        await b.start()
        made.append(b)
        return b

    yield make
    for b in reversed(made):
        await b.close()
