"""Worker and balancer parameters (``BalancerMember``, ``ProxySet``, ``ProxyPass`` keys)
-> the per-service keys of hotspare's deployment file. Pure; no I/O.

Rules:

1. A parameter either lands in a config key or becomes an :class:`Untranslated` entry
   naming the directive, its file and line, and why. Nothing is dropped silently.
2. hotspare has one value per service where Apache has one per worker: the first member
   that sets a key wins, and a later member that disagrees is reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .parser import Directive

__all__ = ["Balancer", "Untranslated", "Worker", "apache_seconds", "parse_params"]


@dataclass(frozen=True, slots=True)
class Untranslated:
    """A directive (or one parameter of it) with no equivalent, and why."""

    file: str
    line: int
    directive: str
    reason: str

    @classmethod
    def of(cls, d: Directive, reason: str, directive: str | None = None) -> Untranslated:
        return cls(d.file, d.line, directive if directive is not None else d.text(), reason)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.directive}: {self.reason}"


@dataclass
class Worker:
    """One backend URL with its parameters, as one directive wrote it."""

    url: str
    params: dict[str, str]
    directive: Directive

    @property
    def origin(self) -> str:
        parts = urlsplit(self.url)
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        return f"{scheme}://{parts.netloc}"

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def spare(self) -> bool:
        # status=+H (hot standby) or +R (hot spare, httpd >= 2.4.34); -H clears it.
        status = self.params.get("status", "").strip().upper()
        return not status.startswith("-") and ("H" in status or "R" in status)


@dataclass
class Balancer:
    name: str
    members: list[Worker] = field(default_factory=list)
    # ProxySet / ProxyPass parameters of the balancer itself, each with its directive.
    settings: dict[str, tuple[str, Directive]] = field(default_factory=dict)


def parse_params(words: tuple[str, ...]) -> dict[str, str]:
    """``("timeout=5", "status=+H")`` -> ``{"timeout": "5", "status": "+H"}`` (keys lowered)."""
    out: dict[str, str] = {}
    for w in words:
        key, _, value = w.partition("=")
        out[key.lower()] = value
    return out


_SECONDS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|mi|m|h)?\s*$", re.IGNORECASE)


def apache_seconds(value: str) -> float | None:
    """httpd time values: a bare number is seconds; ``ms``, ``s``, ``mi``, ``h`` suffixes."""
    m = _SECONDS.match(value)
    if not m:
        return None
    unit = (m.group(2) or "s").lower()
    return float(m.group(1)) * {"ms": 0.001, "s": 1.0, "mi": 60.0, "m": 60.0, "h": 3600.0}[unit]


def _duration(seconds: float) -> str:
    if seconds < 1 or seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    return f"{int(seconds)}s"


# Parameter -> why it has no equivalent. Anything not here and not translated below gets
# the generic reason.
_NO_EQUIVALENT = {
    "loadfactor": "hotspare sends all traffic to one active backend; there is no load share",
    "lbset": "hotspare has no load-balancer sets: backends are tried in the order listed",
    "keepalive": "TCP keepalive probes are not configurable; idle pooled connections close after pool.keepalive_timeout",
    "disablereuse": "connections to backends are always pooled and reused",
    "enablereuse": "connections to backends are always pooled and reused",
    "flushpackets": "hotspare always streams response bodies without buffering",
    "flushwait": "hotspare always streams response bodies without buffering",
    "ping": "100-continue/CPING probes of a backend before each request are not supported; health probes run on a timer",
    "smax": "there is no per-process soft connection limit; use pool.max_connections",
    "min": "there is no minimum number of pooled connections",
    "acquire": "a request never waits for a free pooled connection; it opens one up to pool.max_connections",
    "redirect": "session redirection between balancer members is not supported",
    "hcexpr": "health expressions are not translated; set health.expect_status / expect_body by hand",
    "hctemplate": "health-check templates are not translated; set health.* by hand",
    "hcmethod=tcp": "TCP-only checks are not supported; hotspare probes over HTTP (health.method/path)",
    "iobuffersize": "buffer sizes are managed by hotspare",
    "receivebuffersize": "buffer sizes are managed by hotspare",
    "upgrade": "WebSocket upgrades pass through on every service without configuration",
    "secret": "AJP secrets do not apply (hotspare speaks HTTP to backends)",
}


@dataclass
class ServiceKeys:
    """The per-service keys gathered from the workers of one ProxyPass."""

    timeouts: dict[str, str] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    pool: dict[str, Any] = field(default_factory=dict)
    # (section, key) -> the worker that set it, for conflict reports.
    set_by: dict[tuple[str, str], Worker] = field(default_factory=dict)

    def put(self, section: str, key: str, value: Any, w: Worker, param: str, notes: list[Untranslated]) -> None:
        target: dict[str, Any] = getattr(self, section)
        if key in target and target[key] != value:
            first = self.set_by[(section, key)]
            notes.append(Untranslated.of(
                w.directive,
                f"members disagree; hotspare has one {section}.{key} per service and keeps "
                f"{target[key]!r} from {first.directive.where}",
                directive=f"{w.directive.name} {w.url} {param}",
            ))
            return
        target[key] = value
        self.set_by[(section, key)] = w


def worker_keys(workers: list[Worker], notes: list[Untranslated]) -> ServiceKeys:
    """Translate every worker parameter; report the ones that have no equivalent."""
    keys = ServiceKeys()
    has_hcinterval = any("hcinterval" in w.params for w in workers)
    for w in workers:
        for name, value in w.params.items():
            param = f"{name}={value}"

            def bad(reason: str, w: Worker = w, param: str = param) -> None:
                notes.append(Untranslated.of(w.directive, reason, directive=f"{w.directive.name} {w.url} {param}"))

            seconds = apache_seconds(value)
            if name in ("status", "route"):
                status = value.upper()
                if name == "status" and any(c in status for c in "DSIENC"):
                    bad("member states other than +H/+R (hot spare) are not supported; "
                        "the member is listed as a normal backend")
            elif name == "timeout" and seconds is not None:
                keys.put("timeouts", "first_byte", _duration(seconds), w, param, notes)
                keys.put("timeouts", "idle", _duration(seconds), w, param, notes)
            elif name == "connectiontimeout" and seconds is not None:
                keys.put("timeouts", "connect", _duration(seconds), w, param, notes)
            elif name == "retry" and seconds is not None:
                if has_hcinterval:
                    bad("with hcinterval set, hotspare's probes decide when a failed backend is back; "
                        "there is no separate retry timer")
                else:
                    # Apache retries a failed worker after `retry`; hotspare probes it
                    # every health.interval (at least 1s: 0 would be a busy loop).
                    keys.put("health", "interval", _duration(max(seconds, 1.0)), w, param, notes)
            elif name == "hcmethod":
                method = value.upper().removesuffix("11")
                if method in ("GET", "HEAD", "OPTIONS", "POST"):
                    keys.put("health", "method", method, w, param, notes)
                else:
                    bad(_NO_EQUIVALENT["hcmethod=tcp"] if method == "TCP" else f"unknown health-check method {value!r}")
            elif name == "hcuri":
                keys.put("health", "path", value if value.startswith("/") else "/" + value, w, param, notes)
            elif name == "hcinterval" and seconds is not None:
                keys.put("health", "interval", _duration(seconds), w, param, notes)
            elif name in ("hcpasses", "hcfails") and value.isdigit() and int(value) >= 1:
                keys.put("health", "rise" if name == "hcpasses" else "fall", int(value), w, param, notes)
            elif name == "max" and value.isdigit() and int(value) >= 1:
                keys.put("pool", "max_connections", int(value), w, param, notes)
            elif name == "ttl" and seconds is not None:
                keys.put("pool", "keepalive_timeout", _duration(seconds), w, param, notes)
            elif name in _NO_EQUIVALENT:
                bad(_NO_EQUIVALENT[name])
            elif name in ("timeout", "connectiontimeout", "retry", "hcinterval", "hcpasses", "hcfails", "max", "ttl"):
                bad(f"cannot read the value {value!r}")
            else:
                bad("not a parameter hotspare knows how to translate")
    return keys
