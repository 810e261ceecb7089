"""The ``hotspare`` command line: one subcommand per job, each in its own module.

Every command module exposes ``add_arguments(parser)`` and ``run(args) -> int``. This
file only wires them together; it is the one place a ``ConfigError`` becomes exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hotspare import __version__
from router.errors import ConfigError

# (command, module, one-line help). Modules are imported when the parser is built.
COMMANDS: list[tuple[str, str, str]] = [
    ("router", "router.cli.serve", "run the front door (reverse proxy, failover, admin API)"),
    ("agent", "router.cli.agent", "run the replication agent of one node"),
    ("sync", "router.cli.sync", "one-shot mirror of a node's roots, with progress"),
    ("promote", "router.cli.promote", "run, preview or review promotions"),
    ("switchover", "router.cli.client", "planned switchover of a service to another backend"),
    ("status", "router.cli.client", "show services, backends, health and replication"),
    ("check-config", "router.cli.check", "validate a deployment file; exit 2 on errors"),
    ("doctor", "router.cli.doctor", "check a deployment end to end from this host; exit 1 on a failure"),
    ("demo", "router.cli.demo", "run the whole system on loopback, no config file"),
    ("import-apache", "router.cli.import_apache", "translate an Apache mod_proxy config"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hotspare",
        description="A real hot spare for an application server.",
    )
    parser.add_argument("--version", action="version", version=f"hotspare {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        adder = getattr(module, f"add_{name.replace('-', '_')}_arguments", None) or module.add_arguments
        adder(p)
        runner = getattr(module, f"run_{name.replace('-', '_')}", None) or module.run
        p.set_defaults(_run=runner)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
