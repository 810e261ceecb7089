"""The agent's metrics: one registry per agent (two agents may share a test process).
Labelled by ``root`` only (DESIGN: bounded labels)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["AgentMetrics"]


class AgentMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.lag = Gauge(
            "hotspare_replication_lag_seconds",
            "Age of the oldest change the replica has not applied yet (0 when in sync).",
            ["root"], registry=r,
        )
        self.pending = Gauge(
            "hotspare_replication_pending_files",
            "Files known to differ that the replica has not applied yet.",
            ["root"], registry=r,
        )
        self.in_sync = Gauge(
            "hotspare_replication_in_sync",
            "1 if the replica holds everything the source last reported, else 0.",
            ["root"], registry=r,
        )
        self.bytes = Counter(
            "hotspare_replication_bytes_transferred",
            "File bytes received and placed on the replica.", ["root"], registry=r,
        )
        self.files = Counter(
            "hotspare_replication_files_transferred",
            "Files received and placed on the replica.", ["root"], registry=r,
        )
        self.deletes_refused = Counter(
            "hotspare_replication_deletes_refused",
            "Reconciles whose deletes were refused by the mass-delete guard.", ["root"], registry=r,
        )
        self.guard_tripped = Gauge(
            "hotspare_replication_delete_guard_tripped",
            "1 while the mass-delete guard holds removals until an operator confirms them.",
            ["root"], registry=r,
        )
        self.quarantined = Counter(
            "hotspare_replication_quarantined_files",
            "Files moved to quarantine (local changes a mirror would have lost).", ["root"], registry=r,
        )
        self.last_reconcile = Gauge(
            "hotspare_replication_last_reconcile_timestamp_seconds",
            "Unix time the last full reconcile finished.", ["root"], registry=r,
        )
        self.errors = Counter(
            "hotspare_replication_errors",
            "Failed transfers, refused manifests and unreachable peers.", ["root"], registry=r,
        )
        self.is_source = Gauge(
            "hotspare_replication_is_source",
            "1 if this agent serves its roots (its node is active), 0 if it mirrors.",
            registry=r,
        )
        self.router_reachable = Gauge(
            "hotspare_replication_router_reachable",
            "1 if the last role poll reached the router.", registry=r,
        )
