"""Parity harness: one recording backend, with a real Apache httpd (mod_proxy) and
hotspare each in front of it.

- The backend is a real aiohttp server on 127.0.0.1:0 that records what each request
  looked like when it arrived (method, path, headers, body digest) and answers by path.
- Apache runs as a real foreground process (``apache2 -DFOREGROUND -f CONF``) with a config
  generated into a temp dir: its own PidFile, ErrorLog, Mutex, and a free loopback port.
- hotspare's config is produced by ``import-apache`` from the very same httpd config, so
  the suite also checks the importer on a live Apache config.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web

from tests.helpers import wait_for_sync

APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
MODULES = Path("/usr/lib/apache2/modules")
COOKIE_DOMAIN = ("backend.internal", "public.example")
COOKIE_PATH = ("/app", "/")
LARGE = 8 * 1024 * 1024


@dataclass(frozen=True)
class Seen:
    """One request as the backend received it."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body_len: int
    body_sha256: str


@dataclass
class Backend:
    port: int = 0
    seen: list[Seen] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


BACKEND_KEY: web.AppKey[Backend] = web.AppKey("backend", Backend)


async def _handle(request: web.Request) -> web.StreamResponse:
    backend = request.app[BACKEND_KEY]
    if request.path == "/ws":
        ws = web.WebSocketResponse()
        backend.seen.append(Seen(request.method, request.path_qs, tuple(request.headers.items()), 0, ""))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                if msg.data == "close":
                    await ws.close(code=4001, message=b"bye")
                else:
                    await ws.send_str("echo:" + msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    backend.seen.append(
        Seen(request.method, request.path_qs, tuple(request.headers.items()), size, digest.hexdigest())
    )
    if request.path == "/redirect":
        return web.Response(status=302, headers={"Location": f"{backend.origin}/target?a=1"})
    if request.path == "/cookie":
        resp = web.Response(text="cookie")
        resp.headers.add("Set-Cookie", f"sid=abc; Domain={COOKIE_DOMAIN[0]}; Path={COOKIE_PATH[0]}/x; HttpOnly")
        resp.headers.add("Set-Cookie", "plain=1; Path=/")
        return resp
    if request.path == "/large":
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = LARGE
        await resp.prepare(request)
        block = bytes(range(256)) * 256
        for _ in range(LARGE // len(block)):
            await resp.write(block)
        await resp.write_eof()
        return resp
    if request.path.startswith("/status/"):
        code = int(request.path.rsplit("/", 1)[1])
        return web.Response(status=code, text=f"status {code}")
    if request.path == "/chunked":
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(5):
            await resp.write(f"part {i}\n".encode())
        await resp.write_eof()
        return resp
    body = f"{request.method} {request.path_qs} len={size} sha256={digest.hexdigest()}"
    return web.Response(text=body, headers={"X-Backend": "yes"})


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = Backend()
    app = web.Application(client_max_size=LARGE * 2)
    app[BACKEND_KEY] = b
    app.router.add_route("*", "/{tail:.*}", _handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    b.port = server.sockets[0].getsockname()[1]
    try:
        yield b
    finally:
        await runner.cleanup()


def httpd_conf(tmp: Path, port: int, backend_port: int) -> str:
    target = f"http://127.0.0.1:{backend_port}/"
    user = "User nobody\nGroup nogroup\n" if os.geteuid() == 0 else ""
    return f"""\
ServerRoot "{tmp}"
DefaultRuntimeDir "{tmp}"
PidFile "{tmp}/httpd.pid"
Mutex file:{tmp} default
ErrorLog "{tmp}/error.log"
LogLevel warn
{user}Listen 127.0.0.1:{port}
ServerName 127.0.0.1
LoadModule mpm_event_module {MODULES}/mod_mpm_event.so
LoadModule authz_core_module {MODULES}/mod_authz_core.so
LoadModule proxy_module {MODULES}/mod_proxy.so
LoadModule proxy_http_module {MODULES}/mod_proxy_http.so
LoadModule proxy_wstunnel_module {MODULES}/mod_proxy_wstunnel.so
ProxyRequests Off
ProxyPreserveHost On
ProxyTimeout 30
ProxyPass / {target} upgrade=websocket
ProxyPassReverse / {target}
ProxyPassReverseCookieDomain {COOKIE_DOMAIN[0]} {COOKIE_DOMAIN[1]}
ProxyPassReverseCookiePath {COOKIE_PATH[0]} {COOKIE_PATH[1]}
"""


def _free_port() -> int:
    # httpd cannot listen on port 0 and tell us the port; pick one the kernel just gave
    # out (a tiny race with other processes, retried by the caller).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Apache:
    port: int
    conf: Path
    proc: subprocess.Popen[bytes]
    error_log: Path

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # our own session: httpd and its children
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _start_apache(tmp: Path, backend_port: int) -> Apache:
    """Blocking: start httpd on a free port and wait until it accepts connections."""
    if not Path(APACHE).exists():
        pytest.fail(f"apache2 is not installed ({APACHE}); run scripts/system-deps")
    tmp.mkdir()
    os.chmod(tmp, 0o755)  # the children run as nobody
    for attempt in range(3):
        port = _free_port()
        conf = tmp / "httpd.conf"
        conf.write_text(httpd_conf(tmp, port, backend_port))
        with open(tmp / "stderr.log", "wb") as stderr:
            proc = subprocess.Popen(
                [APACHE, "-DFOREGROUND", "-f", str(conf)],
                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
            )

        def up(proc: subprocess.Popen[bytes] = proc, port: int = port) -> bool:
            if proc.poll() is not None:
                return True
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
            except OSError:
                return False

        wait_for_sync(up, timeout=15, what="apache2 to accept connections")
        if proc.poll() is None:
            return Apache(port, conf, proc, tmp / "error.log")
        err = (tmp / "stderr.log").read_text(errors="replace")
        log = (tmp / "error.log").read_text(errors="replace") if (tmp / "error.log").exists() else ""
        if attempt == 2 or "Address already in use" not in err + log:
            pytest.fail(f"apache2 exited with {proc.returncode}: {err}\n{log}")
    raise AssertionError("unreachable")


@pytest.fixture
async def apache(backend: Backend, tmp_path: Path) -> AsyncIterator[Apache]:
    a = await asyncio.to_thread(_start_apache, tmp_path / "httpd", backend.port)
    try:
        yield a
    finally:
        await asyncio.to_thread(_stop, a.proc)
