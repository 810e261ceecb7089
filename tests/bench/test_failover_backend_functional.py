"""The failover benchmark's backend as a real process on an ephemeral loopback port."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bench.failover_backend import MODE_PATH
from bench.procs import Processes, free_port
from tests.helpers import wait_for

BACKEND = Path(__file__).resolve().parents[2] / "bench" / "failover_backend.py"


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[tuple[int, Path, Processes]]:
    # The script takes a port number, so it is picked here (bind 0, read back, close).
    port = free_port()
    log = tmp_path / "a.posts"
    with Processes(tmp_path) as procs:
        procs.start(
            "backend-a",
            [sys.executable, str(BACKEND), "--name", "a", "--port", str(port), "--post-log", str(log)],
            port=port,
        )
        yield port, log, procs


async def test_serves_logs_posts_and_fails_on_demand(backend: tuple[int, Path, Processes]) -> None:
    port, log, procs = backend
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/x", headers={"X-Hotspare-Epoch": "7"}) as r:
            assert (r.status, r.headers["X-Backend"], r.headers["X-Seen-Epoch"]) == (200, "a", "7")
        async with s.post(f"{base}/form", data=b"{}", headers={"X-Bench-Id": "id-1"}) as r:
            assert r.status == 200
        async with s.post(f"{base}/form", data=b"{}") as r:
            assert r.status == 400
        async with s.post(f"{base}{MODE_PATH}", data=b"503") as r:
            assert r.status == 200
        async with s.get(f"{base}/health") as r:
            assert r.status == 503
        async with s.post(f"{base}/form", data=b"{}", headers={"X-Bench-Id": "id-2"}) as r:
            assert (r.status, r.headers["X-Backend"]) == (503, "a")
    # SIGKILL: the line written before it is still in the log; the 503'd POST is not.
    proc = procs.procs[0]
    proc.signal(signal.SIGKILL)
    await wait_for(lambda: proc.popen.poll() is not None, what="backend to die")
    assert log.read_text() == "id-1 a\n"


async def test_bad_mode_body_is_refused(backend: tuple[int, Path, Processes]) -> None:
    port, _, _ = backend
    async with aiohttp.ClientSession() as s, s.post(
        f"http://127.0.0.1:{port}{MODE_PATH}", data=b"maybe"
    ) as r:
        assert r.status == 400
        assert "expected body '503' or 'ok'" in await r.text()
