"""The agent process of one node: HTTP API, role from the router, and the source or
sink of each root.

Rules:

1. Every ``/v1/`` call needs ``Authorization: Bearer <replication token>`` (compared
   with ``hmac.compare_digest``); only ``GET /metrics`` is open.
2. The role comes from :class:`RoleTracker`; this shell polls the router and performs
   role changes: stop what the old role ran, then start the new one. Every background
   task is named and owned by the agent, and cancelled and awaited at stop.
3. Root endpoints answer only while this node is the source (409 otherwise), so a spare
   never hands out its replica as the truth.
4. Actions for the promotion pipeline (``final-sync``, ``stop-app``) live in
   :mod:`replication.actions`, with their epoch rules: the router, not the caller,
   vouches for a newer epoch.
5. The agent sends no credential to the router: ``GET /v1/status`` needs none, and the
   admin token (which can order a failover) is never given to agents.
6. ``POST /v1/roots/{root}/confirm-deletes`` on a spare is the operator's go-ahead for
   removals its delete guard holds (sink rule 6).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .actions import Actions
from .config import ReplicationConfig
from .metrics import AgentMetrics
from .role import Role, RoleChange, RoleTracker
from .sink import RootSink, SinkSettings
from .source import RootSource, disk_report
from .syncstate import SyncState

log = logging.getLogger("hotspare.replication.agent")

__all__ = ["Agent", "AgentOptions"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class AgentOptions:
    node: str
    host: str = "127.0.0.1"
    port: int = 0
    router_url: str | None = None  # None: fixed role (below)
    # node name -> that node's agent URL (the service's backends)
    peers: dict[str, str] = field(default_factory=dict)
    fixed_role: Role | None = None
    init_roots: bool = False
    ssl_context: Any = None
    client_ssl: Any = None


class Agent(Actions):
    def __init__(self, config: ReplicationConfig, options: AgentOptions) -> None:
        self.config = config
        self.opts = options
        self.node = options.node
        self.token = config.secret()
        self.metrics = AgentMetrics()
        self.tracker = RoleTracker(options.node)
        self.sources: dict[str, RootSource] = {}
        self.sinks: dict[str, RootSink] = {}
        self._role_tasks: list[asyncio.Task[None]] = []
        self._main_tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._role_lock = asyncio.Lock()
        self._epoch_lock = asyncio.Lock()
        self.max_epoch = 0
        self.port = 0

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> int:
        """Bind the listener, start the role loop; return the bound port."""
        if threading.current_thread() is threading.main_thread():
            # A writer opening a file in the instant we hold a read lease sends SIGIO,
            # whose default action would kill the agent.
            signal.signal(signal.SIGIO, signal.SIG_IGN)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=90),
            connector=aiohttp.TCPConnector(limit=64, ssl=self.opts.client_ssl),
        )
        app = web.Application(middlewares=[self._auth], client_max_size=16 << 20)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/status", self._status)
        app.router.add_get("/v1/roots/{root}/manifest", self._root(RootSource.manifest))
        app.router.add_get("/v1/roots/{root}/changes", self._root(RootSource.changes))
        app.router.add_get("/v1/roots/{root}/head", self._root(RootSource.head))
        app.router.add_get("/v1/roots/{root}/file", self._root(RootSource.file))
        app.router.add_post("/v1/roots/{root}/bundle", self._root(RootSource.bundle))
        app.router.add_post("/v1/roots/{root}/confirm-deletes", self._confirm_deletes)
        app.router.add_get("/v1/roots/{root}/disk", self._disk)
        app.router.add_post("/v1/actions/final-sync", self._final_sync)
        app.router.add_post("/v1/actions/stop-app", self._stop_app)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.opts.host, self.opts.port, ssl_context=self.opts.ssl_context)
        await site.start()
        self.port = int(self._runner.addresses[-1][1])
        if self.opts.fixed_role is not None:
            await self._apply(RoleChange(self.tracker.role, self.opts.fixed_role))
            self.tracker.role = self.opts.fixed_role
        else:
            self._main_tasks.append(asyncio.create_task(self._role_loop(), name=f"agent-{self.node}-role"))
        log.info("agent %s listening on %s:%d", self.node, self.opts.host, self.port)
        return self.port

    async def stop(self) -> None:
        # 1. stop asking the router, 2. stop the roots' tasks, 3. close the listener,
        # 4. close the client session and the roots' state.
        await _cancel_all(self._main_tasks)
        await self._stop_role()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _stop_role(self) -> None:
        for src in self.sources.values():
            src.close()
        await _cancel_all(self._role_tasks)
        for sink in self.sinks.values():
            sink.close()
        self.sinks.clear()
        self.sources.clear()

    # -- role ---------------------------------------------------------------------------

    def _status_url(self) -> str:
        assert self.opts.router_url is not None
        return f"{self.opts.router_url.rstrip('/')}/v1/status"

    async def _router_status(self) -> Any:
        """The router's ``/v1/status`` body (rule 5: sent without any credential)."""
        assert self._session is not None
        async with self._session.get(self._status_url(), timeout=aiohttp.ClientTimeout(total=5)) as r:
            body = await r.json(content_type=None) if r.status == 200 else None
            if body is None:
                raise aiohttp.ClientError(f"router answered {r.status}")
        return body

    async def _role_loop(self) -> None:
        url = self._status_url()
        while True:
            try:
                body = await self._router_status()
                change = self.tracker.observe(body, time.time())
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                was_ok = self.tracker.router_ok or self.tracker.unreachable_since is None
                self.tracker.router_failed(f"{type(exc).__name__}: {exc}", time.time())
                if was_ok:
                    log.warning("agent %s: router %s unreachable (%s); keeping role %s",
                                self.node, url, exc, self.tracker.role.kind)
                change = self._resume_remembered()
            self.metrics.router_reachable.set(1 if self.tracker.router_ok else 0)
            self.max_epoch = max(self.max_epoch, self.tracker.role.epoch)
            if change is not None:
                await self._apply(change)
            await asyncio.sleep(self.config.role_interval)

    async def _apply(self, change: RoleChange) -> None:
        async with self._role_lock:
            new = change.new
            log.info("agent %s: role %s -> %s (service %s, active %s, epoch %d)",
                     self.node, change.old.kind, new.kind, new.service, new.active, new.epoch)
            await self._stop_role()
            self.max_epoch = max(self.max_epoch, new.epoch)
            self.metrics.is_source.set(1 if new.kind == "source" else 0)
            if new.kind != "unknown":
                self._remember(new)
            if new.kind == "source":
                self._start_sources(new)
            elif new.kind == "sink":
                self._start_sinks(new, change.reversal)

    def _remember(self, role: Role) -> None:
        """Write the role into each root's sync state, so that an agent restarted while
        the router is unreachable can keep the role it had (rule 2 of role.py)."""
        memo = json.dumps({"kind": role.kind, "service": role.service, "active": role.active, "epoch": role.epoch})
        for r in self.config.roots:
            root = r.path_for(self.node)
            # A sink creates its replica root anyway; a missing source root (an unmounted
            # disk?) is never created here.
            if root.is_dir() or role.kind == "sink":
                st = SyncState(root)
                try:
                    st.put("last_role", memo)
                finally:
                    st.close()

    def _resume_remembered(self) -> RoleChange | None:
        """At start, with the router unreachable: the role this node last had, if one
        of its roots remembers it (the highest epoch wins); else None (stay unknown)."""
        if self.tracker.role.kind != "unknown":
            return None
        best: Role | None = None
        for r in self.config.roots:
            root = r.path_for(self.node)
            if not (root / ".hotspare").is_dir():
                continue
            st = SyncState(root)
            try:
                raw = st.get("last_role")
            finally:
                st.close()
            try:
                d = json.loads(raw) if raw else None
                role = Role(d["kind"], d["service"], d["active"], int(d["epoch"])) if d else None
            except (ValueError, KeyError, TypeError):
                log.error("agent %s: unreadable remembered role in %s; staying unknown", self.node, root)
                role = None
            if role is not None and role.kind in ("source", "sink") and (best is None or role.epoch > best.epoch):
                best = role
        if best is None:
            return None
        log.warning("agent %s: router unreachable at start; resuming the role this node last had: "
                    "%s (service %s, active %s, epoch %d)", self.node, best.kind, best.service, best.active, best.epoch)
        change = RoleChange(self.tracker.role, best)
        self.tracker.role = best
        return change

    def _start_sources(self, role: Role) -> None:
        c = self.config
        for r in c.roots:
            root = r.path_for(self.node)
            src = RootSource(r.name, root, marker=c.marker_file, exclude=r.exclude, quiet=c.quiet_period,
                             rescan_interval=c.rescan_interval, bundle_file_max=c.bundle_file_max,
                             allow_hard_links=c.allow_hard_links)
            src.ensure_marker(self.opts.init_roots)
            if root.is_dir():
                st = SyncState(root)
                st.put("role", "source")
                st.put("epoch", str(role.epoch))
                st.close()
            self.sources[r.name] = src
            self._role_tasks.append(asyncio.create_task(src.run(), name=f"agent-{self.node}-source-{r.name}"))

    def _start_sinks(self, role: Role, reversal: bool) -> None:
        assert self._session is not None
        url = self.opts.peers.get(role.active or "")
        if url is None:
            log.error("agent %s: no agent URL for active node %r; cannot mirror", self.node, role.active)
            return
        c = self.config
        for r in c.roots:
            root = r.path_for(self.node)
            settings = SinkSettings(
                marker=c.marker_file, exclude=tuple(r.exclude), transfers=c.transfers,
                bundle_file_max=c.bundle_file_max, max_delete_share=c.max_delete_share,
                max_delete_free=c.max_delete_free, reconcile_interval=c.reconcile_interval,
                trash_retention=c.trash_retention, fsync=c.fsync,
            )
            sink = RootSink(r.name, root, url, self.token, self._session, settings, self.metrics,
                            epoch=role.epoch)
            sink.former_active = reversal or sink.state.get("role") == "source"
            if sink.former_active:
                log.warning("agent %s: root %s was served by this node before; files changed here "
                            "since its last sync go to quarantine/epoch-%d", self.node, r.name, role.epoch)
            self.sinks[r.name] = sink
            self._role_tasks.append(asyncio.create_task(sink.run(), name=f"agent-{self.node}-sink-{r.name}"))

    # -- HTTP ---------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/metrics":
            return await handler(request)
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {self.token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            what = "missing" if not given else "wrong"
            return web.json_response(
                {"error": f"{what} bearer token; every agent call needs 'Authorization: Bearer "
                          "<replication token>'"}, status=401)
        return await handler(request)

    def _root(self, method: Callable[[RootSource, web.Request], Awaitable[web.StreamResponse]]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            name = request.match_info["root"]
            src = self.sources.get(name)
            if src is None:
                if any(r.name == name for r in self.config.roots):
                    return web.json_response(
                        {"error": f"node {self.node} is not serving root {name} (role "
                                  f"{self.tracker.role.kind}); ask the active node's agent"}, status=409)
                return web.json_response({"error": f"no root named {name!r}"}, status=404)
            return await method(src, request)

        return handler

    async def _confirm_deletes(self, request: web.Request) -> web.Response:
        """The operator's go-ahead for removals the delete guard holds on this replica."""
        name = request.match_info["root"]
        sink = self.sinks.get(name)
        if sink is None:
            known = any(r.name == name for r in self.config.roots)
            return web.json_response(
                {"ok": False, "error": f"node {self.node} is not mirroring root {name} (role "
                                       f"{self.tracker.role.kind}); confirm on the spare's agent" if known
                 else f"no root named {name!r}"}, status=409 if known else 404)
        try:
            held = sink.confirm_deletes()
        except ValueError as exc:
            return web.json_response({"ok": False, "error": f"root {name}: {exc}"}, status=409)
        return web.json_response({"ok": True, "root": name, "held": held,
                                  "note": "a reconcile now applies the removals the source asks for"})

    async def _disk(self, request: web.Request) -> web.Response:
        """Read-only, any role: the root's folder, marker, free space and largest file on
        this node, and this node's clock (``now``) for ``hotspare doctor``'s skew check."""
        name = request.match_info["root"]
        root = next((r for r in self.config.roots if r.name == name), None)
        if root is None:
            return web.json_response({"error": f"no root named {name!r}"}, status=404)
        report = await asyncio.to_thread(
            disk_report, root.path_for(self.node), self.config.marker_file, list(root.exclude))
        return web.json_response({"root": name, "node": self.node, **report, "now": time.time()})

    async def _metrics(self, request: web.Request) -> web.Response:
        for name, sink in self.sinks.items():
            self.metrics.lag.labels(name).set(sink.fresh.lag(time.time()))
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def status(self) -> dict[str, Any]:
        t = self.tracker
        roots = [s.status() for s in self.sources.values()] + [s.status() for s in self.sinks.values()]
        return {
            "node": self.node, "role": t.role.kind, "service": t.role.service, "active": t.role.active,
            "epoch": t.role.epoch,
            "router": {"ok": t.router_ok or self.opts.fixed_role is not None, "error": t.router_error,
                       "unreachable_since": t.unreachable_since},
            "roots": roots,
        }

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status())

async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    for t in tasks:
        try:
            await t
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise  # we are being cancelled ourselves: let it propagate
        except Exception:
            log.exception("task %s failed", t.get_name())
    tasks.clear()


def root_paths(config: ReplicationConfig, node: str) -> dict[str, Path]:
    return {r.name: r.path_for(node) for r in config.roots}
