"""``hotspare doctor -c FILE [--json]``: check a deployment end to end from this host.

Rules:

1. One line per check: its status, its id, what was found and, unless it passed, what
   to do. ``--json`` prints the same checks as one JSON document for scripts.
2. Exit status (the design's contract): 0 when no check failed, 1 otherwise. A config
   that does not load is one failed check, ``config``, listing every error, and exits 1,
   not 2: doctor's answer is always pass/fail, and the other checks all need the config,
   so they are not run (``hotspare check-config`` exits 2 on the same file).
3. What is checked (``doctor_net``, ``doctor_local``): the config; every backend's health
   path; every agent with the replication token, its roots (folder, marker, room for the
   largest file) and its clock; the promotion steps' programs and SQL DSNs; the state
   file's folder and lock. Network checks run at the same time, each with ``--timeout``.
4. Run it where the router runs, as root or as the router's user: the state file checks
   are about this host. Next to the running router, the held lock is INFO, not a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from router.config import Config, load_config, read_env_file
from router.errors import ConfigError

from .doctor_local import check_programs, check_state_file, check_state_lock
from .doctor_model import Check, Status, exit_code
from .doctor_net import check_agents, check_backends, check_sql

__all__ = ["add_arguments", "render_text", "run", "run_checks"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="the deployment file (YAML)")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument("--env-file", metavar="FILE",
                        help="read NAME=value lines (like /etc/hotspare/env) for ${NAME} references; "
                        "the file's values win over the environment's (as in check-config)")
    parser.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS",
                        help="limit of every network call (default: 3)")
    parser.add_argument("--max-skew", type=float, default=2.0, metavar="SECONDS",
                        help="clock difference with an agent that is warned about (default: 2)")


def run(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.env_file:
        env.update(read_env_file(args.env_file))
    checks = run_checks(Path(args.config), max(args.timeout, 0.1), args.max_skew, env)
    if args.json:
        print(json.dumps(as_json(args.config, checks), indent=2))
    else:
        print(render_text(checks))
    return exit_code(checks)


def run_checks(path: Path, timeout: float, max_skew: float, env: Mapping[str, str] | None = None,
               ) -> list[Check]:
    try:
        config = load_config(path, env=env)
    except ConfigError as exc:
        n = len(exc.errors)
        detail = f"{path}: {n} error{'s' if n != 1 else ''}:" + "".join(f"\n    {e}" for e in exc.errors)
        return [Check("config", Status.FAIL, detail,
                      f"fix them (hotspare check-config {path} lists the same); "
                      "nothing else was checked")]
    names = ", ".join(s.name for s in config.services)
    first = Check("config", Status.PASS, f"{path}: valid ({len(config.services)} service(s): {names})")
    return [first, *asyncio.run(_network(config, timeout, max_skew)), *check_programs(config),
            check_state_file(config), check_state_lock(config)]


async def _network(config: Config, limit: float, max_skew: float) -> list[Check]:
    backends, agents, sql = await asyncio.gather(
        check_backends(config, limit), check_agents(config, limit, max_skew), check_sql(config, limit))
    return [*backends, *agents, *sql]


def as_json(config: str, checks: Sequence[Check]) -> dict[str, object]:
    counts = {s.value: sum(1 for c in checks if c.status is s) for s in Status}
    return {"config": config, "ok": exit_code(checks) == 0, "counts": counts,
            "checks": [c.as_json() for c in checks]}


def render_text(checks: Sequence[Check]) -> str:
    width = max((len(c.id) for c in checks), default=0)
    lines = []
    for c in checks:
        fix = f" -> {c.fix}" if c.fix and c.status is not Status.PASS else ""
        lines.append(f"{c.status.value.upper():<4}  {c.id:<{width}}  {c.detail}{fix}")
    failed = sum(1 for c in checks if c.status is Status.FAIL)
    warned = sum(1 for c in checks if c.status is Status.WARN)
    verdict = "all checks passed" if not failed else f"{failed} check(s) failed"
    lines.append(f"{verdict}" + (f", {warned} warning(s)" if warned else "") + f" ({len(checks)} checks)")
    return "\n".join(lines)
