"""Why something changed: one typed vocabulary for the detector, the failover state
machine, logs, metrics (the ``cause`` label) and the promotion steps' environment.

The values are the strings that appear in metric labels and in ``HOTSPARE_CAUSE``; they
are a contract (dashboards, alert rules, scripts): add freely, rename none.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Cause"]


class Cause(Enum):
    # A backend was declared down ...
    PROBE_FAILED = "probe_failed"  # ... by `fall` consecutive failed probes
    TRAFFIC_ERRORS = "traffic_errors"  # ... by real traffic (errors, or a probe confirming them)
    # A backend was declared up again by `rise` consecutive good probes.
    PROBE_OK = "probe_ok"
    # An operator asked (switchover, failover, resume).
    ADMIN = "admin"
    # The promotion pipeline answered.
    PROMOTED = "promoted"
    PROMOTION_FAILED = "promotion_failed"
    FENCE_FAILED = "fence_failed"  # fencing failed and the policy is `hold`
    # Why no failover happened.
    SPARE_UNHEALTHY = "spare_unhealthy"  # no other backend passes its own probes
    HOLD_DOWN = "hold_down"  # too soon after the last failover
    AUTOMATIC_OFF = "automatic_off"  # failover.automatic is false
    # The active answers its probes again while the service was degraded.
    RECOVERED = "recovered"
    # Held requests waited hold.max_time and were refused.
    HOLD_TIMEOUT = "hold_timeout"

    def __str__(self) -> str:
        return self.value
