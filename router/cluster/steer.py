"""Each service's role on this router, reconciled with etcd: campaign, lead, follow or
stand down (docs/cluster.md).

Rules:

1. One pass at a time, woken by the node (a cache, lease or view change) or by the lease
   deadline: whatever woke it, the pass looks at everything.
2. A service this router decides stops being decided (``stand_down``) the moment the
   lease clock says so, its decider key is gone or is not this router's term, or a
   guarded write failed. It then follows etcd's record.
3. Nobody decides a service and this router may decide: it campaigns, txn
   ``[create_revision(decider) == 0] -> put(decider, name, lease)``. Winning gives the
   term (the key's create_revision). Leading = read the state record (absent: seed it
   from this router's state file), report a promotion left ``running`` by a dead decider
   (``interrupted``, guarded, alarm ``promotion_interrupted``; the step is never run
   again, and its epoch, handed to the step as the fencing token, is burned: the new
   decider goes on at the next one), then restart the machine from the record (its
   first write guarded too).
4. A follower applies each new state record (by mod_revision, never an older one) to its
   director and observes the follow lag (now - the record's ``at``). A record that does
   not decode, names an unknown backend or lowers the epoch is NOT applied: alarm
   ``cluster_state_invalid``, the director keeps what it has.
5. The decider feeds its machine the quorum's view (router/cluster/quorum.py): a backend
   down for the quorum becomes a BackendDown, a backend not down for it and up here a
   BackendUp, each submitted once per change; the gate (the node's ``admits``) drops any
   other automatic health event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Protocol

from hotspare.causes import Cause
from router import metrics
from router.errors import StateFileError
from router.failover.controller import ServiceController
from router.failover.events import BackendDown, BackendUp

from .etcd import KV, Compare, EtcdClient, EtcdError, Op
from .keys import Keys
from .lease import LeaseClock
from .quorum import Quorum, Views
from .records import PromotionRecord, RecordError, StateRecord
from .shared import ClusterStore, Guard

__all__ = ["Steering"]

log = logging.getLogger("hotspare.cluster")


class Node(Protocol):
    """What a pass needs of :class:`~.node.ClusterNode`."""

    name: str
    client: EtcdClient
    keys: Keys
    lease: LeaseClock
    lease_id: int
    quorum: Quorum
    cache: dict[str, KV]
    store: ClusterStore
    dirty: asyncio.Event

    @property
    def controllers(self) -> Mapping[str, ServiceController]: ...
    def hiccup(self, exc: EtcdError) -> None: ...
    def live_views(self) -> Views: ...
    def republish(self) -> None: ...
    def mirror(self, service: str, active: str, epoch: int) -> None: ...


class Steering:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._applied: dict[str, int] = {}  # service -> mod_revision of the state applied (rule 4)
        self._asked: dict[tuple[str, str], bool] = {}  # (service, backend) -> healthy submitted
        self._alarmed: dict[str, int] = {}  # service -> revision already alarmed as invalid

    async def run(self) -> None:
        n = self.node
        while True:
            left = n.lease.left(time.monotonic()) if n.store.guards else None
            if left is None or left > 0:
                try:
                    async with asyncio.timeout(left):
                        await n.dirty.wait()
                except TimeoutError:
                    pass  # the lease deadline (rule 2)
            n.dirty.clear()
            await self.reconcile()

    async def reconcile(self) -> None:
        n = self.node
        for service, ctl in n.controllers.items():
            may = n.lease_id != 0 and n.lease.may_decide(time.monotonic())
            try:
                await self._one(service, ctl, may)
            except EtcdError as exc:
                n.hiccup(exc)  # the next pass tries again (the keepalives wake it)

    async def _one(self, service: str, ctl: ServiceController, may: bool) -> None:
        n = self.node
        kv = n.cache.get(n.keys.decider(service))
        mine = kv is not None and n.lease_id != 0 and kv.lease == n.lease_id and kv.value == n.name.encode()
        g = n.store.guards.get(service)
        if g is not None and not (may and mine and kv is not None and kv.create_revision == g.term):
            why = ("the lease may expire (no keepalive answered in time)" if not may else
                   "its decider key is gone or belongs to another term")
            self.stand_down(service, why)
        if may and kv is None:
            kv = await self._campaign(service)
            mine = kv is not None
        if may and mine and kv is not None and service not in n.store.guards:
            await self._lead(service, ctl, kv.create_revision)
        if service in n.store.guards:
            self._check_quorum(service, ctl)
        else:
            self._follow(service, ctl)

    def stand_down(self, service: str, why: str) -> None:
        """Rule 2."""
        n = self.node
        g = n.store.guards.pop(service, None)
        ctl = n.controllers[service]
        if g is not None:
            self._applied[service] = max(self._applied.get(service, 0), g.state_rev)
            metrics.CLUSTER_DECIDER.labels(service).set(0)
            metrics.CLUSTER_DECIDER_CHANGES.labels(service).inc()
            log.warning("cluster: service %s: %s stops deciding: %s", service, n.name, why)
        ctl.stand_down()

    async def _campaign(self, service: str) -> KV | None:
        n = self.node
        key = n.keys.decider(service)
        res = await n.client.txn([Compare.create_revision(key, "==", 0)],
                                 [Op.put(key, n.name.encode(), lease=n.lease_id)])
        if not res.succeeded:
            return None
        kv = KV(key, n.name.encode(), res.revision, res.revision, 1, n.lease_id)
        n.cache[key] = kv  # the watch brings the same put later
        return kv

    async def _lead(self, service: str, ctl: ServiceController, term: int) -> None:
        """Rule 3."""
        n = self.node
        g = n.store.guards[service] = Guard(term)
        try:
            kv = await n.client.get(n.keys.state(service))
            active, epoch = ctl.decision.active, ctl.decision.epoch  # the seed: this router's file
            drained: tuple[str, ...] = ()
            if kv is not None:
                rec = self._valid(service, ctl, kv)
                if rec is None:
                    raise StateFileError(f"etcd {kv.key}: not a valid state record")
                g.state_rev, active, epoch, drained = kv.mod_revision, rec.active, rec.epoch, rec.drained
            pk = await n.client.get(n.keys.promotion(service))
            if pk is not None:
                g.promotion_rev = pk.mod_revision
                burned = await self._unfinished(service, ctl, pk)
                if burned is not None and burned >= epoch:
                    epoch = burned + 1  # the interrupted run's token is never used again
            await ctl.lead(active, epoch, drained)
        except (EtcdError, StateFileError) as exc:
            n.store.guards.pop(service, None)
            ctl.stand_down()
            log.error("cluster: service %s: %s won the campaign but cannot lead: %s", service, n.name, exc)
            if isinstance(exc, EtcdError):
                raise
            return
        self._applied[service] = max(self._applied.get(service, 0), g.state_rev)
        for b in ctl.service.backends:
            self._asked.pop((service, b.name), None)
        metrics.CLUSTER_DECIDER.labels(service).set(1)
        metrics.CLUSTER_DECIDER_CHANGES.labels(service).inc()
        log.warning("cluster: service %s: %s decides now (term %d): %s active at epoch %d",
                    service, n.name, term, active, epoch)
        n.dirty.set()

    async def _unfinished(self, service: str, ctl: ServiceController, pk: KV) -> int | None:
        """Rule 3: report a run its decider left ``running``; its epoch, which is burned
        (it was handed to the run's steps as their fencing token), or None."""
        try:
            rec = PromotionRecord.decode(pk.value, pk.key)
        except RecordError as exc:
            ctl.publisher.alarm("cluster_state_invalid", f"{exc}; fix or delete the key by hand")
            return None
        if rec.status != "running":
            return None
        n = self.node
        done = dataclasses.replace(rec, status="interrupted", by=n.name, updated=time.time())
        await n.store.put_promotion(service, done)
        where = "before its first step" if rec.next_step is None else f"at step {rec.next_step}"
        ctl.publisher.alarm(
            "promotion_interrupted",
            f"run {rec.run_id or '?'} of epoch {rec.epoch} ({rec.old} -> {rec.new}) by {rec.by} stopped "
            f"{where}: its decider died during it; the step is not run again; check {rec.old} and "
            f"{rec.new} by hand (`hotspare promote --history` on {rec.by}), then switch over if needed")
        return rec.epoch

    def _valid(self, service: str, ctl: ServiceController, kv: KV) -> StateRecord | None:
        """Rule 4: the record, or None after the alarm."""
        try:
            rec = StateRecord.decode(kv.value, kv.key)
            names = [b.name for b in ctl.service.backends]
            if rec.active not in names:
                raise RecordError(f"{kv.key}: active: expected one of {names}, found {rec.active!r}")
            if service in self._applied and rec.epoch < ctl.decision.epoch:
                raise RecordError(f"{kv.key}: epoch {rec.epoch} is lower than {ctl.decision.epoch}, "
                                  f"applied before; an epoch never goes back")
        except RecordError as exc:
            if self._alarmed.get(service) != kv.mod_revision:
                self._alarmed[service] = kv.mod_revision
                ctl.publisher.alarm("cluster_state_invalid", f"{exc}; traffic stays where it is")
            return None
        return rec

    def _follow(self, service: str, ctl: ServiceController) -> None:
        """Rule 4."""
        n = self.node
        kv = n.cache.get(n.keys.state(service))
        if kv is None or kv.mod_revision <= self._applied.get(service, 0):
            return
        rec = self._valid(service, ctl, kv)
        if rec is None:
            return
        ctl.follow(rec.decision())
        n.mirror(service, rec.active, rec.epoch)
        self._applied[service] = kv.mod_revision
        metrics.CLUSTER_FOLLOW_LAG.observe(max(0.0, time.time() - rec.at))
        n.republish()

    def _check_quorum(self, service: str, ctl: ServiceController) -> None:
        """Rule 5."""
        n = self.node
        if not ctl.deciding:
            return
        views = n.live_views()
        mine = views.get(n.name, {}).get(service, {})
        for b in ctl.service.backends:
            down = n.quorum.down(views, service, b.name)
            healthy = ctl.machine.healthy.get(b.name, True)
            want = False if down else (True if mine.get(b.name) == "up" else healthy)
            key = (service, b.name)
            if want == healthy:
                self._asked.pop(key, None)
                continue
            if self._asked.get(key) == want:
                continue  # submitted already; the machine has not taken it yet
            self._asked[key] = want
            now = time.monotonic()
            if want:
                ctl.submit(BackendUp(now, b.name))
            else:
                ctl.submit(BackendDown(now, b.name, Cause.PROBE_FAILED, None,
                                       n.quorum.describe(views, service, b.name)))
