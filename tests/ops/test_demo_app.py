"""The demo application server, run as a real subprocess on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from hotspare.demo.app import DEMO_PASSWORD, SAMPLE_RECORDS, search_index

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Demo:
    proc: asyncio.subprocess.Process
    url: str
    data: Path


async def start_demo(name: str, data: Path, *extra: str) -> Demo:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotspare.demo.app", "--name", name, "--data", str(data), "--port", "0",
        *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    assert proc.stdout is not None
    # The readiness signal is the "listening on" line; wait for it with a deadline.
    line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
    m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
    assert m, f"unexpected first line {line!r}"
    return Demo(proc, m.group(1), data)


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    d = await start_demo("a", tmp_path / "a", "--seed")
    yield d
    if d.proc.returncode is None:
        d.proc.kill()
        await d.proc.wait()


def session() -> aiohttp.ClientSession:
    # aiohttp's default cookie jar ignores cookies from IP addresses; browsers do not.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login(session: aiohttp.ClientSession, url: str, user: str = "ada") -> None:
    async with session.post(f"{url}/login", data={"user": user, "password": DEMO_PASSWORD}) as r:
        assert r.status == 200, await r.text()


async def test_health_names_the_server(demo: Demo) -> None:
    async with session() as s, s.get(f"{demo.url}/health") as r:
        assert r.status == 200
        assert await r.json() == {"ok": True, "name": "a"}
        assert r.headers["X-Demo-Server"] == "a"


async def test_login_session_cookie(demo: Demo) -> None:
    async with session() as s:
        async with s.get(f"{demo.url}/me") as r:
            assert r.status == 401
            assert "log in again" in await r.text()
        async with s.post(f"{demo.url}/login", data={"user": "ada", "password": "nope"}) as r:
            assert r.status == 401
        await login(s, demo.url)
        async with s.get(f"{demo.url}/me") as r:
            assert await r.json() == {"user": "ada", "server": "a"}
        async with s.post(f"{demo.url}/logout") as r:
            assert r.status == 200
        async with s.get(f"{demo.url}/me") as r:
            assert r.status == 401


async def test_keyword_search_over_index_folder(demo: Demo) -> None:
    async with session() as s:
        await login(s, demo.url)
        async with s.get(f"{demo.url}/search", params={"q": "Library SCHOOL"}) as r:
            body = await r.json()
        assert body["hits"] == [{"record": "title-0004.txt", "title": "Matilda"}]
        # A record written now is found now: the index folder is the truth.
        async with s.put(f"{demo.url}/index/title-0100.txt", data=b"Dune\nHerbert\ndesert school") as r:
            assert r.status == 201
        async with s.get(f"{demo.url}/search", params={"q": "school"}) as r:
            records = [h["record"] for h in (await r.json())["hits"]]
        assert records == ["title-0004.txt", "title-0100.txt"]
        async with s.put(f"{demo.url}/index/..%2Fescape", data=b"x") as r:
            assert r.status in (400, 404)
    assert not (demo.data / "escape").exists()


async def test_report_job_writes_a_file_and_serves_it(demo: Demo) -> None:
    async with session() as s:
        await login(s, demo.url, "librarian")
        async with s.post(f"{demo.url}/jobs/report", json={"title": "Overdue books"},
                          headers={"X-Hotspare-Epoch": "7"}) as r:
            assert r.status == 201
            assert r.headers["X-Demo-Epoch-Seen"] == "7"
            job = await r.json()
        path = demo.data / job["path"]
        assert path.parent == demo.data / "jobs" / "reports"
        text = path.read_text()
        assert text.startswith("Overdue books\nwritten by server a for librarian")
        assert "epoch 7" in text
        assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left
        async with s.get(f"{demo.url}/jobs/reports/{job['id']}") as r:
            assert await r.text() == text
        async with s.get(f"{demo.url}/jobs/reports") as r:
            assert (await r.json())["reports"] == [job["id"]]
        async with s.get(f"{demo.url}/jobs/reports/20200101-000000-deadbeef") as r:
            assert r.status == 404


async def test_a_report_copied_to_the_spare_is_served_there(demo: Demo, tmp_path: Path) -> None:
    """What the demo shows after a failover: the spare serves files it got by replication
    (copied here by the test, standing in for the agent), but the session is gone."""
    spare = await start_demo("b", tmp_path / "b")
    try:
        async with session() as s:
            await login(s, demo.url)
            async with s.post(f"{demo.url}/jobs/report", json={"title": "t"}) as r:
                job = await r.json()
            src = demo.data / job["path"]
            (spare.data / job["path"]).write_bytes(src.read_bytes())
            async with s.get(f"{spare.url}/jobs/reports/{job['id']}") as r:
                assert r.status == 401  # the cookie of server a means nothing on b
            await login(s, spare.url)
            async with s.get(f"{spare.url}/jobs/reports/{job['id']}") as r:
                assert r.headers["X-Demo-Server"] == "b"
                assert await r.text() == src.read_text()
    finally:
        spare.proc.kill()
        await spare.proc.wait()


async def test_sigterm_stops_cleanly(demo: Demo) -> None:
    demo.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(demo.proc.wait(), 20) == 0


async def test_port_in_use_is_a_clear_error(demo: Demo, tmp_path: Path) -> None:
    port = demo.url.rsplit(":", 1)[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotspare.demo.app", "--name", "x", "--data", str(tmp_path / "x"),
        "--port", port, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err.decode()


def test_search_index_unit(tmp_path: Path) -> None:
    for name, text in SAMPLE_RECORDS.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "r.txt").write_text("Nested\nDragon")
    (tmp_path / ".hidden.tmp").write_text("dragon")
    assert [h["record"] for h in search_index(tmp_path, "dragon")] == ["sub/r.txt", "title-0001.txt"]
    assert search_index(tmp_path, "  ") == []
    assert search_index(tmp_path / "missing", "dragon") == []


async def test_report_counts_only_records_not_hotspare_files(demo: Demo) -> None:
    """The agent keeps its marker and state beside the records; they are not records."""
    (demo.data / "index" / ".hotspare-root").write_text("")
    (demo.data / "index" / ".hotspare").mkdir()
    (demo.data / "index" / ".hotspare" / "state.sqlite").write_bytes(b"x")
    (demo.data / "index" / ".hotspare" / "trash" / "2026-01-01").mkdir(parents=True)
    (demo.data / "index" / ".hotspare" / "trash" / "2026-01-01" / "old.txt").write_text("dragon")
    async with session() as s:
        await login(s, demo.url)
        async with s.post(f"{demo.url}/jobs/report", json={"title": "Count"}) as r:
            job = await r.json()
        async with s.get(f"{demo.url}/search", params={"q": "dragon"}) as r:
            assert [h["record"] for h in (await r.json())["hits"]] == ["title-0001.txt"]
    assert f"records in index: {len(SAMPLE_RECORDS)}\n" in (demo.data / job["path"]).read_text()


async def test_login_from_the_browser_form_answers_a_page(demo: Demo) -> None:
    browser = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    async with session() as s:
        async with s.post(f"{demo.url}/login", data={"user": "ada", "password": DEMO_PASSWORD},
                          headers=browser) as r:
            assert r.status == 200
            assert r.content_type == "text/html"
            page = await r.text()
        assert "logged in as <b>ada</b>" in page and '<span id="server">a</span>' in page
        async with s.get(f"{demo.url}/me") as r:  # and the session cookie was set
            assert await r.json() == {"user": "ada", "server": "a"}
        # API clients sending JSON, or asking for it, still get JSON.
        async with s.post(f"{demo.url}/login", json={"user": "bo", "password": DEMO_PASSWORD}) as r:
            assert await r.json() == {"user": "bo", "server": "a"}
        async with s.post(f"{demo.url}/login", data={"user": "cy", "password": DEMO_PASSWORD},
                          headers={"Accept": "application/json"}) as r:
            assert await r.json() == {"user": "cy", "server": "a"}
