"""The etcd keys of one deployment, all under its prefix (docs/cluster.md).

``members/<router>``, ``services/<svc>/decider``, ``services/<svc>/state``,
``services/<svc>/promotion``; the command queue's ``commands/`` and ``results/`` are
router/cluster/commands.py's.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str  # no trailing slash

    @property
    def members(self) -> str:
        return f"{self.prefix}/members/"

    @property
    def services(self) -> str:
        return f"{self.prefix}/services/"

    def member(self, router: str) -> str:
        return f"{self.members}{router}"

    def decider(self, service: str) -> str:
        return f"{self.services}{service}/decider"

    def state(self, service: str) -> str:
        return f"{self.services}{service}/state"

    def promotion(self, service: str) -> str:
        return f"{self.services}{service}/promotion"

    def watched(self, key: str) -> bool:
        """Keys the node keeps in its cache (members and services)."""
        return key.startswith(self.members) or key.startswith(self.services)
