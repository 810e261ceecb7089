"""``hotspare check-config FILE``: print every error of a deployment file; exit 2 on any."""

from __future__ import annotations

import argparse

from router.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the deployment file (YAML)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.file)  # a ConfigError becomes exit 2 in cli.main
    names = ", ".join(s.name for s in config.services)
    print(f"{args.file}: OK ({len(config.services)} service(s): {names})")
    return 0
