"""Config models of the promotion steps (``services[].promote``).

Rules:

1. A step's type is the one key among ``exec``, ``http``, ``sql``, ``wait_healthy`` and
   ``agent`` that it carries; exactly one is required. The DESIGN minimal step
   ``{name: fence, exec: ["/usr/local/bin/fence-old", "{old.name}"], timeout: 20s}`` is
   accepted as written.
2. Keys common to every type sit beside the type key: ``name``, ``timeout`` (per attempt),
   ``retries``, ``backoff`` (doubles after each failed attempt), ``on_failure``
   (``abort`` | ``continue``) and ``fence``.
3. ``fence`` defaults by what the step touches: ``sql`` steps, ``agent`` steps acting on
   the old node, and ``exec``/``http`` steps whose templates name ``{old.*}`` are fencing
   steps. A failed fencing step is governed by the service's ``fence_failure`` (hold |
   proceed), not by ``on_failure``.
4. Each type validates its own options here, at load, so a typo is a config error with a
   key path (``services[0].promote[1].sql.dsn``), never a failed promotion at 3 a.m.
   Templates are checked here too (unknown name = error).
5. ``exec`` options (``shell``, ``env``, ``cwd``, ``output_limit``, ``kill_grace``) sit
   beside ``exec`` because its value is the argv; the other types nest their options.

The step contracts (success, failure, timeout) are in docs/promotion.md and in each
runner module's docstring.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from hotspare.configtypes import ByteSize, Duration, StrictModel, read_secret

from . import templates

__all__ = [
    "STEP_KINDS",
    "AgentOptions",
    "FenceFailure",
    "HttpOptions",
    "SqlOptions",
    "Step",
    "StepKind",
    "WaitHealthyOptions",
]

FenceFailure = Literal["hold", "proceed"]
StepKind = Literal["exec", "http", "sql", "wait_healthy", "agent"]
STEP_KINDS: tuple[StepKind, ...] = ("exec", "http", "sql", "wait_healthy", "agent")
_EXEC_ONLY = ("shell", "env", "cwd", "output_limit", "kill_grace")


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return Path(base) / value
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
Template = Annotated[str, AfterValidator(templates.check)]


def _status_set(raw: Any) -> frozenset[int]:
    """Expand ``[200, "3xx"]`` into the set of status codes it names."""
    values = raw if isinstance(raw, (list, tuple, set, frozenset)) else [raw]
    codes: set[int] = set()
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599:
            codes.add(v)
        elif isinstance(v, str) and re.fullmatch(r"[1-5]xx", v.strip().lower()):
            first = int(v.strip()[0]) * 100
            codes.update(range(first, first + 100))
        elif isinstance(v, str) and re.fullmatch(r"[1-5]\d\d", v.strip()):
            codes.add(int(v))
        else:
            raise ValueError(f"expected status codes like 200 or '2xx', got {v!r}")
    if not codes:
        raise ValueError("expected at least one status code, got none")
    return frozenset(codes)


def _check_url_template(value: str) -> str:
    templates.check(value)
    if not re.match(r"^(https?://|\{[a-z_.]+\})", value):
        raise ValueError(
            f"expected an http:// or https:// URL (or one starting with a template such "
            f"as {{new.url}}), got {value!r}"
        )
    return value


UrlTemplate = Annotated[str, AfterValidator(_check_url_template)]


class _TlsOptions(StrictModel):
    verify_tls: bool = True
    ca_file: ConfigPath | None = None


class HttpOptions(_TlsOptions):
    """``http``: one request; success = a status in ``expect_status`` (default 2xx)."""

    url: UrlTemplate
    # POST by default: a promotion hook is an action, and GET must not change state.
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, Template] = Field(default_factory=dict)
    body: Template | None = None
    # A JSON body; templates are rendered in its string values.
    json_body: Any = Field(default=None, alias="json")
    expect_status: frozenset[int] = frozenset(range(200, 300))

    @field_validator("expect_status", mode="before")
    @classmethod
    def _expand(cls, raw: Any) -> frozenset[int]:
        return _status_set(raw)

    @field_validator("json_body")
    @classmethod
    def _json_templates(cls, value: Any) -> Any:
        for text in _strings_in(value):
            templates.check(text)
        return value

    @model_validator(mode="after")
    def _one_body(self) -> HttpOptions:
        if self.body is not None and self.json_body is not None:
            raise ValueError("give either body or json, not both")
        return self


class SqlOptions(StrictModel):
    """``sql``: end the database sessions the old active still holds."""

    driver: Literal["postgresql", "mssql"] = "postgresql"
    # postgresql: a URI (postgresql://user:pass@host:5432/db); mssql: an ODBC string.
    dsn: str | None = None
    dsn_file: ConfigPath | None = None
    # Match sessions whose client address is the old active's (backends[].address, or
    # the host of its url).
    match_address: bool = True
    # Match sessions by application name too (a template, e.g. "library@{old.name}").
    # With match_address as well, a session must match both.
    application_name: Template | None = None
    # Only sessions on these databases (default: all).
    databases: list[str] = Field(default_factory=list)
    # Pause between "terminate" and the re-check that nothing is left.
    interval: Duration = 0.2
    # Success needs no matching session for this long (re-checked every interval): an
    # old active whose pool reconnects within it is caught. 0: the first empty check.
    settle: Duration = 0.0

    @model_validator(mode="after")
    def _check(self) -> SqlOptions:
        dsn = read_secret(self.dsn, self.dsn_file, "dsn")
        object.__setattr__(self, "dsn", dsn)
        if self.driver == "postgresql" and not re.match(r"^postgres(ql)?://", dsn):
            raise ValueError(
                "dsn: expected a PostgreSQL URI like 'postgresql://user:pass@host:5432/db', "
                f"got one starting {dsn[:12]!r}"
            )
        if self.driver == "mssql" and "=" not in dsn:
            raise ValueError(
                "dsn: expected an ODBC connection string like "
                "'DRIVER={ODBC Driver 18 for SQL Server};SERVER=db;UID=u;PWD=p' for mssql"
            )
        if not self.match_address and self.application_name is None:
            raise ValueError(
                "expected match_address: true or an application_name to match sessions by, "
                "found neither (the step would match every session)"
            )
        if self.interval <= 0:
            raise ValueError(f"interval: expected a duration > 0, got {self.interval}")
        return self

    @property
    def secret_dsn(self) -> str:
        assert self.dsn is not None
        return self.dsn


class WaitHealthyOptions(_TlsOptions):
    """``wait_healthy``: N good readiness probes in a row before the step's timeout."""

    url: UrlTemplate = "{new.health_url}"
    method: Literal["GET", "HEAD"] = "GET"
    successes: int = Field(default=3, ge=1)
    interval: Duration = 0.5
    probe_timeout: Duration = 2.0
    expect_status: frozenset[int] = frozenset(range(200, 400))

    @field_validator("expect_status", mode="before")
    @classmethod
    def _expand(cls, raw: Any) -> frozenset[int]:
        return _status_set(raw)


