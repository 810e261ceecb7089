"""Traffic reports from the workers to the decider's detectors.

Rules:

1. A worker's director hands every outcome to :class:`TrafficReporter`. A failure (a
   :class:`~router.failures.Failure`, or a status in the service's ``fail_on_status``) is
   sent at once: detection is no slower than in one process. Successes are only counted
   and sent every ``interval`` (50 ms) as one line per (service, backend, status).
2. Order is kept: successes counted before a failure go out in the same message, before
   it. A message with failures carries ``seq`` (1, 2, ...): the decider answers with the
   last ``seq`` it applied (``acked`` in its views), so the worker knows which of its
   reports the views it gets already reflect (:mod:`.datapath` rule 4). The decider applies each success line ONCE: for the detector a good response only
   breaks a row of failures (detector rule 5), so a thousand say no more than one.
3. :func:`apply_report` is the decider's side. It trusts nothing: a line with an unknown
   service or backend, a status outside 100-599 or an unknown failure is dropped, and
   the count of dropped lines is returned for the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from router.config import Config
from router.failover.director import Director, Outcome
from router.failures import Failure
from router.health.detector import DetectorSettings

__all__ = ["REPORT_INTERVAL", "TrafficReporter", "apply_report"]

REPORT_INTERVAL = 0.05


class TrafficReporter:
    def __init__(self, send: Callable[[dict[str, Any]], None], interval: float = REPORT_INTERVAL) -> None:
        self._send = send
        self._interval = interval
        self._ok: dict[tuple[str, str, int], int] = {}
        self._decisive: dict[str, frozenset[int]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.seq = 0  # of the last message with failures

    def configure(self, config: Config) -> None:
        self._decisive = {s.name: DetectorSettings.from_service(s).fail_on_status for s in config.services}

    def report(self, service: str, backend: str, outcome: Outcome) -> int | None:
        """None: counted; else the ``seq`` of the message that took the failure."""
        status = outcome.status
        if outcome.failure is None and status is not None and status not in self._decisive.get(service, ()):
            key = (service, backend, status)
            self._ok[key] = self._ok.get(key, 0) + 1
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self._interval, self.flush)
            return None
        failure = None if outcome.failure is None else outcome.failure.value
        self.flush([[service, backend, failure, status]])
        return self.seq

    def flush(self, failures: list[list[Any]] | None = None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._ok and not failures:
            return
        ok = [[s, b, status, n] for (s, b, status), n in self._ok.items()]
        self._ok.clear()
        message: dict[str, Any] = {"t": "report", "ok": ok, "fail": failures or []}
        if failures:
            self.seq += 1
            message["seq"] = self.seq
        self._send(message)


def _status(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599 else None


def apply_report(message: Mapping[str, Any], directors: Mapping[str, Director]) -> int:
    """The decider's side (rules 2 and 3): feed the lines to the directors; return how
    many were dropped."""
    dropped = 0
    lines: list[tuple[Any, Any, Outcome | None]] = []
    for line in message.get("ok") or []:
        ok = isinstance(line, list) and len(line) == 4 and _status(line[2]) is not None
        lines.append((line[0], line[1], Outcome.ok(line[2])) if ok else (None, None, None))
    for line in message.get("fail") or []:
        outcome = None
        if isinstance(line, list) and len(line) == 4:
            if line[2] is None and _status(line[3]) is not None:
                outcome = Outcome.ok(line[3])
            elif isinstance(line[2], str) and line[2] in Failure._value2member_map_:
                outcome = Outcome.failed(Failure(line[2]))
        lines.append((line[0], line[1], outcome) if outcome else (None, None, None))
    for service, backend, outcome in lines:
        d = directors.get(service) if isinstance(service, str) else None
        if d is None or outcome is None or not isinstance(backend, str) or \
                backend not in {b.name for b in d.service.backends}:
            dropped += 1
            continue
        d.report(backend, outcome)
    return dropped
