"""``hotspare sync -c FILE --node NAME [--from NODE]``: one-shot mirror of every root
from the active node's agent into this node's folders, with a progress bar.

For the first copy of a large tree; the same planner, guards and atomic placement as
the agent's sink (a running agent on this node should be stopped first).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

import aiohttp

from replication.planner import Plan
from replication.sink import RootSink, SinkSettings

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="the deployment file (YAML)")
    parser.add_argument("--node", required=True, help="this node (the one receiving files)")
    parser.add_argument("--from", dest="source", help="node to copy from (default: the router's active)")
    parser.add_argument("--root", action="append", help="only these roots (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


async def _active_of(config: Any, node: str) -> str:
    url = (config.replication.router_url or f"http://{config.admin.listen}") + "/v1/status"
    async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
        body = await r.json(content_type=None)
    for svc in body.get("services", []):
        if any(b.get("name") == node for b in svc.get("backends", [])):
            return str(svc["active"])
    raise LookupError(f"the router lists no service with a backend named {node!r}")


async def sync(config: Any, node: str, source: str | None, roots: list[str] | None, progress: bool) -> int:
    from tqdm import tqdm

    rep = config.replication
    service = next(s for s in config.services if any(b.name == node for b in s.backends))
    source = source or await _active_of(config, node)
    url = service.backend(source).agent
    if not url:
        print(f"hotspare sync: backend {source!r} has no agent URL", file=sys.stderr)
        return 2
    status = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=90)) as session:
        for r in rep.roots:
            if roots and r.name not in roots:
                continue
            settings = SinkSettings(
                marker=rep.marker_file, exclude=tuple(r.exclude), transfers=rep.transfers,
                bundle_file_max=rep.bundle_file_max, max_delete_share=rep.max_delete_share,
                max_delete_free=rep.max_delete_free, fsync=rep.fsync,
            )
            files_bar = tqdm(desc=f"{r.name} files", unit="file", disable=not progress, position=0)
            bytes_bar = tqdm(desc=f"{r.name} bytes", unit="B", unit_scale=True, unit_divisor=1024,
                             disable=not progress, position=1)

            def on_plan(p: Plan, fb: Any = files_bar, bb: Any = bytes_bar) -> None:
                fb.total = len(p.copies)
                bb.total = sum(c.entry.size for c in p.copies)
                fb.refresh()
                bb.refresh()

            def on_progress(files: int, nbytes: int, fb: Any = files_bar, bb: Any = bytes_bar) -> None:
                fb.update(files)
                bb.update(nbytes)

            sink = RootSink(r.name, r.path_for(node), url, rep.secret(), session, settings, progress=on_progress)
            sink.on_plan = on_plan
            try:
                p = await sink.reconcile()
            finally:
                sink.close()
                files_bar.close()
                bytes_bar.close()
            f = sink.fresh
            print(f"{r.name}: {'in sync' if f.in_sync else 'NOT in sync'}; "
                  + ", ".join(f"{k} {v}" for k, v in p.counts.items() if v)
                  + (f"; {p.refused}" if p.refused else "")
                  + (f"; {f.pending} pending" if f.pending else ""))
            if not f.in_sync:
                status = 1
    return status


def run(args: argparse.Namespace) -> int:
    from router.config import load_config

    logging.basicConfig(level="WARNING")
    config = load_config(args.config)
    if config.replication is None or not config.replication.roots:
        print("hotspare sync: the config has no replication.roots", file=sys.stderr)
        return 2
    if not any(b.name == args.node for s in config.services for b in s.backends):
        print(f"hotspare sync: --node {args.node!r} is not a backend in the config", file=sys.stderr)
        return 2
    return asyncio.run(sync(config, args.node, args.source, args.root, not args.no_progress))
