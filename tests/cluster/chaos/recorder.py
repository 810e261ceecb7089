"""A recording application server for the chaos tests, run as its own process.

    python tests/cluster/chaos/recorder.py --name a --log FILE [--port 0]

Rules:

1. Prints ``PORT <n>`` on stdout once it listens on 127.0.0.1 (``--port 0``: a free one).
2. Every request it answers, except ``/health``, is appended to ``--log`` as one JSON line
   ``{"t": unix time, "b": backend, "e": X-Hotspare-Epoch, "r": X-Chaos-Router,
   "q": X-Chaos-Req, "m": method}``, with one ``write(2)`` on an O_APPEND file BEFORE
   the answer is sent: a line exists for every answer a client could have seen, even if
   the process is SIGKILLed right after.
3. Every answer carries ``X-Backend`` (its name) and ``X-Seen-Epoch`` (the epoch it got).
4. ``GET /health``: 200 ``ok``. Killable with SIGKILL, freezable with SIGSTOP: it keeps
   no state but the log.
5. Header values are hostile bytes: each is cut to 64 characters before logging.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time

from aiohttp import web

HEADER_MAX = 64


def build_app(name: str, log_fd: int) -> web.Application:
    def tagged(request: web.Request, text: str) -> web.Response:
        epoch = request.headers.get("X-Hotspare-Epoch", "")[:HEADER_MAX]
        return web.Response(text=text, headers={"X-Backend": name, "X-Seen-Epoch": epoch})

    async def health(request: web.Request) -> web.Response:
        return tagged(request, "ok")

    async def anything(request: web.Request) -> web.Response:
        await request.read()
        h = request.headers
        line = {
            "t": time.time(), "b": name, "e": h.get("X-Hotspare-Epoch", "")[:HEADER_MAX],
            "r": h.get("X-Chaos-Router", "")[:HEADER_MAX], "q": h.get("X-Chaos-Req", "")[:HEADER_MAX],
            "m": request.method,
        }
        os.write(log_fd, (json.dumps(line) + "\n").encode())
        return tagged(request, f"served by {name}")

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_get("/health", health)
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


async def main(args: argparse.Namespace) -> None:
    log_fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    runner = web.AppRunner(build_app(args.name, log_fd), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port, reuse_address=True).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    await stop.wait()
    await runner.cleanup()
    os.close(log_fd)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="recording backend of the chaos tests")
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--log", required=True)
    try:
        asyncio.run(main(p.parse_args()))
    except KeyboardInterrupt:
        sys.exit(130)
