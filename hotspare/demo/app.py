"""A demo application server that behaves like the school-library app hotspare fronts.

``python -m hotspare.demo.app --port P --name a --data DIR``

What it has of the original, because that is what failover must cope with:

- a login session in a cookie, kept in memory only: after a failover users log in
  again (sessions are not replicated, exactly as in the real system);
- a keyword search over index files (``DIR/index/**``, one record per file), which
  the replication agent keeps in step on the spare;
- a job that writes report files (``POST /jobs/report`` writes
  ``DIR/jobs/reports/<id>.txt``), which must be found on the spare after a failover;
- ``GET /health`` for the router's probes.

Every response names the server (``X-Demo-Server``) and echoes the router's
``X-Hotspare-Epoch``, so a demo shows which node answered and under which epoch.
Files are written to a temporary name and renamed, so a replication agent never copies
half a report. The server prints ``listening on http://HOST:PORT`` once bound (``--port 0``
picks a free port), which is how the demo and the tests know it is ready.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import html
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

__all__ = ["DEMO_PASSWORD", "DemoApp", "build_app", "iter_records", "main", "search_index"]

# Any user name logs in with this password: it is a demo, the point is the session.
DEMO_PASSWORD = "library"
SESSION_COOKIE = "demo_session"
_REPORT_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{8}$")
_RECORD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")
_WORD = re.compile(r"\w+", re.UNICODE)
MAX_SEARCH_HITS = 50

SAMPLE_RECORDS = {
    "title-0001.txt": "The Hobbit\nTolkien, J. R. R.\nfantasy adventure dragon dwarves",
    "title-0002.txt": "Charlotte's Web\nWhite, E. B.\nfarm pig spider friendship",
    "title-0003.txt": "A Brief History of Time\nHawking, Stephen\nphysics cosmology black holes",
    "title-0004.txt": "Matilda\nDahl, Roald\nschool reading library children",
    "patron-0001.txt": "Ada Lovelace\ngrade 7\nlibrary card 1001",
}


def iter_records(index_dir: Path) -> list[Path]:
    """The index's records: its files, sorted, leaving out hidden names at any depth
    (hotspare's ``.hotspare-root`` marker and ``.hotspare/`` state, temporary files)."""
    if not index_dir.is_dir():
        return []
    return [
        path for path in sorted(index_dir.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(index_dir).parts)
    ]


def search_index(index_dir: Path, query: str) -> list[dict[str, str]]:
    """Records (see :func:`iter_records`) containing every word of ``query``, any case.

    A record's first line is its title. Unreadable or vanished files are skipped: the
    index is rewritten all the time, by the app and by replication.
    """
    words = {w.lower() for w in _WORD.findall(query)}
    if not words:
        return []
    hits = []
    for path in iter_records(index_dir):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if words <= {w.lower() for w in _WORD.findall(text)}:
            title = text.splitlines()[0] if text else path.name
            hits.append({"record": path.relative_to(index_dir).as_posix(), "title": title})
            if len(hits) >= MAX_SEARCH_HITS:
                break
    return hits


def _wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return request.content_type == "application/json" or (
        "application/json" in accept and "text/html" not in accept)


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a hidden temporary name in the same folder, fsync, rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class DemoApp:
    def __init__(self, name: str, data: Path) -> None:
        self.name = name
        self.data = data
        self.index_dir = data / "index"
        self.reports_dir = data / "jobs" / "reports"
        self.sessions: dict[str, str] = {}  # session id -> user; memory only, on purpose
        self.started = time.time()

    # -- helpers --------------------------------------------------------------------

    def user_of(self, request: web.Request) -> str | None:
        sid = request.cookies.get(SESSION_COOKIE, "")
        for known, user in self.sessions.items():
            if hmac.compare_digest(known, sid):
                return user
        return None

    def _require_user(self, request: web.Request) -> str:
        user = self.user_of(request)
        if user is None:
            raise web.HTTPUnauthorized(
                text=f"not logged in on server {self.name}: POST /login first "
                "(sessions are not replicated; after a failover, log in again)\n"
            )
        return user

    # -- handlers -------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "name": self.name})

    async def home(self, request: web.Request) -> web.Response:
        return self._page(request, self.user_of(request))

    def _page(self, request: web.Request, user: str | None) -> web.Response:
        who = f"logged in as <b>{html.escape(user)}</b>" if user else "not logged in"
        body = f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<title>Library on {html.escape(self.name)}</title></head><body>
<h1>School library — served by <span id="server">{html.escape(self.name)}</span></h1>
<p>epoch {html.escape(request.headers.get("X-Hotspare-Epoch", "-"))}; {who}</p>
<form method="post" action="/login"><input name="user" placeholder="user">
<input name="password" type="password" placeholder="password ({DEMO_PASSWORD})">
<button>Log in</button></form>
<form method="get" action="/search"><input name="q" placeholder="keywords">
<button>Search</button></form>
<form method="post" action="/jobs/report"><input name="title" placeholder="report title">
<button>Write a report</button></form>
</body></html>"""
        return web.Response(text=body, content_type="text/html")

    async def login(self, request: web.Request) -> web.Response:
        form = await (request.json() if request.content_type == "application/json" else request.post())
        user = str(form.get("user") or "").strip()
        password = str(form.get("password") or "")
        if not user or not hmac.compare_digest(password.encode(), DEMO_PASSWORD.encode()):
            raise web.HTTPUnauthorized(text=f"wrong user or password (the demo password is {DEMO_PASSWORD!r})\n")
        sid = secrets.token_urlsafe(24)
        self.sessions[sid] = user
        # A browser's form gets the page, saying who is logged in; an API client that
        # sent or asked for JSON gets JSON.
        resp = (web.json_response({"user": user, "server": self.name}) if _wants_json(request)
                else self._page(request, user))
        resp.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="Lax", path="/")
        return resp

    async def logout(self, request: web.Request) -> web.Response:
        sid = request.cookies.get(SESSION_COOKIE, "")
        self.sessions.pop(sid, None)
        resp = web.json_response({"user": None, "server": self.name})
        resp.del_cookie(SESSION_COOKIE, path="/")
        return resp

    async def me(self, request: web.Request) -> web.Response:
        return web.json_response({"user": self._require_user(request), "server": self.name})

    async def search(self, request: web.Request) -> web.Response:
        self._require_user(request)
        query = request.query.get("q", "")
        hits = await asyncio.to_thread(search_index, self.index_dir, query)
        return web.json_response({"query": query, "hits": hits, "server": self.name})

    async def put_record(self, request: web.Request) -> web.Response:
        self._require_user(request)
        name = request.match_info["name"]
        if not _RECORD_NAME.match(name):
            raise web.HTTPBadRequest(text=f"record name {name!r}: expected letters, digits, '_.-'\n")
        await asyncio.to_thread(write_atomically, self.index_dir / name, await request.read())
        return web.json_response({"record": name, "server": self.name}, status=201)

    async def write_report(self, request: web.Request) -> web.Response:
        user = self._require_user(request)
        form = await (request.json() if request.content_type == "application/json" else request.post())
        title = str(form.get("title") or "Circulation report")
        report_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)
        text = (
            f"{title}\n"
            f"written by server {self.name} for {user} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
            f"epoch {request.headers.get('X-Hotspare-Epoch', '-')}\n"
            f"records in index: {len(await asyncio.to_thread(iter_records, self.index_dir))}\n"
        )
        await asyncio.to_thread(write_atomically, self.reports_dir / f"{report_id}.txt", text.encode())
        return web.json_response(
            {"id": report_id, "path": f"jobs/reports/{report_id}.txt", "server": self.name}, status=201
        )

    async def list_reports(self, request: web.Request) -> web.Response:
        self._require_user(request)
        names = sorted(p.stem for p in self.reports_dir.glob("*.txt")) if self.reports_dir.is_dir() else []
        return web.json_response({"reports": names, "server": self.name})

    async def get_report(self, request: web.Request) -> web.Response:
        self._require_user(request)
        report_id = request.match_info["id"]
        if not _REPORT_ID.match(report_id):
            raise web.HTTPBadRequest(text=f"report id {report_id!r}: expected YYYYMMDD-HHMMSS-xxxxxxxx\n")
        path = self.reports_dir / f"{report_id}.txt"
        try:
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except FileNotFoundError:
            raise web.HTTPNotFound(text=f"no report {report_id} on server {self.name}\n") from None
        return web.Response(text=text)


def build_app(name: str, data: Path) -> web.Application:
    demo = DemoApp(name, data)

    @web.middleware
    async def tag(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            exc.headers["X-Demo-Server"] = name
            raise
        resp.headers["X-Demo-Server"] = name
        if "X-Hotspare-Epoch" in request.headers:
            resp.headers["X-Demo-Epoch-Seen"] = request.headers["X-Hotspare-Epoch"]
        return resp

    app = web.Application(middlewares=[tag])
    app.router.add_get("/", demo.home)
    app.router.add_get("/health", demo.health)
    app.router.add_post("/login", demo.login)
    app.router.add_post("/logout", demo.logout)
    app.router.add_get("/me", demo.me)
    app.router.add_get("/search", demo.search)
    app.router.add_put("/index/{name}", demo.put_record)
    app.router.add_post("/jobs/report", demo.write_report)
    app.router.add_get("/jobs/reports", demo.list_reports)
    app.router.add_get("/jobs/reports/{id}", demo.get_report)
    return app


def seed(data: Path) -> None:
    """Sample index records, written only where the index folder is empty."""
    index = data / "index"
    index.mkdir(parents=True, exist_ok=True)
    if not any(index.iterdir()):
        for fname, text in SAMPLE_RECORDS.items():
            write_atomically(index / fname, text.encode())


async def serve(name: str, data: Path, host: str, port: int) -> None:
    for sub in ("index", "jobs/reports"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    # Handlers first: a SIGTERM right after the "listening" line must stop us cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)  # handlers only set a flag
    runner = web.AppRunner(build_app(name, data), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"demo app {name} listening on http://{shown}:{bound_port} (data {data})", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hotspare.demo.app", description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="this server's name, e.g. a")
    parser.add_argument("--data", required=True, type=Path, help="data folder (index/, jobs/)")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--seed", action="store_true", help="write sample index records if index/ is empty")
    args = parser.parse_args(argv)
    if args.seed:
        seed(args.data)
    try:
        asyncio.run(serve(args.name, args.data, args.host, args.port))
    except OSError as exc:
        print(f"demo app {args.name}: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
