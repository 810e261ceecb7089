"""The actions the promotion pipeline asks of an agent: ``final-sync`` and ``stop-app``
(a mixin of :class:`replication.agent.Agent`).

Rules:

1. Both carry the epoch, the fencing token. An epoch older than the highest this agent
   has seen is refused (409): a stale pipeline cannot act.
2. A higher epoch is not taken on the caller's word: the agent asks the router once
   and accepts it only if the router's status shows at least that epoch (the router
   persists a promotion's epoch before it runs the steps). Otherwise 409, and the
   agent's epoch is unchanged, so a holder of the replication token cannot fence off
   the real promotion by sending a huge epoch.
3. ``final-sync`` returns once the replica holds everything the source held when the
   call arrived; on the active it is forwarded to the spares. ``stop-app`` runs the
   configured command.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from .config import ReplicationConfig
from .role import RoleTracker, router_epoch
from .sink import RootSink
from .source import RootSource

log = logging.getLogger("hotspare.replication.agent")

__all__ = ["Actions"]


class Actions:
    """The action half of an agent; :class:`replication.agent.Agent` sets these."""

    node: str
    token: str
    config: ReplicationConfig
    tracker: RoleTracker
    sources: dict[str, RootSource]
    sinks: dict[str, RootSink]
    max_epoch: int
    opts: Any  # AgentOptions (agent.py imports this module)
    _session: aiohttp.ClientSession | None
    _epoch_lock: asyncio.Lock

    def _status_url(self) -> str:
        raise NotImplementedError

    async def _router_status(self) -> Any:
        raise NotImplementedError

    async def _action_body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        epoch = body.get("epoch") if isinstance(body, dict) else None
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            return web.json_response(
                {"ok": False, "error": 'expected JSON {"service": S, "epoch": N, "node": B} with N an integer >= 0'},
                status=400)
        assert isinstance(body, dict)
        if epoch < self.max_epoch:
            return web.json_response(
                {"ok": False, "error": f"stale epoch {epoch}; this agent has seen epoch {self.max_epoch}"},
                status=409)
        if epoch > self.max_epoch:
            why = await self._epoch_unconfirmed(epoch)
            if why is not None:
                log.warning("agent %s: refused an action with epoch %d (known %d): %s",
                            self.node, epoch, self.max_epoch, why)
                return web.json_response(
                    {"ok": False, "error": f"epoch {epoch} is newer than this agent's epoch {self.max_epoch} "
                                           f"and {why}; not accepted"}, status=409)
            self.max_epoch = max(self.max_epoch, epoch)
        return body

    async def _epoch_unconfirmed(self, epoch: int) -> str | None:
        """Why the router does not vouch for ``epoch`` (None: it does). One fresh poll;
        concurrent callers wait for each other rather than multiply the polls."""
        if self.opts.router_url is None:
            return "no router is configured to confirm it (fixed role)"
        async with self._epoch_lock:
            if epoch <= self.max_epoch:
                return None  # confirmed by the poll of a caller before us
            try:
                status = await self._router_status()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                return f"the router at {self._status_url()} could not confirm it ({type(exc).__name__}: {exc})"
            known = router_epoch(status, self.node)
            if known is None:
                return f"the router's status lists no service with a backend named {self.node!r}"
            self.max_epoch = max(self.max_epoch, known)
            if epoch > known:
                return f"the router's current epoch is {known}"
        return None

    async def _final_sync(self, request: web.Request) -> web.Response:
        body = await self._action_body(request)
        if isinstance(body, web.Response):
            return body
        timeout = body.get("timeout", 300)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= 3600:
            return web.json_response(
                {"ok": False, "error": f"timeout: expected seconds in (0, 3600], got {timeout!r:.40}"}, status=400)
        timeout = float(timeout)
        if self.sources and not body.get("forwarded"):
            return await self._forward_final_sync(body)
        if not self.sinks:
            return web.json_response(
                {"ok": False, "error": f"node {self.node} is neither serving nor mirroring (role "
                                       f"{self.tracker.role.kind})"}, status=409)
        started = time.monotonic()
        results: dict[str, Any] = {}
        for name, sink in self.sinks.items():
            try:
                run_id, head = await sink.source_head()
            except Exception as exc:
                return web.json_response({"ok": False, "error": f"root {name}: {exc}"}, status=502)
            if run_id != sink.run_id:
                sink.request_reconcile()
            left = max(0.0, timeout - (time.monotonic() - started))
            ok = await _wait(lambda s=sink, r=run_id, h=head: s.run_id == r and s._caught_up(h), left)  # type: ignore[misc]
            results[name] = {"seq": head, "in_sync": ok, **({"error": sink.fresh.refused or sink.fresh.error} if not ok else {})}
            if not ok:
                return web.json_response({"ok": False, "node": self.node, "roots": results,
                                          "error": f"root {name} not in sync after {timeout:.0f}s"}, status=504)
        return web.json_response({"ok": True, "node": self.node, "roots": results,
                                  "seconds": round(time.monotonic() - started, 3)})

    async def _forward_final_sync(self, body: dict[str, Any]) -> web.Response:
        assert self._session is not None
        out: dict[str, Any] = {}
        ok = True
        for node, url in self.opts.peers.items():
            if node == self.node:
                continue
            try:
                async with self._session.post(f"{url}/v1/actions/final-sync", json={**body, "forwarded": True},
                                              headers={"Authorization": f"Bearer {self.token}"}) as r:
                    out[node] = await r.json(content_type=None)
                    ok = ok and r.status == 200
            except aiohttp.ClientError as exc:
                out[node] = {"ok": False, "error": str(exc)}
                ok = False
        return web.json_response({"ok": ok, "node": self.node, "spares": out}, status=200 if ok else 504)

    async def _stop_app(self, request: web.Request) -> web.Response:
        body = await self._action_body(request)
        if isinstance(body, web.Response):
            return body
        argv = self.config.stop_command(self.node)
        if not argv:
            return web.json_response(
                {"ok": False, "error": f"replication.app_stop is not configured for node {self.node}"}, status=409)
        env = {**os.environ, "HOTSPARE_EPOCH": str(body["epoch"]), "HOTSPARE_NODE": self.node,
               "HOTSPARE_SERVICE": str(body.get("service", ""))}
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            return web.json_response({"ok": False, "error": f"cannot run {argv[0]!r}: {exc.strerror}"}, status=500)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.config.app_stop_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return web.json_response(
                {"ok": False, "error": f"app_stop did not finish in {self.config.app_stop_timeout:.0f}s; killed"},
                status=504)
        tail = out.decode(errors="replace")[-2000:]
        ok = proc.returncode == 0
        return web.json_response(
            {"ok": ok, "node": self.node, "exit_code": proc.returncode, "output": tail,
             "seconds": round(time.monotonic() - started, 3)}, status=200 if ok else 500)


async def _wait(cond: Callable[[], bool], limit: float) -> bool:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)  # a condition of the sink's progress, not a test wait
    return True
