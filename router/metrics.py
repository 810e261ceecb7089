"""Every metric the router exports, in one registry.

Names and labels are a contract (DESIGN.md): dashboards and alert rules use them. Labels
are bounded: ``service``, ``backend``, ``cause``, ``method``, ``code`` (a class such as
``2xx``), never a path or a client address. Define a metric here, use it anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric


class _Registry(CollectorRegistry):
    """``merge``, when set (a decider with worker processes, router/workers/metricsmerge.py),
    adds the workers' samples to this process's at every collect: /metrics and the
    history sampler read the sum."""

    merge: Callable[[Iterable[Metric]], Iterable[Metric]] | None = None

    def collect(self) -> Iterable[Metric]:
        own = super().collect()
        return own if self.merge is None else self.merge(own)


REGISTRY = _Registry(auto_describe=True)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# -- proxying ------------------------------------------------------------------------
REQUESTS = Counter(
    "hotspare_requests_total",
    "Requests answered, by service, backend that served them ('none' if no backend did), "
    "method and status class.",
    ["service", "backend", "method", "code"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "hotspare_request_duration_seconds",
    "Time from the request's arrival to the end of its response headers being sent.",
    ["service", "backend"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "hotspare_upstream_errors_total",
    "Requests that failed at the backend, by cause (connect, reset, timeout, framing).",
    ["service", "backend", "cause"],
    registry=REGISTRY,
)
INFLIGHT = Gauge(
    "hotspare_inflight_requests",
    "Requests being proxied now.",
    ["service"],
    registry=REGISTRY,
)

# -- client side (router/limits.py, router/targets.py) -----------------------------------
CLIENT_CONNECTIONS = Gauge(
    "hotspare_client_connections",
    "Client connections open on the proxy listeners now.",
    registry=REGISTRY,
)
CONNECTIONS_REFUSED = Counter(
    "hotspare_connections_refused_total",
    "Client connections answered 503 and closed at once, by the limit they hit "
    "(max_connections, max_connections_per_client).",
    ["cause"],
    registry=REGISTRY,
)
BAD_REQUESTS = Counter(
    "hotspare_bad_requests_total",
    "Requests the router answered itself because of the client's own fault, never sent "
    "to a backend, by cause (bad_request, header_timeout, uri_too_long, headers_too_large, "
    "bad_target, connect_method, http_version).",
    ["cause"],
    registry=REGISTRY,
)

# -- health and failover --------------------------------------------------------------
BACKEND_UP = Gauge(
    "hotspare_backend_up",
    "1 if the backend passes its health checks, else 0.",
    ["service", "backend"],
    registry=REGISTRY,
)
ACTIVE_BACKEND = Gauge(
    "hotspare_active_backend",
    "1 for the backend that receives the service's traffic, 0 for the others.",
    ["service", "backend"],
    registry=REGISTRY,
)
EPOCH = Gauge(
    "hotspare_epoch",
    "The service's epoch: grows by one at every change of active backend.",
    ["service"],
    registry=REGISTRY,
)
SERVICE_STATE = Gauge(
    "hotspare_service_state",
    "1 for the state the service is in (active, promoting, degraded), 0 for the others.",
    ["service", "state"],
    registry=REGISTRY,
)
FAILOVERS = Counter(
    "hotspare_failovers_total",
    "Changes of active backend, by cause.",
    ["service", "cause"],
    registry=REGISTRY,
)
FAILURES_DETECTED = Counter(
    "hotspare_failures_detected_total",
    "Backend failures detected (probe or traffic), whether or not a failover followed.",
    ["service", "backend", "cause"],
    registry=REGISTRY,
)
DETECTION_TO_SWITCH = Histogram(
    "hotspare_failover_duration_seconds",
    "Seconds from the first sign of failure to traffic flowing to the new active.",
    ["service"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
HELD = Gauge(
    "hotspare_held_requests",
    "Requests held now while the service switches to its spare.",
    ["service"],
    registry=REGISTRY,
)
REPLAYED = Counter(
    "hotspare_replayed_requests_total",
    "Requests sent again to the new active after the old one failed.",
    ["service", "method"],
    registry=REGISTRY,
)
REFUSED = Counter(
    "hotspare_refused_requests_total",
    "Requests answered 502/503 by the router itself, by cause.",
    ["service", "cause"],
    registry=REGISTRY,
)

# -- promotion -------------------------------------------------------------------------
PROMOTIONS = Counter(
    "hotspare_promotions_total",
    "Promotion pipeline runs, by outcome (promoted, failed, fence_hold).",
    ["service", "cause"],
    registry=REGISTRY,
)
FENCE_HOLD = Gauge(
    "hotspare_fencing_on_hold",
    "1 while a promotion waits for an operator to confirm the old active is fenced.",
    ["service"],
    registry=REGISTRY,
)

# -- replication (as the router sees the agents; redrawn by router/admin/agents.py) ----
REPLICATION_LAG = Gauge(
    "hotspare_replication_lag_seconds",
    "Age of the oldest change on the active not yet applied on the spare, per root, as the "
    "spare's agent said at the router's last look (every second); absent while unknown "
    "(agent dead or silent, not mirroring).",
    ["service", "root"],
    registry=REGISTRY,
)


def code_class(status: int) -> str:
    """200 -> '2xx'. The only form a status takes in a label."""
    return f"{status // 100}xx"

# -- the router's own state (controller.py, admin.py) -----------------------------------
STATE_WRITE_FAILURES = Counter(
    "hotspare_state_write_failures_total",
    "State-file writes that failed (the change they carried was not made).",
    ["service"],
    registry=REGISTRY,
)
STATE_WRITE_ALARM = Gauge(
    "hotspare_state_write_alarm",
    "1 while the last state-file write of the service failed; 0 once a write succeeds.",
    ["service"],
    registry=REGISTRY,
)
RELOAD_FAILURES = Counter(
    "hotspare_reload_failures_total",
    "Reloads refused (SIGHUP or POST /v1/reload); the running config was kept.",
    ["cause"],  # config | state_file
    registry=REGISTRY,
)

# -- the router pair in etcd (router/cluster/) --------------------------------------------
CLUSTER_ETCD_UP = Gauge(
    "hotspare_cluster_etcd_up",
    "1 while this router reaches etcd (lease kept alive, watch running); 0 while it keeps "
    "serving the last known active without failing over (failsafe).",
    registry=REGISTRY,
)
CLUSTER_ETCD_ERRORS = Counter(
    "hotspare_cluster_etcd_errors_total",
    "etcd calls that failed, by cause (unavailable, error, compacted, invalid).",
    ["cause"],
    registry=REGISTRY,
)
CLUSTER_DECIDER = Gauge(
    "hotspare_cluster_decider",
    "1 while this router decides the service (holds its decider key with a live lease).",
    ["service"],
    registry=REGISTRY,
)
CLUSTER_DECIDER_CHANGES = Counter(
    "hotspare_cluster_decider_changes_total",
    "Times this router became or stopped being the decider of the service.",
    ["service"],
    registry=REGISTRY,
)
CLUSTER_FOLLOW_LAG = Histogram(
    "hotspare_cluster_follow_lag_seconds",
    "From the decider's write of a service's state (its 'at') to this follower applying it.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
CLUSTER_MEMBERS = Gauge(
    "hotspare_cluster_members",
    "Live routers of the deployment (member keys present in etcd), as this router sees them.",
    registry=REGISTRY,
)
