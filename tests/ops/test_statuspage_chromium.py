"""The status page in real headless Chromium (Debian's, from scripts/system-deps) during a
failover: two demo app server processes behind a real Router; the page is open, the
active is SIGKILLed, and the page must show the new active within one refresh of the
moment the router switched; and its chart, under load, must mark the failover and hold
every request /metrics counted. Driven over the DevTools protocol (aiohttp websocket);
screenshots are kept in test-artifacts/."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from router.admin import history
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


def _requests_in(metrics_text: str, code: str | None = None) -> float:
    """hotspare_requests_total of service app summed over backend, method (and code)."""
    total = 0.0
    for m in re.finditer(r'^hotspare_requests_total\{([^}]*)\} (\S+)$', metrics_text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("service") == "app" and (code is None or labels.get("code") == code):
            total += float(m.group(2))
    return total


async def _load(proxy: str, stop: asyncio.Event) -> int:
    """Requests one after another until ``stop``; the count answered (any status)."""
    n = 0
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            try:
                async with s.get(f"{proxy}/") as r:
                    await r.read()
                n += 1
            except aiohttp.ClientError:
                pass  # counted by the router or not at all: the check reads /metrics
    return n


CHART_DATA = "JSON.parse(document.querySelector('[data-service=\"app\"] .chart-data').textContent)"


@pytest.mark.slow
async def test_status_page_chart_shows_the_failover_and_agrees_with_metrics(
    tmp_path: Path, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "SAMPLE_SECONDS", 0.1)  # 180 points: an 18 s window
    app_a, url_a = await start_app("a", tmp_path / "a")
    app_b, url_b = await start_app("b", tmp_path / "b")
    try:
        path = write_config(tmp_path, [{"name": "a", "url": url_a}, {"name": "b", "url": url_b}])
        async with running_router(path) as (_, proxy, admin), aiohttp.ClientSession() as s:
            async def get(url: str) -> Any:
                async with s.get(url) as r:
                    return await (r.json() if r.content_type == "application/json" else r.text())

            async def ready() -> bool:
                st, h = await get(f"{admin}/v1/status"), await get(f"{admin}/v1/history")
                return all(b["healthy"] for b in st["services"][0]["backends"]) and bool(h["services"])

            await wait_for(ready, timeout=20, what="both backends probed, the history started")  # type: ignore[arg-type]
            before = await get(f"{admin}/metrics")  # the sampler's baseline is older: no load yet
            page: Browser = await browser(f"{admin}/")
            stop = asyncio.Event()
            loaders = [asyncio.create_task(_load(proxy, stop)) for _ in range(4)]
            try:
                await wait_for(lambda: _points_with(get, admin, "a", 30), timeout=20, what="a's traffic charted")
                killed_at = time.time()
                app_a.send_signal(signal.SIGKILL)
                await app_a.wait()

                async def switched() -> bool:
                    return bool((await get(f"{admin}/v1/status"))["services"][0]["active"] == "b")

                await wait_for(switched, timeout=20, what="the router to make b active")  # type: ignore[arg-type]
                await wait_for(lambda: _points_with(get, admin, "b", 30), timeout=20, what="b's traffic charted")
            finally:
                stop.set()
                sent = sum(await asyncio.gather(*loaders))
            stopped_at = time.time()

            async def sampled_after_stop() -> bool:
                svc = (await get(f"{admin}/v1/history"))["services"][0]
                return bool(svc["points"][-1]["at"] > stopped_at + history.SAMPLE_SECONDS)

            await wait_for(sampled_after_stop, what="a sample after the load stopped")  # type: ignore[arg-type]
            after = await get(f"{admin}/metrics")
            counted = _requests_in(after) - _requests_in(before)
            errors = _requests_in(after, "5xx") - _requests_in(before, "5xx")
            assert counted >= sent > 100

            async def chart_has_it_all() -> Any:
                data = await page.evaluate(CHART_DATA)
                total = sum(n for p in data["points"] for n in p["requests"].values())
                return data if data["marks"] and total >= counted else None

            data = await wait_for(chart_has_it_all, timeout=REFRESH_SECONDS + MARGIN + 5,
                                  what="the page's chart to hold the failover and every request")
            total = sum(n for p in data["points"] for n in p["requests"].values())
            assert abs(total - counted) <= 0.01 * counted, (total, counted)
            assert sum(n for p in data["points"] for n in p["errors"].values()) == errors
            mark = data["marks"][0]
            assert mark["kind"] == "failover" and killed_at - 1 <= mark["at"] <= stopped_at, (mark, killed_at)
            svg = "document.querySelector('[data-service=\"app\"] .chart svg')"
            assert await page.evaluate(f"{svg}.querySelectorAll('.mark-failover').length") == 1
            assert await page.evaluate(f"{svg}.querySelector('.mark-failover').dataset.at") == str(mark["at"])
            assert await page.evaluate(f"{svg}.querySelectorAll('polyline[data-series=\"b\"]').length") >= 1
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "statuspage-chart.png").write_bytes(await _screenshot(page))
            (ARTIFACTS / "statuspage-chart.json").write_text(json.dumps(data, indent=1))
    finally:
        for proc in (app_a, app_b):
            if proc.returncode is None:
                os.kill(proc.pid, signal.SIGTERM)
            await proc.wait()


async def _points_with(get: Any, admin: str, backend: str, at_least: int = 1) -> bool:
    """The history has at least ``at_least`` points where ``backend`` served requests."""
    svc = (await get(f"{admin}/v1/history"))["services"][0]
    return sum(1 for p in svc["points"] if p["requests"].get(backend)) >= at_least


async def _screenshot(page: Browser) -> bytes:
    """The service's section (status table and chart), whole, even below the fold."""
    box = await page.evaluate(
        "(() => { const r = document.querySelector('section.service').getBoundingClientRect();"
        " return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}; })()")
    shot = await page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                           clip={**box, "scale": 1})
    png = base64.b64decode(shot["data"])
    assert png.startswith(b"\x89PNG")
    return png
