"""``hotspare status`` and ``hotspare switchover``, and the one admin API client
(:class:`AdminClient`) that every command talking to the router uses (``hotspare
promote`` too).

Rules:

1. These commands only talk to a running router (``GET /v1/status``,
   ``POST /v1/services/{name}/switchover``); they never read the state file or decide
   anything themselves, so they cannot disagree with the router.
2. Where the router is: ``--admin URL``, else ``admin.listen`` of ``-c FILE``, else
   ``$HOTSPARE_ADMIN_URL``, else ``http://127.0.0.1:9100``. The token: ``admin.token`` of
   ``-c FILE``, else ``$HOTSPARE_ADMIN_TOKEN``. It is sent on every call (reads too, so a
   router that protects reads also works).
3. Output is a table for people; ``--json`` prints the router's JSON unchanged, for
   scripts. Exit status: 0 done, 1 the router refused or could not be reached (with a
   message saying which and what to do), 2 bad config (via ``cli.main``).
4. Plain ``urllib``: a one-shot command needs no event loop, and proxies from the
   environment are ignored (the admin API is local; a proxy would only get in the way).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from router.admin.page import lag_text, spare_readiness
from router.config import Config, load_config, parse_hostport

__all__ = [
    "AdminClient",
    "AdminError",
    "add_status_arguments",
    "add_switchover_arguments",
    "admin_url",
    "format_status",
    "format_switchover",
    "run_status",
    "run_switchover",
]

DEFAULT_ADMIN_URL = "http://127.0.0.1:9100"


class AdminError(Exception):
    """The admin API could not be reached or refused the call; the message says which.
    ``status`` is the router's answer (None: no answer), ``reason`` the bare cause."""

    def __init__(self, message: str, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason or message


class AdminClient:
    def __init__(self, base_url: str, token: str | None, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        # No ProxyHandler from the environment: the admin API is reached directly.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        url = self.base_url + path
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw, code = resp.read(), resp.status
        except urllib.error.HTTPError as exc:
            message, detail = self._refusal(method, url, exc)
            raise AdminError(message, exc.code, detail) from None
        except urllib.error.URLError as exc:
            reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
            raise AdminError(
                f"cannot reach the router's admin API at {self.base_url}: {reason} "
                f"(is `hotspare router` running? give its address with --admin URL or -c FILE)",
                reason=reason,
            ) from None
        except TimeoutError:
            raise AdminError(
                f"{method} {url}: no answer within {self.timeout:g}s (raise --timeout?)",
                reason=f"no answer within {self.timeout:g}s",
            ) from None
        except OSError as exc:  # the connection broke mid-answer
            raise AdminError(f"{method} {url}: {exc}", reason=str(exc) or type(exc).__name__) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise AdminError(f"{method} {url}: expected JSON, got {raw[:80]!r}", code) from None

    def _refusal(self, method: str, url: str, exc: urllib.error.HTTPError) -> tuple[str, str]:
        """(the message, the router's own words: its JSON error or its raw body)."""
        detail = ""
        raw = b""
        try:
            raw = exc.read()
            payload = json.loads(raw or b"null")
            if isinstance(payload, Mapping):
                detail = str(payload.get("error") or payload.get("message") or "")
        except (ValueError, OSError):
            pass
        text = raw.decode("utf-8", errors="replace").strip()
        if exc.code in (401, 403):
            hint = (
                "the token was wrong" if self.token else "no token was sent"
            ) + "; set HOTSPARE_ADMIN_TOKEN or pass -c FILE with admin.token"
            return f"{method} {url}: refused ({exc.code}): {detail or hint}" + (
                f" ({hint})" if detail else ""
            ), text
        return f"{method} {url}: the router answered {exc.code}: {detail or exc.reason}", text


# -- where the router is -------------------------------------------------------------


def admin_url(config: Config) -> str:
    """The admin API's base URL from ``admin.listen``."""
    host, port = parse_hostport(config.admin.listen)
    # A wildcard listener is reached on loopback from this machine.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def client_from_args(args: argparse.Namespace) -> AdminClient:
    token = os.environ.get("HOTSPARE_ADMIN_TOKEN") or None
    url = os.environ.get("HOTSPARE_ADMIN_URL") or DEFAULT_ADMIN_URL
    if args.config:
        config = load_config(args.config)  # ConfigError -> exit 2 in cli.main
        url = admin_url(config)
        token = config.admin.token or token
    if args.admin:
        url = args.admin
    return AdminClient(url, token, args.timeout)


def _common(parser: argparse.ArgumentParser, timeout: float) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-c", "--config", metavar="FILE", help="deployment file (admin.listen, admin.token)")
    where.add_argument("--admin", metavar="URL", help=f"admin API base URL (default {DEFAULT_ADMIN_URL})")
    parser.add_argument("--json", action="store_true", help="print the router's JSON answer unchanged")
    parser.add_argument(
        "--timeout", type=float, default=timeout, metavar="SECONDS",
        help=f"how long to wait for the router (default {timeout:g})",
    )


# -- tables ----------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = []
    for r in [header, *rows]:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return out


def _s(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _ago(ts: object, now: float) -> str:
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f" ({max(0.0, now - ts):.0f}s ago)"


def _alarm_lines(services: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each alarm, newest first, with what to do and the runbook section (the router's
    ``alarm_hints``, paired with ``alarms`` by position)."""
    lines = []
    for s in services:
        alarms = [str(a) for a in s.get("alarms") or []]
        hints = [h if isinstance(h, Mapping) else {} for h in s.get("alarm_hints") or []]
        for i in reversed(range(len(alarms))):
            lines.append(f"  [{_s(s.get('name'))}] {alarms[i]}")
            h = hints[i] if i < len(hints) else {}
            if h.get("todo"):
                lines.append(f"    what to do: {h['todo']} (read {h.get('runbook')})")
    return ["", "ALARMS", *lines] if lines else []


def _cluster_lines(cluster: object) -> list[str]:
    """A pair's router: etcd, the deciders, each router's view of each backend."""
    if not isinstance(cluster, Mapping):
        return []
    def _map(value: object) -> Mapping[str, Any]:
        return value if isinstance(value, Mapping) else {}

    me = cluster.get("name")
    etcd = _map(cluster.get("etcd"))
    health = "ok" if etcd.get("ok") else f"UNREACHABLE ({_s(etcd.get('error'))}): no failover until it answers"
    deciders = _map(cluster.get("deciders"))
    who = ", ".join(f"{svc}: {'NOBODY' if r is None else r}{' (this router)' if r == me and r else ''}"
                    for svc, r in deciders.items())
    lines = ["", f"CLUSTER (seen from {_s(me)})", f"  etcd: {health}", f"  deciders: {who or '-'}"]
    members = [m for m in cluster.get("members") or [] if isinstance(m, Mapping)]
    cols = list(dict.fromkeys((str(svc), str(b)) for m in members
                              for svc, view in _map(m.get("views")).items() for b in _map(view)))
    rows = [[_s(m.get("name")), "live" if m.get("live") else "GONE", _s(m.get("admin")),
             *[_s(_map(_map(m.get("views")).get(svc)).get(b)) for svc, b in cols]] for m in members]
    if rows:
        lines += ["", *_table(["ROUTER", "LEASE", "ADMIN", *[f"{svc}/{b}" for svc, b in cols]], rows)]
    return lines


def format_status(snapshot: Mapping[str, Any], now: float, events: int = 5) -> str:
    services = [s for s in snapshot.get("services") or [] if isinstance(s, Mapping)]
    if not services:
        return "no services"
    rows = []
    for s in services:
        spare, ready, reasons = spare_readiness(s)
        spare_text = f"{_s(spare)} ready" if ready else f"{_s(spare)} NOT READY ({'; '.join(reasons)})"
        flags = []
        if s.get("held_requests"):
            flags.append(f"{s['held_requests']} held")
        if s.get("fencing_on_hold") or s.get("state") == "fence_hold":
            flags.append("FENCING ON HOLD")
        rows.append([_s(s.get("name")), _s(s.get("state")).upper(), _s(s.get("active")),
                     _s(s.get("epoch")), spare_text, ", ".join(flags)])
    lines = _table(["SERVICE", "STATE", "ACTIVE", "EPOCH", "SPARE", "NOTES"], rows)
    brows = []
    for s in services:
        for b in s.get("backends") or []:
            is_active = b.get("name") == s.get("active")
            healthy = b.get("healthy")
            probe = b.get("last_probe") if isinstance(b.get("last_probe"), Mapping) else {}
            brows.append([
                f"{_s(s.get('name'))}/{_s(b.get('name'))}",
                _s(b.get("role") or ("active" if is_active else "spare")),
                "up" if healthy else ("DOWN" if healthy is not None else "-"),
                _s(b.get("url")),
                _s(probe.get("detail")) if probe else "-",
                lag_text(b, is_active).replace("—", "-"),
            ])
    lines += ["", *_table(["BACKEND", "ROLE", "HEALTH", "URL", "LAST PROBE", "REPL LAG"], brows)]
    lines += _cluster_lines(snapshot.get("cluster"))
    lines += _alarm_lines(services)
    evs = [
        {**e, "service": e.get("service") or s.get("name")}
        for s in services for e in (s.get("events") or []) if isinstance(e, Mapping)
    ] + [e for e in snapshot.get("events") or [] if isinstance(e, Mapping)]
    evs.sort(key=lambda e: e.get("at") or 0, reverse=True)
    if evs and events > 0:
        lines += ["", "RECENT EVENTS"]
        for e in evs[:events]:
            svc = f"[{e['service']}] " if e.get("service") else ""
            lines.append(f"  {_ago(e.get('at'), now)}  {svc}{_s(e.get('kind'))}: {_s(e.get('message'))}")
    return "\n".join(lines)


def format_switchover(result: Mapping[str, Any], service: str, to: str, dry_run: bool) -> str:
    """People's view of the router's switchover answer; unknown keys are shown as they are."""
    head = "DRY RUN: would switch" if dry_run else "switched"
    frm = result.get("from") or result.get("old")
    lines = [f"{head} service {service} " + (f"from {frm} " if frm else "") + f"to {to}"]
    if result.get("epoch") is not None:
        lines[0] += f" (epoch {result['epoch']})"
    known = {"from", "old", "to", "epoch", "steps", "warnings", "service", "dry_run", "ok"}
    steps = result.get("steps") or []
    if steps:
        lines.append("steps:")
        for i, step in enumerate(steps, 1):
            if isinstance(step, Mapping):
                desc = step.get("description") or step.get("name") or json.dumps(step)
                outcome = f" -> {step['outcome']}" if step.get("outcome") else ""
                lines.append(f"  {i}. {desc}{outcome}")
            else:
                lines.append(f"  {i}. {step}")
    for w in result.get("warnings") or []:
        lines.append(f"WARNING: {w}")
    for k, v in result.items():
        if k not in known:
            lines.append(f"{k}: {v if isinstance(v, str) else json.dumps(v)}")
    return "\n".join(lines)


# -- commands --------------------------------------------------------------------------


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser, timeout=10.0)
    parser.add_argument("--events", type=int, default=5, metavar="N", help="recent events to show (default 5)")


def run_status(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    try:
        snapshot = client.request("GET", "/v1/status")
    except AdminError as exc:
        print(f"hotspare status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(snapshot, indent=2, sort_keys=True))
    else:
        print(format_status(snapshot, now=time.time(), events=args.events))
    return 0


def add_switchover_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", required=True, help="the service to switch")
    parser.add_argument("--to", required=True, metavar="BACKEND", help="the backend to make active")
    parser.add_argument(
        "--dry-run", action="store_true",
        help="print what would be done, with warnings; change nothing",
    )
    _common(parser, timeout=300.0)


def _check_target(snapshot: Any, service: str, to: str) -> str | None:
    """A clear message when the service or backend does not exist, before asking to switch."""
    services = snapshot.get("services") if isinstance(snapshot, Mapping) else None
    if not isinstance(services, list):
        return None  # an unexpected shape: let the router judge
    names = [s.get("name") for s in services if isinstance(s, Mapping)]
    if service not in names:
        return f"no service {service!r} on this router (services: {', '.join(map(str, names)) or 'none'})"
    svc = services[names.index(service)]
    backends = [b.get("name") for b in svc.get("backends") or [] if isinstance(b, Mapping)]
    if to not in backends:
        return f"service {service!r} has no backend {to!r} (backends: {', '.join(map(str, backends))})"
    return None


def run_switchover(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    try:
        problem = _check_target(client.request("GET", "/v1/status"), args.service, args.to)
        if problem:
            print(f"hotspare switchover: {problem}", file=sys.stderr)
            return 1
        result = client.request(
            "POST",
            f"/v1/services/{quote(args.service, safe='')}/switchover",
            {"to": args.to, "dry_run": bool(args.dry_run)},
        )
    except AdminError as exc:
        print(f"hotspare switchover: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        shown = result if isinstance(result, Mapping) else {"result": result}
        print(format_switchover(shown, args.service, args.to, bool(args.dry_run)))
    return 0
