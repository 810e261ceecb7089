"""This router's part of the pair, as the router (router/server.py) builds and runs it:
the etcd client, the :class:`~.node.ClusterNode` and the :class:`~.commands.CommandQueue`.

Rules:

1. Built from ``config.cluster`` with the router's controllers (they follow from then
   on, router/cluster/node.py); started once the admin listener is bound (its address
   goes into the member record); two named tasks, ``cluster`` and ``cluster:commands``.
2. A task that ends on its own is a bug: the router is told (``on_failure``) and stops.
3. ``stop()`` cancels both tasks, then stands every service down and revokes the lease,
   so the other routers take over at once; ``close()`` closes the etcd client last.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from router.config import Config
from router.failover.controller import ServiceController
from router.failover.feed import EventFeed
from router.failover.state import StateFile

from .commands import CommandQueue
from .etcd import EtcdClient
from .node import ClusterNode

__all__ = ["RouterPair"]

log = logging.getLogger("hotspare.cluster")

Execute = Callable[[str, str, dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]


class RouterPair:
    def __init__(self, config: Config, controllers: Mapping[str, ServiceController], feed: EventFeed,
                 state_file: StateFile | None = None) -> None:
        cc = config.cluster
        if cc is None:
            raise ValueError("RouterPair needs a cluster: section in the config")
        self.client = EtcdClient.from_config(cc.etcd)
        self.node = ClusterNode(config, self.client, controllers, feed, state_file=state_file)
        self.commands = CommandQueue(self.client, cc.etcd.prefix, cc.name)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, admin: tuple[str, int], execute: Execute, on_failure: Callable[[BaseException], None]) -> None:
        """Rule 1."""
        node = self.node
        node.admin = f"{admin[0]}:{admin[1]}"
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(node.run(), name="cluster"),
            loop.create_task(self.commands.serve(node.decides, node.term_of, execute), name="cluster:commands"),
        ]

        def done(t: asyncio.Task[None]) -> None:  # rule 2
            if t.cancelled():
                return
            exc = t.exception() or RuntimeError(f"{t.get_name()} returned")
            log.critical("%s stopped: %s; the router stops", t.get_name(), exc, exc_info=exc)
            on_failure(exc)

        for task in self._tasks:
            task.add_done_callback(done)

    async def stop(self) -> None:
        """Rule 3."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.node.close()

    async def close(self) -> None:
        await self.client.close()
