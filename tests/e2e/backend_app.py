"""A small application server for the end-to-end tests, run as its own process.

    python tests/e2e/backend_app.py --name a --post-log FILE [--port 0]

Prints ``PORT <n>`` on stdout once it listens (127.0.0.1). Answers:

- ``GET /health``: 200 "ok" (500 when told ``health_fail``);
- any GET: 200 with its name in the body and in ``X-Backend``, the ``X-Hotspare-Epoch``
  it received echoed in ``X-Seen-Epoch``;
- any POST: reads the (small) body, appends ``<X-Post-Id> <name>`` to the post log
  (flushed at once, so a SIGKILL loses nothing it answered), answers like a GET;
- ``POST /_control`` with body ``ok`` | ``503`` | ``health_fail``: ``503`` makes it
  answer 503 to everything (health included), ``health_fail`` fails only /health.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from aiohttp import web

MODES = ("ok", "503", "health_fail")


def build_app(name: str, post_log: str) -> web.Application:
    state = {"mode": "ok"}
    log = open(post_log, "a", buffering=1, encoding="utf-8")

    def tagged(status: int, text: str, request: web.Request) -> web.Response:
        headers = {"X-Backend": name, "X-Seen-Epoch": request.headers.get("X-Hotspare-Epoch", "")}
        return web.Response(status=status, text=text, headers=headers)

    async def control(request: web.Request) -> web.Response:
        mode = (await request.text()).strip()
        if mode not in MODES:
            return web.Response(status=400, text=f"mode: expected one of {MODES}, got {mode!r}")
        state["mode"] = mode
        return web.Response(text=mode)

    async def health(request: web.Request) -> web.Response:
        if state["mode"] == "503":
            return tagged(503, "unavailable", request)
        if state["mode"] == "health_fail":
            return tagged(500, "health failing", request)
        return tagged(200, "ok", request)

    async def anything(request: web.Request) -> web.Response:
        if state["mode"] == "503":
            await request.read()
            return tagged(503, "unavailable", request)
        if request.method == "POST":
            await request.read()
            post_id = request.headers.get("X-Post-Id", "-")
            log.write(f"{post_id} {name}\n")
        return tagged(200, f"served by {name}", request)

    app = web.Application()
    app.router.add_post("/_control", control)
    app.router.add_get("/health", health)
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


async def main(args: argparse.Namespace) -> None:
    runner = web.AppRunner(build_app(args.name, args.post_log), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port, reuse_address=True).start()
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(f"PORT {port}", flush=True)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--post-log", required=True)
    try:
        asyncio.run(main(p.parse_args()))
    except KeyboardInterrupt:
        sys.exit(130)
