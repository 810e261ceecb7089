"""Health probes against real aiohttp servers on ephemeral loopback ports that we stop,
make answer 503, make hang, or make answer the wrong body. Nothing is mocked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from hotspare.causes import Cause
from router import metrics
from router.config import ServiceConfig, parse_config
from router.failures import Failure
from router.health.detector import Health, Transition
from router.health.probes import HealthChecker
from tests.helpers import wait_for


@dataclass
class Backend:
    """A real app server on 127.0.0.1:<ephemeral>; ``mode`` says how /health answers."""

    mode: str = "ok"  # ok | 503 | hang | body
    port: int = 0
    runner: web.AppRunner | None = None
    hits: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def health(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.mode == "hang":
            await self.release.wait()
        if self.mode == "503":
            return web.Response(status=503, text="down for maintenance")
        if self.mode == "body":
            return web.Response(text="database: unreachable")
        return web.Response(text="status: ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/health", self.health)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        self.release = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


BackendFactory = Callable[..., Awaitable[Backend]]


@pytest.fixture
async def backend() -> AsyncIterator[BackendFactory]:
    started: list[Backend] = []

    async def make(mode: str = "ok") -> Backend:
        b = Backend(mode)
        await b.start()
        started.append(b)
        return b

    yield make
    for b in reversed(started):
        await b.stop()


def service(a: Backend, b: Backend, **health: object) -> ServiceConfig:
    h = {"interval": "200ms", "fast_interval": "50ms", "timeout": "300ms", "rise": 2, "fall": 2,
         "expect_body": "ok", **health}
    config = parse_config({"listen": ["127.0.0.1:1"], "services": [{
        "name": "hs", "health": h,
        "backends": [{"name": "a", "url": a.url}, {"name": "b", "url": b.url}],
    }]})
    return config.services[0]


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Transition] = []

    def __call__(self, service: str, t: Transition) -> None:
        assert service == "hs"
        self.seen.append(t)

    def last(self, backend: str) -> Transition | None:
        ts = [t for t in self.seen if t.backend == backend]
        return ts[-1] if ts else None


async def wait_transition(rec: Recorder, backend: str, new: Health, within: float = 10.0) -> Transition:
    def found() -> Transition | None:
        t = rec.last(backend)
        return t if t is not None and t.new is new else None

    t = await wait_for(found, timeout=within, what=f"{backend} {new.name}")
    assert t is not None
    return t


def gauge(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


async def test_healthy_backends_stay_up_and_are_probed(backend: BackendFactory) -> None:
    a, b = await backend(), await backend()
    rec = Recorder()
    checker = HealthChecker(service(a, b), rec)
    async with checker.running():
        await wait_for(lambda: a.hits >= 3 and b.hits >= 3, what="three probes each")
        assert {t.get_name() for t in asyncio.all_tasks()} >= {"health:hs:a", "health:hs:b"}
    assert rec.seen == []
    assert gauge("hotspare_backend_up", service="hs", backend="a") == 1.0
    assert not checker.started  # stopped with its owner


async def test_stopped_backend_goes_down_then_up_after_rise(backend: BackendFactory) -> None:
    a, b = await backend(), await backend()
    rec = Recorder()
    before = gauge("hotspare_failures_detected_total", service="hs", backend="b", cause="probe_failed") or 0.0
    async with HealthChecker(service(a, b), rec).running() as checker:
        await wait_for(lambda: b.hits >= 1, what="first probe of b")
        await b.stop()
        down = await wait_transition(rec, "b", Health.DOWN)
        assert (down.cause, down.detail) == (Cause.PROBE_FAILED, "2 probes failed in a row (connect refused)")
        assert gauge("hotspare_backend_up", service="hs", backend="b") == 0.0
        assert gauge("hotspare_failures_detected_total", service="hs", backend="b", cause="probe_failed") == before + 1
        assert checker.health("a") is Health.UP
        await b.start()  # same port again
        up = await wait_transition(rec, "b", Health.UP)
        assert (up.old, up.cause, up.detail) == (Health.DOWN, Cause.PROBE_OK, "probe 2/2 passed")
        assert gauge("hotspare_backend_up", service="hs", backend="b") == 1.0
    assert rec.last("a") is None


@pytest.mark.parametrize(
    ("mode", "failure", "detail"),
    [
        ("503", Failure.STATUS, "status 503"),
        ("hang", Failure.TIMEOUT, "timeout (0.3s)"),
        ("body", Failure.BODY, "body lacks 'ok'"),
    ],
)
async def test_failing_health_endpoint(backend: BackendFactory, mode: str, failure: Failure, detail: str) -> None:
    a, b = await backend(), await backend()
    checker = HealthChecker(service(a, b), Recorder())
    async with checker.running():
        await wait_for(lambda: checker.health("a") is Health.UP, what="checker started")
        a.mode = mode
        result = await checker.prober("a").probe_once(0.0)
        assert (result.ok, result.failure, result.detail) == (False, failure, detail)
        await wait_for(lambda: checker.health("a") is Health.DOWN, what=f"a DOWN ({mode})")
        assert checker.prober("a").detector.last_detail == f"2 probes failed in a row ({detail})"
        assert checker.health("b") is Health.UP


async def test_refused_traffic_is_confirmed_by_an_immediate_probe(backend: BackendFactory) -> None:
    a, b = await backend(), await backend()
    rec = Recorder()
    # Probes every 60s: only the confirming probe a traffic report triggers can see it.
    checker = HealthChecker(service(a, b, interval="60s", fall=5), rec)
    async with checker.running():
        await wait_for(lambda: a.hits >= 1, what="first probe")
        await a.stop()
        checker.report_traffic("a", Failure.CONNECT)
        down = await wait_transition(rec, "a", Health.DOWN, within=5)
        assert (down.cause, down.detail) == (Cause.TRAFFIC_ERRORS, "traffic errors confirmed by a probe: connect refused")


async def test_one_slow_request_is_no_alarm_but_slow_traffic_plus_probe_timeout_is_a_hang(
    backend: BackendFactory,
) -> None:
    a, b = await backend(), await backend()
    rec = Recorder()
    checker = HealthChecker(service(a, b, interval="60s", fall=5), rec)
    async with checker.running():
        await wait_for(lambda: a.hits >= 1, what="first probe")
        prober = checker.prober("a")
        # A slow request on a healthy server: the confirming probe passes.
        sent = prober.probes_sent
        checker.report_traffic("a", Failure.SLOW)
        await wait_transition(rec, "a", Health.UP)
        assert prober.probes_sent > sent
        assert [t.new for t in rec.seen] == [Health.SUSPECT, Health.UP]
        # Now the server hangs: the same signal is confirmed by a probe timing out.
        a.mode = "hang"
        checker.report_traffic("a", Failure.SLOW)
        down = await wait_transition(rec, "a", Health.DOWN, within=5)
        assert (down.cause, down.detail) == (Cause.TRAFFIC_ERRORS, "traffic errors confirmed by a probe: timeout (0.3s)")


async def test_client_faults_reported_by_traffic_change_nothing(backend: BackendFactory) -> None:
    a, b = await backend(), await backend()
    rec = Recorder()
    checker = HealthChecker(service(a, b, interval="60s"), rec)
    async with checker.running():
        await wait_for(lambda: a.hits >= 1, what="first probe")
        for _ in range(10):
            checker.report_traffic("a", Failure.UNSENDABLE)
        assert checker.prober("a").probes_sent == 1
    assert rec.seen == []


async def test_report_before_start_and_for_unknown_backend_is_ignored(backend: BackendFactory) -> None:
    a, b = await backend(), await backend()
    checker = HealthChecker(service(a, b), Recorder())
    checker.report_traffic("a", Failure.CONNECT)
    assert checker.health("a") is None
    async with checker.running():
        await wait_for(lambda: checker.started, what="probers running")
        checker.report_traffic("nope", Failure.CONNECT)


async def test_cancelling_the_owner_stops_every_probe_task(backend: BackendFactory) -> None:
    a, b = await backend("hang"), await backend()
    checker = HealthChecker(service(a, b, timeout="30s"), Recorder())
    task = asyncio.create_task(checker.run(), name="owner")
    await wait_for(lambda: a.hits >= 1, what="a probe hanging on a")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("health:")]


async def test_a_refused_probe_speaks_the_proxys_word(backend: BackendFactory) -> None:
    """Issue 11: probes translate exceptions with router/edge.py's translate, as the proxy
    does: a refused connection is Failure.CONNECT in both, "connect refused" to operators."""
    a, b = await backend(), await backend()
    checker = HealthChecker(service(a, b, interval="60s"), Recorder())
    async with checker.running():
        await wait_for(lambda: a.hits >= 1, what="first probe")
        await a.stop()
        result = await checker.prober("a").probe_once(0.0)
    assert (result.ok, result.failure, result.detail) == (False, Failure.CONNECT, "connect refused")
