"""Serving file contents from a source root: ``/file`` (one file, resumable, digest
in a trailer) and ``/bundle`` (many small files). A mixin of
:class:`replication.source.RootSource`.

Rules:

1. Nothing that touches the disk runs on the event loop: opens, reads and hashes
   happen in worker threads, and only regular files are opened (fileio rule 5), so a
   FIFO in a root cannot freeze the agent. ``asyncio.to_thread`` rather than aiofiles:
   each step is an open + fstat check + read + hash that must run together on one
   descriptor, which aiofiles would split into several thread hops.
2. Every path from the wire is checked (``paths.check_path``) and must not be hidden:
   the marker, the agent's folder, temp files, excluded paths and folders. A file with
   several names is refused unless ``allow_hard_links``.
3. Every bad input is a 4xx naming what was wrong: 400 bad path, 403 refused path,
   404 absent, 409 still being written, 414 too long, 416 bad ``Range``.
4. A file is hashed while it is sent; its size and mtime are checked after reading,
   and a file that changed meanwhile is answered as changed, never torn.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
from pathlib import Path

from aiohttp import web

from . import fileio
from .paths import PathTooLong, UnsafePath, decode_wire, hidden_reason
from .protocol import (
    H_MODE,
    H_MTIME,
    H_SIZE,
    TRAILER_CHANGED,
    TRAILER_LEN,
    TRAILER_OK,
    RangeError,
    parse_range,
)

log = logging.getLogger("hotspare.replication.source")

__all__ = ["FileServer", "Refused"]


class Refused(Exception):
    """A request this source will not answer: the HTTP status and the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> web.Response:
        return web.json_response({"error": self.message}, status=self.status)


class FileServer:
    """The file-serving half of a root source; :class:`RootSource` sets these."""

    name: str
    root: Path
    marker: str
    exclude: list[str]
    hard_links: bool
    bundle_file_max: int
    _warned_links: set[str]

    def wire_path(self, wire: str) -> str:
        """A path from the wire, checked and not hidden (rule 2); Refused otherwise."""
        try:
            rel = decode_wire(wire)
        except UnsafePath as exc:
            raise Refused(exc.status, str(exc)) from None
        why = hidden_reason(rel, self.marker, self.exclude)
        if why is not None:
            raise Refused(403, f"{wire[:200]!r} {why}; not served")
        return rel

    def open_file(self, rel: str) -> tuple[int, os.stat_result, bool]:
        """Blocking (run in a thread): open a served file; (fd, stat, busy) or Refused."""
        try:
            fd, st = fileio.open_checked(self.root, rel, hard_links=self.hard_links)
        except UnsafePath as exc:
            if not isinstance(exc, PathTooLong) and "hard links" in exc.why:
                self._warn_hard_links([rel])
            raise Refused(414 if isinstance(exc, PathTooLong) else 403, str(exc)) from None
        except OSError as exc:
            raise _os_refusal(exc) from None
        try:
            return fd, st, fileio.is_busy(fd)
        except BaseException:
            os.close(fd)
            raise

    def _warn_hard_links(self, paths: list[str]) -> None:
        new = [p for p in paths if p not in self._warned_links]
        if new:
            self._warned_links.update(new)
            log.warning("root %s: %d file(s) with several hard links not served (another name may lie "
                        "outside the root; replication.allow_hard_links: true allows them), e.g. %r",
                        self.name, len(new), new[0][:200])

    async def _open_off_loop(self, rel: str) -> tuple[int, os.stat_result, bool]:
        task = asyncio.ensure_future(asyncio.to_thread(self.open_file, rel))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_close_opened)  # the thread may still open it: close it then
            raise

    async def file(self, request: web.Request) -> web.StreamResponse:
        try:
            rel = self.wire_path(request.query.get("path", ""))
            start = parse_range(request.headers.get("Range"))
            fd, st, busy = await self._open_off_loop(rel)
        except (Refused, RangeError) as exc:
            status = 416 if isinstance(exc, RangeError) else exc.status
            return web.json_response({"error": str(exc)}, status=status)
        try:
            if busy:
                return web.json_response({"error": "file is open for writing; try after it is closed"}, status=409)
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
            after = await asyncio.to_thread(os.fstat, fd)
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
            head: dict[str, object] = {"p": wp if not isinstance(wp, str) or len(wp) <= 4200 else wp[:200]}
            data = b""
            try:
                if not isinstance(wp, str):
                    raise Refused(400, f"expected a percent-encoded path string, got {type(wp).__name__}")
                fd, st, busy = self.open_file(self.wire_path(wp))
            except Refused as exc:
                head["st"] = "missing" if exc.status == 404 else "unsafe"
                head["why"] = exc.message
            else:
                try:
                    if st.st_size > max(self.bundle_file_max, 1 << 20) * 4:
                        head["st"] = "large"
                    elif busy:
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


def _os_refusal(exc: OSError) -> Refused:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return Refused(404, "no such file")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return Refused(403, f"cannot open: {exc.strerror}")
    if exc.errno == errno.ENAMETOOLONG:
        return Refused(414, f"cannot open: {exc.strerror}")
    return Refused(503, f"cannot open: {exc.strerror} (errno {exc.errno})")


def _close_opened(task: asyncio.Future[tuple[int, os.stat_result, bool]]) -> None:
    if not task.cancelled() and task.exception() is None:
        os.close(task.result()[0])


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
