"""What the router asks of whatever serves its listeners in other processes.

Rules:

1. :class:`router.server.Router` holds at most one :class:`DataPathHost` (``data_path``);
   with one, the router binds nothing itself for the proxy listeners: ``start()`` binds
   them and returns their (host, port) in config order, ``stop()`` drains them (steps 1
   and 2 of the router's stop), ``reload(config)`` hands the new config on.
2. This module imports nothing of the router but its config, so router.server may name
   it without a cycle (:class:`router.workers.supervisor.Supervisor` implements it).
"""

from __future__ import annotations

from typing import Protocol

from router.config import Config

__all__ = ["DataPathHost"]


class DataPathHost(Protocol):
    async def start(self) -> list[tuple[str, int]]:
        """Bind the proxy listeners and serve them; their (host, port) in config order."""

    async def stop(self) -> None:
        """No new connections; in-flight requests finish (up to ``shutdown_grace``)."""

    def reload(self, config: Config) -> None:
        """A new, already validated config: for new requests from now on."""

    def held(self, service: str) -> int:
        """Requests of ``service`` held now, in all the processes served."""
