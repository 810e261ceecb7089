"""A tiny application server for the failover benchmark: one real process per backend.

Run:  python bench/failover_backend.py --name a --port 8001 --post-log a.posts

- ``GET <any path>``: 200, body ``<name>\\n``.
- ``POST <any path>`` with header ``X-Bench-Id: <id>``: appends ``<id> <name>`` to the
  post log (one ``write(2)`` on an O_APPEND file, so a line written before a SIGKILL is
  kept), then 200. This log is how the benchmark finds POSTs executed twice.
- ``GET /health``: 200 ``ok`` (503 in fail mode).
- ``POST /_bench/mode`` with body ``503`` or ``ok``: switch fail mode (the benchmark calls
  this directly on the backend's port, never through the proxy). In fail mode every other
  request is answered 503 without being executed.

Every response carries ``X-Backend: <name>`` (which backend served it) and
``X-Seen-Epoch`` (the ``X-Hotspare-Epoch`` the proxy sent, or ``-``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from aiohttp import web

MODE_PATH = "/_bench/mode"


class Backend:
    def __init__(self, name: str, post_log: Path) -> None:
        self.name = name
        self.failing = False
        self._log_fd = os.open(post_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def close(self) -> None:
        os.close(self._log_fd)

    def _answer(self, request: web.Request, status: int, text: str) -> web.Response:
        return web.Response(
            status=status,
            text=text,
            headers={
                "X-Backend": self.name,
                "X-Seen-Epoch": request.headers.get("X-Hotspare-Epoch", "-"),
            },
        )

    async def mode(self, request: web.Request) -> web.Response:
        body = (await request.text()).strip()
        if body not in ("503", "ok"):
            return self._answer(request, 400, f"expected body '503' or 'ok', got {body[:40]!r}\n")
        self.failing = body == "503"
        return self._answer(request, 200, f"mode {body}\n")

    async def handle(self, request: web.Request) -> web.Response:
        if self.failing:
            return self._answer(request, 503, "failing on purpose\n")
        if request.method == "POST":
            await request.read()
            bench_id = request.headers.get("X-Bench-Id", "")
            if not bench_id or any(c.isspace() for c in bench_id):
                return self._answer(request, 400, "expected an X-Bench-Id header without spaces\n")
            os.write(self._log_fd, f"{bench_id} {self.name}\n".encode())
            return self._answer(request, 200, f"{self.name} stored {bench_id}\n")
        if request.path == "/health":
            return self._answer(request, 200, "ok\n")
        return self._answer(request, 200, f"{self.name}\n")


def make_app(backend: Backend) -> web.Application:
    app = web.Application()
    app.router.add_post(MODE_PATH, backend.mode)
    app.router.add_route("*", "/{tail:.*}", backend.handle)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="failover benchmark backend")
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--post-log", type=Path, required=True)
    args = parser.parse_args(argv)
    backend = Backend(args.name, args.post_log)
    try:
        web.run_app(
            make_app(backend), host="127.0.0.1", port=args.port, print=None,
            access_log=None, handle_signals=True,
        )
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
