"""The detector, driven by scripted probe results and traffic with a fake clock: no
sockets, no sleeps. Each test asserts the whole list of actions each event produced."""

from __future__ import annotations

import pytest

from hotspare.causes import Cause
from router.config import parse_config
from router.failures import Failure
from router.health.detector import (
    Detector,
    DetectorSettings,
    Health,
    ProbeResult,
    ScheduleProbe,
    TrafficResult,
    Transition,
)

DEFAULTS = DetectorSettings()  # interval 1, fast 0.1, timeout 0.5, rise 2, fall 3, traffic 3
FAST = ScheduleProbe(DEFAULTS.fast_interval)
SLOW = ScheduleProbe(DEFAULTS.interval)
NOW = ScheduleProbe(0.0)


def good(started: float, now: float | None = None) -> ProbeResult:
    return ProbeResult.good(started, started if now is None else now)


def bad(started: float, failure: Failure = Failure.CONNECT, now: float | None = None) -> ProbeResult:
    # the probe's own words, as router/edge.py's translate gives them
    detail = {Failure.CONNECT: "connect refused"}.get(failure, "")
    return ProbeResult.bad(started, started if now is None else now, failure, detail)


def traffic(now: float, failure: Failure | None, status: int | None = None) -> TrafficResult:
    return TrafficResult(now, failure, status)


def tr(old: Health, new: Health, cause: Cause, detail: str, since: float, now: float) -> Transition:
    return Transition("a", old, new, cause, detail, since, now)


def test_defaults_in_the_config_match_the_detectors_own() -> None:
    config = parse_config({"listen": ["127.0.0.1:1"], "services": [
        {"name": "s", "backends": [{"name": "a", "url": "http://127.0.0.1:1"}]}]})
    assert DetectorSettings.from_service(config.services[0]) == DEFAULTS


def test_first_probe_goes_out_at_once_and_good_probes_keep_the_interval() -> None:
    d = Detector("a")
    assert d.start(0.0) == [NOW]
    assert d.probe(good(0.0)) == [SLOW]
    assert d.probe(good(1.0)) == [SLOW]
    assert d.health is Health.UP


def test_probes_alone_need_fall_failures_and_probe_fast_meanwhile() -> None:
    d = Detector("a")
    assert d.probe(bad(1.0)) == [
        tr(Health.UP, Health.SUSPECT, Cause.PROBE_FAILED, "probe 1/3 failed (connect refused)", 1.0, 1.0),
        FAST,
    ]
    assert d.probe(bad(1.1)) == [FAST]
    assert d.probe(bad(1.2)) == [
        tr(Health.SUSPECT, Health.DOWN, Cause.PROBE_FAILED, "3 probes failed in a row (connect refused)", 1.0, 1.2),
        SLOW,
    ]
    # Down stays down on more failures, probed at the normal interval.
    assert d.probe(bad(2.2)) == [SLOW]
    assert d.health is Health.DOWN


def test_one_failed_probe_then_a_good_one_clears_suspicion() -> None:
    d = Detector("a")
    d.probe(bad(1.0, Failure.TIMEOUT, now=1.5))
    assert d.probe(good(1.6)) == [
        tr(Health.SUSPECT, Health.UP, Cause.PROBE_OK, "probe passed; suspicion cleared", 1.0, 1.6),
        SLOW,
    ]
    # The count starts again: two more failures do not make three.
    d.probe(bad(2.6))
    assert d.probe(bad(2.7)) == [FAST]
    assert d.health is Health.SUSPECT


def test_rise_good_probes_bring_a_down_backend_back() -> None:
    d = Detector("a", DetectorSettings(fall=1))
    d.probe(bad(0.0))
    assert d.health is Health.DOWN
    assert d.probe(good(1.0)) == [FAST]
    assert d.probe(bad(1.1)) == [SLOW]  # a failure restarts the rise count
    assert d.probe(good(2.1)) == [FAST]
    assert d.probe(good(2.2)) == [
        tr(Health.DOWN, Health.UP, Cause.PROBE_OK, "probe 2/2 passed", 2.1, 2.2),
        SLOW,
    ]


def test_crash_under_traffic_one_refused_request_and_one_refused_probe() -> None:
    d = Detector("a")
    assert d.traffic(traffic(5.0, Failure.CONNECT)) == [
        tr(Health.UP, Health.SUSPECT, Cause.TRAFFIC_ERRORS, "traffic: connect failed; confirming with a probe", 5.0, 5.0),
        NOW,
    ]
    assert d.probe(bad(5.0005, now=5.001)) == [
        tr(Health.SUSPECT, Health.DOWN, Cause.TRAFFIC_ERRORS,
           "traffic errors confirmed by a probe: connect refused", 5.0, 5.001),
        SLOW,
    ]


