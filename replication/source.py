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
3. File contents are read and hashed in worker threads; the size and mtime are checked
   after reading, and a file that changed meanwhile is answered as changed, never torn.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path

import watchfiles
from aiohttp import web

from . import fileio
from .changes import ChangeLog, Debouncer
from .paths import UnsafePath, decode_wire, is_excluded, is_internal
from .planner import Entry
from .protocol import (
    H_MODE,
    H_MTIME,
    H_SIZE,
    TRAILER_CHANGED,
    TRAILER_LEN,
    TRAILER_OK,
    entry_json,
)

log = logging.getLogger("hotspare.replication.source")

__all__ = ["RootSource"]


class RootUnavailable(Exception):
    pass


class RootSource:
    def __init__(
        self, name: str, root: Path, *, marker: str, exclude: list[str], quiet: float,
        rescan_interval: float, bundle_file_max: int,
    ) -> None:
        self.name = name
        self.root = root
        self.marker = marker
        self.exclude = exclude
        self.rescan_interval = rescan_interval
        self.bundle_file_max = bundle_file_max
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
        scan = await asyncio.to_thread(fileio.scan, self.root, self.marker, self.exclude)
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
                e = writer.stat(p)
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
            elif is_internal(rel, self.marker) or is_excluded(rel, self.exclude):
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
            wait = min(max(float(request.query.get("wait", "0")), 0.0), 60.0)
        except ValueError:
            return web.json_response({"error": "since: expected an integer; wait: seconds"}, status=400)
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

    async def file(self, request: web.Request) -> web.StreamResponse:
        try:
            rel = decode_wire(request.query.get("path", ""))
        except UnsafePath as exc:
            return web.json_response({"error": str(exc)}, status=400)
        start = 0
        rng = request.headers.get("Range")
        if rng:
            if not rng.startswith("bytes=") or not rng[6:].rstrip("-").isdigit() or not rng.endswith("-"):
                return web.json_response({"error": f"Range: expected 'bytes=N-', got {rng!r}"}, status=416)
            start = int(rng[6:-1])
        try:
            fd = fileio.open_in_root(self.root, rel)
        except UnsafePath as exc:
            return web.json_response({"error": str(exc)}, status=403)
        except FileNotFoundError:
            return web.json_response({"error": f"{request.query['path']}: no such file"}, status=404)
        try:
            if fileio.is_busy(fd):
                return web.json_response({"error": "file is open for writing; try after it is closed"}, status=409)
            st = os.fstat(fd)
            if start > st.st_size:
                return web.json_response({"error": f"Range start {start} beyond size {st.st_size}"}, status=416)
            digest = hashlib.sha256()
            if start:
                await asyncio.to_thread(_hash_prefix, fd, start, digest)
            length = st.st_size - start
            resp = web.StreamResponse(status=206 if start else 200)
            resp.headers[H_SIZE] = str(st.st_size)
            resp.headers[H_MTIME] = str(st.st_mtime_ns)
            resp.headers[H_MODE] = str(st.st_mode & 0o7777)
            resp.content_length = length + TRAILER_LEN
            resp.content_type = "application/octet-stream"
            await resp.prepare(request)
            os.lseek(fd, start, os.SEEK_SET)
            left = length
            # Read (and hash) the next chunk in a thread while this one is sent.
            nxt: asyncio.Task[bytes] | None = None
            try:
                nxt = _read_task(fd, min(left, 4 << 20), digest)
                while left > 0 and nxt is not None:
                    data = await nxt
                    nxt = None
                    if not data:
                        break
                    left -= len(data)
                    if left > 0:
                        nxt = _read_task(fd, min(left, 4 << 20), digest)
                    await resp.write(data)
            finally:
                if nxt is not None:  # the thread still uses fd: let it finish first
                    with contextlib.suppress(Exception):
                        await asyncio.shield(nxt)
            if left:  # truncated while reading: pad so framing holds, mark it changed
                await resp.write(b"\0" * left)
            after = os.fstat(fd)
            same = left == 0 and after.st_size == st.st_size and after.st_mtime_ns == st.st_mtime_ns
            await resp.write(TRAILER_OK + digest.digest() if same else TRAILER_CHANGED + b"\0" * 32)
            await resp.write_eof()
            return resp
        finally:
            os.close(fd)

    async def bundle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            wire_paths = body["paths"]
            if not isinstance(wire_paths, list) or len(wire_paths) > 10000:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'expected JSON {"paths": [up to 10000 paths]}'}, status=400)
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await resp.prepare(request)
        for i in range(0, len(wire_paths), 64):
            group = wire_paths[i : i + 64]
            parts = await asyncio.to_thread(self._read_group, group)
            await resp.write(b"".join(parts))
        await resp.write_eof()
        return resp

    def _read_group(self, wire_paths: list[object]) -> list[bytes]:
        out: list[bytes] = []
        for wp in wire_paths:
            head: dict[str, object] = {"p": wp}
            data = b""
            try:
                rel = decode_wire(str(wp))
                fd = fileio.open_in_root(self.root, rel)
            except UnsafePath as exc:
                head["st"] = "unsafe"
                head["why"] = exc.why
            except OSError:
                head["st"] = "missing"
            else:
                try:
                    st = os.fstat(fd)
                    if st.st_size > max(self.bundle_file_max, 1 << 20) * 4:
                        head["st"] = "large"
                    elif fileio.is_busy(fd):
                        head["st"] = "busy"
                    else:
                        data = _read_all(fd, st.st_size)
                        after = os.fstat(fd)
                        if len(data) != after.st_size or after.st_mtime_ns != st.st_mtime_ns:
                            head["st"] = "busy"
                            data = b""
                        else:
                            head.update(st="ok", s=len(data), m=st.st_mtime_ns, o=st.st_mode & 0o7777)
                finally:
                    os.close(fd)
            out.append(json.dumps(head).encode() + b"\n")
            if head["st"] == "ok":
                out.append(data)
                out.append(hashlib.sha256(data).digest())
        return out

    def status(self) -> dict[str, object]:
        return {
            "name": self.name, "role": "source", "path": str(self.root), "available": self.available,
            "files": len(self.log.known), "seq": self.log.head, "run_id": self.log.run_id,
            "pending": len(self.debouncer), "last_rescan": self.last_rescan,
        }


def _first_error(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _hash_prefix(fd: int, length: int, digest: hashlib._Hash) -> None:
    for chunk in fileio.iter_chunks(fd, 0, length):
        digest.update(chunk)


def _read_task(fd: int, n: int, digest: hashlib._Hash) -> asyncio.Task[bytes]:
    return asyncio.create_task(asyncio.to_thread(_read_hash, fd, n, digest), name="source-read-ahead")


def _read_hash(fd: int, n: int, digest: hashlib._Hash) -> bytes:
    data = os.read(fd, n)
    digest.update(data)
    return data


def _read_all(fd: int, size: int) -> bytes:
    parts = []
    left = size + 1  # read one past the size to see growth
    while left > 0:
        data = os.read(fd, left)
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)
