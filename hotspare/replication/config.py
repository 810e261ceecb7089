"""Config model of the ``replication`` section.

Placeholder owned by the replication work: it must keep exporting ``ReplicationConfig``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from hotspare.configtypes import StrictModel


class RootConfig(StrictModel):
    name: str
    path: Path
    paths: dict[str, Path] = Field(default_factory=dict)
    exclude: list[str] = Field(default_factory=list)


class ReplicationConfig(StrictModel):
    token: str | None = None
    token_file: Path | None = None
    router_url: str | None = None
    roots: list[RootConfig] = Field(default_factory=list)
