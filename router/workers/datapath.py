"""A worker process's data path: the proxy on the inherited listeners, following the
decider's directors.

Rules:

1. It is the router's data path (router/proxy, the same service table, pools, limits
   and access log as :class:`router.server.Router` builds) with one difference: each
   service's :class:`~router.failover.follow.FailoverDirector` has no controller. It
   follows :class:`~.view.ServiceView` s from the decider (:meth:`WorkerDataPath.follow`)
   and its reports go to the :class:`~.reports.TrafficReporter`.
2. ``serve(socks)`` serves listening sockets bound by the decider (in config order),
   ``stop()`` drains them as the router's stop does (steps 1, 2 and 5 of
   :meth:`router.server.Router.stop`), ``reload(config, views)`` swaps the table whole
   as the router's reload does (requests in flight keep theirs; pools survive by key).
3. The connection limits are the whole router's: each of ``share`` workers admits
   ``ceil(limit / share)`` (:func:`shared_limits`), so ``max_connections`` and
   ``max_connections_per_client`` stay true bounds however the kernel spreads the
   accepts (a client may be refused a little early when they are spread unevenly).
4. A failure this worker reports makes its backend SUSPECT here at once (if the last view
   said UP), as the decider's detector does in one process: a request that failed on it
   then waits for the verdict (``wait_verdict``) instead of going straight back. The mark
   holds until a view arrives that acknowledges the report (``acked`` >= its ``seq``):
   from then on the decider's verdict is the one that counts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import socket
from collections.abc import Mapping

from router.config import Config, LimitsConfig, ServiceConfig
from router.failover.director import Outcome
from router.failover.follow import FailoverDirector
from router.health.detector import Health
from router.proxy.accesslog import AccessLog
from router.proxy.handler import Proxy
from router.proxy.listeners import ProxySite, make_redirect_handler, server_ssl_context
from router.proxy.rewrite import Rewriter
from router.proxy.routes import ServiceRuntime, ServiceTable, client_timeout, make_target
from router.proxy.upstream import BackendPool, PoolKey, pool_key

from .reports import TrafficReporter
from .view import ServiceView, follow

__all__ = ["WorkerDataPath", "shared_limits"]

log = logging.getLogger("hotspare.worker")


def shared_limits(limits: LimitsConfig, share: int) -> LimitsConfig:
    """Rule 3: one worker's part of the router's connection limits."""
    return limits.model_copy(update={
        "max_connections": math.ceil(limits.max_connections / share),
        "max_connections_per_client": math.ceil(limits.max_connections_per_client / share),
    })


class WorkerDataPath:
    def __init__(self, config: Config, views: Mapping[str, ServiceView], reporter: TrafficReporter,
                 share: int = 1) -> None:
        self.config = config
        self.share = share
        self.reporter = reporter
        self.directors: dict[str, FailoverDirector] = {}
        self._health: dict[str, dict[str, Health | None]] = {}
        self._suspects: dict[tuple[str, str], int] = {}  # rule 4: (service, backend) -> report seq
        self._pools: dict[PoolKey, BackendPool] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._sites: list[ProxySite] = []
        reporter.configure(config)
        self.access_log = AccessLog(config.log.access_log, config.log.access_format)
        self.proxy = Proxy(self._build_table(config, views), self.access_log)

    def _director(self, sc: ServiceConfig, view: ServiceView) -> FailoverDirector:
        health = self._health[sc.name] = dict(view.health)
        d = FailoverDirector(sc, view.active, view.epoch, health.get)
        name = sc.name
        d.on_report = lambda backend, outcome: self._report(name, backend, outcome)
        d.on_abort = lambda backend: self.proxy.abort_inflight(name, backend)
        cluster = self.config.cluster
        d.follow_grace = float(cluster.lease_ttl) if cluster is not None else 0.0  # as the decider's (router/cluster/node.py)
        follow(d, view, health)
        return d

    def _build_table(self, config: Config, views: Mapping[str, ServiceView]) -> ServiceTable:
        services: dict[str, ServiceRuntime] = {}
        wanted: dict[PoolKey, BackendPool] = {}
        for sc in config.services:
            d = self.directors.get(sc.name)
            if d is None:
                d = self.directors[sc.name] = self._director(sc, views[sc.name])
            else:
                d.update(sc)
            targets = {}
            for b in sc.backends:
                key = pool_key(b, sc.pool)
                pool = wanted.get(key) or self._pools.get(key) or BackendPool(key)
                wanted[key] = pool
                targets[b.name] = make_target(b, pool)
            services[sc.name] = ServiceRuntime(
                config=sc, director=d, rewriter=Rewriter(sc), targets=targets, first_byte=client_timeout(sc),
                idle=sc.timeouts.idle, max_body_size=sc.max_body_size, preserve_host=sc.preserve_host,
            )
        for gone in set(self.directors) - set(services):
            del self.directors[gone]
            self._health.pop(gone, None)
        for key, pool in self._pools.items():
            if key not in wanted:
                self._retire(pool)
        self._pools = wanted
        return ServiceTable(config, services)

    def _retire(self, pool: BackendPool) -> None:
        pool.retire()

        async def close_when_idle() -> None:
            await pool.wait_idle()
            await pool.close()

        task = asyncio.get_running_loop().create_task(close_when_idle(), name=f"retire pool {pool.key.origin}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    # -- driven by the channel ------------------------------------------------------------

    def _report(self, service: str, backend: str, outcome: Outcome) -> None:
        seq = self.reporter.report(service, backend, outcome)
        if seq is not None:  # rule 4
            self._suspects[(service, backend)] = seq
            health = self._health.get(service)
            if health is not None and health.get(backend) is Health.UP:
                health[backend] = Health.SUSPECT

    def follow(self, views: Mapping[str, ServiceView], acked: int = 0) -> None:
        self._suspects = {k: seq for k, seq in self._suspects.items() if seq > acked}
        for name, view in views.items():
            d = self.directors.get(name)
            if d is not None:
                follow(d, self._with_suspects(name, view), self._health[name])

    def _with_suspects(self, name: str, view: ServiceView) -> ServiceView:
        marked = [b for (s, b) in self._suspects if s == name and view.health.get(b) is Health.UP]
        if not marked:
            return view
        return dataclasses.replace(view, health={**view.health, **dict.fromkeys(marked, Health.SUSPECT)})

    def abort(self, service: str, backend: str) -> None:
        self.proxy.abort_inflight(service, backend)

    def reload(self, config: Config, views: Mapping[str, ServiceView], acked: int = 0) -> None:
        old = self.config
        if (old.log.access_log, old.log.access_format) != (config.log.access_log, config.log.access_format):
            self.access_log.close()
            self.access_log = AccessLog(config.log.access_log, config.log.access_format)
            self.proxy.access_log = self.access_log
        else:
            self.access_log.reopen()  # log rotation
        self.reporter.configure(config)
        self.proxy.set_table(self._build_table(config, views))
        self.follow(views, acked)
        for site in self._sites:
            site.set_limits(shared_limits(config.limits, self.share))
        self.config = config

    # -- life cycle -----------------------------------------------------------------------

    async def serve(self, socks: list[socket.socket]) -> None:
        config = self.config
        for i, (lc, sock) in enumerate(zip(config.listen, socks, strict=True)):
            handler = make_redirect_handler(lc.https_port) if lc.redirect_to_https else self.proxy.handle
            site = ProxySite(handler, shared_limits(config.limits, self.share), tls=bool(lc.tls))
            self._sites.append(site)
            await site.start_on(sock, server_ssl_context(lc, i) if lc.tls else None)

    async def stop(self) -> None:
        await asyncio.gather(*(site.stop(self.config.shutdown_grace) for site in self._sites),
                             return_exceptions=True)
        self._sites.clear()
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for pool in self._pools.values():
            await pool.close()
        self.access_log.close()