def test_traffic_failures_in_a_row_mark_down_without_a_probe() -> None:
    d = Detector("a")
    d.traffic(traffic(5.0, Failure.CONNECT))
    assert d.traffic(traffic(5.01, Failure.CONNECT)) == [NOW]
    assert d.traffic(traffic(5.02, Failure.CONNECT)) == [
        tr(Health.SUSPECT, Health.DOWN, Cause.TRAFFIC_ERRORS, "3 requests failed in a row (connect failed)", 5.0, 5.02),
        SLOW,
    ]
    assert d.traffic(traffic(5.03, Failure.CONNECT)) == []  # already down: nothing to learn


def test_resets_and_bad_responses_alone_never_mark_down() -> None:
    """A client can make a backend close on it (a request it dislikes): evidence only."""
    d = Detector("a", DetectorSettings(traffic_failures=1))
    for i in range(10):
        kind = Failure.RESET if i % 2 else Failure.FRAMING
        assert d.traffic(traffic(5.0 + i / 100, kind))[-1] == NOW
        assert d.health is Health.SUSPECT
    d.probe(good(5.2, now=5.21))  # a probe sent after the evidence clears it
    assert d.health is Health.UP


def test_a_good_response_breaks_the_row_of_traffic_failures() -> None:
    d = Detector("a")
    d.traffic(traffic(5.0, Failure.CONNECT))
    d.traffic(traffic(5.01, Failure.CONNECT))
    assert d.traffic(traffic(5.02, None, 200)) == []
    assert d.traffic(traffic(5.03, Failure.CONNECT)) == [NOW]
    assert d.health is Health.SUSPECT


def test_hang_one_slow_request_confirmed_by_a_probe_timeout() -> None:
    d = Detector("a")
    assert d.traffic(traffic(10.5, Failure.SLOW)) == [
        tr(Health.UP, Health.SUSPECT, Cause.TRAFFIC_ERRORS, "traffic: slow; confirming with a probe", 10.5, 10.5),
        NOW,
    ]
    assert d.probe(bad(10.5, Failure.TIMEOUT, now=11.0)) == [
        tr(Health.SUSPECT, Health.DOWN, Cause.TRAFFIC_ERRORS, "traffic errors confirmed by a probe: timeout", 10.5, 11.0),
        SLOW,
    ]


def test_one_slow_request_and_a_good_probe_is_no_alarm() -> None:
    d = Detector("a")
    d.traffic(traffic(10.5, Failure.SLOW))
    assert d.probe(good(10.5, now=10.52)) == [
        tr(Health.SUSPECT, Health.UP, Cause.PROBE_OK, "probe passed; suspicion cleared", 10.5, 10.52),
        SLOW,
    ]
    # Many slow requests alone never mark it down: timing is not decisive.
    for i in range(10):
        d.traffic(traffic(11.0 + i / 100, Failure.SLOW))
    d.traffic(traffic(11.2, Failure.TIMEOUT))
    assert d.health is Health.SUSPECT


def test_a_good_probe_sent_before_the_evidence_proves_nothing() -> None:
    d = Detector("a")
    d.traffic(traffic(10.5, Failure.CONNECT))
    # This probe was sent at 10.4, before the refused request: probe again at once.
    assert d.probe(good(10.4, now=10.51)) == [NOW]
    assert d.health is Health.SUSPECT
    assert d.probe(good(10.51, now=10.52)) == [
        tr(Health.SUSPECT, Health.UP, Cause.PROBE_OK, "probe passed; suspicion cleared", 10.5, 10.52),
        SLOW,
    ]


def test_client_faults_never_count() -> None:
    d = Detector("a", DetectorSettings(traffic_failures=1))
    for i in range(5):
        assert d.traffic(traffic(float(i), Failure.UNSENDABLE)) == []
    assert d.health is Health.UP
    assert d.traffic(traffic(6.0, Failure.CONNECT))[0] == tr(
        Health.UP, Health.DOWN, Cause.TRAFFIC_ERRORS, "1 requests failed in a row (connect failed)", 6.0, 6.0)


def test_statuses_count_only_when_configured() -> None:
    d = Detector("a", DetectorSettings(fail_on_status=frozenset({503})))
    assert d.traffic(traffic(1.0, None, 500)) == []
    assert d.traffic(traffic(1.1, None, 503)) == [
        tr(Health.UP, Health.SUSPECT, Cause.TRAFFIC_ERRORS, "traffic: status 503; confirming with a probe", 1.1, 1.1),
        NOW,
    ]
    d2 = Detector("a")
    assert d2.traffic(traffic(1.0, None, 503)) == []


def test_traffic_to_a_down_backend_does_not_bring_it_back() -> None:
    d = Detector("a", DetectorSettings(fall=1))
    d.probe(bad(0.0))
    assert d.traffic(traffic(1.0, None, 200)) == []
    assert d.health is Health.DOWN


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match=r"DetectorSettings.fall: expected an integer >= 1, got 0"):
        DetectorSettings(fall=0)
