"""Failover end to end: two real backend processes behind the router, under a steady
client load (80 req/s, 20 % POST with unique ids), faults injected into the active.

What every run checks (``check``): no GET failed, no POST executed twice, nothing
served by the old active once the switch was seen, and the epoch each backend saw
(``X-Hotspare-Epoch``) is the old one on ``a`` and one more on ``b``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import aiohttp

from router.server import Router
from tests.helpers import wait_for

from .conftest import Backend, Load, Rec, Running, Stack, config_dict, make_config

WARM = 20  # good answers from the active before the fault
AFTER = 20  # good answers from the spare after the switch


def service(r: Router) -> object:
    return r.statistics().services[0]


def active_is(r: Router, name: str) -> bool:
    s = r.statistics().services[0]
    return s.active == name and s.state == "active"


def spare_probed_up(r: Router) -> bool:
    return r.statistics().services[0].backends[1].healthy is True


def check(
    records: list[Rec], a: Backend, b: Backend, switch_seen: float, *, crash_at: float | None = None
) -> None:
    """``crash_at``: the active was SIGKILLed then, and no request may fail — except a POST
    that was already on its way to the active at that instant: it may have been executed,
    so it must not be replayed (the only honest answer is 502). Any request sent after the
    crash must succeed."""
    assert records, "the load sent nothing"
    failed = [x for x in records if not x.ok]
    failed_gets = [x for x in failed if x.method == "GET"]
    assert not failed_gets, f"{len(failed_gets)} GET(s) failed, e.g. {failed_gets[:3]}"
    if crash_at is not None:
        unexcused = [x for x in failed if not (x.method == "POST" and x.status == 502 and x.sent <= crash_at)]
        assert not unexcused, f"{len(unexcused)} request(s) failed, e.g. {unexcused[:3]}"
        assert len(failed) <= 2, f"{len(failed)} POSTs in flight at the crash failed: {failed}"
    executed = Counter(a.posts() + b.posts())
    twice = [i for i, n in executed.items() if n > 1]
    assert not twice, f"POSTs executed twice: {twice[:5]}"
    late = [x for x in records if x.backend == "a" and x.sent >= switch_seen]
    assert not late, f"{len(late)} request(s) sent after the switch were served by the old active: {late[:3]}"
    epochs = {(x.backend, x.epoch) for x in records if x.ok}
    assert epochs == {("a", "0"), ("b", "1")}, epochs
    ok_posts = {x.ident for x in records if x.ok and x.method == "POST"}
    assert ok_posts <= set(executed), f"POSTs answered 200 but never executed: {sorted(ok_posts - set(executed))[:5]}"


async def fail_over_under_load(r: Router, base: str, fault: object) -> tuple[Load, float, float]:
    """Load; once ``a`` served WARM requests, ``fault()``; wait for the switch to ``b``
    and AFTER answers from it. Returns the load, when the fault was injected and when the
    switch was seen."""
    await wait_for(lambda: spare_probed_up(r), what="spare b probed up")
    async with Running(Load(base)) as ld:
        await wait_for(lambda: ld.ok_from("a") >= WARM, what="traffic on a")
        fault_at = time.monotonic()
        res = fault()  # type: ignore[operator]
        if res is not None:
            await res
        await wait_for(lambda: active_is(r, "b"), timeout=15, what="failover to b")
        switch_seen = time.monotonic()
        await wait_for(lambda: ld.ok_from("b", switch_seen) >= AFTER, timeout=15, what="traffic on b")
    return ld, fault_at, switch_seen


def state_on_disk(tmp: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((tmp / "state.json").read_text())["services"]["app"]
    return doc


async def test_active_sigkilled_then_repaired_no_request_fails_and_no_failback(
    stack: Stack, router, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    a, b = await stack.backend("a"), await stack.backend("b")
    r, base = await router(make_config(tmp_path, a, b))
    ld, crash_at, switch_seen = await fail_over_under_load(r, base, a.proc.kill)
    check(ld.records, a, b, switch_seen, crash_at=crash_at)
    s = r.statistics().services[0]
    assert (s.active, s.epoch) == ("b", 1)
    assert state_on_disk(tmp_path) == {"active": "b", "epoch": 1}

    # The repaired old active comes back on its port: it becomes a healthy spare, no failback.
    executed_before = len(a.posts())
    a2 = await stack.backend("a", port=a.port)  # same post log: counted from here
    await wait_for(lambda: r.statistics().services[0].backends[0].healthy is True,
                   timeout=10, what="a probed up again")
    back = time.monotonic()
    async with Running(Load(base)) as ld2:
        await wait_for(lambda: ld2.ok_from("b", back) >= AFTER, what="more traffic on b")
    assert all(x.ok and x.backend == "b" and x.epoch == "1" for x in ld2.records), \
        [x for x in ld2.records if not (x.ok and x.backend == "b")][:3]
    assert len(a2.posts()) == executed_before, "the repaired old active executed POSTs"
    s = r.statistics().services[0]
    assert (s.active, s.epoch, s.state) == ("b", 1, "active")


async def test_active_sigstopped_no_get_fails_no_post_twice(stack: Stack, router, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a, b = await stack.backend("a"), await stack.backend("b")
    r, base = await router(make_config(tmp_path, a, b))
    ld, _, switch_seen = await fail_over_under_load(r, base, a.proc.freeze)
    # Let a work through what it had buffered before counting executions: once it
    # answers a new request, its loop has read the older sockets too.
    a.proc.thaw()

    async def a_answers() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(a.url + "/health") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(a_answers, what="a resumed")
    check(ld.records, a, b, switch_seen)
    for x in ld.records:
        if not x.ok:  # only POSTs that may have reached a: a 502 that says why
            assert x.method == "POST" and x.status == 502, x
    assert r.statistics().services[0].epoch == 1


async def test_active_answering_503_fails_over_and_no_get_sees_it(stack: Stack, router, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a, b = await stack.backend("a"), await stack.backend("b")
    r, base = await router(make_config(tmp_path, a, b, fail_on_status=[503]))
    ld, _, switch_seen = await fail_over_under_load(r, base, lambda: a.control("503"))
    check(ld.records, a, b, switch_seen)
    for x in ld.records:
        if not x.ok:  # a POST that a answered 503 (and did not execute) is passed on as is
            assert x.method == "POST" and x.status == 503 and x.ident not in a.posts(), x


async def test_active_health_failing_while_serving_fails_over(stack: Stack, router, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a, b = await stack.backend("a"), await stack.backend("b")
    r, base = await router(make_config(tmp_path, a, b))
    ld, _, switch_seen = await fail_over_under_load(r, base, lambda: a.control("health_fail"))
    check(ld.records, a, b, switch_seen)
    assert r.statistics().services[0].epoch == 1


async def test_spare_dead_when_active_dies_no_failover_503_and_alarm(stack: Stack, router, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a, b = await stack.backend("a"), await stack.backend("b")
    r, base = await router(make_config(tmp_path, a, b))
    await wait_for(lambda: spare_probed_up(r), what="spare b probed up")
    b.proc.kill()
    await wait_for(lambda: r.statistics().services[0].backends[1].healthy is False, what="b probed down")
    assert any("spare b DOWN" in x for x in r.statistics().services[0].alarms)
    async with Running(Load(base)) as ld:
        await wait_for(lambda: ld.ok_from("a") >= WARM, what="traffic on a")
        a.proc.kill()
        await wait_for(lambda: r.statistics().services[0].state == "degraded", what="service degraded")
        degraded = time.monotonic()
        await wait_for(lambda: sum(1 for x in ld.records if x.sent >= degraded and x.status == 503) >= 20,
                       what="503s while degraded")
    s = r.statistics().services[0]
    assert (s.active, s.epoch, s.state) == ("a", 0, "degraded")
    assert any("no spare passes its probes" in x for x in s.alarms), s.alarms
    after = [x for x in ld.records if x.sent >= degraded]
    assert after and all(x.status == 503 and x.retry_after == "2" for x in after), \
        [x for x in after if x.status != 503][:3]
    assert not (tmp_path / "state.json").exists() or state_on_disk(tmp_path) == {"active": "a", "epoch": 0}


async def test_router_sigkilled_after_failover_comes_back_on_the_same_active_and_epoch(
    stack: Stack, tmp_path: Path
) -> None:
    a, b = await stack.backend("a"), await stack.backend("b")
    cfg = tmp_path / "hotspare.yaml"
    cfg.write_text(json.dumps(config_dict(tmp_path, a, b)))  # JSON is YAML
    router, base, admin = await stack.router_process(cfg)

    async def status() -> dict[str, object]:
        async with aiohttp.ClientSession() as s, s.get(admin + "/v1/status") as resp:
            doc: dict[str, object] = (await resp.json())["services"][0]
            return doc

    async def spare_up() -> bool:
        return (await status())["backends"][1]["healthy"] is True  # type: ignore[index]

    await wait_for(spare_up, what="spare b probed up")
    async with Running(Load(base)) as ld:
        await wait_for(lambda: ld.ok_from("a") >= WARM, what="traffic on a")
        crash_at = time.monotonic()
        a.proc.kill()

        async def on_b() -> bool:
            s = await status()
            return s["active"] == "b" and s["state"] == "active"

        await wait_for(on_b, timeout=15, what="failover to b")
        switch_seen = time.monotonic()
        await wait_for(lambda: ld.ok_from("b", switch_seen) >= AFTER, what="traffic on b")
    check(ld.records, a, b, switch_seen, crash_at=crash_at)

    router.kill()
    await router.proc.wait()
    _router2, base2, admin = await stack.router_process(cfg)
    s = await status()  # at once: from the state file, before any probe could matter
    assert (s["active"], s["epoch"]) == ("b", 1)
    async with aiohttp.ClientSession() as session:
        for i in range(10):
            async with session.get(f"{base2}/after/{i}") as resp:
                assert resp.status == 200
                assert (resp.headers["X-Backend"], resp.headers["X-Seen-Epoch"]) == ("b", "1")
