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
   resolved, plus warnings (target already active or unhealthy, replication behind,
   router unreachable, step that cannot work such as an agent step without an agent
   URL). The plan is the admin API's own planner (:mod:`router.admin.plan`), fed with
   what ``GET /v1/status`` says; the router is reached with the one admin client
   (:class:`router.cli.client.AdminClient`).
3. Exit status: 0 done, 1 the router refused or could not be reached, 2 bad usage or
   config (unknown service or backend).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from promote.audit import AuditLog, format_table
from router.admin.plan import PlanInput, make_plan
from router.config import Config, ServiceConfig, load_config

from .client import AdminClient, AdminError, admin_url

__all__ = ["add_arguments", "run"]

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
        return _post(config, base, f"/v1/services/{service.name}/confirm-fenced", {})
    if args.to is None:
        return _usage("--to is required to promote (or use --confirm-fenced / --history)")
    if args.to not in [b.name for b in service.backends]:
        names = ", ".join(b.name for b in service.backends)
        return _usage(f"service {service.name} has no backend {args.to!r} (backends: {names})")
    if args.dry_run:
        return _dry_run(config, service, args.to, base)
    return _post(config, base, f"/v1/services/{service.name}/failover", {"to": args.to})


def _dry_run(config: Config, service: ServiceConfig, target: str, base: str) -> int:
    warnings: list[str] = []
    status = _get_status(AdminClient(base, config.admin.token, _HTTP_TIMEOUT), service.name, warnings)
    backends = [b for b in (status or {}).get("backends") or [] if isinstance(b, Mapping)]
    seen = next((b for b in backends if b.get("name") == target), {})
    epoch = (status or {}).get("epoch")
    plan = make_plan(PlanInput(
        service=service, kind="failover",
        state=_text(status, "state"), active=_text(status, "active"),
        epoch=epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
        target=target,
        target_healthy=seen.get("healthy") if isinstance(seen.get("healthy"), bool) else None,
        target_maintenance=seen.get("maintenance") is True,
        replication=seen.get("replication") if isinstance(seen.get("replication"), Mapping) else None,
        refusal=None,  # the router's machine is not asked: the real call will say
    ))
    print("DRY RUN: nothing will be executed")
    for w in [*warnings, *plan.warnings]:
        print(f"WARNING: {w}")
    for line in plan.pipeline:
        print(line)
    return 0


def _text(status: Mapping[str, Any] | None, key: str) -> str | None:
    value = (status or {}).get(key)
    return value if isinstance(value, str) else None


def _get_status(client: AdminClient, service: str, warnings: list[str]) -> dict[str, Any] | None:
    try:
        doc = client.request("GET", "/v1/status")
    except AdminError as exc:
        warnings.append(f"router not reachable at {client.base_url} ({exc.reason})")
        return None
    for s in doc.get("services", []) if isinstance(doc, dict) else []:
        if isinstance(s, dict) and s.get("name") == service:
            return s
    warnings.append(f"router at {client.base_url} does not list service {service}")
    return None


def _post(config: Config, base: str, path: str, body: dict[str, Any]) -> int:
    if not config.admin.token:
        print("error: admin.token is not set in the config; the router refuses changes without it",
              file=sys.stderr)  # fmt: skip
        return 2
    client = AdminClient(base, config.admin.token, _HTTP_TIMEOUT)
    url = client.base_url + path
    try:
        result = client.request("POST", path, body)
    except AdminError as exc:
        if exc.status is None:
            print(f"error: router not reachable at {url} ({exc.reason}); is it running?", file=sys.stderr)
        else:
            print(f"error: router answered {exc.status} to POST {url}: {exc.reason}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


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
