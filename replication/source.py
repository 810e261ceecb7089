"""Source side of one root: watch it, keep its change log, serve manifest, feed and
file contents over HTTP.

Rules:

1. The root is served only while its marker file exists. Without it (a disk not
   mounted shows an empty folder) the manifest and the feed answer 503 and no change is
   recorded, so no replica ever deletes on its say-so.
2. A changed path goes through the debouncer (quiet period), then a read-lease check:
   still open for writing -> wait again; closed -> recorded in the change log. A periodic
   rescan records what the watcher missed, and a new root folder (same path, new inode)
   restarts the watcher.
3. File contents are served by :class:`replication.serving.FileServer` (its rules).
4. Every endpoint hides the same paths: the marker, the agent's folder, temp files,
   excluded paths (and folders), and files with several names unless
   ``allow_hard_links``. Every bad input is a 4xx naming what was wrong.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
import uuid
from pathlib import Path

import watchfiles
from aiohttp import web

from . import fileio
from .changes import ChangeLog, Debouncer
from .paths import hidden_reason
from .planner import Entry
from .protocol import entry_json
from .serving import FileServer

log = logging.getLogger("hotspare.replication.source")

__all__ = ["RootSource"]


class RootUnavailable(Exception):
    pass


class RootSource(FileServer):
    def __init__(
        self, name: str, root: Path, *, marker: str, exclude: list[str], quiet: float,
        rescan_interval: float, bundle_file_max: int, allow_hard_links: bool = False,
    ) -> None:
        self.name = name
        self.root = root
        self.marker = marker
        self.exclude = exclude
        self.rescan_interval = rescan_interval
        self.bundle_file_max = bundle_file_max
        self.hard_links = allow_hard_links
        self._warned_links: set[str] = set()
        self.log = ChangeLog(uuid.uuid4().hex)
        self.debouncer = Debouncer(quiet)
        self._changed = asyncio.Event()
        self._kick = asyncio.Event()
        self._root_ino: int | None = None
        self.available = False
        self.closed = False
        self.last_rescan: float | None = None

    # -- state ---------------------------------------------------------------------

    def check_marker(self) -> bool:
        ok = os.path.lexists(self.root / self.marker)
        if ok != self.available:
            if ok:
                log.info("root %s: marker %s present at %s; serving", self.name, self.marker, self.root)
            else:
                log.error(
                    "root %s: marker %s missing at %s; refusing to serve it (disk not mounted?). "
                    "Create the marker (hotspare agent --init) once the folder is right.",
                    self.name, self.marker, self.root,
                )
            self.available = ok
            self._notify()  # wake long polls: they answer 503 now, or resume
        return ok

    def ensure_marker(self, force: bool) -> None:
        """Mark the root on first start if it holds files (or when ``force``)."""
        if os.path.lexists(self.root / self.marker):
            return
        if not self.root.is_dir():
            if not force:
                return
            self.root.mkdir(parents=True, exist_ok=True)
        with os.scandir(self.root) as it:
            nonempty = any(True for _ in it)
        if force or nonempty:
            (self.root / self.marker).write_text("hotspare replication root\n")
            log.info("root %s: created marker %s", self.name, self.root / self.marker)

    def close(self) -> None:
        """Stop serving: long polls answer at once (the listener can then shut down)."""
        self.closed = True
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def rescan(self) -> int:
        if not self.check_marker():
            return 0
        linked: list[str] = []
        scan = await asyncio.to_thread(
            lambda: fileio.scan(self.root, self.marker, self.exclude, hard_links=self.hard_links, skipped=linked))
        self._warn_hard_links(linked)
        # Files that differ from what we know but are still being written wait.
        candidates = [p for p, e in scan.items() if self.log.known.get(p) != e and e.link is None]
        busy = await asyncio.to_thread(lambda: [p for p in candidates if fileio.path_is_busy(self.root, p)])
        if not self.check_marker():
            return 0
        now = time.time()
        for p in busy:
            self.debouncer.touch(p, time.monotonic())
        changes = self.log.replace_all(scan, now, hold=busy)
        self.last_rescan = now
        if changes:
            self._notify()
        return len(changes)

    async def _settle(self, paths: list[str]) -> None:
        def look() -> list[tuple[str, Entry | None, bool]]:
            out: list[tuple[str, Entry | None, bool]] = []
            writer = fileio.ReplicaWriter(self.root)
            for p in paths:
                e = writer.stat(p, hard_links=self.hard_links)
                busy = e is not None and e.link is None and fileio.path_is_busy(self.root, p)
                out.append((p, e, busy))
            return out

        results = await asyncio.to_thread(look)
        if not self.check_marker():
            return
        now = time.time()
        recorded = False
        for p, e, busy in results:
            if busy:
                self.debouncer.touch(p, time.monotonic())
            elif self.log.record(p, e, now) is not None:
                recorded = True
        if recorded:
            self._notify()

    # -- tasks -----------------------------------------------------------------------

    async def run(self) -> None:
        """Watch, settle and rescan until cancelled."""
        await self.rescan()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch_loop(), name=f"source-watch-{self.name}")
            tg.create_task(self._settle_loop(), name=f"source-settle-{self.name}")
            tg.create_task(self._rescan_loop(), name=f"source-rescan-{self.name}")

    async def _watch_loop(self) -> None:
        while True:
            try:
                st = os.stat(self.root)
            except OSError:
                await asyncio.sleep(1.0)  # root missing: wait for it to come back
                continue
            self._root_ino = st.st_ino
            stop = asyncio.Event()
            try:
                async for batch in watchfiles.awatch(
                    self.root, watch_filter=None, debounce=50, step=10, stop_event=stop,
                    rust_timeout=1000, yield_on_timeout=True, ignore_permission_denied=True,
                ):
                    now = time.monotonic()
                    files, rescan = self._classify(batch)
                    for rel in files:
                        self.debouncer.touch(rel, now)
                    if rescan:
                        await self.rescan()  # a folder appeared, moved, or the marker changed
                    if batch:
                        self._kick.set()
                    if self._root_ino_changed():
                        break
            except Exception as exc:
                # watchfiles raises (inside an exception group) on a name that is not
                # UTF-8, and when the root disappears; a rescan covers what it dropped.
                log.info("root %s: watcher restarted after %s", self.name, _first_error(exc))
                await self.rescan()
            self._kick.set()

    def _classify(self, batch: set[tuple[watchfiles.Change, str]]) -> tuple[list[str], bool]:
        """Split watcher events into files to settle, and whether a rescan is needed."""
        files: list[str] = []
        rescan = False
        for _change, full in batch:
            rel = os.path.relpath(full, self.root).replace(os.sep, "/")
            if rel.startswith("..") or rel == ".":
                continue
            if rel == self.marker:
                rescan = True
            elif hidden_reason(rel, self.marker, self.exclude) is not None:
                continue
            elif os.path.isdir(full) and not os.path.islink(full):
                rescan = True
            else:
                files.append(rel)
        return files, rescan

    def _root_ino_changed(self) -> bool:
        try:
            return os.stat(self.root).st_ino != self._root_ino
        except OSError:
            return True

    async def _settle_loop(self) -> None:
        while True:
            due_at = self.debouncer.next_due()
            timeout = None if due_at is None else max(0.0, due_at - time.monotonic())
            try:
                await asyncio.wait_for(self._kick.wait(), timeout)
            except TimeoutError:
                pass
            self._kick.clear()
            ready = self.debouncer.due(time.monotonic())
            if ready:
                await self._settle(ready)

    async def _rescan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.rescan_interval)
            await self.rescan()

    # -- HTTP handlers (token already checked by the agent) ---------------------------

    def _unavailable(self) -> web.Response:
        return web.json_response(
            {"error": f"root {self.name}: marker {self.marker} missing at {self.root}; "
                      "not serving (disk not mounted?)"},
            status=503,
        )

    async def manifest(self, request: web.Request) -> web.StreamResponse:
        await self.rescan()
        if not self.available:
            return self._unavailable()
        snapshot = dict(self.log.known)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        head = {"run_id": self.log.run_id, "seq": self.log.head, "count": len(snapshot)}
        await resp.write(json.dumps(head).encode() + b"\n")
        buf: list[bytes] = []
        for path, entry in snapshot.items():
            buf.append(json.dumps(entry_json(path, entry)).encode())
            if len(buf) >= 2000:
                await resp.write(b"\n".join(buf) + b"\n")
                buf = []
        if buf:
            await resp.write(b"\n".join(buf) + b"\n")
        await resp.write_eof()
        return resp

    async def head(self, request: web.Request) -> web.Response:
        """The feed position after a fresh rescan: what the source holds right now."""
        await self.rescan()
        if not self.available:
            return self._unavailable()
        return web.json_response({"run_id": self.log.run_id, "seq": self.log.head})

    async def changes(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
            wait = float(request.query.get("wait", "0"))
            if not math.isfinite(wait):
                raise ValueError
            wait = min(max(wait, 0.0), 60.0)
        except ValueError:
            return web.json_response(
                {"error": f"since: expected an integer, got {request.query.get('since', '0')!r:.40}; "
                          f"wait: expected seconds, got {request.query.get('wait', '0')!r:.40}"}, status=400)
        run_id = request.query.get("run", "")
        deadline = time.monotonic() + wait
        while True:
            if self.closed:
                return web.json_response({"error": f"root {self.name}: no longer served here"}, status=503)
            if not self.available:
                return self._unavailable()
            batch = self.log.since(since, run_id)
            if batch is None:
                return web.json_response({"run_id": self.log.run_id, "seq": self.log.head, "reset": True})
            left = deadline - time.monotonic()
            if batch or left <= 0:
                return web.json_response({
                    "run_id": self.log.run_id,
                    "seq": batch[-1].seq if batch else self.log.head,
                    "head": self.log.head,
                    "reset": False,
                    "changes": [{**entry_json(c.path, c.entry), "q": c.seq, "at": c.at} for c in batch],
                })
            event = self._changed
            try:
                await asyncio.wait_for(event.wait(), left)
            except TimeoutError:
                pass

    def status(self) -> dict[str, object]:
        return {
            "name": self.name, "role": "source", "path": str(self.root), "available": self.available,
            "files": len(self.log.known), "seq": self.log.head, "run_id": self.log.run_id,
            "pending": len(self.debouncer), "last_rescan": self.last_rescan,
        }


def disk_report(root: Path, marker: str, exclude: list[str]) -> dict[str, object]:
    """What ``hotspare doctor`` asks of a root on this node (``GET /v1/roots/{root}/disk``):
    is the folder there, is its marker, how much room is left, how big is its largest file.
    Read-only and role-independent: a spare needs room for the active's largest file too.
    Walks the tree like a rescan does (the caller runs it off the event loop)."""
    exists = root.is_dir()
    free: int | None = None
    largest, files = 0, 0
    if exists:
        st = os.statvfs(root)
        free = st.f_bavail * st.f_frsize  # what an unprivileged writer may still use
        for entry in fileio.scan(root, marker, exclude).values():
            files += 1
            if entry.link is None:
                largest = max(largest, entry.size)
    return {"path": str(root), "exists": exists, "marker": os.path.lexists(root / marker),
            "free_bytes": free, "largest_file_bytes": largest, "files": files}


def _first_error(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
