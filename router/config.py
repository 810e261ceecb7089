"""Loading the one deployment file: ``load_config(path) -> Config``.

Rules:

1. This is the only parser of the file. The router, the agents and every command read
   the deployment through it, so they can never disagree about what it says.
2. Validation is complete before anything starts: every error is collected, each names
   its dotted key path (``services[0].health.fall``), what was expected and what was
   found. Unknown keys are errors.
3. ``${NAME}`` in any string is replaced by the environment variable ``NAME``; an unset
   one is an error at that key. Secrets may instead come from ``*_file: PATH``.
4. Relative paths (``state_file``, ``token_file``, certificates, roots) are relative to
   the directory of the config file, so the same file means the same thing wherever
   the process was started.
5. Only the command line turns a :class:`ConfigError` into exit status 2.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, Field, ValidationError, ValidationInfo, model_validator

from hotspare.configtypes import ByteSize, Duration, StrictModel, read_secret
from promote.config import FenceFailure, Step
from replication.config import ReplicationConfig

from .errors import ConfigError

__all__ = [
    "AdminConfig",
    "BackendConfig",
    "Config",
    "ConfigError",
    "FailoverConfig",
    "HealthConfig",
    "LimitsConfig",
    "ListenerConfig",
    "LogConfig",
    "ServiceConfig",
    "load_config",
    "parse_config",
    "parse_hostport",
]


# -- small value types ---------------------------------------------------------------


def parse_hostport(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` -> ("127.0.0.1", 8080); ``"[::1]:80"`` -> ("::1", 80)."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([^\s:\[\]]*):(\d{1,5})", value.strip())
    if not m:
        raise ValueError(f"expected 'host:port' (like '127.0.0.1:8080'), got {value!r}")
    host = m.group(1) if m.group(1) is not None else m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"expected a port 0-65535, got {port}")
    return (host or "0.0.0.0", port)


def _check_hostport(value: str) -> str:
    parse_hostport(value)
    return value.strip()


HostPort = Annotated[str, AfterValidator(_check_hostport)]


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, got {value!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"expected a valid port in URL, got {value!r}") from None
    if parts.query or parts.fragment:
        raise ValueError(f"expected a URL without query or fragment, got {value!r}")
    return value.rstrip("/") if parts.path in ("", "/") else value


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return Path(base) / value
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
Name = Annotated[str, Field(pattern=_NAME)]


def _status_set(values: list[int | str]) -> frozenset[int]:
    """Expand ``[200, "3xx"]`` into the set of status codes it names."""
    codes: set[int] = set()
    for v in values:
        if isinstance(v, int) and 100 <= v <= 599:
            codes.add(v)
        elif isinstance(v, str) and re.fullmatch(r"[1-5]xx", v.strip().lower()):
            first = int(v.strip()[0]) * 100
            codes.update(range(first, first + 100))
        elif isinstance(v, str) and re.fullmatch(r"[1-5]\d\d", v.strip()):
            codes.add(int(v))
        else:
            raise ValueError(f"expected status codes like 200 or '2xx', got {v!r}")
    return frozenset(codes)


# -- sections --------------------------------------------------------------------------


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
            data = {**data, "expect_status": _status_set(raw)}
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
            data = {**data, "fail_on_status": _status_set(raw)}
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

    @model_validator(mode="after")
    def _unique_backends(self) -> ServiceConfig:
        names = [b.name for b in self.backends]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"expected unique backend names, got {', '.join(dupes)} twice")
        return self

    def backend(self, name: str) -> BackendConfig:
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)


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
    # The name this proxy gives itself in Via headers.
    via_name: str = "hotspare"
    services: list[ServiceConfig] = Field(min_length=1)
    replication: ReplicationConfig | None = None
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

    @model_validator(mode="after")
    def _unique_services(self) -> Config:
        names = [s.name for s in self.services]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"expected unique service names, got {', '.join(dupes)} twice")
        routes = [(tuple(sorted(h.lower() for h in s.hosts)), s.path_prefix) for s in self.services]
        for i, r in enumerate(routes):
            if r in routes[:i]:
                raise ValueError(
                    f"services[{i}] ({self.services[i].name}) has the same hosts and "
                    f"path_prefix as an earlier service; expected each route once"
                )
        return self

    @property
    def audit_log_path(self) -> Path:
        return self.audit_log or self.state_file.with_name(self.state_file.name + ".audit.jsonl")

    def service(self, name: str) -> ServiceConfig:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)


# -- loading ---------------------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _substitute_env(
    node: Any, env: Mapping[str, str], loc: tuple[int | str, ...], errors: list[str]
) -> Any:
    if isinstance(node, str):

        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                errors.append(
                    f"{_key_path(loc)}: expected environment variable {name} to be set "
                    f"(referenced as ${{{name}}}), found it unset"
                )
                return m.group(0)
            return env[name]

        return _ENV_REF.sub(repl, node)
    if isinstance(node, list):
        return [_substitute_env(v, env, (*loc, i), errors) for i, v in enumerate(node)]
    if isinstance(node, dict):
        return {k: _substitute_env(v, env, (*loc, str(k)), errors) for k, v in node.items()}
    return node


def _describe(value: Any) -> str:
    if isinstance(value, (dict, list)):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return repr(value)


def _format_error(err: Mapping[str, Any], model_fields: Mapping[str, Any] | None = None) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    path = _key_path(loc)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = _describe(err.get("input"))
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "extra_forbidden":
        return f"{path}: unknown key (check its spelling and its place in the file)"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()), "?")
        return f"{path}: expected a number {op} {bound}, got {got}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{path}: expected an integer, got {got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"{path}: expected true or false, got {got}"
    if kind in ("string_type",):
        return f"{path}: expected a string, got {got}"
    if kind in ("list_type",):
        return f"{path}: expected a list, got {got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{path}: expected a mapping (key: value), got {got}"
    if kind == "too_short":
        return f"{path}: expected at least {ctx.get('min_length')} item(s), got {got}"
    if kind == "literal_error":
        return f"{path}: expected {ctx.get('expected')}, got {got}"
    if kind == "string_pattern_mismatch":
        return f"{path}: expected a value matching {ctx.get('pattern')}, got {got}"
    if kind == "value_error":
        msg = str(ctx.get("error") or err["msg"])
        return f"{path}: {msg}"
    return f"{path}: {err['msg'][:1].lower()}{err['msg'][1:]}, got {got}"


def parse_config(
    data: Any,
    *,
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    source: Path | None = None,
) -> Config:
    """Validate an already-parsed YAML tree. Raises :class:`ConfigError` with every error."""
    errors: list[str] = []
    if not isinstance(data, Mapping):
        raise ConfigError([f"(top level): expected a mapping of keys, got {_describe(data)}"])
    data = _substitute_env(dict(data), os.environ if env is None else env, (), errors)
    try:
        config = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        errors.extend(_format_error(e) for e in exc.errors())
        raise ConfigError(errors, source) from None
    if errors:
        raise ConfigError(errors, source)
    object.__setattr__(config, "source", source)
    return config


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice in one mapping", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the deployment file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read the config file: {exc.strerror}"], p) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{p}: expected UTF-8 text, found a bad byte at offset {exc.start}"], p) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{p}: not valid YAML: {exc}"], p) from None
    if data is None:
        raise ConfigError([f"{p}: the file is empty; expected at least 'listen' and 'services'"], p)
    return parse_config(data, base_dir=p.resolve().parent, env=env, source=p)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
