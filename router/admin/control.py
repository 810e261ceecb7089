"""What the admin room needs of the router, as a protocol the server implements: the
admin API and the status page never import ``router.server`` (the import-linter
contract in pyproject.toml), so the doors go one way.

The statistics dataclasses are the router's one snapshot for observers
(:meth:`RouterControl.statistics`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from router.config import Config
from router.failover.controller import ServiceController
from router.failover.feed import EventFeed
from router.failover.state import StateFile

__all__ = [
    "BackendStatistics",
    "ClusterStatistics",
    "MemberStatistics",
    "ProbeStatistics",
    "RouterControl",
    "RouterStatistics",
    "ServiceStatistics",
]


@dataclass(frozen=True, slots=True)
class ProbeStatistics:
    """The health detector's view of one backend once it has been probed."""

    ok: bool  # no failed probe in the current row
    health: str  # up | suspect | down
    detail: str  # the last failure's detail, or "N good in a row"
    failures: int  # consecutive failed probes
    successes: int  # consecutive good probes
    probes_sent: int


@dataclass(frozen=True, slots=True)
class BackendStatistics:
    name: str
    url: str
    healthy: bool | None  # None: not probed
    probe: ProbeStatistics | None = None  # None: no probe sent yet


@dataclass(frozen=True, slots=True)
class ServiceStatistics:
    name: str
    active: str
    epoch: int
    state: str
    backends: tuple[BackendStatistics, ...]
    alarms: tuple[str, ...] = ()  # newest last; raised by the failover controller
    held_requests: int = 0  # waiting now for a promotion to end
    target: str | None = None  # the backend being promoted, while there is one
    cause: str | None = None  # why the service is in its state (a Cause value)


@dataclass(frozen=True, slots=True)
class RouterStatistics:
    services: tuple[ServiceStatistics, ...]
    # Promotion runs a previous router left without an end (it died mid-promotion):
    # "run <id> of <service> <old>-><new> epoch <n> stopped during step <i>. <name>".
    unfinished_promotions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MemberStatistics:
    """One router of the pair as its ``members/<name>`` key in etcd says."""

    name: str
    live: bool  # its member key is present (its lease is alive)
    admin: str  # its admin listener, host:port
    views: Mapping[str, Mapping[str, str]]  # service -> backend -> up|suspect|down|unknown


@dataclass(frozen=True, slots=True)
class ClusterStatistics:
    """The pair as this router sees it (docs/cluster.md)."""

    name: str  # this router
    etcd_ok: bool
    etcd_error: str | None  # the last etcd failure while etcd_ok is False
    endpoints: tuple[str, ...]
    members: tuple[MemberStatistics, ...]
    deciders: Mapping[str, str | None]  # service -> the router that decides it (None: nobody)
    decides: tuple[str, ...]  # the services this router decides


class RouterControl(Protocol):
    """The router as the admin API sees it."""

    @property
    def config(self) -> Config: ...

    @property
    def controllers(self) -> Mapping[str, ServiceController]: ...

    @property
    def state_file(self) -> StateFile: ...

    @property
    def events(self) -> EventFeed:
        """What happened, typed (router/failover/feed.py)."""

    def reload(self, config: Config) -> None:
        """Apply a new, validated config (the state check is the caller's)."""

    def statistics(self) -> RouterStatistics:
        """The one snapshot of every service, for status, page and metrics."""

    def cluster_statistics(self) -> ClusterStatistics | None:
        """The pair's snapshot; None without a ``cluster:`` section."""

    def decides(self, service: str) -> bool:
        """Does this router carry out operator commands of ``service``? True without a cluster."""

    async def forward_command(self, service: str, command: str, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Have the decider of ``service`` carry out ``command`` (router/cluster/commands.py):
        its (HTTP status, JSON body), 503 without a decider, 504 past the timeout."""
