"""The status page in real headless Chromium (Debian's, from scripts/system-deps) during a
failover: two demo app server processes behind a real Router; the page is open, the
active is SIGKILLed, and the page must show the new active within one refresh of the
moment the router switched. Driven over the DevTools protocol (aiohttp websocket); a
screenshot is kept in test-artifacts/."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from router.admin.page import REFRESH_SECONDS
from tests.helpers import wait_for
from tests.ops.kit import running_router, write_config

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         "--window-size=1100,800"]
MARGIN = 3.0  # seconds beyond one refresh: a shared 2-core machine is noisy


async def start_app(name: str, data: Path) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotspare.demo.app", "--name", name, "--data", str(data), "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=REPO,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
    assert m, f"demo app {name} said {line!r}"
    return proc, m.group(1)


class Browser:
    """One headless Chromium and one page, driven over the DevTools protocol."""

    def __init__(self, proc: asyncio.subprocess.Process, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.proc, self.ws, self._id = proc, ws, 0

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        await self.ws.send_json({"id": self._id, "method": method, "params": params})
        while True:  # skip events until our answer
            msg = await self.ws.receive_json()
            if msg.get("id") == self._id:
                assert "error" not in msg, msg
                result: dict[str, Any] = msg["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        r = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return r["result"].get("value")


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/system-deps installs it): cannot test the page")
    procs: list[asyncio.subprocess.Process] = []
    sessions: list[aiohttp.ClientSession] = []

    async def open_page(url: str) -> Browser:
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'chromium'}", url,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        procs.append(proc)
        assert proc.stderr is not None
        port = None
        while port is None:  # bounded by the wait_for below
            line = (await proc.stderr.readline()).decode()
            assert line, "chromium exited before opening its DevTools port"
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = int(m.group(1)) if m else None
        session = aiohttp.ClientSession()
        sessions.append(session)

        async def page_ws() -> str | None:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as r:
                targets = await r.json()
            pages = [t for t in targets if t.get("type") == "page" and t.get("url", "").startswith(url)]
            return pages[0]["webSocketDebuggerUrl"] if pages else None

        ws_url = await wait_for(page_ws, timeout=30, what="chromium's page target")  # type: ignore[arg-type]
        b = Browser(proc, await session.ws_connect(ws_url, max_msg_size=0))
        await b.send("Runtime.enable")
        return b

    yield lambda url: asyncio.wait_for(open_page(url), 60)
    for s in sessions:
        await s.close()
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@pytest.mark.slow
async def test_status_page_shows_the_new_active_within_one_refresh(tmp_path: Path, browser: Any) -> None:
    app_a, url_a = await start_app("a", tmp_path / "a")
    app_b, url_b = await start_app("b", tmp_path / "b")
    try:
        path = write_config(tmp_path, [{"name": "a", "url": url_a}, {"name": "b", "url": url_b}])
        async with running_router(path) as (_, _, admin), aiohttp.ClientSession() as s:
            async def status() -> dict[str, Any]:
                async with s.get(f"{admin}/v1/status") as r:
                    svc: dict[str, Any] = (await r.json())["services"][0]
                    return svc

            async def both_up() -> bool:
                return all(b["healthy"] for b in (await status())["backends"])

            await wait_for(both_up, timeout=20, what="both backends probed")  # type: ignore[arg-type]
            page: Browser = await browser(f"{admin}/")

            async def shown_active() -> str | None:
                value = await page.evaluate(
                    "(document.querySelector('[data-service=\"app\"] .active-name') || {}).textContent")
                return value if isinstance(value, str) else None

            assert await wait_for(shown_active, timeout=30, what="the page loaded") == "a"  # type: ignore[arg-type]
            assert await page.evaluate("document.querySelector('.spare').textContent.trim()") == "ready (b)"

            app_a.send_signal(signal.SIGKILL)
            await app_a.wait()

            async def router_switched() -> bool:
                svc = await status()
                return bool(svc["active"] == "b" and svc["state"] == "active")

            await wait_for(router_switched, timeout=20, what="the router to make b active")  # type: ignore[arg-type]
            # From here, one refresh (plus margin for a noisy machine) at most.
            async def page_shows_b() -> bool:
                return await shown_active() == "b"

            await wait_for(page_shows_b, timeout=REFRESH_SECONDS + MARGIN,  # type: ignore[arg-type]
                           what=f"the page to show b within one refresh ({REFRESH_SECONDS}s + {MARGIN}s)")
            text = await page.evaluate("document.getElementById('status').innerText")
            assert re.search(r"Epoch\s+1\b", text), text
            assert "DOWN" in text or "down" in text  # a's row
            assert await page.evaluate("document.getElementById('stale').className") == ""
            shot = await page.send("Page.captureScreenshot", format="png")
            ARTIFACTS.mkdir(exist_ok=True)
            png = base64.b64decode(shot["data"])
            assert png.startswith(b"\x89PNG")
            (ARTIFACTS / "statuspage-after-failover.png").write_bytes(png)
            (ARTIFACTS / "statuspage-after-failover.json").write_text(json.dumps(await status(), indent=2))
    finally:
        for proc in (app_a, app_b):
            if proc.returncode is None:
                os.kill(proc.pid, signal.SIGTERM)
            await proc.wait()
