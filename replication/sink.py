"""Sink side of one root: reconcile against the source's manifest, then follow its
change feed; transfer files in parallel and place them atomically.

Rules:

1. Every decision comes from the planner; this module only fetches manifests, runs the
   plan's actions and records what it applied in the sync point.
2. A file is received into a temp file beside its target, checked against the source's
   SHA-256, flushed, and renamed into place with the source's mtime and mode. Small
   files travel in bundles and are flushed together (one ``syncfs`` per bundle).
3. A large file's temp name is derived from (path, size, mtime): a sink killed during
   the transfer resumes it with ``Range`` after a restart; other temp files are removed.
4. A file the source reports busy (still being written) or changed is left pending: the
   feed brings it again when it is closed.
5. The feed is followed from the manifest's sequence number; a ``reset`` (the source
   restarted, or we fell too far behind) means a fresh reconcile.
6. Every plan, from the feed or a reconcile, passes the cumulative delete guard
   before it runs; running a plan and the guard's wiring live in
   :mod:`replication.sinkplan` (the :class:`~replication.sinkplan.PlanRunner` mixin).
7. A path the sink's own config hides (marker, agent folder, ``exclude``) is never
   acted on, whatever the source sends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from . import fileio
from .deleteguard import DeleteGuard
from .metrics import AgentMetrics
from .paths import TMP_PREFIX, UnsafePath, hidden_reason
from .planner import Entry, Plan, Policy, plan
from .protocol import ProtocolError, parse_entry
from .sinkplan import Freshness, PlanRunner, SinkSettings
from .syncstate import SyncState
from .transfer import TransferFailed, temp_tag

log = logging.getLogger("hotspare.replication.sink")

__all__ = ["Freshness", "RootSink", "SinkSettings", "TransferFailed"]


class RootSink(PlanRunner):
    """One replica root: reconcile, follow the feed, report freshness (rules above)."""

    def __init__(
        self, name: str, root: Path, source_url: str, token: str, session: aiohttp.ClientSession,
        settings: SinkSettings, metrics: AgentMetrics | None = None,
        former_active: bool = False, epoch: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.name = name
        self.root = root
        self.url = f"{source_url.rstrip('/')}/v1/roots/{name}"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.session = session
        self.settings = settings
        self.fsync = settings.fsync
        self.metrics = metrics
        self.former_active = former_active
        self.epoch = epoch
        self.progress = progress  # (files, bytes) callback for `hotspare sync`
        root.mkdir(parents=True, exist_ok=True)
        self.state = SyncState(root)
        self.writer = fileio.ReplicaWriter(root)
        self.fresh = Freshness()
        self.run_id = ""
        self.seq = 0
        self._sem = asyncio.Semaphore(settings.transfers)
        self._reconcile_now = asyncio.Event()
        self.on_plan: Callable[[Plan], None] | None = None
        self.guard = DeleteGuard(settings.max_delete_share, settings.max_delete_free)
        self._held: str | None = None  # the refusal that tripped the guard
        if self.state.get("deletes_held") == "1":
            self.guard.trip(0)
            self._held = "removals held before the agent restarted; confirm them to apply"
            self.fresh.refused = self._held

    def close(self) -> None:
        self.state.close()

    # -- main loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile, then follow the feed; reconcile again on a timer or a reset."""
        backoff = 0.5
        while True:
            try:
                await self.reconcile()
                backoff = 0.5
                await self._follow()
            except (aiohttp.ClientError, TransferFailed, ProtocolError, OSError, TimeoutError) as exc:
                self.fresh.error = f"{type(exc).__name__}: {exc}"
                self.fresh.in_sync = False
                self._count_error()
                log.warning("root %s: %s; retrying in %.1fs", self.name, self.fresh.error, backoff)
                self._publish()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception as exc:
                self.fresh.error = f"{type(exc).__name__}: {exc}"
                self._count_error()
                log.exception("root %s: unexpected error; retrying in %.1fs", self.name, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _follow(self) -> None:
        # Transfers that failed are retried by an early reconcile, not the long timer.
        interval = self.settings.reconcile_interval
        if self.fresh.pending:
            interval = min(interval, 5.0)
        next_reconcile = time.monotonic() + interval
        while True:
            left = next_reconcile - time.monotonic()
            if left <= 0 or self._reconcile_now.is_set():
                return
            params = {"since": str(self.seq), "run": self.run_id, "wait": f"{min(left, self.settings.feed_wait):.1f}"}
            body = await self._poll_feed(params)
            if body is None:
                return  # a reconcile was asked for (final-sync, an operator's confirmation)
            if body.get("reset"):
                log.info("root %s: source feed reset (source restarted?); reconciling", self.name)
                return
            changes = body.get("changes") or []
            self.fresh.source_seq = int(body.get("head", body.get("seq", self.seq)))
            if changes:
                await self._apply_changes(changes)
            self.seq = int(body["seq"])
            self.fresh.applied_seq = self.seq
            self._settle_waiters()
            self._publish()

    async def _apply_changes(self, changes: list[dict[str, Any]]) -> None:
        want: dict[str, Entry | None] = {}
        oldest = None
        for c in changes:
            try:
                path, entry = parse_entry(c)
            except UnsafePath as exc:
                log.error("root %s: source sent an unsafe path, ignored: %s", self.name, exc)
                continue
            if self._hidden(path):
                continue
            want[path] = entry
            at = float(c.get("at") or time.time())
            oldest = at if oldest is None else min(oldest, at)
        self.fresh.pending = len(want)
        self.fresh.oldest_pending_at = oldest
        self.fresh.in_sync = False
        self._publish()
        replica = await asyncio.to_thread(
            lambda: {p: e for p in want if (e := self.writer.stat(p)) is not None}
        )
        synced = await asyncio.to_thread(self.state.synced)
        source = {p: e for p, e in want.items() if e is not None}
        total = len(synced) if synced is not None else len(replica)
        p = self._guard(plan(source, replica, synced, self._policy(), scope=want.keys(), replica_total=total), total)
        failures = await self.execute(p)
        self.fresh.pending = failures
        self.fresh.refused = self._refusal(p)
        if failures == 0:
            self.fresh.oldest_pending_at = None
            self.fresh.in_sync = self.fresh.refused is None
        self.fresh.last_applied_at = time.time()

    async def _poll_feed(self, params: dict[str, str]) -> dict[str, Any] | None:
        """One long poll of the feed, cut short (None) by :meth:`request_reconcile`."""

        async def poll() -> dict[str, Any]:
            async with self.session.get(f"{self.url}/changes", params=params, headers=self.headers) as resp:
                return await self._json(resp)

        feed = asyncio.ensure_future(poll())
        wake = asyncio.ensure_future(self._reconcile_now.wait())
        try:
            await asyncio.wait({feed, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
            if not feed.done():
                feed.cancel()
                try:
                    await feed
                except asyncio.CancelledError:
                    me = asyncio.current_task()
                    if me is not None and me.cancelling():
                        raise  # we are cancelled ourselves, not just the poll
        return feed.result() if not feed.cancelled() else None

    def _hidden(self, path: str) -> bool:
        return hidden_reason(path, self.settings.marker, self.settings.exclude) is not None

    def _policy(self) -> Policy:
        confirmed = self.guard.confirmed  # the operator lifted the per-plan limit too
        return Policy(
            max_delete_share=1.0 if confirmed else self.settings.max_delete_share,
            max_delete_free=1 << 62 if confirmed else self.settings.max_delete_free,
            former_active=self.former_active,
            quarantine_tag=f"epoch-{self.epoch}",
        )

    def request_reconcile(self) -> None:
        self._reconcile_now.set()

    async def reconcile(self) -> Plan:
        """One full pass: manifest against replica; returns the plan it ran."""
        self._reconcile_now.clear()
        run_id, seq, source = await self.fetch_manifest()
        replica = await asyncio.to_thread(fileio.scan, self.root, self.settings.marker, list(self.settings.exclude))
        synced = await asyncio.to_thread(self.state.synced)
        p = self._guard(plan(source, replica, synced, self._policy()), len(replica))
        if self.on_plan is not None:
            self.on_plan(p)
        keep = {temp_tag(c.path, c.entry) for c in p.copies if c.entry.size > self.settings.bundle_file_max}
        await asyncio.to_thread(fileio.remove_stale_tmp, self.root, lambda n: n[len(TMP_PREFIX):] in keep)
        n_work = len(p.actions)
        self.fresh.pending = n_work
        if n_work:
            self.fresh.oldest_pending_at = self.fresh.oldest_pending_at or time.time()
        self._publish()
        log.info("root %s: reconcile: %s%s", self.name,
                 ", ".join(f"{k} {v}" for k, v in p.counts.items() if v) or "nothing to do",
                 f"; {p.refused}" if p.refused else "")
        failures = await self.execute(p)
        now = time.time()
        self.run_id, self.seq = run_id, seq
        self.fresh.source_seq = max(self.fresh.source_seq, seq)
        self.fresh.applied_seq = seq
        self.fresh.pending = failures
        self.fresh.refused = self._refusal(p)
        self.fresh.in_sync = failures == 0 and self.fresh.refused is None
        if failures == 0:
            self.fresh.oldest_pending_at = None
        self.fresh.last_reconcile_at = now
        self.fresh.error = None
        if failures == 0 and p.refused is None:
            # The first clean pass closes a role reversal and starts the sync point.
            replica_now = await asyncio.to_thread(
                fileio.scan, self.root, self.settings.marker, list(self.settings.exclude))
            await asyncio.to_thread(self._reset_synced, source, replica_now)
            self.guard.reconciled(len(replica_now), clean=True)
            self.former_active = False
            marker = self.root / self.settings.marker
            if not marker.exists():
                await asyncio.to_thread(marker.write_text, "hotspare replication root\n")
        await asyncio.to_thread(fileio.purge_trash, self.root, self.settings.trash_retention)
        if self.metrics:
            self.metrics.last_reconcile.labels(self.name).set(now)
        self._settle_waiters()
        self._publish()
        return p

    def _reset_synced(self, source: dict[str, Entry], replica: dict[str, Entry]) -> None:
        synced = self.state.synced() or {}
        same = [(p, replica[p]) for p, e in source.items() if p in replica and replica[p].same_content(e)]
        gone = [(p, None) for p in synced if p not in replica]
        self.state.update([*gone, *same])
        self.state.put("synced_once", "1")
        self.state.put("role", "sink")

    async def fetch_manifest(self) -> tuple[str, int, dict[str, Entry]]:
        async with self.session.get(f"{self.url}/manifest", headers=self.headers) as resp:
            if resp.status != 200:
                await self._json(resp)  # raises with the source's message
            first = await resp.content.readline()
            try:
                head = json.loads(first)
                run_id, seq = str(head["run_id"]), int(head["seq"])
            except (ValueError, KeyError, TypeError):
                raise ProtocolError(f"manifest of {self.name}: bad first line {first[:100]!r}") from None
            out: dict[str, Entry] = {}
            async for line in resp.content:
                if not line.strip():
                    continue
                try:
                    path, entry = parse_entry(json.loads(line))
                except UnsafePath as exc:
                    log.error("root %s: manifest lists an unsafe path, ignored: %s", self.name, exc)
                    continue
                if entry is not None and not self._hidden(path):
                    out[path] = entry
        return run_id, seq, out

    # -- bookkeeping --------------------------------------------------------------------

    def _count(self, files: int, nbytes: int) -> None:
        if self.metrics:
            self.metrics.files.labels(self.name).inc(files)
            self.metrics.bytes.labels(self.name).inc(nbytes)
        if self.progress:
            self.progress(files, nbytes)

    def _count_error(self) -> None:
        if self.metrics:
            self.metrics.errors.labels(self.name).inc()

    def _publish(self) -> None:
        if self.metrics:
            self.metrics.lag.labels(self.name).set(self.fresh.lag(time.time()))
            self.metrics.pending.labels(self.name).set(self.fresh.pending)
            self.metrics.in_sync.labels(self.name).set(1 if self.fresh.in_sync else 0)
            self.metrics.guard_tripped.labels(self.name).set(1 if self.guard.tripped else 0)

    def _caught_up(self, head: int) -> bool:
        return self.seq >= head and self.fresh.pending == 0 and self.fresh.refused is None

    def _settle_waiters(self) -> None:
        for h, fut in self.fresh._waiters:
            if not fut.done() and self._caught_up(h):
                fut.set_result(None)

    async def source_head(self) -> tuple[str, int]:
        """Ask the source for its current feed position (after a rescan)."""
        async with self.session.get(f"{self.url}/head", headers=self.headers) as resp:
            body = await self._json(resp)
        return str(body["run_id"]), int(body["seq"])

    async def _json(self, resp: aiohttp.ClientResponse) -> dict[str, Any]:
        try:
            body = await resp.json(content_type=None)
        except (ValueError, aiohttp.ContentTypeError):
            body = None
        if resp.status != 200 or not isinstance(body, dict):
            msg = body.get("error") if isinstance(body, dict) else None
            raise TransferFailed(f"source answered {resp.status} for {resp.url.path}: {msg or 'no details'}")
        return body

    def status(self) -> dict[str, object]:
        f = self.fresh
        g = self.guard.state()
        return {
            "name": self.name, "role": "sink", "path": str(self.root), "source": self.url,
            "in_sync": f.in_sync, "pending": f.pending, "lag_seconds": round(f.lag(time.time()), 3),
            "last_applied_at": f.last_applied_at, "last_reconcile_at": f.last_reconcile_at,
            "source_seq": f.source_seq, "applied_seq": f.applied_seq, "deletes_refused": f.refused,
            "error": f.error, "quarantined": f.quarantined,
            "delete_guard": {"tripped": g.tripped, "confirmed": g.confirmed, "held": g.held,
                             "removed_since_reconcile": g.removed, "baseline_files": g.baseline},
        }
