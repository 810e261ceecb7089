"""``hotspare agent -c FILE --node NAME``: run the replication agent of one node.

The node is a backend name in ``services[].backends``; the agent listens on that
backend's ``agent`` URL (or ``replication.listen[NODE]``), learns its role from the
router (``replication.router_url`` or ``http://<admin.listen>``), and mirrors from the
active backend's agent when it is the spare.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys
from typing import Any
from urllib.parse import urlsplit

from replication.agent import Agent, AgentOptions
from replication.role import Role

__all__ = ["add_arguments", "build_options", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="the deployment file (YAML)")
    parser.add_argument("--node", required=True, help="this node's backend name")
    parser.add_argument("--init", action="store_true",
                        help="create the marker file in every root (also empty ones) when serving")
    parser.add_argument("--role", choices=["auto", "source", "sink"], default="auto",
                        help="auto (default): follow the router; source/sink: fixed, no router")
    parser.add_argument("--active", help="with --role sink: the node to mirror from")
    parser.add_argument("--listen", help="override the listen address host:port")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


class UsageError(Exception):
    pass


def build_options(config: Any, args: argparse.Namespace) -> AgentOptions:
    """Turn the deployment file and the arguments into AgentOptions (UsageError if wrong)."""
    from router.config import parse_hostport

    rep = config.replication
    if rep is None or not rep.roots:
        raise UsageError("the config has no replication.roots; nothing for an agent to do")
    service = next((s for s in config.services if any(b.name == args.node for b in s.backends)), None)
    if service is None:
        names = sorted(b.name for s in config.services for b in s.backends)
        raise UsageError(f"--node {args.node!r}: no backend of that name (backends: {', '.join(names)})")
    peers = {b.name: b.agent for b in service.backends if b.agent}
    listen = args.listen or rep.listen.get(args.node)
    if listen:
        host, port = parse_hostport(listen)
    elif args.node in peers:
        parts = urlsplit(peers[args.node])
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
    else:
        raise UsageError(f"backend {args.node!r} has no 'agent' URL and replication.listen has no entry for it")
    fixed = None
    if args.role == "source":
        fixed = Role("source", service.name, args.node, 0)
    elif args.role == "sink":
        if not args.active or args.active not in peers:
            raise UsageError("--role sink needs --active NODE naming a backend with an agent URL")
        fixed = Role("sink", service.name, args.active, 0)
    server_ssl = client_ssl = None
    if rep.tls.cert is not None and rep.tls.key is not None:
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ssl.load_cert_chain(rep.tls.cert, rep.tls.key)
    if rep.tls.ca_file is not None or not rep.tls.verify:
        client_ssl = ssl.create_default_context(cafile=str(rep.tls.ca_file) if rep.tls.ca_file else None)
        if not rep.tls.verify:
            client_ssl.check_hostname = False
            client_ssl.verify_mode = ssl.CERT_NONE
    return AgentOptions(
        node=args.node, host=host, port=port,
        router_url=None if fixed else (rep.router_url or f"http://{config.admin.listen}"),
        peers=peers, fixed_role=fixed, init_roots=args.init,
        ssl_context=server_ssl, client_ssl=client_ssl,
    )


async def _main(agent: Agent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)  # handlers only set a flag
    await agent.start()
    try:
        await stop.wait()
    finally:
        await agent.stop()


def run(args: argparse.Namespace) -> int:
    from router.config import load_config

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)  # ConfigError -> exit 2 in cli.main
    try:
        options = build_options(config, args)
    except UsageError as exc:
        print(f"hotspare agent: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    assert config.replication is not None  # checked by build_options
    asyncio.run(_main(Agent(config.replication, options)))
    return 0
