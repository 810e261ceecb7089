"""What the admin room needs of the router, as a protocol the server implements: the
admin API and the status page never import ``router.server`` (the import-linter
contract in pyproject.toml), so the doors go one way.

The statistics dataclasses are the router's one snapshot for observers
(:meth:`RouterControl.statistics`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from router.config import Config
from router.failover.controller import ServiceController
from router.failover.feed import EventFeed
from router.failover.state import StateFile

__all__ = ["BackendStatistics", "ProbeStatistics", "RouterControl", "RouterStatistics", "ServiceStatistics"]


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
