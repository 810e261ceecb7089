"""The sections of the deployment file, one model each (docs/configuration.md is
generated from them: a ``#`` comment above a field is its description).

Checks that compare several entries (unique names, one service per route) are not here
but in :mod:`.cross`: pydantic runs a model's own validator only when all its fields
are valid, and check-config must print every error in one run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from hotspare.configtypes import ByteSize, Duration, StrictModel, read_secret
from promote.config import FenceFailure, Step
from replication.config import ReplicationConfig

from .values import ConfigPath, HostPort, HttpUrl, Name, parse_hostport, status_set

_ROUTER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_ETCD_PREFIX = re.compile(r"(/[A-Za-z0-9_.-]+)+")

__all__ = [
    "AdminConfig",
    "BackendConfig",
    "ClusterConfig",
    "Config",
    "EtcdConfig",
    "FailoverConfig",
    "HealthConfig",
    "HoldConfig",
    "LimitsConfig",
    "ListenerConfig",
    "LogConfig",
    "PoolConfig",
    "RewriteConfig",
    "ServiceConfig",
    "TimeoutsConfig",
]


class ListenerConfig(StrictModel):
    """One listening socket. A plain ``"host:port"`` string is the short form."""

    address: HostPort
    cert: ConfigPath | None = None
    key: ConfigPath | None = None
    # Answer every request on this (plain HTTP) listener with a 308 to the same URL on
    # https, at this port (default 443).
    redirect_to_https: bool = False
    https_port: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="after")
    def _tls_pair(self) -> ListenerConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("expected both cert and key for an HTTPS listener, got only one")
        if self.redirect_to_https and self.cert is not None:
            raise ValueError("redirect_to_https is for plain HTTP listeners; this one has a cert")
        return self

    @property
    def tls(self) -> bool:
        return self.cert is not None

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_hostport(self.address)


class LimitsConfig(StrictModel):
    """What one client may cost a listener (docs/security.md). Each applies to every
    listener on its own."""

    # Time to receive a complete request head, from the connection's accept or from the
    # first byte of a later request on it (slowloris). Partial head: 408, then closed.
    header_timeout: Duration = Field(default=10.0, gt=0)
    # How long a kept-alive client connection may idle between requests.
    keepalive_timeout: Duration = Field(default=75.0, gt=0)
    # Open client connections per listener; past it a new connection gets 503 and is closed.
    max_connections: int = Field(default=4096, ge=1)
    # Open client connections from one client address, per listener (a school behind one
    # NAT address is many people: keep it generous).
    max_connections_per_client: int = Field(default=512, ge=1)
    # Bytes of a request target: 414 past it (Apache's LimitRequestLine).
    max_request_line: int = Field(default=8190, ge=64, le=1_048_576)
    # Bytes of one header line, name and value: 431 past it (LimitRequestFieldSize).
    max_header_size: int = Field(default=8190, ge=64, le=1_048_576)
    # Header lines in one request head: 431 past it (LimitRequestFields).
    max_headers: int = Field(default=100, ge=1, le=10_000)


class AdminConfig(StrictModel):
    listen: HostPort = "127.0.0.1:9100"
    token: str | None = None
    token_file: ConfigPath | None = None

    @model_validator(mode="after")
    def _load_token(self) -> AdminConfig:
        if self.token is None and self.token_file is None:
            return self  # no token: state-changing calls are refused, reads still work
        secret = read_secret(self.token, self.token_file, "token")
        object.__setattr__(self, "token", secret)
        return self


class LogConfig(StrictModel):
    # "-" is standard output; null turns the access log off.
    access_log: str | None = "-"
    access_format: Literal["combined", "json"] = "combined"
    # Operator-facing log lines; "-" is standard error.
    error_log: str = "-"
    level: Literal["debug", "info", "warning", "error"] = "info"


class BackendConfig(StrictModel):
    name: Name
    url: HttpUrl
    # The hotspare agent on that node (replication, local actions during promotion).
    agent: HttpUrl | None = None
    # For https:// backends: CA bundle to verify against; verification is on by default.
    ca_file: ConfigPath | None = None
    verify_tls: bool = True
    # The address the database sees this node connect from (promotion's `sql` step);
    # default: the host of `url`.
    address: str | None = None

    @property
    def db_address(self) -> str:
        if self.address:
            return self.address
        return urlsplit(self.url).hostname or ""


class HealthConfig(StrictModel):
    method: Literal["GET", "HEAD", "OPTIONS", "POST"] = "GET"
    path: str = Field(default="/health", pattern=r"^/")
    interval: Duration = 1.0
    # Probe interval while a backend is suspect (a failed probe or traffic error).
    fast_interval: Duration = 0.1
    # 500ms: a hang is declared when a request has waited this long AND a confirming
    # probe times out too (about 1s in all); one slow request alone never counts.
    timeout: Duration = 0.5
    rise: int = Field(default=2, ge=1)
    fall: int = Field(default=3, ge=1)
    expect_status: frozenset[int] = frozenset(range(200, 400))
    # Optional substring the probe's response body must contain.
    expect_body: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _expand_status(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "expect_status" in data:
            raw = data["expect_status"]
            raw = raw if isinstance(raw, list) else [raw]
            data = {**data, "expect_status": status_set(raw)}
        return data


class TimeoutsConfig(StrictModel):
    connect: Duration = 2.0
    # From the end of the request to the first byte of the response.
    first_byte: Duration = 60.0
    # Longest silence while a body streams, either way.
    idle: Duration = 60.0


class PoolConfig(StrictModel):
    # Open connections to one backend, busy and idle together.
    max_connections: int = Field(default=512, ge=1)
    # How long an idle keep-alive connection to a backend is kept.
    keepalive_timeout: Duration = 15.0


class RewriteConfig(StrictModel):
    # Rewrite Location, Content-Location and URI headers that point at a backend
    # (Apache's ProxyPassReverse).
    location: bool = True
    # Set-Cookie Domain= and Path= rewriting: {backend value: public value}
    # (ProxyPassReverseCookieDomain / ProxyPassReverseCookiePath).
    cookie_domain: dict[str, str] = Field(default_factory=dict)
    cookie_path: dict[str, str] = Field(default_factory=dict)


class HoldConfig(StrictModel):
    max_requests: int = Field(default=1000, ge=0)
    max_bytes: ByteSize = 64 * 1024 * 1024
    max_time: Duration = 10.0


class FailoverConfig(StrictModel):
    # Consecutive failures of real traffic that mark a backend down without waiting for
    # probes (a traffic failure always triggers an immediate confirming probe).
    traffic_failures: int = Field(default=3, ge=1)
    # Backend statuses that count as traffic failures.
    fail_on_status: frozenset[int] = frozenset()
    safe_methods: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS"})
    # Requests with a body up to this size are kept so they can be replayed.
    replay_buffer: ByteSize = 64 * 1024
    # No automatic failover back to a backend within this time after a failover.
    hold_down: Duration = 300.0
    hold: HoldConfig = Field(default_factory=HoldConfig)
    # Retry-After (seconds) on 503s while switching or degraded.
    retry_after: int = Field(default=5, ge=0)
    # Turn automatic failover off (probes and metrics still run).
    automatic: bool = True

    @model_validator(mode="before")
    @classmethod
    def _expand_status(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "fail_on_status" in data:
            raw = data["fail_on_status"]
            raw = raw if isinstance(raw, list) else [raw]
            data = {**data, "fail_on_status": status_set(raw)}
        if isinstance(data, Mapping) and isinstance(data.get("safe_methods"), list):
            data = {**data, "safe_methods": frozenset(str(m).upper() for m in data["safe_methods"])}
        return data


class ServiceConfig(StrictModel):
    name: Name
    # Host header values this service answers (port ignored); empty: any host.
    hosts: list[str] = Field(default_factory=list)
    path_prefix: str = Field(default="/", pattern=r"^/")
    backends: list[BackendConfig] = Field(min_length=1)
    health: HealthConfig = Field(default_factory=HealthConfig)
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    pool: PoolConfig = Field(default_factory=PoolConfig)
    # Largest request body accepted (413 beyond; Apache's LimitRequestBody default);
    # null: no limit. Bodies stream, so the size costs no memory, only time.
    max_body_size: ByteSize | None = 1024 * 1024 * 1024
    # Send the client's Host to the backend (ProxyPreserveHost On); false: the backend's.
    preserve_host: bool = True
    rewrite: RewriteConfig = Field(default_factory=RewriteConfig)
    failover: FailoverConfig = Field(default_factory=FailoverConfig)
    promote: list[Step] = Field(default_factory=list)
    # When a fencing step fails: hold traffic for an operator, or proceed with an alarm.
    fence_failure: FenceFailure = "hold"

    @model_validator(mode="before")
    @classmethod
    def _null_promote(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "promote" in data and data["promote"] is None:
            data = {**data, "promote": []}
        return data

    def backend(self, name: str) -> BackendConfig:
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)


class EtcdConfig(StrictModel):
    """The etcd cluster that the routers of one deployment share (docs/cluster.md)."""

    # Client URLs of the etcd members (http:// or https://); three members are recommended.
    endpoints: list[HttpUrl] = Field(min_length=1)
    # Every key of this deployment lives under it; routers of one pair share it, another
    # deployment on the same etcd uses another. No trailing slash.
    prefix: str = "/hotspare/default"
    # etcd user (auth enabled on the etcd side); give `password` with it.
    username: str | None = Field(default=None, min_length=1)
    # Password of `username`, usually `"${ETCD_PASSWORD}"`; or `password_file`.
    password: str | None = Field(default=None, repr=False)
    password_file: ConfigPath | None = None
    # CA bundle that signed the members' certificates (https endpoints).
    ca_file: ConfigPath | None = None
    # Client certificate and its key, when the members require one (both or neither).
    cert_file: ConfigPath | None = None
    key_file: ConfigPath | None = None
    # Longest one etcd call may take, trying every endpoint in turn.
    timeout: Duration = Field(default=2.0, gt=0, le=60)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _ETCD_PREFIX.fullmatch(value):
            raise ValueError(
                "expected a key prefix like '/hotspare/district-a' (starting with '/', no trailing "
                f"'/', letters, digits, '.', '_', '-'), got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _pairs(self) -> EtcdConfig:
        has_password = self.password is not None or self.password_file is not None
        if (self.username is None) != (not has_password):
            raise ValueError(
                "expected both username and password (or password_file) for etcd auth, "
                "got only " + ("username" if self.username is not None else "a password")
            )
        if has_password:
            secret = read_secret(self.password, self.password_file, "password")
            object.__setattr__(self, "password", secret)
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("expected both cert_file and key_file for an etcd client certificate, got only one")
        return self

    @property
    def tls(self) -> bool:
        return any(u.startswith("https://") for u in self.endpoints)


class ClusterConfig(StrictModel):
    """Several routers sharing failover decisions in etcd (docs/cluster.md). Without this
    section the router runs alone and its state file is the only store."""

    # This router's name among the routers of the deployment (lowercase, unique).
    name: str
    etcd: EtcdConfig
    # Lease of this router's membership and of the services it decides: whole seconds,
    # at least 2s. A router that stops answering loses its role after about this long.
    lease_ttl: Duration = 5.0
    # How many live routers must see the active down before a failover: `majority`,
    # `all`, or a number (capped at the routers alive).
    quorum: Literal["majority", "all"] | int = "majority"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ROUTER_NAME.fullmatch(value):
            raise ValueError(
                "expected a router name of lowercase letters, digits, '_' and '-' (starting with a "
                f"letter or digit, at most 63), got {value!r}"
            )
        return value

    @field_validator("lease_ttl")
    @classmethod
    def _whole_seconds(cls, value: float) -> float:
        if value < 2 or value != int(value):
            raise ValueError(f"expected whole seconds >= 2 (like '5s'), got {value:g}s")
        return value

    @field_validator("quorum", mode="before")
    @classmethod
    def _quorum(cls, value: Any) -> Any:
        if isinstance(value, bool) or not (
            value in ("majority", "all") or (isinstance(value, int) and value >= 1)
        ):
            raise ValueError(f"expected 'majority', 'all' or an integer >= 1, got {value!r}")
        return value


class Config(StrictModel):
    listen: list[ListenerConfig] = Field(min_length=1)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    state_file: ConfigPath = Path("hotspare-state.json")
    # Append-only JSON-lines record of every promotion; default: beside the state file.
    audit_log: ConfigPath | None = None
    log: LogConfig = Field(default_factory=LogConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    # SIGTERM: how long in-flight requests may take to finish.
    shutdown_grace: Duration = 10.0
    # Processes that serve the listeners (router/workers/); default: the cores this process
    # may run on. 1: one process does everything (no worker is started).
    workers: int | None = Field(default=None, ge=1, le=256)
    # The name this proxy gives itself in Via headers.
    via_name: str = "hotspare"
    services: list[ServiceConfig] = Field(min_length=1)
    replication: ReplicationConfig | None = None
    cluster: ClusterConfig | None = None
    # Where the config came from (set by load_config; not a YAML key).
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _short_listeners(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            listen = data.get("listen")
            if isinstance(listen, str):
                listen = [listen]
            if isinstance(listen, list):
                listen = [{"address": x} if isinstance(x, str) else x for x in listen]
                data = {**data, "listen": listen}
            if "source" in data:
                data = {k: v for k, v in data.items() if k != "source"}
        return data

    @property
    def worker_count(self) -> int:
        """``workers``, or the cores this process may run on when unset."""
        return self.workers or len(os.sched_getaffinity(0))

    @property
    def audit_log_path(self) -> Path:
        return self.audit_log or self.state_file.with_name(self.state_file.name + ".audit.jsonl")

    def service(self, name: str) -> ServiceConfig:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)
