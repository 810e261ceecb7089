"""The cumulative mass-delete guard with two real agents on loopback (router: the
stand-in of kit.py): an ``rm -rf`` on the active while both agents run."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import aiohttp

from tests.helpers import wait_for

from .kit import Pair, auth, fake_router, rep_config

N = 200
SHARE = 0.5


def _count(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


async def _metric(s: aiohttp.ClientSession, base: str) -> str:
    async with s.get(base + "/metrics") as r:
        return await r.text()


async def test_rm_rf_on_the_active_is_held_until_an_operator_confirms(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "jobs", tmp_path / "b" / "jobs"
    (a / "data").mkdir(parents=True)
    (a / "seed.txt").write_text("stays")
    for i in range(N):
        (a / "data" / f"f{i:03}.idx").write_text(str(i))
    async with fake_router() as router:
        pair = Pair(rep_config(tmp_path, max_delete_share=SHARE, rescan_interval="60s"))
        try:
            await pair.start("a", router.url)
            await pair.start("b", router.url)
            await wait_for(lambda: _count(b / "data") == N, 20, what="the first sync")
            sink = pair.agents["b"].sinks["jobs"]
            src = pair.agents["a"].sources["jobs"]
            await wait_for(lambda: sink.fresh.in_sync, 10, what="the sink in sync")
            # The rm -rf, paced so the feed brings it in batches of 30 (each one well under
            # the per-plan limit, as a long rm -rf of a big tree does), then the rest at once.
            files = sorted((a / "data").iterdir())
            for i in range(0, 150, 30):
                for f in files[i : i + 30]:
                    f.unlink()
                left = N - i - 30
                await wait_for(lambda: sum(p.startswith("data/") for p in src.log.known) == left,  # noqa: B023
                               20, what="the source to record the deletions")
                await wait_for(lambda: sink.seq >= src.log.head, 20, what="the sink to read the feed")
            await asyncio.to_thread(shutil.rmtree, a / "data")
            await wait_for(lambda: not any(p.startswith("data/") for p in src.log.known), 20,
                           what="the source to record every deletion")
            await wait_for(lambda: sink.seq >= src.log.head, 20, what="the sink to read the whole feed")
            kept = _count(b / "data")
            assert kept >= (1 - SHARE) * N, f"the sink deleted {N - kept} of {N} files one batch at a time"
            assert sink.guard.tripped and sink.guard.removed <= (1 - SHARE) * N
            # Copies and updates go on while removals are held.
            (a / "after.txt").write_text("written after the rm -rf")
            await wait_for(lambda: (b / "after.txt").exists(), 10, what="a new file to reach the replica")
            async with aiohttp.ClientSession() as s:
                base = pair.peers["b"]
                assert 'hotspare_replication_delete_guard_tripped{root="jobs"} 1.0' in await _metric(s, base)
                async with s.get(base + "/v1/status", headers=auth()) as r:
                    root = (await r.json())["roots"][0]
                assert root["delete_guard"]["tripped"] is True and root["in_sync"] is False
                assert "refused to remove" in root["deletes_refused"]
                async with s.post(base + "/v1/roots/jobs/confirm-deletes") as r:
                    assert r.status == 401, "confirming needs the token"
                async with s.post(pair.peers["a"] + "/v1/roots/jobs/confirm-deletes", headers=auth()) as r:
                    assert r.status == 409 and "not mirroring" in (await r.json())["error"]
                async with s.post(base + "/v1/roots/jobs/confirm-deletes", headers=auth()) as r:
                    body = await r.json()
                    assert r.status == 200 and body["held"] > 0, body
                await wait_for(lambda: _count(b / "data") == 0, 20, what="the held deletes to be applied")
                await wait_for(lambda: sink.fresh.in_sync, 10, what="the sink back in sync")
                assert 'hotspare_replication_delete_guard_tripped{root="jobs"} 0.0' in await _metric(s, base)
                assert (b / "seed.txt").exists() and (b / "after.txt").exists()
                assert _count(b / ".hotspare" / "trash") == N, "deleted files go to the trash"
                async with s.post(base + "/v1/roots/jobs/confirm-deletes", headers=auth()) as r:
                    assert r.status == 409 and "nothing to confirm" in (await r.json())["error"]
        finally:
            await pair.close()
