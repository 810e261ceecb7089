"""Apache mod_proxy vs hotspare, same backend, same requests: status, body, response
headers and the request the backend received must match, except for the differences in
ALLOWED_* (exchange.py), each of which docs/migration-apache.md lists with its reason.

hotspare's config is produced by import-apache from the running Apache's own httpd.conf
(only the listen/admin addresses and the state file are pointed into the test's space)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from router.cli.import_apache import import_apache
from router.config import parse_config

from .conftest import Apache, Backend
from .exchange import (
    CASES,
    Case,
    comparable_backend_headers,
    comparable_response_headers,
    exchange,
)


@dataclass
class Hotspare:
    port: int

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _port_of(addresses: Any) -> int:
    """The first listener's port from whatever ``Router.start()`` returned."""
    first = addresses[0] if isinstance(addresses, (list, tuple)) else addresses
    if isinstance(first, (list, tuple)) and len(first) >= 2 and isinstance(first[1], int):
        return first[1]
    if hasattr(first, "port"):
        return int(first.port)
    m = re.search(r":(\d+)\]?$|:(\d+)$", str(first))
    if m:
        return int(m.group(1) or m.group(2))
    raise AssertionError(f"cannot read a port from Router.start() result {addresses!r}")


@pytest.fixture
async def hotspare(apache: Apache, backend: Backend, tmp_path: Path) -> AsyncIterator[Hotspare]:
    try:
        from router.server import Router
    except ImportError as exc:
        pytest.fail(f"the hotspare router (router.server.Router) is not built yet: {exc}")
    t = import_apache(apache.conf)
    data = dict(t.config)
    data["listen"] = ["127.0.0.1:0"]
    data["admin"] = {"listen": "127.0.0.1:0"}
    data["state_file"] = str(tmp_path / "state.json")
    data["log"] = {"access_log": None}
    config = parse_config(data, env={})
    router = Router(config)
    addresses = await router.start()
    try:
        yield Hotspare(_port_of(addresses))
    finally:
        await router.stop()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_same_as_apache(case: Case, apache: Apache, hotspare: Hotspare, backend: Backend) -> None:
    a = await exchange(apache.origin, apache.port, backend, case)
    h = await exchange(hotspare.origin, hotspare.port, backend, case)
    assert (h.status, h.body_len, h.body_sha256) == (a.status, a.body_len, a.body_sha256)
    assert comparable_response_headers(h) == comparable_response_headers(a)
    assert a.seen is not None and h.seen is not None
    assert (h.seen.method, h.seen.path, h.seen.body_len, h.seen.body_sha256) == (
        a.seen.method, a.seen.path, a.seen.body_len, a.seen.body_sha256,
    )
    assert comparable_backend_headers(h.seen, hotspare.port, case.chunked) == comparable_backend_headers(
        a.seen, apache.port, case.chunked
    )


async def test_websocket_same_as_apache(apache: Apache, hotspare: Hotspare, backend: Backend) -> None:
    transcripts = []
    for origin, port in ((apache.origin, apache.port), (hotspare.origin, hotspare.port)):
        before = len(backend.seen)
        got: list[object] = []
        async with aiohttp.ClientSession() as s, s.ws_connect(origin + "/ws") as ws:
            await ws.send_str("hi")
            got.append(await ws.receive_str())
            await ws.send_bytes(b"abc")
            got.append(await ws.receive_bytes())
            await ws.send_str("close")
            msg = await ws.receive()
            got.append((msg.type, msg.data, msg.extra))
        seen = backend.seen[before]
        # Sec-WebSocket-Key is random per handshake; the rest must match.
        headers = [(k, v) for k, v in comparable_backend_headers(seen, port, False) if k != "sec-websocket-key"]
        transcripts.append((got, headers))
    assert transcripts[1] == transcripts[0]
