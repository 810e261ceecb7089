"""Running one plan on the sink (a mixin of :class:`replication.sink.RootSink`, which
supplies the session, the writer, the sync state and the bookkeeping): the delete guard's
wiring and the plan's actions. Split from sink.py, which keeps the loop that decides when
to reconcile and what to ask the source.

Rules:

1. Every plan, from the feed or a reconcile, passes the cumulative delete guard
   (:mod:`replication.deleteguard`) before it runs; a tripped guard holds removals,
   raises the alarm (metric, status, log) and survives a restart of the agent (the sync
   state's ``deletes_held``), until :meth:`PlanRunner.confirm_deletes`.
2. Local work first (quarantine, moves, links, modes), then the transfers in parallel
   (``settings.transfers`` at a time; one failed transfer stays pending, the others go
   on), then removals last: a file is never removed before what replaces it is in place.
3. Removals are set aside in the root's dated trash folder, never unlinked here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

import aiohttp

from .deleteguard import DeleteGuard
from .metrics import AgentMetrics
from .paths import UnsafePath, encode_wire
from .planner import Chmod, Copy, Delete, DeletesRefused, Entry, Move, Plan, Quarantine, Skip
from .protocol import ProtocolError
from .transfer import TransferFailed, Transfers, batches

log = logging.getLogger("hotspare.replication.sink")

__all__ = ["Freshness", "PlanRunner", "SinkSettings"]

# What one failed transfer may raise; it stays pending and the others go on (rule 2).
_TRANSFER_ERRORS = (aiohttp.ClientError, TransferFailed, ProtocolError, OSError, UnsafePath,
                    TimeoutError, asyncio.IncompleteReadError)


@dataclass(frozen=True, slots=True)
class SinkSettings:
    marker: str = ".hotspare-root"
    exclude: tuple[str, ...] = ()
    transfers: int = 4
    bundle_file_max: int = 1 << 20
    max_delete_share: float = 0.5
    max_delete_free: int = 10
    reconcile_interval: float = 300.0
    trash_retention: float = 7 * 86400.0
    feed_wait: float = 20.0
    fsync: bool = True


@dataclass
class Freshness:
    """What the status endpoint and metrics say about one replica root."""

    in_sync: bool = False
    pending: int = 0
    last_applied_at: float | None = None
    last_reconcile_at: float | None = None
    oldest_pending_at: float | None = None
    source_seq: int = 0
    applied_seq: int = 0
    refused: str | None = None
    error: str | None = None
    quarantined: int = 0
    _waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)

    def lag(self, now: float) -> float:
        if self.oldest_pending_at is None:
            return 0.0
        return max(0.0, now - self.oldest_pending_at)


class PlanRunner(Transfers):
    """The plan-running half of a sink; the sink sets these attributes."""

    settings: SinkSettings
    metrics: AgentMetrics | None
    fresh: Freshness
    guard: DeleteGuard
    _held: str | None  # the refusal that tripped the guard
    _sem: asyncio.Semaphore

    def _count_error(self) -> None:
        raise NotImplementedError

    def _publish(self) -> None:
        raise NotImplementedError

    def request_reconcile(self) -> None:
        raise NotImplementedError

    # -- the delete guard (rule 1) ----------------------------------------------------

    def _guard(self, p: Plan, replica_files: int) -> Plan:
        """``p`` as the guard lets it run: removals held once it has tripped."""
        was = self.guard.tripped
        if p.refused is not None:
            self.guard.trip(p.refused.would_remove)
        elif not self.guard.admit(n := p.removals(), replica_files):
            base = self.guard.baseline if self.guard.baseline is not None else replica_files
            p = p.without_removals(DeletesRefused(n, base, self.settings.max_delete_share, self.guard.removed))
        if p.refused is not None:
            self._held = self._held or str(p.refused)
            if not was:
                g = self.guard
                log.error("root %s: DELETE GUARD TRIPPED: %s (%d removed in this window, limit %.0f%% of %s "
                          "files or %d files); copies go on; to apply the removals: "
                          "POST /v1/roots/%s/confirm-deletes", self.name, p.refused, g.removed,
                          g.max_share * 100, g.baseline if g.baseline is not None else replica_files,
                          g.max_free, self.name)
                self.state.put("deletes_held", "1")
        else:
            self.guard.applied(p.removals())
        return p

    def _refusal(self, p: Plan) -> str | None:
        if p.refused is not None:
            return str(p.refused)
        return self._held if self.guard.tripped else None

    def confirm_deletes(self) -> int:
        """The operator's go-ahead (rule 1): the held removals are applied by a reconcile
        started now. Returns how many removals were held; ValueError if none."""
        held = self.guard.confirm()
        self.state.put("deletes_held", "0")
        log.warning("root %s: operator confirmed %d held removal(s); reconciling to apply them", self.name, held)
        self._held = None
        self.fresh.refused = None
        self._publish()
        self.request_reconcile()
        return held

    # -- running a plan (rules 2 and 3) -----------------------------------------------

    async def execute(self, p: Plan) -> int:
        """Run a plan's actions; return how many could not be applied yet."""
        if p.refused is not None:
            log.error("root %s: %s", self.name, p.refused)
            if self.metrics:
                self.metrics.deletes_refused.labels(self.name).inc()
        small: list[Copy] = []
        large: list[Copy] = []
        applied: list[tuple[str, Entry | None]] = []
        for a in p.actions:
            applied += await self._local(a, small, large)
        await asyncio.to_thread(self.state.update, applied)
        failures = await self._transfer_all(small, large)
        await self._remove_all(p)
        return failures

    def _to_fetch(self, c: Copy, small: list[Copy], large: list[Copy]) -> None:
        (large if c.entry.size > self.settings.bundle_file_max else small).append(c)

    async def _local(self, a: object, small: list[Copy], large: list[Copy]) -> list[tuple[str, Entry | None]]:
        """One action done on the replica alone (copies to fetch go to ``small`` or
        ``large``); returns what it applied, for the sync state."""
        if isinstance(a, Skip):
            log.error("root %s: skipped %s: %s", self.name, encode_wire(a.path), a.reason)
        elif isinstance(a, Quarantine):
            dest = await asyncio.to_thread(self.writer.set_aside, a.path, f"quarantine/{a.tag}")
            if dest is not None:
                log.warning("root %s: quarantined local file %s -> %s", self.name, encode_wire(a.path), dest)
                self.fresh.quarantined += 1
                if self.metrics:
                    self.metrics.quarantined.labels(self.name).inc()
            return [(a.path, None)]
        elif isinstance(a, Move):
            try:
                await asyncio.to_thread(self.writer.move, a.src, a.dst)
                await asyncio.to_thread(self.writer.place_meta, a.dst, a.entry)
                return [(a.src, None), (a.dst, a.entry)]
            except (OSError, UnsafePath):
                self._to_fetch(Copy(a.dst, a.entry), small, large)
        elif isinstance(a, Copy):
            if a.entry.link is not None:
                await asyncio.to_thread(self.writer.place_link, a.path, a.entry)
                return [(a.path, a.entry)]
            self._to_fetch(a, small, large)
        elif isinstance(a, Chmod):
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.writer.chmod, a.path, a.mode)
        elif isinstance(a, Delete):
            pass  # after the copies (rule 2)
        return []

    async def _transfer_all(self, small: list[Copy], large: list[Copy]) -> int:
        """Fetch every copy, ``settings.transfers`` at a time; return how many failed."""

        async def guarded(job: Awaitable[int]) -> int:
            async with self._sem:
                try:
                    return int(await job)
                except _TRANSFER_ERRORS as exc:
                    self._count_error()
                    self.fresh.error = f"{type(exc).__name__}: {exc}"
                    log.warning("root %s: transfer failed: %s", self.name, self.fresh.error)
                    return 1

        jobs = [self._bundle(batch) for batch in batches(small)]
        jobs += [self._large(c) for c in large]
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(guarded(j), name=f"sink-transfer-{self.name}") for j in jobs]
        return sum(t.result() for t in tasks)

    async def _remove_all(self, p: Plan) -> None:
        deleted: list[tuple[str, Entry | None]] = []
        day = time.strftime("%Y-%m-%d", time.gmtime())
        for a in p.actions:
            if isinstance(a, Delete):
                await asyncio.to_thread(self.writer.set_aside, a.path, f"trash/{day}")
                deleted.append((a.path, None))
        if deleted:
            await asyncio.to_thread(self.state.update, deleted)
