"""This router as a member of the deployment's router pair: the I/O shell around etcd
(docs/cluster.md). Decisions are in the pure modules (:mod:`.quorum`, :mod:`.lease`,
:mod:`.records`); the per-service roles in :mod:`.steer`.

Rules:

1. One member lease, granted at start and kept alive every ttl/3. This router decides
   only while :class:`~.lease.LeaseClock` allows it (last successful keepalive SENT +
   ttl - ttl/4); past that, every service it decided is stood down at once (a timer, not
   the next keepalive), before the lease could have expired on the server.
2. One watch of the members and services keys keeps a cache (a fresh read, then the
   watch from the read's revision + 1; re-read after any break). Every change of the
   cache, of the lease or of a local health view wakes one reconcile pass
   (:class:`~.steer.Steering`), which campaigns, leads, follows or stands down.
3. This router's member key (its admin address and its views of every backend) is
   rewritten on the member lease whenever a view changes, at most every 100 ms, and at
   once after a new lease.
4. etcd unreachable (a keepalive, or the re-read after a broken watch, answered by no
   endpoint; one call failing is not an outage): ``hotspare_cluster_etcd_up`` 0,
   alarm ``etcd_unreachable`` on every service, one log line; the directors keep routing
   to the last known active and no failover starts (the lease clock stands the deciders
   down; nothing is submitted to a machine). Back: a log line, the gauge 1, and the next
   reconcile campaigns, re-reads and follows.
5. ``close()`` revokes the lease: the other routers take over at once.
6. The router's state file keeps a copy of the last active and epoch seen in etcd
   (written or followed): the seed of a new deployment's first record, and what a router
   started while etcd is unreachable routes to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from router import metrics
from router.admin.control import ClusterStatistics, MemberStatistics
from router.config import Config
from router.errors import StateFileError
from router.failover.controller import ServiceController
from router.failover.events import BackendDown, BackendUp, Event
from router.failover.feed import EventFeed, FeedEvent, HealthChanged
from router.failover.state import ServiceState, StateFile

from .etcd import KV, EtcdClient, EtcdError, EtcdUnavailable, WatchCompacted
from .keys import Keys
from .lease import LeaseClock
from .quorum import Quorum, Views
from .records import MemberRecord, RecordError
from .shared import ClusterStore
from .steer import Steering

__all__ = ["ClusterNode"]

log = logging.getLogger("hotspare.cluster")

VIEW_INTERVAL = 0.1  # rule 3
RETRY = 0.5  # seconds between re-reads while etcd does not answer
WATCH_PAUSE = 0.05  # seconds between a broken watch stream and the re-read
ALARM_EVERY = 60.0  # seconds between two etcd_unreachable alarms (rule 4)


class ClusterNode:
    def __init__(self, config: Config, client: EtcdClient, controllers: Mapping[str, ServiceController],
                 feed: EventFeed, admin: str = "", state_file: StateFile | None = None) -> None:
        cc = config.cluster
        if cc is None:
            raise ValueError("ClusterNode needs a cluster: section in the config")
        self.name = cc.name
        self.client = client
        self.controllers = controllers
        self.feed = feed
        self.admin = admin  # host:port, set by the router once bound
        self.keys = Keys(cc.etcd.prefix)
        self.lease = LeaseClock(float(cc.lease_ttl))
        self.quorum = Quorum(cc.quorum)
        self.lease_id = 0
        self.cache: dict[str, KV] = {}  # rule 2
        self.etcd_ok = False
        self.etcd_error: str | None = "not connected yet"
        self.started = time.time()
        self._alarmed_at = -ALARM_EVERY
        self._down_reported = False  # this outage alarmed already
        self.state_file = state_file  # rule 6
        self.store = ClusterStore(client, self.keys, self.name, self._deposed,
                                  on_written=lambda service, d: self.mirror(service, d.active, d.epoch))
        self.steering = Steering(self)
        self.dirty = asyncio.Event()
        self._views_changed = asyncio.Event()
        for ctl in controllers.values():
            self.adopt(ctl)
        metrics.CLUSTER_ETCD_UP.set(0)

    def adopt(self, ctl: ServiceController) -> None:
        """A service's controller follows (its decisions through :attr:`store`) until this
        router wins its campaign."""
        ctl.join(self.store, self, self.store)

    # -- life cycle -----------------------------------------------------------------------

    async def run(self) -> None:
        unsubscribe = self.feed.subscribe(self._on_feed)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._keep_lease(), name="cluster:lease")
                tg.create_task(self._watch(), name="cluster:watch")
                tg.create_task(self._publish_views(), name="cluster:views")
                tg.create_task(self.steering.run(), name="cluster:steer")
        finally:
            unsubscribe()

    async def close(self) -> None:
        """Rule 5 (bounded by the client's timeout)."""
        for service in list(self.store.guards):
            self.steering.stand_down(service, "this router is stopping")
        lease, self.lease_id = self.lease_id, 0
        if lease:
            try:
                await self.client.lease_revoke(lease)
                log.info("cluster: lease %x revoked; the other routers take over now", lease)
            except EtcdError as exc:
                log.warning("cluster: could not revoke lease %x (%s); it expires by itself", lease, exc)

    # -- what the router and the admin API ask --------------------------------------------

    def decides(self, service: str) -> bool:
        ctl = self.controllers.get(service)
        return ctl is not None and ctl.deciding and service in self.store.guards

    def term_of(self, service: str) -> int | None:
        g = self.store.guards.get(service)
        return g.term if g is not None and self.decides(service) else None

    def live_views(self) -> Views:
        """Every live member's views (router/cluster/quorum.py), this router's own fresh."""
        out: dict[str, Mapping[str, Mapping[str, str]]] = {}
        for key, kv in self.cache.items():
            if key.startswith(self.keys.members):
                try:
                    out[key[len(self.keys.members):]] = MemberRecord.decode(kv.value, key).views
                except RecordError as exc:
                    log.error("cluster: %s; that router's views are not counted", exc)
        out[self.name] = self.views()
        return out

    def views(self) -> dict[str, dict[str, str]]:
        """This router's detectors: service -> backend -> up|suspect|down|unknown."""
        out: dict[str, dict[str, str]] = {}
        for name, ctl in self.controllers.items():
            out[name] = {}
            for b in ctl.service.backends:
                h = ctl.checker.health(b.name)
                out[name][b.name] = "unknown" if h is None else h.value
        return out

    def statistics(self) -> ClusterStatistics:
        members: list[MemberStatistics] = []
        for key, kv in sorted(self.cache.items()):
            if key.startswith(self.keys.members):
                try:
                    rec = MemberRecord.decode(kv.value, key)
                except RecordError:
                    continue
                members.append(MemberStatistics(rec.name, True, rec.admin, rec.views))
        if not any(m.name == self.name for m in members):
            members.append(MemberStatistics(self.name, False, self.admin, self.views()))
        deciders = {}
        for service in self.controllers:
            dk = self.cache.get(self.keys.decider(service))
            deciders[service] = dk.value.decode("utf-8", "replace") if dk is not None else None
        return ClusterStatistics(
            name=self.name, etcd_ok=self.etcd_ok, etcd_error=None if self.etcd_ok else self.etcd_error,
            endpoints=tuple(self.client.endpoints), members=tuple(members), deciders=deciders,
            decides=tuple(s for s in self.controllers if self.decides(s)),
        )

    # -- the gate (router/failover/store.py rule 3) ----------------------------------------

    def admits(self, service: str, event: Event) -> bool:
        if not (self.decides(service) and self.lease.may_decide(time.monotonic())):
            return False
        if isinstance(event, BackendDown):
            return self.quorum.down(self.live_views(), service, event.backend)
        if isinstance(event, BackendUp):
            return not self.quorum.down(self.live_views(), service, event.backend)
        return True  # a timer of the deciding machine

    # -- etcd health (rule 4) -------------------------------------------------------------

    def answered(self) -> None:
        if not self.etcd_ok:
            again = "again; deciding resumes" if self._down_reported else "(connected)"
            log.warning("cluster: etcd answers %s at %s", again, self.client.current_endpoint)
        self.etcd_ok, self.etcd_error, self._down_reported = True, None, False
        metrics.CLUSTER_ETCD_UP.set(1)

    def failed(self, exc: BaseException) -> None:
        """Only no answer at all (:class:`EtcdUnavailable`) is an outage; an error etcd
        answered with is counted and logged."""
        if not isinstance(exc, EtcdUnavailable):
            metrics.CLUSTER_ETCD_ERRORS.labels("error").inc()
            log.error("cluster: %s", exc)
            return
        metrics.CLUSTER_ETCD_ERRORS.labels("unavailable").inc()
        self.etcd_ok, self.etcd_error = False, str(exc)
        metrics.CLUSTER_ETCD_UP.set(0)
        now = time.monotonic()
        if not self._down_reported and now - self._alarmed_at >= ALARM_EVERY:  # flapping: one a minute
            self._down_reported, self._alarmed_at = True, now
            for ctl in self.controllers.values():
                ctl.publisher.alarm("etcd_unreachable", f"{exc}; serving {ctl.director.snapshot().active} "
                                    "(the last known active), no failover until etcd answers")

    def hiccup(self, exc: EtcdError) -> None:
        """A single call failed (a write, a campaign): counted and logged, tried again
        later. Whether etcd is unreachable is for the lease and the watch to say."""
        metrics.CLUSTER_ETCD_ERRORS.labels("unavailable" if isinstance(exc, EtcdUnavailable) else "error").inc()
        log.warning("cluster: %s; trying again", exc)

    def mirror(self, service: str, active: str, epoch: int) -> None:
        """Rule 6: the state file keeps the last active and epoch seen in etcd."""
        if self.state_file is None:
            return
        with contextlib.suppress(KeyError):
            if self.state_file.get(service) == ServiceState(active, epoch):
                return
        try:
            self.state_file.save(service, active, epoch)
        except StateFileError as exc:
            log.warning("cluster: service %s: the local copy of etcd's state was not written: %s", service, exc)

    def _deposed(self, service: str, why: str) -> None:
        self.steering.stand_down(service, why)
        self.dirty.set()

    # -- the loops --------------------------------------------------------------------------

    async def _keep_lease(self) -> None:
        """Rule 1."""
        while True:
            sent = time.monotonic()
            try:
                if self.lease_id == 0:
                    self.lease_id = await self.client.lease_grant(int(self.lease.ttl))
                    self.lease.succeeded(sent)
                    self._views_changed.set()  # the member key went with the old lease
                    log.info("cluster: %s joined with lease %x", self.name, self.lease_id)
                elif await self.client.lease_keepalive(self.lease_id) > 0:
                    self.lease.succeeded(sent)
                else:
                    log.error("cluster: lease %x is gone (expired on the server); taking a new one", self.lease_id)
                    self.lease.lost()
                    self.lease_id = 0
                    self.dirty.set()
                    continue
                self.answered()
            except EtcdError as exc:
                self.failed(exc)
            self.dirty.set()
            await asyncio.sleep(self.lease.interval)  # pacing of keepalives, not a wait for a condition

    async def _watch(self) -> None:
        """Rule 2. A broken stream alone is not an outage (its member may have died while
        the others answer): the re-read, which tries every endpoint, says whether it is."""
        while True:
            try:
                kvs, rev = await self.client.get_prefix(self.keys.prefix + "/")
            except EtcdError as exc:
                self.failed(exc)
                await asyncio.sleep(RETRY)  # pacing of re-reads while etcd does not answer
                continue
            self.cache = {kv.key: kv for kv in kvs if self.keys.watched(kv.key)}
            self.answered()
            self._members_changed()
            try:
                async for batch in self.client.watch(self.keys.prefix + "/", prefix=True, start_revision=rev + 1):
                    for ev in batch:
                        if not self.keys.watched(ev.kv.key):
                            continue
                        if ev.type == "delete":
                            self.cache.pop(ev.kv.key, None)
                        else:
                            self.cache[ev.kv.key] = ev.kv
                    self._members_changed()
                raise EtcdUnavailable("etcd watch: the stream ended")
            except EtcdError as exc:
                metrics.CLUSTER_ETCD_ERRORS.labels("compacted" if isinstance(exc, WatchCompacted) else "watch").inc()
                log.info("cluster: %s; reading again", exc)
            await asyncio.sleep(WATCH_PAUSE)  # pacing: a stream that keeps breaking is no busy loop

    def _members_changed(self) -> None:
        metrics.CLUSTER_MEMBERS.set(sum(1 for k in self.cache if k.startswith(self.keys.members)))
        self.dirty.set()

    def _on_feed(self, event: FeedEvent) -> None:
        if isinstance(event, HealthChanged):
            self._views_changed.set()
            self.dirty.set()

    async def _publish_views(self) -> None:
        """Rule 3."""
        while True:
            await self._views_changed.wait()
            self._views_changed.clear()
            if self.lease_id:
                record = MemberRecord(self.name, self.admin, self.started, self.views(),
                                      {s: c.decision.epoch for s, c in self.controllers.items()}, self.etcd_ok)
                try:
                    await self.client.put(self.keys.member(self.name), record.encode(), lease=self.lease_id)
                except EtcdError as exc:
                    self.hiccup(exc)
                    self._views_changed.set()
            await asyncio.sleep(VIEW_INTERVAL)  # at most every 100 ms (rule 3)

    def republish(self) -> None:
        """The admin address or an epoch changed: rewrite the member key."""
        self._views_changed.set()
