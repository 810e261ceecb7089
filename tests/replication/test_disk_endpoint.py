"""``GET /v1/roots/{root}/disk`` on a real agent: what ``hotspare doctor`` asks of a root
(folder, marker, free space, largest file, the agent's clock), token required."""

from __future__ import annotations

import os
import time
from pathlib import Path

import aiohttp

from .kit import Pair, auth, fake_router, rep_config


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers or {}) as r:
        return r.status, await r.json(content_type=None)


async def test_disk_reports_marker_free_space_largest_file_and_clock(tmp_path: Path) -> None:
    a = tmp_path / "a" / "jobs"
    (a / "sub").mkdir(parents=True)
    (a / "small.txt").write_bytes(b"x" * 10)
    (a / "sub" / "big.dat").write_bytes(b"y" * 300_000)
    os.symlink("sub/big.dat", a / "link")  # a link is not a file to make room for
    (a / "ignored.tmp").write_bytes(b"z" * 900_000)
    (a / ".hotspare-root").write_text("hotspare replication root\n")
    async with fake_router() as router:
        pair = Pair(rep_config(tmp_path, roots=[{"name": "jobs", "path": str(a), "exclude": ["*.tmp"]}]))
        try:
            await pair.start("a", router.url)
            before = time.time()
            status, body = await _get(f"{pair.peers['a']}/v1/roots/jobs/disk", auth())
            after = time.time()
        finally:
            await pair.close()
    assert status == 200, body
    st = os.statvfs(a)
    assert body["root"] == "jobs" and body["node"] == "a" and body["path"] == str(a)
    assert body["exists"] is True and body["marker"] is True
    assert body["largest_file_bytes"] == 300_000  # the excluded file is not the agent's business
    assert body["files"] == 3  # small.txt, sub/big.dat, link (not the marker, not *.tmp)
    assert abs(int(str(body["free_bytes"])) - st.f_bavail * st.f_frsize) < 64 * 1024 * 1024
    assert before <= float(str(body["now"])) <= after


async def test_disk_of_a_missing_root_says_so_and_unknown_root_is_404(tmp_path: Path) -> None:
    async with fake_router() as router:
        router.up = False  # no role: nothing creates b's folder behind the test's back
        pair = Pair(rep_config(tmp_path))
        try:
            await pair.start("b", router.url)
            status, body = await _get(f"{pair.peers['b']}/v1/roots/jobs/disk", auth())
            status404, body404 = await _get(f"{pair.peers['b']}/v1/roots/nope/disk", auth())
        finally:
            await pair.close()
    assert status == 200
    assert body["exists"] is False and body["marker"] is False and body["free_bytes"] is None
    assert body["path"] == str(tmp_path / "b" / "jobs")
    assert status404 == 404 and body404 == {"error": "no root named 'nope'"}


async def test_disk_needs_the_token(tmp_path: Path) -> None:
    async with fake_router() as router:
        pair = Pair(rep_config(tmp_path))
        try:
            await pair.start("a", router.url)
            url = f"{pair.peers['a']}/v1/roots/jobs/disk"
            missing, body = await _get(url)
            wrong, _ = await _get(url, {"Authorization": "Bearer not-the-token"})
        finally:
            await pair.close()
    assert (missing, wrong) == (401, 401)
    assert "missing bearer token" in str(body["error"])
