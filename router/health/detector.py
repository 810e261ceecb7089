"""Is one backend alive? Probe results and real traffic in, a health verdict out.

Rules:

1. No I/O, no asyncio, no clock: every event carries ``now`` (seconds, monotonic) and
   every call returns a list of actions (:class:`ScheduleProbe`, :class:`Transition`)
   for the I/O shell (:mod:`router.health`) to perform.
2. Three states: UP, SUSPECT (something looked wrong, probing fast to find out) and
   DOWN. BACKEND_UP is 1 for UP and SUSPECT: suspicion alone moves no traffic.
3. Probes alone: ``fall`` consecutive failed probes mark a backend DOWN, ``rise``
   consecutive good ones bring it back UP. After the first failure the next probe comes
   after ``fast_interval`` instead of ``interval``.
4. Real traffic is *evidence*, and every piece of it triggers an immediate confirming
   probe. While evidence stands, ONE failed probe confirms it: DOWN, cause
   TRAFFIC_ERRORS. A good probe that *started after* the evidence clears it (one that
   started before proves nothing about it and is followed by a fresh one).
5. Decisive traffic failures (connect refused, a status in ``fail_on_status``) also
   count: ``traffic_failures`` of them in a row mark the backend DOWN without waiting for
   a probe. A good response breaks the row. Only what no client can cause is decisive:
   a connection refused happens before any client byte is sent, and ``fail_on_status``
   is the operator's word that such a status is the backend's own failure. A reset or a
   malformed response comes after the client's bytes reached the backend (a backend may
   close on a request it dislikes): evidence, confirmed by a probe, as in rule 4.
6. Timing signals (a request slower than the probe timeout, a request timeout), like
   resets and malformed responses, never count on their own: a hang is declared only when a probe times out too, so one slow
   request cannot cause a failover.
7. Client-side faults (the client hung up, sent a bad request) are never evidence.
8. Only probes bring a DOWN backend back: traffic to it proves nothing (it may be the
   router's own 503s) and a repaired backend must show ``rise`` good probes.
9. A backend starts UP with clean counters (as HAProxy does): an unprobed spare is not
   a failing spare; its first probe is sent at once.

With the defaults (interval 1s, fast_interval 100ms, timeout 500ms, fall 3) a crash
under traffic is DOWN after one refused request and one refused probe (a few ms), a hang
after one request slower than 500ms and one probe timing out (about 1s), and with no
traffic at all a crash within ``interval + 2 * fast_interval`` (1.2s).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from hotspare.causes import Cause
from router.config import ServiceConfig
from router.failures import Failure

__all__ = [
    "Detector",
    "DetectorAction",
    "DetectorSettings",
    "DetectorSnapshot",
    "Health",
    "ProbeResult",
    "ScheduleProbe",
    "TrafficResult",
    "Transition",
]


class Health(Enum):
    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"


# What real traffic shows (router/failures.py, the one vocabulary): a refused
# connection is decisive (rule 5); these others are evidence (rules 4 and 6); a client
# fault is nothing (rule 7). Probe failures carry a Failure too, for their detail only.
_DECISIVE = frozenset({Failure.CONNECT})
_EVIDENCE = frozenset({Failure.RESET, Failure.FRAMING, Failure.TIMEOUT, Failure.SLOW, Failure.ERROR})


# -- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeResult:
    now: float  # when the result came back
    started: float  # when the probe was sent
    ok: bool
    failure: Failure | None = None
    detail: str = ""  # e.g. "status 503" or "connect refused"

    @classmethod
    def good(cls, started: float, now: float) -> ProbeResult:
        return cls(now=now, started=started, ok=True)

    @classmethod
    def bad(cls, started: float, now: float, failure: Failure, detail: str = "") -> ProbeResult:
        return cls(now=now, started=started, ok=False, failure=failure, detail=detail or failure.text)


@dataclass(frozen=True, slots=True)
class TrafficResult:
    now: float
    failure: Failure | None  # None: a response came back; its status may still be in fail_on_status
    status: int | None = None  # the backend's status when failure is None


# -- actions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduleProbe:
    """Start the next probe ``delay`` seconds from now, replacing any earlier schedule.
    A probe already in flight is not interrupted: its result comes first."""

    delay: float


@dataclass(frozen=True, slots=True)
class Transition:
    backend: str
    old: Health
    new: Health
    cause: Cause
    detail: str  # for operators: "probe 3/3 failed: connect refused"
    since: float  # first sign of the trouble (or of the recovery) that led here
    now: float


DetectorAction = ScheduleProbe | Transition


# -- settings and snapshot -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    interval: float = 1.0
    fast_interval: float = 0.1
    timeout: float = 0.5
    rise: int = 2
    fall: int = 3
    traffic_failures: int = 3
    fail_on_status: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        for name in ("rise", "fall", "traffic_failures"):
            if getattr(self, name) < 1:
                raise ValueError(f"DetectorSettings.{name}: expected an integer >= 1, got {getattr(self, name)}")
        for name in ("interval", "fast_interval", "timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"DetectorSettings.{name}: expected seconds >= 0, got {getattr(self, name)}")

    @classmethod
    def from_service(cls, service: ServiceConfig) -> DetectorSettings:
        h, f = service.health, service.failover
        return cls(
            interval=h.interval,
            fast_interval=h.fast_interval,
            timeout=h.timeout,
            rise=h.rise,
            fall=h.fall,
            traffic_failures=f.traffic_failures,
            fail_on_status=f.fail_on_status,
        )


@dataclass(frozen=True, slots=True)
class DetectorSnapshot:
    backend: str
    health: Health
    probe_failures: int
    probe_successes: int
    traffic_failures: int
    last_detail: str


# -- the detector ----------------------------------------------------------------------


@dataclass(slots=True)
class Detector:
    backend: str
    settings: DetectorSettings = field(default_factory=DetectorSettings)
    health: Health = Health.UP
    probe_failures: int = 0  # consecutive
    probe_successes: int = 0  # consecutive
    traffic_failures: int = 0  # consecutive decisive ones
    evidence_at: float | None = None  # latest traffic evidence not yet cleared by a probe
    trouble_since: float | None = None  # first sign of the current trouble
    recovery_since: float | None = None  # first good probe of the current recovery
    last_detail: str = ""

    def start(self, now: float) -> list[DetectorAction]:
        """The first probe goes out at once."""
        return [ScheduleProbe(0.0)]

    def snapshot(self) -> DetectorSnapshot:
        return DetectorSnapshot(
            self.backend,
            self.health,
            self.probe_failures,
            self.probe_successes,
            self.traffic_failures,
            self.last_detail,
        )

    # -- probes ---------------------------------------------------------------------------

    def probe(self, r: ProbeResult) -> list[DetectorAction]:
        s = self.settings
        if r.ok:
            self.probe_failures = 0
            if self.health is Health.DOWN:
                self.probe_successes += 1
                if self.recovery_since is None:
                    self.recovery_since = r.started
                if self.probe_successes >= s.rise:
                    detail = f"probe {self.probe_successes}/{s.rise} passed"
                    since = self.recovery_since
                    self._clear()
                    return [self._move(Health.UP, Cause.PROBE_OK, detail, since, r.now), ScheduleProbe(s.interval)]
                return [ScheduleProbe(s.fast_interval)]
            self.probe_successes = min(self.probe_successes + 1, s.rise)
            if self.evidence_at is not None and r.started < self.evidence_at:
                return [ScheduleProbe(0.0)]  # proves nothing about the newer evidence
            self.evidence_at = None
            self.traffic_failures = 0
            if self.health is Health.SUSPECT:
                since = self.trouble_since if self.trouble_since is not None else r.started
                self.trouble_since = None
                return [
                    self._move(Health.UP, Cause.PROBE_OK, "probe passed; suspicion cleared", since, r.now),
                    ScheduleProbe(s.interval),
                ]
            return [ScheduleProbe(s.interval)]

        # a failed probe
        self.probe_successes = 0
        self.recovery_since = None
        self.probe_failures += 1
        what = r.detail or (r.failure.value if r.failure else "failed")
        if self.health is Health.DOWN:
            self.last_detail = f"probe failed: {what}"
            return [ScheduleProbe(s.interval)]
        if self.trouble_since is None:
            self.trouble_since = r.started
        if self.evidence_at is not None:
            detail = f"traffic errors confirmed by a probe: {what}"
            return [self._move(Health.DOWN, Cause.TRAFFIC_ERRORS, detail, self.trouble_since, r.now),
                    ScheduleProbe(s.interval)]
        if self.probe_failures >= s.fall:
            detail = f"{self.probe_failures} probes failed in a row ({what})"
            return [self._move(Health.DOWN, Cause.PROBE_FAILED, detail, self.trouble_since, r.now),
                    ScheduleProbe(s.interval)]
        out: list[DetectorAction] = []
        if self.health is Health.UP:
            detail = f"probe {self.probe_failures}/{s.fall} failed ({what})"
            out.append(self._move(Health.SUSPECT, Cause.PROBE_FAILED, detail, self.trouble_since, r.now))
        else:
            self.last_detail = f"probe {self.probe_failures}/{s.fall} failed ({what})"
        out.append(ScheduleProbe(s.fast_interval))
        return out

    # -- real traffic ---------------------------------------------------------------------

    def traffic(self, r: TrafficResult) -> list[DetectorAction]:
        s = self.settings
        failure = r.failure
        if failure is None:
            if r.status is None or r.status not in s.fail_on_status:
                self.traffic_failures = 0
                return []
            what = f"status {r.status}"
            decisive = True
        elif failure.client_fault:
            return []
        else:
            what = failure.text
            decisive = failure in _DECISIVE
            assert decisive or failure in _EVIDENCE, f"traffic cannot show {failure}"
        if self.health is Health.DOWN:
            return []  # only probes bring it back; nothing more to learn
        self.evidence_at = r.now
        if self.trouble_since is None:
            self.trouble_since = r.now
        if decisive:
            self.traffic_failures += 1
            if self.traffic_failures >= s.traffic_failures:
                detail = f"{self.traffic_failures} requests failed in a row ({what})"
                return [self._move(Health.DOWN, Cause.TRAFFIC_ERRORS, detail, self.trouble_since, r.now),
                        ScheduleProbe(s.interval)]
        out: list[DetectorAction] = []
        if self.health is Health.UP:
            detail = f"traffic: {what}; confirming with a probe"
            out.append(self._move(Health.SUSPECT, Cause.TRAFFIC_ERRORS, detail, self.trouble_since, r.now))
        out.append(ScheduleProbe(0.0))
        return out

    # -- helpers --------------------------------------------------------------------------

    def _move(self, new: Health, cause: Cause, detail: str, since: float, now: float) -> Transition:
        old, self.health = self.health, new
        self.last_detail = detail
        if new is Health.DOWN:
            self._clear()
        return Transition(self.backend, old, new, cause, detail, since, now)

    def _clear(self) -> None:
        self.probe_failures = 0
        self.probe_successes = 0
        self.traffic_failures = 0
        self.evidence_at = None
        self.trouble_since = None
        self.recovery_since = None
