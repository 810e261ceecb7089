"""The parts of router/workers/ without processes: the view a follower gets and how it
follows it, the traffic reports' order and aggregation, the metrics sum, the shared
connection limits, the channel's framing rules."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from router.config import Config, parse_config
from router.failover.director import MustHold, NoRoute, Outcome
from router.failover.follow import FailoverDirector
from router.failover.hold import Refusal
from router.failures import Failure
from router.health.detector import Health
from router.workers.channel import Channel, ChannelError
from router.workers.datapath import WorkerDataPath, shared_limits
from router.workers.metricsmerge import MetricsMerge, snapshot
from router.workers.reports import TrafficReporter, apply_report
from router.workers.view import ServiceView, follow, view_of
from tests.helpers import wait_for


def _config(tmp_path: Path, **service: Any) -> Config:
    return parse_config({
        "listen": ["127.0.0.1:0"], "state_file": str(tmp_path / "s.json"), "log": {"access_log": None},
        "services": [{"name": "app", "backends": [{"name": "a", "url": "http://127.0.0.1:1"},
                                                   {"name": "b", "url": "http://127.0.0.1:2"}], **service}],
    }, base_dir=tmp_path)


def test_view_round_trip_and_errors() -> None:
    v = ServiceView("b", 3, "refuse", Refusal(503, 2, "no spare"), "degraded", {"a": Health.DOWN, "b": None})
    assert ServiceView.from_dict(v.to_dict()) == v
    with pytest.raises(ValueError, match="'mode' must be one of"):
        ServiceView.from_dict({**v.to_dict(), "mode": "dance"})
    with pytest.raises(ValueError, match="'epoch' must be int"):
        ServiceView.from_dict({**v.to_dict(), "epoch": "3"})
    with pytest.raises(ValueError, match="needs a 'refusal'"):
        ServiceView.from_dict({**v.to_dict(), "refusal": None})


async def test_follower_holds_then_releases_at_the_new_epoch(tmp_path: Path) -> None:
    sc = _config(tmp_path).services[0]
    decider = FailoverDirector(sc, "a", 0)
    health: dict[str, Health | None] = {}
    worker = FailoverDirector(sc, "a", 0, health.get)
    decider.set_mode("hold")
    follow(worker, view_of(decider, lambda b: Health.DOWN if b == "a" else Health.UP), health)
    with pytest.raises(MustHold):
        worker.route()
    held = [asyncio.ensure_future(worker.wait_for_route(10)) for _ in range(3)]
    await wait_for(lambda: len(worker.hold) == 3, what="three held requests")
    assert health == {"a": Health.DOWN, "b": Health.UP}
    decider.route_to("b", 1)
    follow(worker, view_of(decider, lambda b: Health.UP), health)
    routes = await asyncio.gather(*held)
    assert [(r.backend.name, r.epoch) for r in routes] == [("b", 1)] * 3
    assert worker.route().backend.name == "b" and len(worker.hold) == 0


async def test_follower_refuses_held_when_the_decider_refuses(tmp_path: Path) -> None:
    sc = _config(tmp_path).services[0]
    health: dict[str, Health | None] = {}
    worker = FailoverDirector(sc, "a", 0, health.get)
    follow(worker, ServiceView("a", 0, "hold", None, "promoting", {}), health)
    held = asyncio.ensure_future(worker.wait_for_route(0))
    await wait_for(lambda: len(worker.hold) == 1, what="a held request")
    follow(worker, ServiceView("a", 0, "refuse", Refusal(503, 7, "promotion failed"), "degraded", {}), health)
    with pytest.raises(NoRoute, match="promotion failed"):
        await held
    with pytest.raises(NoRoute):
        worker.route()


async def test_reports_keep_order_and_send_failures_at_once(tmp_path: Path) -> None:
    sent: list[dict[str, Any]] = []
    r = TrafficReporter(sent.append, interval=60)
    r.configure(_config(tmp_path, failover={"fail_on_status": [503]}))
    for _ in range(100):
        r.report("app", "a", Outcome.ok(200))
    assert sent == []  # aggregated
    r.report("app", "a", Outcome.failed(Failure.CONNECT))
    r.report("app", "a", Outcome.ok(503))  # the operator's failure status: at once too
    assert sent == [
        {"t": "report", "ok": [["app", "a", 200, 100]], "fail": [["app", "a", "connect", None]], "seq": 1},
        {"t": "report", "ok": [], "fail": [["app", "a", None, 503]], "seq": 2},
    ]


def test_apply_report_drops_what_it_does_not_know(tmp_path: Path) -> None:
    sc = _config(tmp_path).services[0]
    d = FailoverDirector(sc, "a", 0)
    got: list[tuple[str, Outcome]] = []
    d.on_report = lambda b, o: got.append((b, o))
    msg = {"ok": [["app", "a", 200, 5], ["app", "a", 99, 1], "junk"],
           "fail": [["app", "b", "reset", None], ["app", "zz", "reset", None], ["other", "a", "reset", None],
                    ["app", "a", "made-up", None]]}
    assert apply_report(msg, {"app": d}) == 5
    assert got == [("a", Outcome.ok(200)), ("b", Outcome.failed(Failure.RESET))]


def _registry() -> tuple[CollectorRegistry, Counter, Gauge, Gauge, Histogram]:
    reg = CollectorRegistry()
    c = Counter("hotspare_requests_total", "r", ["service"], registry=reg)
    g = Gauge("hotspare_inflight_requests", "i", ["service"], registry=reg)
    e = Gauge("hotspare_epoch", "e", ["service"], registry=reg)
    h = Histogram("hotspare_request_duration_seconds", "d", ["service"], buckets=(0.1, 1), registry=reg)
    return reg, c, g, e, h


def _value(fams: list[Any], sample: str, **labels: str) -> float:
    return sum(s.value for f in fams for s in f.samples if s.name == sample and s.labels == labels)


def test_metrics_sum_counters_histograms_and_data_path_gauges_only() -> None:
    decider, c, _g, e, _ = _registry()
    c.labels("app").inc(1)
    e.labels("app").set(4)
    worker, wc, wg, we, wh = _registry()
    wc.labels("app").inc(10)
    wc.labels("new").inc(2)
    wg.labels("app").set(3)
    we.labels("app").set(99)  # not the worker's to say
    wh.labels("app").observe(0.5)
    merge = MetricsMerge(decider)
    merge.update(0, snapshot(worker))
    merge.update(1, snapshot(worker))
    fams = merge(decider.collect())
    assert _value(fams, "hotspare_requests_total", service="app") == 21
    assert _value(fams, "hotspare_requests_total", service="new") == 4
    assert _value(fams, "hotspare_inflight_requests", service="app") == 6
    assert _value(fams, "hotspare_epoch", service="app") == 4
    assert _value(fams, "hotspare_request_duration_seconds_bucket", service="app", le="1.0") == 2
    merge.retire(1)  # a dead worker's counts stay; its gauges go
    fams = merge(decider.collect())
    assert _value(fams, "hotspare_requests_total", service="app") == 21
    assert _value(fams, "hotspare_inflight_requests", service="app") == 3
    merge.update(0, [["hotspare_requests", "counter", [["hotspare_requests_total", {"service": 1}, 5]]], "x"])
    assert _value(merge(decider.collect()), "hotspare_requests_total", service="app") == 11  # bad sample dropped


async def test_a_reported_failure_is_suspect_here_until_the_decider_acknowledges_it(tmp_path: Path) -> None:
    config = _config(tmp_path)
    sent: list[dict[str, Any]] = []
    up = ServiceView("a", 0, "route", None, "active", {"a": Health.UP, "b": Health.UP})
    dp = WorkerDataPath(config, {"app": up}, TrafficReporter(sent.append, interval=60))
    d = dp.directors["app"]
    assert d.backend_cleared("a")
    d.report("a", Outcome.failed(Failure.CONNECT))
    assert sent[-1]["seq"] == 1 and not d.backend_cleared("a") and d.healthy("a") is True  # SUSPECT
    dp.follow({"app": up}, acked=0)  # a view sent before the decider read the report
    assert not d.backend_cleared("a")
    dp.follow({"app": up}, acked=1)  # the decider's verdict on it: UP (a probe cleared it)
    assert d.backend_cleared("a")
    await dp.stop()


def test_connection_limits_are_shared_between_workers(tmp_path: Path) -> None:
    limits = _config(tmp_path).limits.model_copy(update={"max_connections": 51, "max_connections_per_client": 20})
    one = shared_limits(limits, 2)
    assert (one.max_connections, one.max_connections_per_client) == (26, 10)
    assert shared_limits(limits, 1) == limits


async def test_channel_frames_and_refuses_pickle_on_the_decider_side() -> None:
    left, right = socket.socketpair()
    decider = await Channel.open(left, accept_pickle=False)
    worker = await Channel.open(right, accept_pickle=True)
    decider.send_object({"t": "hello", "x": {1, 2}})
    assert await worker.receive() == {"t": "hello", "x": {1, 2}}
    worker.send({"t": "ready"})
    assert await decider.receive() == {"t": "ready"}
    worker.send_object({"t": "evil"})
    with pytest.raises(ChannelError, match="not accepted here"):
        await decider.receive()
    worker.close()
    decider.close()
