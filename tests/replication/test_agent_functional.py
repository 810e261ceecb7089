"""Two real agents on loopback (in this process), real files, a stand-in router."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import wait_for

from .kit import Pair, auth, fake_router, rep_config, tree


async def _in_sync(pair: Pair, src: Path, dst: Path) -> bool:
    return tree(src) == tree(dst)


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a" / "jobs", tmp_path / "b" / "jobs"
    a.mkdir(parents=True)
    (a / "seed.txt").write_text("first file, so the source marks its root\n")
    return a, b


async def test_create_modify_rename_delete_small_and_large(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    a, b = roots
    (a / "sub").mkdir()
    (a / "sub" / "small.idx").write_bytes(b"x" * 100)
    (a / "big.dat").write_bytes(os.urandom(3 * 1024 * 1024))
    odd = os.fsdecode(b"odd \xff name %20?.txt")
    (a / odd).write_bytes(b"odd")
    async with fake_router() as router:
        pair = Pair(rep_config(tmp_path))
        try:
            await pair.start("a", router.url)
            await pair.start("b", router.url)
            await wait_for(lambda: tree(a) == tree(b), 15, what="initial sync")
            assert (b / odd).read_bytes() == b"odd"
            assert (b / "big.dat").stat().st_mtime_ns == (a / "big.dat").stat().st_mtime_ns
            # create, modify, rename, delete; a small and a large file each
            (a / "new.idx").write_bytes(b"new")
            (a / "sub" / "small.idx").write_bytes(b"y" * 200)
            os.chmod(a / "sub" / "small.idx", 0o600)
            (a / "big.dat").write_bytes(os.urandom(2 * 1024 * 1024))
            (a / "big.dat").rename(a / "sub" / "big-renamed.dat")
            (a / "seed.txt").unlink()
            await wait_for(lambda: tree(a) == tree(b), 15, what="changes to reach the replica")
            assert (b / "sub" / "small.idx").stat().st_mode & 0o777 == 0o600
            assert not (b / "seed.txt").exists()
            trashed = list((b / ".hotspare" / "trash").rglob("seed.txt"))
            assert len(trashed) == 1, "a deleted file goes to the trash, not away"
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{pair.peers['b']}/v1/status", headers=auth()) as r:
                    status = await r.json()
                async with s.get(f"{pair.peers['b']}/metrics") as r:
                    metrics = await r.text()
            root = status["roots"][0]
            assert status["role"] == "sink" and root["name"] == "jobs"
            assert root["error"] is None
            assert 'hotspare_replication_lag_seconds{root="jobs"}' in metrics
            assert 'hotspare_replication_files_transferred_total{root="jobs"}' in metrics
        finally:
            await pair.close()


@pytest.mark.slow
async def test_large_file_written_slowly_is_never_visible_half_way(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    a, b = roots
    size = 500 * 1024 * 1024
    chunk = os.urandom(1024 * 1024)
    async with fake_router() as router:
        pair = Pair(rep_config(tmp_path))
        try:
            await pair.start("a", router.url)
            await pair.start("b", router.url)
            await wait_for(lambda: tree(a) == tree(b), 15, what="initial sync")
            seen: list[int] = []
            done = asyncio.Event()

            def write() -> None:
                with open(a / "report.bin", "wb") as f:
                    for i in range(size // len(chunk)):
                        f.write(chunk)
                        if i % 50 == 0:
                            f.flush()
                            os.fsync(f.fileno())  # slow it down: the watcher sees many writes

            async def watch() -> None:
                target = b / "report.bin"
                while not done.is_set():
                    try:
                        seen.append(target.stat().st_size)
                    except FileNotFoundError:
                        seen.append(-1)
                    await asyncio.sleep(0.01)  # sampling rate of the observer, not a wait

            observer = asyncio.create_task(watch(), name="replica-observer")
            await asyncio.to_thread(write)
            await wait_for(lambda: (b / "report.bin").exists() and (b / "report.bin").stat().st_size == size,
                           18, what="the finished file on the replica")
            done.set()
            await observer
            partial = sorted({s for s in seen if s not in (-1, size)})
            assert partial == [], f"replica showed partial sizes {partial[:5]}"
            assert -1 in seen, "observer never saw the file absent (test did not observe the write)"
            assert tree(a) == tree(b)
        finally:
            await pair.close()


async def test_source_root_replaced_by_empty_folder_deletes_nothing(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    a, b = roots
    for i in range(20):
        (a / f"f{i}.idx").write_text(str(i))
    async with fake_router() as router:
        pair = Pair(rep_config(tmp_path))
        try:
            await pair.start("a", router.url)
            await pair.start("b", router.url)
            await wait_for(lambda: tree(a) == tree(b), 15, what="initial sync")
            before = tree(b)
            a.rename(tmp_path / "a" / "jobs-unmounted")
            a.mkdir()  # what an unmounted disk looks like: an empty folder
            src = pair.agents["a"].sources["jobs"]
            await wait_for(lambda: not src.available, 10, what="source to notice the missing marker")
            sink = pair.agents["b"].sinks["jobs"]
            await wait_for(lambda: sink.fresh.error is not None and "marker" in sink.fresh.error, 10,
                           what="sink to report the refused feed")
            assert tree(b) == before
            # Now a root that carries a marker but lost most files: the delete guard holds.
            (a / ".hotspare-root").write_text("x")
            (a / "f0.idx").write_text("0")
            await wait_for(lambda: src.available, 10, what="source to serve again")
            sink.request_reconcile()
            await wait_for(lambda: sink.fresh.refused is not None, 15, what="mass delete refusal")
            assert "refused to remove" in str(sink.fresh.refused)
            assert tree(b) == before
            async with aiohttp.ClientSession() as s, s.get(f"{pair.peers['b']}/metrics") as r:
                assert 'hotspare_replication_deletes_refused_total{root="jobs"} 1.0' in await r.text()
        finally:
            await pair.close()


async def test_token_and_path_traversal_refused(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    a, _ = roots
    outside = tmp_path / "secret.txt"
    outside.write_text("do not serve")
    (a / "link-out").symlink_to(outside)
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir" / "x").write_text("nope")
    (a / "dirlink").symlink_to(tmp_path / "outdir")
    async with fake_router() as router:
        pair = Pair(rep_config(tmp_path))
        try:
            await pair.start("a", router.url)
            base = pair.peers["a"]
            await wait_for(lambda: "jobs" in pair.agents["a"].sources, 10, what="source role")
            async with aiohttp.ClientSession() as s:
                for method, path in [("GET", "/v1/status"), ("GET", "/v1/roots/jobs/manifest"),
                                     ("GET", "/v1/roots/jobs/file?path=seed.txt"),
                                     ("POST", "/v1/actions/final-sync"), ("POST", "/v1/actions/stop-app")]:
                    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "test-replication-token"}):
                        async with s.request(method, base + path, headers=headers) as r:
                            assert r.status == 401, (method, path, headers)
                            assert "bearer token" in (await r.json())["error"]
                async with s.get(base + "/metrics") as r:
                    assert r.status == 200
                async with s.get(base + "/v1/roots/jobs/file", params={"path": "seed.txt"}, headers=auth()) as r:
                    assert r.status == 200
                for bad, code in [("../secret.txt", 400), ("%2E%2E/secret.txt", 400), ("/etc/passwd", 400),
                                  ("%2Fetc%2Fpasswd", 400), ("link-out", 403), ("dirlink/x", 403),
                                  (".hotspare/state.sqlite", 400)]:
                    async with s.get(f"{base}/v1/roots/jobs/file?path={bad}", headers=auth()) as r:
                        assert r.status == code, bad
                        assert "do not serve" not in await r.text()
                async with s.post(base + "/v1/roots/jobs/bundle", json={"paths": ["..%2Fsecret.txt", "link-out"]},
                                  headers=auth()) as r:
                    body = await r.read()
                assert b"do not serve" not in body and body.count(b'"unsafe"') == 2
                async with s.get(base + "/v1/roots/jobs/manifest", headers=auth()) as r:
                    manifest = await r.text()
                assert '"p": "link-out"' in manifest and '"l": ' in manifest  # listed as a link, not content
                assert "dirlink/x" not in manifest
        finally:
            await pair.close()


async def test_role_reversal_quarantines_old_actives_newer_files(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    a, b = roots
    (a / "shared.idx").write_text("v1")
    (a / "report.txt").write_text("v1")
    async with fake_router() as router:
        pair = Pair(rep_config(tmp_path))
        try:
            await pair.start("a", router.url)
            await pair.start("b", router.url)
            await wait_for(lambda: tree(a) == tree(b), 15, what="initial sync")
            # a dies; what it wrote last never reached b.
            await pair.stop("a")
            (a / "report.txt").write_text("v2 written on a after the last sync")
            (a / "only-on-a.txt").write_text("new on a")
            router.active, router.epoch = "b", 2
            agent_b = pair.agents["b"]
            await wait_for(lambda: "jobs" in agent_b.sources, 10, what="b to become source")
            (b / "shared.idx").write_text("v2 from b")
            # a comes back: the router says b is active; a must keep its own writes.
            await pair.start("a", router.url)
            await wait_for(lambda: tree(a) == tree(b), 15, what="a to mirror b")
            q = a / ".hotspare" / "quarantine" / "epoch-2"
            assert (q / "report.txt").read_text() == "v2 written on a after the last sync"
            assert (q / "only-on-a.txt").read_text() == "new on a"
            # a was never a replica, so it has no sync point: every file that differs
            # from the new active counts as its own and is kept (conservative by design).
            assert (q / "shared.idx").read_text() == "v1"
            assert (a / "shared.idx").read_text() == "v2 from b"
            status = pair.agents["a"].status()
            assert status["role"] == "sink" and status["roots"][0]["quarantined"] == 3
        finally:
            await pair.close()


async def test_final_sync_and_stop_app_actions(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    a, b = roots
    flag = tmp_path / "stopped"
    cfg = rep_config(tmp_path, app_stop={"a": [sys.executable, "-c",
                                                f"import os; open({str(flag)!r}, 'w').write(os.environ['HOTSPARE_EPOCH'])"]},
                     rescan_interval="60s")
    async with fake_router() as router:
        pair = Pair(cfg)
        try:
            await pair.start("a", router.url)
            await pair.start("b", router.url)
            await wait_for(lambda: tree(a) == tree(b), 15, what="initial sync")
            async with aiohttp.ClientSession() as s:
                async with s.post(pair.peers["a"] + "/v1/actions/stop-app", headers=auth(),
                                  json={"service": "app", "epoch": 1, "node": "a"}) as r:
                    assert r.status == 200 and (await r.json())["ok"] is True
                assert flag.read_text() == "1"
                async with s.post(pair.peers["b"] + "/v1/actions/stop-app", headers=auth(),
                                  json={"service": "app", "epoch": 1, "node": "b"}) as r:
                    assert r.status == 409 and "not configured" in (await r.json())["error"]
                for i in range(30):
                    (a / f"late{i}.idx").write_text(str(i))
                for node in ("b", "a"):  # on the spare itself, and forwarded by the active
                    async with s.post(pair.peers[node] + "/v1/actions/final-sync", headers=auth(),
                                      json={"service": "app", "epoch": 1, "node": "b"}) as r:
                        body: dict[str, Any] = await r.json()
                        assert r.status == 200 and body["ok"] is True, body
                    assert tree(a) == tree(b), "final-sync returned before the spare had everything"
                async with s.post(pair.peers["b"] + "/v1/actions/final-sync", headers=auth(),
                                  json={"service": "app", "epoch": 0, "node": "b"}) as r:
                    assert r.status == 409 and "stale epoch" in (await r.json())["error"]
        finally:
            await pair.close()


async def test_router_unreachable_keeps_role_and_says_so(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    async with fake_router() as router:
        pair = Pair(rep_config(tmp_path))
        try:
            agent = await pair.start("a", router.url)
            await wait_for(lambda: agent.status()["role"] == "source", 10, what="source role")
            router.up = False
            await wait_for(lambda: not agent.status()["router"]["ok"], 10, what="router marked unreachable")
            st = agent.status()
            assert st["role"] == "source" and "503" in st["router"]["error"]
            assert "jobs" in agent.sources
        finally:
            await pair.close()


async def test_agent_restarted_while_router_unreachable_resumes_its_last_role(
    tmp_path: Path, roots: tuple[Path, Path]
) -> None:
    src, dst = roots
    async with fake_router() as router:
        pair = Pair(rep_config(tmp_path))
        try:
            await pair.start("a", router.url)
            b = await pair.start("b", router.url)
            await wait_for(lambda: b.status()["role"] == "sink", 10, what="b mirrors a")
            await wait_for(lambda: _in_sync(pair, src, dst), 10, what="first sync")
            await pair.stop("b")
            router.up = False
            b = await pair.start("b", router.url)
            await wait_for(lambda: not b.status()["router"]["ok"], 10, what="router seen unreachable")
            await wait_for(lambda: b.status()["role"] == "sink", 10, what="b resumes its last role")
            (src / "while-router-down.txt").write_text("still replicated\n")
            await wait_for(lambda: (dst / "while-router-down.txt").exists(), 10, what="new file mirrored")
            assert (dst / "while-router-down.txt").read_text() == "still replicated\n"
        finally:
            await pair.close()


async def test_role_reversal_with_sync_point_keeps_only_unreplicated_changes(
    tmp_path: Path, roots: tuple[Path, Path]
) -> None:
    a, b = roots
    b.mkdir(parents=True)
    (b / "seed.txt").write_text("b's first file\n")
    for name in ("stable.idx", "edited-by-a.idx", "edited-by-both.idx", "edited-by-b.idx"):
        (b / name).write_text("v1")
    async with fake_router() as router:
        router.active = "b"
        pair = Pair(rep_config(tmp_path))
        try:
            # Epoch 1: b active, a mirrors it and gets a sync point.
            await pair.start("b", router.url)
            await pair.start("a", router.url)
            await wait_for(lambda: tree(a) == tree(b), 15, what="a mirrors b")
            sink_a = pair.agents["a"].sinks["jobs"]
            await wait_for(lambda: sink_a.fresh.in_sync and sink_a.fresh.last_reconcile_at, 10, what="a in sync")
            # Epoch 2: a active; one of its edits reaches b, the last ones never do.
            router.active, router.epoch = "a", 2
            await wait_for(lambda: "jobs" in pair.agents["a"].sources, 10, what="a to serve")
            await wait_for(lambda: "jobs" in pair.agents["b"].sinks, 10, what="b to mirror")
            sink_b = pair.agents["b"].sinks["jobs"]
            await wait_for(lambda: sink_b.fresh.in_sync, 10, what="b's first reconcile as a spare")
            (a / "edited-by-a.idx").write_text("v2 by a, replicated")
            await wait_for(lambda: (b / "edited-by-a.idx").read_text() == "v2 by a, replicated", 10,
                           what="a's first edit to reach b")
            await pair.stop("a")
            (a / "edited-by-both.idx").write_text("v2 by a, lost in the crash")
            (a / "new-on-a.idx").write_text("only a has this")
            # Epoch 3: b active again and edits files itself.
            router.active, router.epoch = "b", 3
            await wait_for(lambda: "jobs" in pair.agents["b"].sources, 10, what="b to serve")
            (b / "edited-by-both.idx").write_text("v3 by b")
            (b / "edited-by-b.idx").write_text("v3 by b")
            await pair.start("a", router.url)
            await wait_for(lambda: tree(a) == tree(b), 15, what="a mirrors b again")
            q = a / ".hotspare" / "quarantine" / "epoch-3"
            kept = sorted(p.name for p in q.rglob("*") if p.is_file())
            assert kept == ["edited-by-both.idx", "new-on-a.idx"], kept
            assert (q / "edited-by-both.idx").read_text() == "v2 by a, lost in the crash"
            assert (a / "edited-by-b.idx").read_text() == "v3 by b"
            assert (a / "edited-by-a.idx").read_text() == "v2 by a, replicated"
        finally:
            await pair.close()
