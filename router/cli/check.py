"""``hotspare check-config [--env-file FILE] CONFIG``: print every error of a deployment
file; exit 2 on any.

``--env-file`` reads ``NAME=value`` lines in the format of systemd's ``EnvironmentFile=``
(``/etc/hotspare/env`` in deploy/systemd). Its values win over the shell's environment:
the service gets the file's values, not whatever the operator's shell has exported, and
the check should see what the service will see. Variables the file does not name still
come from the environment.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from router.config import load_config, read_env_file
from router.errors import ConfigError

# Env files looked for beside the config, in this order, to name in the hint when a
# variable is unset: the shipped examples' one, then the installed one (deploy/systemd).
ENV_FILE_NAMES = ("example.env", "env")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the deployment file (YAML)")
    parser.add_argument(
        "--env-file",
        metavar="FILE",
        help="read NAME=value lines (systemd EnvironmentFile format, like /etc/hotspare/env) "
        "for ${NAME} references; the file's values win over the environment's",
    )


def _env_file_hint(config: str) -> list[str]:
    beside = Path(config).parent
    for name in ENV_FILE_NAMES:
        candidate = beside / name
        if candidate.is_file():
            return [f"or read them from {candidate}: hotspare check-config --env-file {candidate} {config}"]
    return []


def run(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.env_file:
        env.update(read_env_file(args.env_file))
    try:
        config = load_config(args.file, env=env)
    except ConfigError as exc:
        if exc.hints and not args.env_file:
            exc.hints += _env_file_hint(args.file)
        raise  # a ConfigError becomes exit 2 in cli.main
    names = ", ".join(s.name for s in config.services)
    print(f"{args.file}: OK ({len(config.services)} service(s): {names})")
    return 0
