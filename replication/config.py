"""Config model of the ``replication:`` section of the deployment file.

Rules:

1. Every key has a default except ``roots`` and the token, so the DESIGN minimal file
   (``token``, ``roots: [{name, path}]``) is a complete replication config.
2. Relative paths are relative to the config file's folder (the loader passes
   ``base_dir`` in the validation context), like every other path in the file.
3. The token is either ``token`` (usually ``"${HOTSPARE_REPLICATION_TOKEN}"``) or
   ``token_file``; after loading, ``token`` always holds the secret.
4. Per node, a root may live elsewhere (``paths: {b: /srv/b/jobs}``); ``path_for(node)``
   answers which folder a node uses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo, model_validator

from hotspare.configtypes import ByteSize, Duration, StrictModel, read_secret

__all__ = ["ReplicationConfig", "RootConfig", "TlsConfig"]

_ROOT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


def _resolve(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return Path(base) / value
    return value


RelPath = Annotated[Path, AfterValidator(_resolve)]


def _check_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


class RootConfig(StrictModel):
    name: str = Field(pattern=_ROOT_NAME)
    path: RelPath
    # Node name -> folder of this root on that node (default: ``path``).
    paths: dict[str, RelPath] = Field(default_factory=dict)
    # Glob patterns (fnmatch, matched against the relative path and against the file
    # name) that are neither served nor mirrored nor deleted.
    exclude: list[str] = Field(default_factory=list)

    def path_for(self, node: str) -> Path:
        return self.paths.get(node, self.path)


class TlsConfig(StrictModel):
    """HTTPS for the agent's listener (``cert``/``key``) and for calls to peers (``ca_file``)."""

    cert: RelPath | None = None
    key: RelPath | None = None
    ca_file: RelPath | None = None
    verify: bool = True

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("expected both cert and key, got only one")
        return self


class ReplicationConfig(StrictModel):
    token: str | None = None
    token_file: RelPath | None = None
    # Where agents read their role; default ``http://<admin.listen>``.
    router_url: Annotated[str, AfterValidator(_check_url)] | None = None
    roots: list[RootConfig] = Field(default_factory=list)

    # Node name -> "host:port" the agent listens on instead of its backend's `agent` URL.
    listen: dict[str, str] = Field(default_factory=dict)
    tls: TlsConfig = Field(default_factory=TlsConfig)

    # File that must exist at the top of a source root before its manifest is served
    # (an unmounted disk shows an empty folder without it, and deletes nothing).
    marker_file: str = Field(default=".hotspare-root", pattern=r"^[^/\x00]+$")
    # Removals (one plan, or all of them since the last full reconcile) past this share
    # of the replica's files are held until an operator confirms them.
    max_delete_share: float = Field(default=0.5, ge=0.0, le=1.0)
    # ... unless it deletes at most this many files (small trees).
    max_delete_free: int = Field(default=10, ge=0)
    # A source serves a file with several names (st_nlink > 1) only when true: one of
    # its other names may lie outside the root (docs/replication.md, "Hard links").
    allow_hard_links: bool = False
    # Deleted and overwritten-for-delete files stay in the trash this long.
    trash_retention: Duration = 7 * 86400.0

    # How often the agent asks the router for its role.
    role_interval: Duration = 1.0
    # Full rescan of each source root (catches what the watcher missed).
    rescan_interval: Duration = 30.0
    # Full reconcile on the sink (manifest against manifest).
    reconcile_interval: Duration = 300.0
    # A written file is shipped once closed, or once quiet this long where closing
    # cannot be seen.
    quiet_period: Duration = 0.05
    # Parallel transfers per root on the sink.
    transfers: int = Field(default=4, ge=1, le=64)
    # Flush every received file to disk before renaming it into place. false is faster
    # but a power cut may leave a renamed, empty file: benchmarks only.
    fsync: bool = True
    # Files smaller than this travel in bundles of many files per request.
    bundle_file_max: ByteSize = 1024 * 1024

    # Command that stops the application on this node (POST /v1/actions/stop-app):
    # one argv for every node, or {node: argv}.
    app_stop: list[str] | dict[str, list[str]] | None = None
    app_stop_timeout: Duration = 60.0

    @model_validator(mode="after")
    def _check(self) -> ReplicationConfig:
        if self.token is not None or self.token_file is not None:
            object.__setattr__(self, "token", read_secret(self.token, self.token_file, "token"))
        elif self.roots:
            raise ValueError("expected token or token_file (agents refuse to run without one)")
        names = [r.name for r in self.roots]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"expected unique root names, got {', '.join(dupes)} twice")
        if isinstance(self.app_stop, list) and not self.app_stop:
            raise ValueError("app_stop: expected a non-empty argv list, got []")
        return self

    def stop_command(self, node: str) -> list[str] | None:
        if isinstance(self.app_stop, dict):
            return self.app_stop.get(node)
        return self.app_stop

    def secret(self) -> str:
        assert self.token is not None  # guaranteed by _check when roots exist
        return self.token
