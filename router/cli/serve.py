"""``hotspare router -c FILE``: run the front door until SIGTERM; SIGHUP reloads.

Shutdown order and what each signal does are in :meth:`router.server.Router.stop` and
:func:`serve`; signal handlers only set flags.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from router.admin.api import ApiError, reload_from_source
from router.config import Config, LogConfig, load_config
from router.errors import StateFileError
from router.server import Router
from router.workers.supervisor import Supervisor

__all__ = ["add_arguments", "run", "serve", "setup_logging"]

log = logging.getLogger("hotspare.router")


def setup_logging(cfg: LogConfig) -> None:
    handler: logging.Handler
    if cfg.error_log == "-":
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(cfg.error_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("hotspare")
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(cfg.level.upper())
    root.propagate = False


async def serve(config: Config, path: Path) -> int:
    try:
        router = Router(config)
    except StateFileError as exc:
        log.critical("cannot start: %s", exc)
        print(f"hotspare router: cannot start: {exc}", file=sys.stderr)
        return 1
    if config.worker_count > 1:  # the workers serve the listeners; this process decides
        router.data_path = Supervisor(router)
    await router.start()
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    flags = {"stop": False, "reload": False}

    def on_signal(name: str) -> None:  # only sets flags
        flags[name] = True
        wake.set()

    loop.add_signal_handler(signal.SIGTERM, on_signal, "stop")
    loop.add_signal_handler(signal.SIGINT, on_signal, "stop")
    loop.add_signal_handler(signal.SIGHUP, on_signal, "reload")
    router.failed.add_done_callback(lambda _: on_signal("stop"))
    try:
        while not flags["stop"]:
            await wake.wait()
            wake.clear()
            if flags["reload"] and not flags["stop"]:
                flags["reload"] = False
                # The same path as POST /v1/reload: a refusal is logged and alarmed there,
                # and never stops the router.
                with contextlib.suppress(ApiError):
                    await reload_from_source(router, "SIGHUP")
        log.info("stopping: no new connections; in-flight requests get %ss", config.shutdown_grace)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await router.stop()
    if router.failed.done():
        log.critical("stopped: a failover controller failed (%s)", router.failed.result())
        return 1
    log.info("stopped")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, type=Path, help="the deployment file (YAML)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # ConfigError -> exit 2 in cli.main, nothing started
    setup_logging(config.log)
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(serve(config, args.config))
