"""``hotspare promote``: preview, ask for, confirm and review promotions.

    hotspare promote -c FILE --service S --to B --dry-run   # print the plan, run nothing
    hotspare promote -c FILE --service S --to B             # ask the router to do it
    hotspare promote -c FILE --confirm-fenced --service S   # release a fence hold
    hotspare promote -c FILE --history [--service S]        # the audit log as a table

Rules:

1. The running router is the single decider: a real promotion or a fence confirmation
   is a request to its admin API (``POST /v1/services/{S}/failover`` with ``{"to": B}``,
   ``POST /v1/services/{S}/confirm-fenced``, bearer admin token). This command never
   runs steps itself, so two promotions can never race.
2. A dry run never refuses and changes nothing: it prints each step with its templates
   resolved, plus warnings (target already active or unhealthy, router unreachable,
   step that cannot work such as an agent step without an agent URL).
3. Exit status: 0 done, 1 the router refused or could not be reached, 2 bad usage or
   config (unknown service or backend).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from promote.audit import AuditLog, format_table
from promote.pipeline import Pipeline
from router.config import Config, ServiceConfig, load_config, parse_hostport
from router.failover.promotion import promotion_context

__all__ = ["add_arguments", "admin_url", "run"]

_HTTP_TIMEOUT = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="the deployment file")
    parser.add_argument("--service", metavar="S", help="the service to promote in")
    parser.add_argument("--to", metavar="B", help="the backend to make active")
    parser.add_argument("--dry-run", action="store_true", help="print the steps; run nothing")
    parser.add_argument(
        "--confirm-fenced",
        action="store_true",
        help="tell the router the old active is fenced (releases a fence_failure: hold)",
    )
    parser.add_argument("--history", action="store_true", help="print past promotions")
    parser.add_argument("--limit", type=int, default=20, help="--history: last N runs (default 20)")
    parser.add_argument(
        "--router", metavar="URL", help="admin API URL (default: from admin.listen)"
    )


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # a ConfigError becomes exit 2 in cli.main
    if args.history:
        return _history(config, args.service, args.limit)
    if args.service is None:
        return _usage("--service is required (except with --history)")
    try:
        service = config.service(args.service)
    except KeyError:
        names = ", ".join(s.name for s in config.services)
        return _usage(f"no service {args.service!r} in {args.config} (services: {names})")
    base = args.router or admin_url(config)
    if args.confirm_fenced:
        return _post(config, f"{base}/v1/services/{service.name}/confirm-fenced", {})
    if args.to is None:
        return _usage("--to is required to promote (or use --confirm-fenced / --history)")
    if args.to not in [b.name for b in service.backends]:
        names = ", ".join(b.name for b in service.backends)
        return _usage(f"service {service.name} has no backend {args.to!r} (backends: {names})")
    if args.dry_run:
        return _dry_run(config, service, args.to, base)
    return _post(config, f"{base}/v1/services/{service.name}/failover", {"to": args.to})


def admin_url(config: Config) -> str:
    host, port = parse_hostport(config.admin.listen)
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _dry_run(config: Config, service: ServiceConfig, target: str, base: str) -> int:
    warnings: list[str] = []
    status = _get_status(base, service.name, warnings)
    active = status.get("active") if status else None
    if not isinstance(active, str) or active not in [b.name for b in service.backends]:
        others = [b.name for b in service.backends if b.name != target]
        active = others[0] if others else target
        warnings.append(f"current active unknown; assuming {active}")
    if active == target:
        warnings.append(
            f"{target} is already the active backend of {service.name}: a promotion would change nothing"
        )
    epoch_now = status.get("epoch") if status else None
    if isinstance(epoch_now, int) and not isinstance(epoch_now, bool):
        epoch = epoch_now + 1
    else:
        epoch = 0
        warnings.append("epoch unknown (router not reachable); {epoch} is shown as 0")
    for b in (status or {}).get("backends", []) or []:
        if isinstance(b, dict) and b.get("name") == target and b.get("healthy") is False:
            warnings.append(
                f"target {target} is failing its health probes: the router would refuse it"
            )
    ctx = promotion_context(service, active, target, epoch, "MANUAL", "manual")
    pipeline = Pipeline(service.promote, fence_failure=service.fence_failure, audit=None)
    print("DRY RUN: nothing will be executed")
    for w in warnings:
        print(f"WARNING: {w}")
    for line in pipeline.plan(ctx):
        print(line)
    return 0


def _get_status(base: str, service: str, warnings: list[str]) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{base}/v1/status", timeout=_HTTP_TIMEOUT) as resp:
            doc = json.loads(resp.read())
    except (OSError, ValueError) as exc:
        warnings.append(f"router not reachable at {base} ({_reason(exc)})")
        return None
    for s in doc.get("services", []) if isinstance(doc, dict) else []:
        if isinstance(s, dict) and s.get("name") == service:
            return s
    warnings.append(f"router at {base} does not list service {service}")
    return None


def _post(config: Config, url: str, body: dict[str, Any]) -> int:
    if not config.admin.token:
        print("error: admin.token is not set in the config; the router refuses changes without it",
              file=sys.stderr)  # fmt: skip
        return 2
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {config.admin.token}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=_HTTP_TIMEOUT) as resp:
            print(resp.read().decode("utf-8", errors="replace").strip())
            return 0
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", errors="replace").strip()
        print(f"error: router answered {exc.code} to POST {url}: {text}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"error: router not reachable at {url} ({_reason(exc)}); is it running?",
            file=sys.stderr,
        )
        return 1


def _history(config: Config, service: str | None, limit: int) -> int:
    audit = AuditLog(config.audit_log_path)
    runs = audit.history(service)[-max(limit, 1) :]
    if not runs:
        print(f"no promotions recorded in {audit.path}")
        return 0
    print(format_table(runs))
    unfinished = [r for r in runs if not r.finished]
    if unfinished:
        print(f"\n{len(unfinished)} unfinished run(s): the router stopped during them")
    if audit.bad_lines:
        print(f"({audit.bad_lines} unreadable line(s) in {audit.path} skipped)")
    return 0


def _usage(message: str) -> int:
    print(f"hotspare promote: error: {message}", file=sys.stderr)
    return 2


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
