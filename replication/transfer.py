"""Moving file contents from a source agent into a replica root: bundles of small
files and resumable large files, each checked against its SHA-256 and placed
atomically. Used by :class:`replication.sink.RootSink` (a mixin: it supplies
the session, the writer and the sync state).

Rules:

1. A file is received into a temp file beside its target, its digest checked, flushed
   (one ``syncfs`` per bundle, ``fsync`` per large file) and renamed into place with the
   source's mtime and mode.
2. A large file's temp name comes from (path, size, mtime), so a killed sink resumes it
   with ``Range`` after a restart.
3. A file the source calls busy, changed or missing is reported as pending (1) or gone
   (0), never placed.
4. Disk work runs in worker threads and overlaps the network (write-behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import aiohttp

from . import fileio
from .paths import encode_wire
from .planner import Copy, Entry
from .protocol import H_MODE, H_MTIME, H_SIZE, TRAILER_LEN, TRAILER_OK, ProtocolError
from .syncstate import SyncState

log = logging.getLogger("hotspare.replication.sink")

__all__ = ["TransferFailed", "Transfers", "batches", "temp_tag"]


class TransferFailed(Exception):
    pass


class Transfers:
    """The transfer half of a sink; the sink sets these attributes."""

    name: str
    url: str
    headers: dict[str, str]
    session: aiohttp.ClientSession
    writer: fileio.ReplicaWriter
    state: SyncState
    fsync: bool

    def _count(self, files: int, nbytes: int) -> None:
        raise NotImplementedError

    async def _json(self, resp: aiohttp.ClientResponse) -> dict[str, Any]:
        raise NotImplementedError

    async def _bundle(self, copies: Sequence[Copy]) -> int:
        """Fetch and place a batch of small files; return how many are still pending."""
        body = {"paths": [encode_wire(c.path) for c in copies]}
        tag = f"b{os.getpid()}-{id(copies):x}"
        got: list[tuple[str, Entry, str]] = []
        datas: list[bytes] = []
        pending = 0
        nbytes = 0
        async with self.session.post(f"{self.url}/bundle", json=body, headers=self.headers) as resp:
            if resp.status != 200:
                await self._json(resp)
            for i, c in enumerate(copies):
                line = await resp.content.readline()
                try:
                    head = json.loads(line)
                except ValueError:
                    raise ProtocolError(f"bundle of {self.name}: bad header {line[:100]!r}") from None
                if head.get("st") != "ok":
                    if head.get("st") == "large":
                        pending += await self._large(c)
                    elif head.get("st") != "missing":
                        pending += 1
                    continue
                size = int(head["s"])
                data = await resp.content.readexactly(size)
                digest = await resp.content.readexactly(32)
                if hashlib.sha256(data).digest() != digest:
                    raise TransferFailed(f"{encode_wire(c.path)}: digest mismatch in bundle")
                entry = Entry(size, int(head["m"]), int(head["o"]))
                got.append((c.path, entry, f"{tag}-{i}"))
                datas.append(data)
                nbytes += size
        if got:
            await asyncio.to_thread(self._place_batch, got, datas)
            self._count(len(got), nbytes)
        return pending

    def _write_tmp(self, path: str, tag: str, data: bytes) -> None:
        fd, _ = self.writer.open_tmp(path, tag)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        finally:
            os.close(fd)

    def _place_batch(self, got: list[tuple[str, Entry, str]], datas: list[bytes]) -> None:
        for (path, _, tag), data in zip(got, datas, strict=True):
            self._write_tmp(path, tag, data)
        if self.fsync:
            self.writer.flush()  # one syncfs for the whole batch, before any rename
        for path, entry, tag in got:
            self.writer.place(path, tag, entry, fsync=False)
        self.state.update([(p, e) for p, e, _ in got])

    async def _large(self, c: Copy) -> int:
        """Fetch one large file, resuming a temp file left by an earlier run."""
        tag = temp_tag(c.path, c.entry)
        fd, have = await asyncio.to_thread(self.writer.open_tmp, c.path, tag, True)
        writing: asyncio.Task[None] | None = None
        try:
            digest = hashlib.sha256()
            if have:
                await asyncio.to_thread(_hash_fd, fd, have, digest)
            headers = dict(self.headers)
            if have:
                headers["Range"] = f"bytes={have}-"
                log.info("root %s: resuming %s at byte %d", self.name, encode_wire(c.path), have)
            async with self.session.get(
                f"{self.url}/file", params={"path": encode_wire(c.path)}, headers=headers
            ) as resp:
                if resp.status in (404, 409):
                    return 0 if resp.status == 404 else 1
                if resp.status == 416:
                    os.ftruncate(fd, 0)
                    return 1
                if resp.status not in (200, 206):
                    await self._json(resp)
                if resp.status == 200 and have:
                    os.ftruncate(fd, 0)
                    os.lseek(fd, 0, os.SEEK_SET)
                    digest = hashlib.sha256()
                    have = 0
                size = int(resp.headers[H_SIZE])
                entry = Entry(size, int(resp.headers[H_MTIME]), int(resp.headers[H_MODE]))
                if entry.size != c.entry.size or entry.mtime_ns != c.entry.mtime_ns:
                    # A newer version than planned: start a fresh temp file next time.
                    return 1
                left = size - have
                buf: list[bytes] = []
                nbuf = 0
                # Write (and hash) one buffer in a thread while the next is received.
                while left > 0:
                    chunk = await resp.content.read(min(left, 1 << 20))
                    if not chunk:
                        raise TransferFailed(f"{encode_wire(c.path)}: connection closed mid-file")
                    left -= len(chunk)
                    buf.append(chunk)
                    nbuf += len(chunk)
                    if nbuf >= 8 << 20:
                        if writing is not None:
                            await writing
                        writing = _write_task(fd, buf, digest)
                        buf, nbuf = [], 0
                if writing is not None:
                    await writing
                    writing = None
                if buf:
                    await asyncio.to_thread(_write_hash, fd, buf, digest)
                trailer = await resp.content.readexactly(TRAILER_LEN)
        finally:
            if writing is not None:  # the thread still uses fd: let it finish first
                with contextlib.suppress(Exception):
                    await asyncio.shield(writing)
            os.close(fd)
        if trailer[:4] != TRAILER_OK:
            self.writer.discard_tmp(c.path, tag)
            return 1
        if trailer[4:] != digest.digest():
            self.writer.discard_tmp(c.path, tag)
            raise TransferFailed(f"{encode_wire(c.path)}: SHA-256 mismatch; temp file discarded")
        await asyncio.to_thread(self.writer.place, c.path, tag, entry, self.fsync)
        await asyncio.to_thread(self.state.update, [(c.path, entry)])
        self._count(1, size)
        return 0


def temp_tag(path: str, e: Entry) -> str:
    h = hashlib.sha256(f"{encode_wire(path)}\0{e.size}\0{e.mtime_ns}".encode()).hexdigest()
    return f"r{h[:24]}"


def batches(copies: list[Copy], max_files: int = 400, max_bytes: int = 16 << 20) -> list[list[Copy]]:
    out: list[list[Copy]] = []
    cur: list[Copy] = []
    nbytes = 0
    for c in copies:
        if cur and (len(cur) >= max_files or nbytes + c.entry.size > max_bytes):
            out.append(cur)
            cur, nbytes = [], 0
        cur.append(c)
        nbytes += c.entry.size
    if cur:
        out.append(cur)
    return out


def _hash_fd(fd: int, length: int, digest: Any) -> None:
    for chunk in fileio.iter_chunks(fd, 0, length):
        digest.update(chunk)
    os.lseek(fd, length, os.SEEK_SET)


def _write_task(fd: int, parts: list[bytes], digest: Any) -> asyncio.Task[None]:
    return asyncio.create_task(asyncio.to_thread(_write_hash, fd, parts, digest), name="sink-write-behind")


def _write_hash(fd: int, parts: list[bytes], digest: Any) -> None:
    for part in parts:
        digest.update(part)
        view = memoryview(part)
        while view:
            n = os.write(fd, view)
            view = view[n:]
