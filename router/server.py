"""``hotspare router -c FILE``: the Router object and the process around it.

Rules:

1. ``Router(config)`` binds nothing and starts nothing. It reads the state file (each
   service's active backend and epoch; :class:`StateFileError` if the file cannot be
   trusted, and then nothing is served) and the promotion audit log (runs that a
   previous router left unfinished are reported, never ignored). ``await start()`` starts
   one failover controller per service (task ``failover:<service>``, owned here) and
   binds every listener and the admin listener, returning the bound addresses;
   ``await stop()`` shuts down in the order written in :meth:`Router.stop`.
2. ``reload(config)`` swaps the service table whole: new requests see the new config,
   requests in flight finish with the one they started with, and no connection is
   dropped. Failover controllers (and their directors: the failover decision) survive a
   reload by service name; backend
   pools survive when their settings are unchanged, the others close once idle.
   Listeners and the admin address are bound once: changing them needs a restart
   (a reload says so in the log).
3. Signal handlers only set flags; the main coroutine acts on them. SIGTERM/SIGINT:
   graceful stop; SIGHUP: reload (an invalid file is refused, its errors logged, the
   old config kept).
4. A ``cluster:`` section makes it one of a pair (router/cluster/pair.py), started once
   bound, stopped first; without one the router runs alone.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from router.admin.api import build_admin_app
from router.admin.commands import execute
from router.admin.control import (
    BackendStatistics,
    ClusterStatistics,
    RouterStatistics,
    ServiceStatistics,
)
from router.cluster.pair import RouterPair
from router.failover.controller import ServiceController
from router.failover.director import Director
from router.failover.feed import EventFeed
from router.failover.state import ServiceState, StateFile
from router.proxy.accesslog import AccessLog
from router.proxy.handler import Proxy
from router.proxy.listeners import ProxySite, make_redirect_handler, server_ssl_context
from router.proxy.rewrite import Rewriter
from router.proxy.routes import ServiceRuntime, ServiceTable, client_timeout, make_target
from router.proxy.upstream import BackendPool, PoolKey, pool_key
from router.workers.host import DataPathHost

from . import metrics
from .config import Config, ServiceConfig, parse_hostport
from .errors import StateFileError
from .snapshot import probe_statistics, unfinished_runs

__all__ = ["BoundAddresses", "Router"]

log = logging.getLogger("hotspare.router")


@dataclass(frozen=True, slots=True)
class BoundAddresses:
    listeners: tuple[tuple[str, int], ...]  # in config order
    admin: tuple[str, int]


class Router:
    """The front door. ``router.controllers[name]`` is each service's
    :class:`ServiceController` (admin calls go through its ``submit(event)``, which
    raises ``Refused`` for a request the machine turns down); ``router.directors[name]``
    is the same controller's director."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.state_file = StateFile(config.state_file)
        self.state_file.acquire()  # StateFileError if another router holds it; released by stop()
        try:
            self._initial: dict[str, ServiceState] = self.state_file.load(config.services)  # StateFileError
        except BaseException:
            self.state_file.release()
            raise
        self.unfinished_promotions = unfinished_runs(config)
        self.events = EventFeed()  # every controller publishes here; observers read it
        self.controllers: dict[str, ServiceController] = {}
        self.directors: dict[str, Director] = {}
        self._controller_tasks: dict[str, asyncio.Task[None]] = {}
        self.failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self._pools: dict[PoolKey, BackendPool] = {}
        self._started = False
        self._retiring: set[asyncio.Task[None]] = set()
        self.access_log = AccessLog(config.log.access_log, config.log.access_format)
        self.pair: RouterPair | None = None  # rule 4
        self.proxy = Proxy(self._build_table(config), self.access_log)
        if config.cluster is not None:
            self.pair = RouterPair(config, self.controllers, self.events, self.state_file)
        self._sites: list[ProxySite] = []  # one per proxy listener (limits on reload)
        self._admin_runner: web.AppRunner | None = None
        self.bound: BoundAddresses | None = None
        self.data_path: DataPathHost | None = None  # set: worker processes serve the listeners (router/workers/)
        for line in self.unfinished_promotions:
            log.error("unfinished promotion from before this start (the router died during it): %s; "
                      "check the old and new active by hand (`hotspare promote --history`)", line)

    # -- building ---------------------------------------------------------------------

    def _build_table(self, config: Config) -> ServiceTable:
        services: dict[str, ServiceRuntime] = {}
        wanted: dict[PoolKey, BackendPool] = {}
        for sc in config.services:
            ctl = self.controllers.get(sc.name)
            if ctl is None:
                ctl = self.controllers[sc.name] = self._make_controller(config, sc)
                if self._started:
                    self._run_controller(ctl)
            else:
                ctl.update(sc)
            director = self.directors[sc.name] = ctl.director
            targets = {}
            for b in sc.backends:
                key = pool_key(b, sc.pool)
                pool = wanted.get(key) or self._pools.get(key) or BackendPool(key)
                wanted[key] = pool
                targets[b.name] = make_target(b, pool)
            services[sc.name] = ServiceRuntime(
                config=sc,
                director=director,
                rewriter=Rewriter(sc),
                targets=targets,
                first_byte=client_timeout(sc),
                idle=sc.timeouts.idle,
                max_body_size=sc.max_body_size,
                preserve_host=sc.preserve_host,
            )
        for gone in set(self.controllers) - set(services):
            del self.directors[gone]
            del self.controllers[gone]
            task = self._controller_tasks.pop(gone, None)
            if task is not None:
                task.cancel()  # its probes and promotions stop with it
        for key, pool in self._pools.items():
            if key not in wanted:
                self._retire(pool)
        self._pools = wanted
        self._publish(config)
        return ServiceTable(config, services)

    def _make_controller(self, config: Config, sc: ServiceConfig) -> ServiceController:
        initial = self._initial.get(sc.name)
        if initial is None or initial.active not in {b.name for b in sc.backends}:
            try:
                initial = self.state_file.get(sc.name)  # added by a reload: as stored, if stored
            except KeyError:
                initial = ServiceState(sc.backends[0].name, 0)
            if initial.active not in {b.name for b in sc.backends}:
                raise StateFileError(
                    f"{self.state_file.path}: service {sc.name!r} has active backend {initial.active!r}, "
                    f"which the config does not name"
                )
        ctl = ServiceController(config, sc, self.state_file, initial, feed=self.events)
        if getattr(self, "pair", None) is not None:
            assert self.pair is not None
            self.pair.node.adopt(ctl)  # a service added by a reload follows until it wins a campaign
        name = sc.name
        # Requests waiting on a backend declared dead stop waiting at once (proxy rule).
        ctl.director.on_abort = lambda backend: self.proxy.abort_inflight(name, backend)
        return ctl

    def _run_controller(self, ctl: ServiceController) -> None:
        name = ctl.service.name
        task = asyncio.get_running_loop().create_task(ctl.run(), name=f"failover:{name}")
        self._controller_tasks[name] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._controller_tasks.get(name) is t:
                del self._controller_tasks[name]
            if t.cancelled():
                return
            exc = t.exception() or RuntimeError(f"failover controller of {name} returned")
            log.critical("service %s: failover controller stopped: %s; the router stops", name, exc,
                         exc_info=exc)
            self._fail(exc)

        task.add_done_callback(done)

    def _retire(self, pool: BackendPool) -> None:
        pool.retire()

        async def close_when_idle() -> None:
            await pool.wait_idle()
            await pool.close()

        try:
            task = asyncio.get_running_loop().create_task(close_when_idle(), name=f"retire pool {pool.key.origin}")
        except RuntimeError:  # not running yet: nothing can be in flight
            return
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _publish(self, config: Config) -> None:
        for sc in config.services:
            snap = self.directors[sc.name].snapshot()
            metrics.EPOCH.labels(sc.name).set(snap.epoch)
            for b in sc.backends:
                metrics.ACTIVE_BACKEND.labels(sc.name, b.name).set(1 if b.name == snap.active else 0)

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> list[tuple[str, int]]:
        """Bind every listener and the admin listener; return their (host, port), the
        listeners in config order and the admin listener LAST. ``self.bound`` has the
        same with names."""
        config = self.config
        listeners: list[tuple[str, int]] = []
        self.state_file.acquire()  # again after a stop(); StateFileError if taken meanwhile
        self._started = True
        try:
            if self.data_path is not None:  # the workers serve them (router/workers/), probes start after
                listeners = await self.data_path.start()
            for ctl in self.controllers.values():
                self._run_controller(ctl)
            for i, lc in enumerate(config.listen if self.data_path is None else ()):
                host, port = lc.host_port
                handler = make_redirect_handler(lc.https_port) if lc.redirect_to_https else self.proxy.handle
                site = ProxySite(handler, config.limits, tls=bool(lc.tls))
                self._sites.append(site)
                listeners.append(await site.start(host, port, server_ssl_context(lc, i) if lc.tls else None))
            ahost, aport = parse_hostport(config.admin.listen)
            self._admin_runner = web.AppRunner(build_admin_app(self), handle_signals=False, access_log=None,
                                               keepalive_timeout=config.limits.keepalive_timeout)
            await self._admin_runner.setup()
            await web.TCPSite(self._admin_runner, ahost, aport, reuse_address=True).start()
            admin = _sockname(self._admin_runner)
        except BaseException:
            await self.stop()
            raise
        self.bound = BoundAddresses(tuple(listeners), admin)
        if self.pair is not None:
            self.pair.start(admin, partial(execute, self), self._fail)
        # What exists now lives as long as the router: kept out of the collector's full
        # passes, which otherwise walk it again and again under load (issue 12). The data
        # path makes no cycles; what requests in flight hold (thousands of objects at a few
        # hundred requests) must not start a young-generation pass every few requests.
        gc.freeze()
        first, second, third = gc.get_threshold()
        gc.set_threshold(max(first, 10_000), second, third)
        for (h, p), lc in zip(listeners, config.listen, strict=True):
            kind = "https" if lc.tls else ("http->https redirect" if lc.redirect_to_https else "http")
            log.info("listening on %s:%d (%s)", h, p, kind)
        log.info("admin API on http://%s:%d", *admin)
        return [*listeners, admin]

    # -- the router pair (RouterControl) ------------------------------------------------

    def cluster_statistics(self) -> ClusterStatistics | None:
        return None if self.pair is None else self.pair.node.statistics()

    def decides(self, service: str) -> bool:
        return True if self.pair is None else self.pair.node.decides(service)

    async def forward_command(self, service: str, command: str, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.pair is None:
            return 503, {"error": f"service {service}: no router pair configured to carry out {command}"}
        return await self.pair.commands.submit(service, command, args)

    def _fail(self, exc: BaseException) -> None:
        if not self.failed.done():
            self.failed.set_result(exc)

    async def stop(self) -> None:
        """Graceful stop, in this order:

        1. close every listening socket (no new connections; in-flight go on);
        2. let in-flight requests finish, up to ``shutdown_grace``, then cancel them;
        3. close the admin listener;
        4. stop the failover controllers (their probes and any promotion run: the
           audit log shows a cancelled run as unfinished);
        5. close the backend pools, flush the access log, close the etcd client.

        With worker processes, steps 1 and 2 happen in each of them first (router/workers/),
        while this process still decides (or follows) for them. Then a router of a pair
        stands down and revokes its lease (the other one decides at once), and 1-5 follow.
        """
        if self.data_path is not None:
            await self.data_path.stop()
        if self.pair is not None:
            await self.pair.stop()
        await asyncio.gather(*(site.stop(self.config.shutdown_grace) for site in self._sites),
                             return_exceptions=True)
        self._sites.clear()
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
            self._admin_runner = None
        tasks = list(self._controller_tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._controller_tasks.clear()
        self.state_file.release()  # nothing writes it any more: another router may take it
        self._started = False
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for pool in self._pools.values():
            await pool.close()
        self.access_log.close()
        if self.pair is not None:
            await self.pair.close()

    def reload(self, config: Config) -> None:
        """Apply a new (already validated) config to new requests."""
        old = self.config
        if [lc.model_dump() for lc in old.listen] != [lc.model_dump() for lc in config.listen]:
            log.warning("reload: listener changes need a restart; keeping the current listeners")
        if old.admin.listen != config.admin.listen:
            log.warning("reload: admin.listen changes need a restart; keeping %s", old.admin.listen)
        if old.cluster != config.cluster:
            log.warning("reload: cluster changes need a restart; the router pair goes on as started")
        if (old.log.access_log, old.log.access_format) != (config.log.access_log, config.log.access_format):
            self.access_log.close()
            self.access_log = AccessLog(config.log.access_log, config.log.access_format)
            self.proxy.access_log = self.access_log
        else:
            self.access_log.reopen()  # log rotation
        self.proxy.set_table(self._build_table(config))
        for site in self._sites:
            site.set_limits(config.limits)  # connections accepted from now on
        self.config = config
        if self.data_path is not None:
            self.data_path.reload(config)
        log.info("reload: configuration applied (%d services)", len(config.services))

    def statistics(self) -> RouterStatistics:
        """The one snapshot for observers (status, page, metrics): built here, where the
        controllers' insides are known, so the admin room never reaches into them."""
        out = []
        for sc in self.config.services:
            ctl = self.controllers[sc.name]
            snap = self.directors[sc.name].snapshot()
            machine = ctl.machine.snapshot()
            out.append(
                ServiceStatistics(
                    name=sc.name,
                    active=snap.active,
                    # The persisted epoch: during a promotion the new one, which agents must be able to
                    # confirm here before they accept its steps (docs/replication.md).
                    epoch=max(snap.epoch, machine.epoch),
                    state=snap.state,
                    backends=tuple(BackendStatistics(b.name, b.url, b.healthy, probe_statistics(ctl, b.name))
                                   for b in snap.backends),
                    alarms=tuple(ctl.alarms),
                    held_requests=len(ctl.director.hold) + (self.data_path.held(sc.name) if self.data_path else 0),
                    target=machine.target,
                    cause=machine.cause.value if machine.cause else None,
                )
            )
        return RouterStatistics(tuple(out), self.unfinished_promotions)


def _sockname(runner: web.BaseRunner) -> tuple[str, int]:
    addr = runner.addresses[-1]
    return (str(addr[0]), int(addr[1]))


# -- the process ------------------------------------------------------------------------
