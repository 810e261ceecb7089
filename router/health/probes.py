"""Active health probes: the thin aiohttp shell around each backend's :class:`Detector`.

Rules:

1. One probe loop per backend (the spare too), each a named task
   (``health:<service>:<backend>``) in the TaskGroup of :meth:`HealthChecker.run`;
   whoever runs ``run()`` owns them all, and cancelling it stops every probe.
   ``CancelledError`` is never swallowed.
2. The detector decides; this module only performs its actions: it sends a probe when
   one is due (:class:`ScheduleProbe`) and hands every :class:`Transition` to the
   ``on_transition`` callback after updating metrics and logging an operator line.
3. aiohttp and OS errors become a :class:`~router.failures.Failure` in router/edge.py,
   the same ``translate`` the proxy uses: a refused connection is one word everywhere.
4. Each probe opens a fresh connection (``force_close``): a probe must test that the
   backend still accepts connections, not that an old keep-alive socket is still open.
5. Real traffic reaches the detector through :meth:`HealthChecker.report_traffic`
   (synchronous, cheap: the proxy calls it after every upstream attempt); a report that
   asks for a confirming probe wakes the loop at once.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType

import aiohttp

from router import metrics
from router.config import BackendConfig, HealthConfig, ServiceConfig
from router.edge import translate
from router.failures import Failure

from .detector import (
    Detector,
    DetectorAction,
    DetectorSettings,
    DetectorSnapshot,
    Health,
    ProbeResult,
    ScheduleProbe,
    TrafficResult,
    Transition,
)

__all__ = ["BackendProber", "HealthChecker", "probe_url"]

log = logging.getLogger("hotspare.health")

Clock = Callable[[], float]
OnTransition = Callable[[str, Transition], None]  # (service name, transition)

_MAX_BODY = 64 * 1024  # read at most this much of a probe's body for expect_body
USER_AGENT = "hotspare-health/1"


def probe_url(backend: BackendConfig, health: HealthConfig) -> str:
    return backend.url.rstrip("/") + health.path


def _ssl_for(backend: BackendConfig) -> ssl.SSLContext | bool:
    if not backend.url.startswith("https://"):
        return True  # aiohttp's default (unused for http)
    if not backend.verify_tls:
        return False
    return ssl.create_default_context(cafile=str(backend.ca_file) if backend.ca_file else None)


class BackendProber:
    """One backend: its detector, its probe loop and its traffic reports."""

    def __init__(
        self,
        service: str,
        backend: BackendConfig,
        health: HealthConfig,
        settings: DetectorSettings,
        session: aiohttp.ClientSession,
        on_transition: OnTransition,
        clock: Clock = time.monotonic,
    ) -> None:
        self.service = service
        self.backend = backend
        self.health = health
        self.detector = Detector(backend.name, settings)
        self._session = session
        self._on_transition = on_transition
        self._clock = clock
        self._url = probe_url(backend, health)
        self._ssl = _ssl_for(backend)
        self._next_at = clock()
        self._wake = asyncio.Event()
        self.probes_sent = 0

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        metrics.BACKEND_UP.labels(self.service, self.backend.name).set(
            0 if self.detector.health is Health.DOWN else 1
        )
        self._apply(self.detector.start(self._clock()))
        while True:
            await self._until_due()
            started = self._clock()
            result = await self.probe_once(started)
            self._apply(self.detector.probe(result))

    async def _until_due(self) -> None:
        while True:
            delay = self._next_at - self._clock()
            if delay <= 0:
                return
            self._wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                return

    async def probe_once(self, started: float) -> ProbeResult:
        """Send one probe; the result as the detector wants it. Never raises (except
        CancelledError)."""
        h = self.health
        self.probes_sent += 1
        failure: Failure | None = None
        detail = ""
        try:
            async with asyncio.timeout(h.timeout):
                async with self._session.request(
                    h.method,
                    self._url,
                    headers={"User-Agent": USER_AGENT},
                    allow_redirects=False,
                    ssl=self._ssl,
                ) as resp:
                    status = resp.status
                    body = await resp.content.read(_MAX_BODY) if h.expect_body is not None else b""
            if status not in h.expect_status:
                failure, detail = Failure.STATUS, f"status {status}"
            elif h.expect_body is not None and h.expect_body.encode() not in body:
                failure, detail = Failure.BODY, f"body lacks {h.expect_body!r}"
        except Exception as exc:  # never CancelledError: a BaseException
            err = translate(exc, self.backend.name)
            failure, detail = err.failure, err.detail
            if err.status == 504:  # a deadline ran out (connect or answer): say which
                detail = f"{detail} ({h.timeout:g}s)"
        now = self._clock()
        if failure is None:
            return ProbeResult.good(started, now)
        return ProbeResult.bad(started, now, failure, detail)

    # -- traffic --------------------------------------------------------------------------

    def report_traffic(self, failure: Failure | None, status: int | None = None) -> None:
        self._apply(self.detector.traffic(TrafficResult(self._clock(), failure, status)))

    # -- actions --------------------------------------------------------------------------

    def _apply(self, actions: list[DetectorAction]) -> None:
        for action in actions:
            if isinstance(action, ScheduleProbe):
                self._next_at = self._clock() + action.delay
                self._wake.set()
            elif isinstance(action, Transition):
                self._transition(action)
            else:  # pragma: no cover - every action type has a branch above
                raise TypeError(f"unknown detector action {action!r}")

    def _transition(self, t: Transition) -> None:
        name = self.backend.name
        metrics.BACKEND_UP.labels(self.service, name).set(0 if t.new is Health.DOWN else 1)
        if t.new is Health.DOWN:
            metrics.FAILURES_DETECTED.labels(self.service, name, t.cause.value).inc()
            log.warning("service %s: backend %s DOWN (%s)", self.service, name, t.detail)
        elif t.new is Health.UP and t.old is Health.DOWN:
            log.warning("service %s: backend %s UP (%s)", self.service, name, t.detail)
        else:
            log.info("service %s: backend %s %s (%s)", self.service, name, t.new.value.upper(), t.detail)
        self._on_transition(self.service, t)


class HealthChecker:
    """Every backend of one service. ``await run()`` probes until cancelled; or use
    ``async with checker.running():`` to own it for the length of a block."""

    def __init__(
        self,
        service: ServiceConfig,
        on_transition: OnTransition,
        *,
        clock: Clock = time.monotonic,
        settings: DetectorSettings | None = None,
    ) -> None:
        self.service = service
        self._on_transition = on_transition
        self._clock = clock
        self._settings = settings or DetectorSettings.from_service(service)
        self._probers: dict[str, BackendProber] = {}

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            self._probers = {
                b.name: BackendProber(
                    self.service.name, b, self.service.health, self._settings, session,
                    self._on_transition, self._clock,
                )
                for b in self.service.backends
            }
            try:
                async with asyncio.TaskGroup() as tg:
                    for name, prober in self._probers.items():
                        tg.create_task(prober.run(), name=f"health:{self.service.name}:{name}")
            finally:
                self._probers = {}

    def running(self) -> AbstractAsyncContextManager[HealthChecker]:
        return _Running(self)

    @property
    def started(self) -> bool:
        return bool(self._probers)

    def report_traffic(self, backend: str, failure: Failure | None, status: int | None = None) -> None:
        """What a real request to ``backend`` showed (``failure`` None: a response with
        ``status``). Ignored until the probers run."""
        prober = self._probers.get(backend)
        if prober is not None:
            prober.report_traffic(failure, status)

    def health(self, backend: str) -> Health | None:
        """None before the checker runs."""
        prober = self._probers.get(backend)
        return prober.detector.health if prober else None

    def snapshot(self) -> tuple[DetectorSnapshot, ...]:
        return tuple(p.detector.snapshot() for p in self._probers.values())

    def prober(self, backend: str) -> BackendProber:
        return self._probers[backend]


class _Running:
    def __init__(self, checker: HealthChecker) -> None:
        self._checker = checker
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> HealthChecker:
        self._task = asyncio.create_task(self._checker.run(), name=f"health:{self._checker.service.name}")
        return self._checker

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task = self._task
        assert task is not None
        if task.done():
            task.result()  # re-raise what killed the probes
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if task.cancelled():
                # Our own cancel: swallow it only if *we* are not being cancelled too.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
            else:
                raise
