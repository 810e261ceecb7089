"""The decider's side of worker processes: binds the listeners, starts ``workers``
processes on them, keeps them following its directors, and restarts one that dies.

Rules:

1. The decider binds every proxy listener once (one bind, one set of errors, ports read
   back for ``:0``) and passes the listening sockets to each worker (``pass_fds``): all
   workers accept from the same queue, a worker that dies loses nothing queued, and the
   decider itself accepts nothing: it keeps its loop for probes, promotions and the
   admin API.
2. Every worker gets a hello first (config and every service's view) and is counted
   ready only when it says so: :meth:`Supervisor.start` returns once all are ready.
3. Any change of a director's route, mode, epoch or health (``on_change``, fired by
   ``wake``) schedules ONE broadcast of every service's view for the end of the current
   loop step: the decider's actions of one event are all performed by then. An
   ``AbortInflight`` flushes a pending broadcast first (the machine holds traffic before
   it aborts), then goes to every worker. What changes without a ``wake`` (the health
   checkers starting, the observers' ``state``) is caught by a look every
   ``WATCH_INTERVAL`` s that broadcasts when the views differ from the last sent.
4. Reports from the workers feed the decider's directors (:func:`.reports.apply_report`);
   every view a worker gets says which of its failure reports it reflects (``acked``,
   and one is broadcast after each such report); their metrics feed ``router.metrics.REGISTRY.merge`` (:mod:`.metricsmerge`).
5. A worker that exits while the router runs is started again (at once; after
   0.2, 0.4 ... 5 s when it keeps dying within ``FLAP_SECONDS`` of its start); the others
   and their connections are untouched; so is one that stops reading its channel
   (``MAX_BACKLOG`` bytes queued to it), after it is killed. ``stop()`` closes the decider's copies of the
   listening sockets, sends SIGTERM to all, waits up to
   ``shutdown_grace`` + ``STOP_MARGIN`` for them to drain, then kills what is left.
6. A reload goes to every worker as a new config with the views; listener and
   ``workers`` changes need a restart (the router logs the former, this the latter).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import router
from router import metrics
from router.config import Config, ListenerConfig
from router.failover.controller import ServiceController
from router.failover.director import Director
from router.failover.follow import FailoverDirector

from .channel import Channel, ChannelError
from .metricsmerge import MetricsMerge
from .reports import apply_report
from .view import view_of

__all__ = ["FLAP_SECONDS", "STOP_MARGIN", "Decider", "Supervisor", "bind_listener"]

log = logging.getLogger("hotspare.workers")

FLAP_SECONDS = 5.0
STOP_MARGIN = 5.0
READY_TIMEOUT = 60.0
WATCH_INTERVAL = 0.1
MAX_BACKLOG = 8 * 1024 * 1024  # bytes queued to a worker that does not read: it is hung
_ROOT = str(Path(router.__file__).resolve().parent.parent)  # workers import the decider's own tree


class Decider(Protocol):
    """What the supervisor reads of :class:`router.server.Router`."""

    config: Config
    controllers: dict[str, ServiceController]
    directors: dict[str, Director]


def bind_listener(lc: ListenerConfig, index: int) -> socket.socket:
    host, port = lc.host_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        raise OSError(exc.errno, f"listen[{index}] {host}:{port}: {exc.strerror}") from exc


@dataclass(slots=True)
class _Slot:
    index: int
    proc: asyncio.subprocess.Process | None = None
    channel: Channel | None = None
    ready: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    starts: int = 0
    acked: int = 0  # the last failure report (its seq) applied from this worker's current process


class Supervisor:
    def __init__(self, router: Decider) -> None:
        self.router = router
        self.count = router.config.worker_count
        self.merge = MetricsMerge(metrics.REGISTRY)
        self._socks: list[socket.socket] = []
        self._slots = [_Slot(i) for i in range(self.count)]
        self._tasks: list[asyncio.Task[None]] = []
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._pending: asyncio.Handle | None = None
        self._attached: dict[str, FailoverDirector] = {}
        self._sent: dict[str, Any] = {}  # the views last broadcast

    # -- the DataPathHost -----------------------------------------------------------------

    async def start(self) -> list[tuple[str, int]]:
        config = self.router.config
        self._socks = [bind_listener(lc, i) for i, lc in enumerate(config.listen)]
        metrics.REGISTRY.merge = self.merge
        self._attach()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._keep(slot), name=f"worker:{slot.index}") for slot in self._slots]
        self._watcher = loop.create_task(self._watch(), name="workers:watch")
        async with asyncio.timeout(READY_TIMEOUT):
            await asyncio.gather(*(slot.ready for slot in self._slots))
        log.info("%d worker processes serve the listeners", self.count)
        return [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in self._socks]

    async def stop(self) -> None:
        self._stopping = True
        for sock in self._socks:  # the workers' copies are the last: closed, the port refuses
            sock.close()
        for slot in self._slots:
            if slot.proc is not None and slot.proc.returncode is None:
                slot.proc.send_signal(signal.SIGTERM)
        grace = self.router.config.shutdown_grace + STOP_MARGIN
        _, late = await asyncio.wait(self._tasks, timeout=grace) if self._tasks else (set(), set())
        for slot in self._slots:
            if late and slot.proc is not None and slot.proc.returncode is None:
                log.error("worker %d did not stop within %ss; killed", slot.index, grace)
                slot.proc.kill()
        tasks = [*self._tasks, *([self._watcher] if self._watcher else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._watcher = None
        for sock in self._socks:
            sock.close()
        self._socks.clear()

    def reload(self, config: Config) -> None:
        if config.worker_count != self.count:
            log.warning("reload: a change of workers (%d -> %d) needs a restart", self.count, config.worker_count)
        self._attach()
        views = self._views()
        for slot in self._live():
            self._send(slot, {"t": "reload", "config": config, "views": views, "acked": slot.acked}, whole=True)

    def held(self, service: str) -> int:
        return int(self.merge.gauge("hotspare_held_requests", {"service": service}))

    # -- following (rule 3) ---------------------------------------------------------------

    def _attach(self) -> None:
        for name, ctl in self.router.controllers.items():
            d = ctl.director
            if self._attached.get(name) is d:
                continue
            self._attached[name] = d
            d.on_change = self._schedule
            inner = d.on_abort

            def abort(backend: str, inner: Any = inner, name: str = name) -> None:
                if inner is not None:
                    inner(backend)
                self._abort(name, backend)

            d.on_abort = abort

    def _views(self) -> dict[str, Any]:
        return {name: view_of(ctl.director, ctl.checker.health).to_dict()
                for name, ctl in self.router.controllers.items()}

    def _live(self) -> list[_Slot]:
        return [s for s in self._slots if s.channel is not None]

    def _schedule(self) -> None:
        if self._pending is None:
            self._pending = asyncio.get_running_loop().call_soon(self._broadcast)

    def _broadcast(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        views = self._sent = self._views()
        for slot in self._live():
            self._send(slot, {"t": "views", "views": views, "acked": slot.acked})

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)  # pacing of the look (rule 3)
            if self._views() != self._sent:
                self._broadcast()

    def _abort(self, service: str, backend: str) -> None:
        if self._pending is not None:
            self._broadcast()
        for slot in self._live():
            self._send(slot, {"t": "abort", "service": service, "backend": backend})

    def _send(self, slot: _Slot, message: dict[str, Any], whole: bool = False) -> None:
        """To one worker; one that has stopped reading (``MAX_BACKLOG`` queued) is hung:
        killed, and started again by :meth:`_keep`."""
        channel = slot.channel
        if channel is None:
            return
        if channel.backlog > MAX_BACKLOG:
            if slot.proc is not None and slot.proc.returncode is None:
                log.error("worker %d stopped reading its channel (%d bytes queued); killed", slot.index, channel.backlog)
                slot.proc.kill()
            return
        if whole:
            channel.send_object(message)
        else:
            channel.send(message)

    # -- one worker's life (rules 2, 4 and 5) ---------------------------------------------

    async def _keep(self, slot: _Slot) -> None:
        loop = asyncio.get_running_loop()
        flaps = 0
        while not self._stopping:
            started = loop.time()
            try:
                code: int | str = await self._run_once(slot)
            except Exception as exc:  # could not even start it (fork, exec, socketpair)
                log.exception("worker %d could not be started", slot.index)
                code = f"{type(exc).__name__}: {exc}"
            if self._stopping:
                return
            if not slot.ready.done():
                slot.ready.set_exception(RuntimeError(f"worker {slot.index} exited ({code}) before it was ready"))
                return
            flaps = flaps + 1 if loop.time() - started < FLAP_SECONDS else 0
            delay = min(5.0, 0.1 * 2**flaps) if flaps else 0.0
            log.error("worker %d (exit status %s) died; starting it again%s", slot.index, code,
                      f" in {delay:g}s" if delay else "")
            await asyncio.sleep(delay)  # pacing of restarts, not a wait for a condition

    async def _run_once(self, slot: _Slot) -> int:
        parent, child = socket.socketpair()
        fds = [s.fileno() for s in self._socks]
        root = _ROOT
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "router.workers", "--channel", str(child.fileno()),
                "--listen", ",".join(map(str, fds)), pass_fds=(child.fileno(), *fds), env=env,
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            child.close()
        slot.proc, slot.starts, slot.acked = proc, slot.starts + 1, 0
        channel = await Channel.open(parent, accept_pickle=False)
        channel.send_object({"t": "hello", "index": slot.index, "workers": self.count,
                             "config": self.router.config, "views": self._views()})
        slot.channel = channel
        reader = asyncio.get_running_loop().create_task(self._read(slot, channel), name=f"worker:{slot.index}:channel")
        try:
            code = await proc.wait()
        finally:
            slot.channel = None
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            channel.close()
            self.merge.retire(slot.index)
        return code

    async def _read(self, slot: _Slot, channel: Channel) -> None:
        while True:
            try:
                msg = await channel.receive()
            except (ChannelError, ValueError) as exc:
                log.error("worker %d broke the channel (%s); killed", slot.index, exc)
                if slot.proc is not None and slot.proc.returncode is None:
                    slot.proc.kill()
                return
            if msg is None:
                return
            self._take(slot, msg)

    def _take(self, slot: _Slot, msg: Mapping[str, Any]) -> None:
        kind = msg.get("t")
        if kind == "report":
            dropped = apply_report(msg, self.router.directors)
            if dropped:
                log.warning("worker %d: %d report lines not understood; dropped", slot.index, dropped)
            seq = msg.get("seq")
            if isinstance(seq, int) and seq > slot.acked:
                slot.acked = seq
                self._schedule()  # the worker learns the verdict on its report (datapath rule 4)
        elif kind == "metrics":
            self.merge.update(slot.index, msg.get("samples"))
        elif kind == "ready":
            log.info("worker %d (pid %s) ready", slot.index, msg.get("pid"))
            if not slot.ready.done():
                slot.ready.set_result(None)
        else:
            log.warning("worker %d sent an unknown message %r; ignored", slot.index, kind)
