"""The worker process: ``python -m router.workers --channel FD --listen FD[,FD...]``,
started by the decider's :class:`~.supervisor.Supervisor`, never by hand.

Rules:

1. The first message on the channel is the decider's hello: the config and every
   service's :class:`~.view.ServiceView`. The worker follows that state BEFORE it accepts
   a connection, then says ``ready``.
2. From then on it serves the inherited listeners and takes, in order: ``views`` (follow
   them; ``acked``: the last of its failure reports they reflect), ``abort`` (requests waiting on a dead backend stop waiting), ``reload`` (a new
   config with the views that go with it). It sends its traffic reports
   (:mod:`.reports`) and a metrics snapshot every ``METRICS_INTERVAL`` s.
3. SIGTERM or SIGINT, the end of the channel (the decider is gone) or the decider's
   death (``PR_SET_PDEATHSIG``): graceful stop as the router's, while it still follows
   the decider (a request held during a promotion is released, not dropped); then the
   last reports and metrics, and exit 0. SIGHUP is ignored: reloads come over the channel.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from typing import Any

from router import metrics
from router.config import Config, LogConfig

from .channel import Channel, ChannelError
from .datapath import WorkerDataPath
from .metricsmerge import METRICS_INTERVAL, snapshot
from .reports import TrafficReporter
from .view import ServiceView

__all__ = ["main", "run_worker"]

log = logging.getLogger("hotspare.worker")

_PR_SET_PDEATHSIG = 1


def _setup_logging(cfg: LogConfig, index: int) -> None:
    handler: logging.Handler = logging.StreamHandler(sys.stderr) if cfg.error_log == "-" else logging.FileHandler(cfg.error_log)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s %(name)s[worker {index}]: %(message)s"))
    root = logging.getLogger("hotspare")
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(cfg.level.upper())
    root.propagate = False


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _views(raw: Any) -> dict[str, ServiceView]:
    return {str(name): ServiceView.from_dict(v) for name, v in raw.items()}


class _Worker:
    def __init__(self, channel: Channel, dp: WorkerDataPath) -> None:
        self.channel = channel
        self.dp = dp
        self.stopping = asyncio.Event()

    async def read(self) -> None:
        while True:
            try:
                msg = await self.channel.receive()
            except ChannelError as exc:
                log.error("channel to the decider broken: %s; stopping", exc)
                msg = None
            if msg is None:
                self.stopping.set()
                return
            kind = msg.get("t")
            if kind == "views":
                self.dp.follow(_views(msg["views"]), int(msg.get("acked", 0)))
            elif kind == "abort":
                self.dp.abort(msg["service"], msg["backend"])
            elif kind == "reload":
                self.dp.reload(msg["config"], _views(msg["views"]), int(msg.get("acked", 0)))
            else:
                log.error("unknown message %r from the decider; ignored", kind)

    async def send_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_INTERVAL)  # pacing, not a wait for a condition
            self.channel.send({"t": "metrics", "samples": snapshot(metrics.REGISTRY)})


async def run_worker(channel_fd: int, listen_fds: list[int]) -> int:
    _die_with_parent()
    channel = await Channel.open(socket.socket(fileno=channel_fd), accept_pickle=True)
    hello = await channel.receive()
    if not isinstance(hello, dict) or hello.get("t") != "hello" or not isinstance(hello.get("config"), Config):
        print("hotspare worker: no hello from the decider; exiting", file=sys.stderr)
        return 1
    config: Config = hello["config"]
    _setup_logging(config.log, int(hello["index"]))
    reporter = TrafficReporter(channel.send)
    dp = WorkerDataPath(config, _views(hello["views"]), reporter, share=int(hello["workers"]))
    await dp.serve([socket.socket(fileno=fd) for fd in listen_fds])
    worker = _Worker(channel, dp)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stopping.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    channel.send({"t": "ready", "pid": os.getpid()})
    reader = loop.create_task(worker.read(), name="worker:channel")
    sender = loop.create_task(worker.send_metrics(), name="worker:metrics")
    try:
        await worker.stopping.wait()
        log.info("stopping: no new connections; in-flight requests get %ss", dp.config.shutdown_grace)
        await dp.stop()
        reporter.flush()
        channel.send({"t": "metrics", "samples": snapshot(metrics.REGISTRY)})
        with contextlib.suppress(ConnectionError):
            await channel.drain()
    finally:
        for task in (reader, sender):
            task.cancel()
        await asyncio.gather(reader, sender, return_exceptions=True)
        channel.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.workers")
    parser.add_argument("--channel", type=int, required=True)
    parser.add_argument("--listen", default="")
    args = parser.parse_args(argv)
    fds = [int(x) for x in args.listen.split(",") if x]
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(run_worker(args.channel, fds))