class AgentOptions(_TlsOptions):
    """``agent``: POST {agent}/v1/actions/{action} on one node's hotspare agent."""

    action: Literal["stop-app", "final-sync"]
    # Which node's agent: default old for stop-app, new for final-sync.
    node: Literal["old", "new"] | None = None

    @property
    def target(self) -> Literal["old", "new"]:
        if self.node is not None:
            return self.node
        return "old" if self.action == "stop-app" else "new"


class Step(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_. -]{0,62}$")
    exec: list[str] | str | None = None
    shell: bool = False
    env: dict[str, Template] = Field(default_factory=dict)
    cwd: ConfigPath | None = None
    output_limit: ByteSize = Field(default=64 * 1024, ge=1024)
    kill_grace: Duration = 2.0
    http: HttpOptions | None = None
    sql: SqlOptions | None = None
    wait_healthy: WaitHealthyOptions | None = None
    agent: AgentOptions | None = None
    timeout: Duration = 30.0
    retries: int = Field(default=0, ge=0, le=100)
    backoff: Duration = 1.0
    on_failure: Literal["abort", "continue"] = "abort"
    fence: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        if out.get("wait_healthy") is True or (
            "wait_healthy" in out and out["wait_healthy"] is None
        ):
            out["wait_healthy"] = {}
        if isinstance(out.get("agent"), str):
            out["agent"] = {"action": out["agent"]}
        return out

    @field_validator("exec", mode="before")
    @classmethod
    def _exec_shape(cls, value: Any) -> Any:
        ok = isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(a, str) for a in value)
        )
        if value is not None and not ok:
            raise ValueError(
                "expected an argv list of strings like ['/usr/local/bin/fence', '{old.name}'] "
                f"(or one string with shell: true), got {value!r}"
            )
        return value

    @field_validator("exec")
    @classmethod
    def _check_exec(cls, value: list[str] | str | None) -> list[str] | str | None:
        if isinstance(value, list):
            for i, arg in enumerate(value):
                try:
                    templates.check(arg)
                except ValueError as exc:
                    raise ValueError(f"argument {i}: {exc}") from None
        if isinstance(value, list) and not value:
            raise ValueError(
                "expected a non-empty argv list like ['/usr/local/bin/fence', '{old.name}']"
            )
        if isinstance(value, list) and not value[0].strip():
            raise ValueError("expected a program as argv[0], got an empty string")
        if isinstance(value, str):
            templates.check(value)
        return value

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"expected a duration > 0, got {value}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        present = [k for k in STEP_KINDS if getattr(self, k) is not None]
        if len(present) != 1:
            found = ", ".join(present) if present else "none"
            raise ValueError(
                f"step {self.name!r}: expected exactly one of {', '.join(STEP_KINDS)}, found {found}"
            )
        if self.exec is None:
            stray = [k for k in _EXEC_ONLY if k in self.model_fields_set]
            if stray:
                raise ValueError(
                    f"step {self.name!r}: {', '.join(stray)}: only valid in exec steps, "
                    f"this is a {self.kind} step"
                )
        elif isinstance(self.exec, str) and not self.shell:
            raise ValueError(
                f"step {self.name!r}: exec is a string but shell is not true; give an argv "
                "list, or add shell: true to run the string through /bin/sh"
            )
        elif isinstance(self.exec, list) and self.shell:
            raise ValueError(
                f"step {self.name!r}: shell: true expects exec as one string, got a list"
            )
        return self

    # -- derived -------------------------------------------------------------------

    @property
    def kind(self) -> StepKind:
        for k in STEP_KINDS:
            if getattr(self, k) is not None:
                return k
        raise AssertionError("validated step without a kind")

    def template_texts(self) -> list[str]:
        """Every templated string of this step (for the ``fence`` default and dry runs)."""
        if self.exec is not None:
            argv = [self.exec] if isinstance(self.exec, str) else list(self.exec)
            return argv + list(self.env.values())
        if self.http is not None:
            h = self.http
            return [
                h.url,
                *h.headers.values(),
                *([h.body] if h.body else []),
                *_strings_in(h.json_body),
            ]
        if self.wait_healthy is not None:
            return [self.wait_healthy.url]
        if self.sql is not None:
            return [self.sql.application_name] if self.sql.application_name else []
        return []

    @property
    def is_fence(self) -> bool:
        if self.fence is not None:
            return self.fence
        if self.sql is not None:
            return True
        if self.agent is not None:
            return self.agent.target == "old"
        if self.exec is not None or self.http is not None:
            return templates.refers_to_old(self.template_texts())
        return False


def _strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings_in(v)]
    return []
