"""File-system side of replication: scanning a root, opening files without leaving it,
checking a file is closed, and placing files atomically. Blocking calls: run them in a
worker thread from async code.

Rules:

1. Nothing follows a symbolic link: scans use ``lstat``; opens walk the path one
   component at a time with ``O_NOFOLLOW``; a link in the middle of a path is an
   :class:`UnsafePath`. Links themselves are listed (with their target) and recreated.
2. "Closed" is a read lease (``F_SETLEASE``/``F_RDLCK``): the kernel grants it only when
   no process has the file open for writing. It is taken and released at once; SIGIO
   (sent if a writer opens the file in that instant) is ignored by the agent.
3. A replica file is written as ``.hstmp-<id>`` in its own folder, flushed to disk, then
   renamed over the target: a reader sees the old file or the new one, never half.
   Many small files are flushed with one ``syncfs`` instead of one ``fsync`` each.
4. Removing never destroys: deletes go to ``.hotspare/trash/<day>/``, quarantines to
   ``.hotspare/quarantine/<tag>/``, under the same relative path.
5. Only regular files are opened for reading, with ``O_NONBLOCK`` so that a FIFO or a
   device can never block the opener, and the type is checked with ``fstat`` on the
   open descriptor. A file with more than one name (``st_nlink > 1``) may be a hard
   link to a file outside the root; a source refuses it unless
   ``replication.allow_hard_links`` is set.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .paths import AGENT_DIR, TMP_PREFIX, UnsafePath, check_path, is_excluded, is_internal
from .planner import Entry

__all__ = [
    "entry_of",
    "is_busy",
    "open_checked",
    "open_in_root",
    "scan",
    "sync_filesystem",
]

_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _syncfs: Callable[[int], int] | None = _libc.syncfs
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _syncfs = None


def entry_of(st: os.stat_result, link: str | None = None) -> Entry:
    return Entry(st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode), link)


def scan(
    root: Path, marker: str, exclude: list[str], *, hard_links: bool = True,
    skipped: list[str] | None = None,
) -> dict[str, Entry]:
    """Every regular file and link under ``root`` (relative path -> Entry), skipping the
    agent's own files and excluded paths. Folders that are links are not entered.
    ``hard_links=False`` leaves out files with more than one name (rule 5); their paths
    go to ``skipped``."""
    out: dict[str, Entry] = {}
    stack: list[tuple[str, str]] = [(os.fsdecode(root), "")]
    while stack:
        folder, rel = stack.pop()
        try:
            it = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with it:
            for de in it:
                path = f"{rel}{de.name}"
                if is_internal(path, marker) or is_excluded(path, exclude):
                    continue
                try:
                    if de.is_dir(follow_symlinks=False):
                        stack.append((de.path, path + "/"))
                    elif de.is_symlink():
                        out[path] = entry_of(de.stat(follow_symlinks=False), os.readlink(de.path))
                    elif de.is_file(follow_symlinks=False):
                        st = de.stat(follow_symlinks=False)
                        if not hard_links and st.st_nlink > 1:
                            if skipped is not None:
                                skipped.append(path)
                            continue
                        out[path] = entry_of(st)
                except FileNotFoundError:
                    continue
    return out


def _walk_parent(root: Path, rel: str, create: bool, verified: set[str] | None) -> int:
    """Open the folder holding ``rel`` (relative to root) without following links;
    return its fd. ``create`` makes missing folders."""
    check_path(rel)
    parts = rel.split("/")[:-1]
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i, part in enumerate(parts):
            try:
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(rel, f"folder {'/'.join(parts[: i + 1])!r} is a link or not a folder") from None
                raise
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_in_root(root: Path, rel: str, *, hard_links: bool = True) -> int:
    """Open a regular file inside ``root`` for reading, refusing links anywhere, and
    anything that is not a regular file (rule 5). Blocking: call it from a thread."""
    return open_checked(root, rel, hard_links=hard_links)[0]


def open_checked(root: Path, rel: str, *, hard_links: bool = True) -> tuple[int, os.stat_result]:
    """:func:`open_in_root` that also returns the ``fstat`` of the open file."""
    dfd = _walk_parent(root, rel, create=False, verified=None)
    try:
        try:
            fd = os.open(rel.rsplit("/", 1)[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(rel, "is a link; only regular files are served") from None
            raise
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(rel, f"is not a regular file ({_kind(st.st_mode)}); only regular files are served")
        if not hard_links and st.st_nlink > 1:
            raise UnsafePath(rel, f"has {st.st_nlink} hard links (another name may lie outside the root); "
                                  "refused unless replication.allow_hard_links is true")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "an unknown kind"


def is_busy(fd: int) -> bool:
    """True if some process has this file open for writing (read lease refused).
    Where leases are not available, False: the quiet period alone decides."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EBUSY)
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return False


def path_is_busy(root: Path, rel: str) -> bool:
    try:
        fd = open_in_root(root, rel)
    except (OSError, UnsafePath):
        return False
    try:
        return is_busy(fd)
    finally:
        os.close(fd)


def sync_filesystem(fd: int) -> None:
    """Flush the whole file system holding ``fd`` (one call for a batch of files)."""
    if _syncfs is not None and _syncfs(fd) == 0:
        return
    os.fsync(fd)  # pragma: no cover - fallback


class ReplicaWriter:
    """Places files into a replica root. One per root; not thread-safe per path."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def tmp_path(self, rel: str, tag: str) -> Path:
        folder, _, _name = rel.rpartition("/")
        return self.root / folder / f"{TMP_PREFIX}{tag}"

    def open_tmp(self, rel: str, tag: str, append: bool = False) -> tuple[int, int]:
        """Open (create) the temp file for ``rel``; return (fd, its current length)."""
        dfd = _walk_parent(self.root, rel, create=True, verified=None)
        try:
            name = f"{TMP_PREFIX}{tag}"
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW  # read: resume hashes the prefix
            if not append:
                flags |= os.O_TRUNC
            fd = os.open(name, flags, 0o600, dir_fd=dfd)
        finally:
            os.close(dfd)
        length = os.lseek(fd, 0, os.SEEK_END)
        return fd, length

    def place(self, rel: str, tag: str, entry: Entry, fsync: bool = True) -> None:
        """Set mode and mtime on the temp file and rename it over ``rel``."""
        dfd = _walk_parent(self.root, rel, create=True, verified=None)
        try:
            name = f"{TMP_PREFIX}{tag}"
            target = rel.rsplit("/", 1)[-1]
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
            try:
                os.fchmod(fd, entry.mode & 0o7777)
                if fsync:
                    os.fsync(fd)
                os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
            finally:
                os.close(fd)
            _clear_folder_in_way(dfd, target)
            os.rename(name, target, src_dir_fd=dfd, dst_dir_fd=dfd)
        finally:
            os.close(dfd)

    def place_link(self, rel: str, entry: Entry) -> None:
        assert entry.link is not None
        dfd = _walk_parent(self.root, rel, create=True, verified=None)
        try:
            name = f"{TMP_PREFIX}link-{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dfd)
            os.symlink(entry.link, name, dir_fd=dfd)
            with contextlib.suppress(OSError):
                os.utime(name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=dfd, follow_symlinks=False)
            target = rel.rsplit("/", 1)[-1]
            _clear_folder_in_way(dfd, target)
            os.rename(name, target, src_dir_fd=dfd, dst_dir_fd=dfd)
        finally:
            os.close(dfd)

    def discard_tmp(self, rel: str, tag: str) -> None:
        with contextlib.suppress(OSError, UnsafePath):
            dfd = _walk_parent(self.root, rel, create=False, verified=None)
            try:
                os.unlink(f"{TMP_PREFIX}{tag}", dir_fd=dfd)
            finally:
                os.close(dfd)

    def stat(self, rel: str, *, hard_links: bool = True) -> Entry | None:
        """The entry of a regular file or link at ``rel``; None for anything else (and,
        with ``hard_links=False``, for a file with several names)."""
        try:
            dfd = _walk_parent(self.root, rel, create=False, verified=None)
        except (OSError, UnsafePath):
            return None
        try:
            st = os.stat(rel.rsplit("/", 1)[-1], dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                return entry_of(st, os.readlink(rel.rsplit("/", 1)[-1], dir_fd=dfd))
            if stat.S_ISREG(st.st_mode) and (hard_links or st.st_nlink == 1):
                return entry_of(st)
            return None
        except OSError:
            return None
        finally:
            os.close(dfd)

    def place_meta(self, rel: str, entry: Entry) -> None:
        self.chmod(rel, entry.mode & 0o7777)

    def chmod(self, rel: str, mode: int) -> None:
        dfd = _walk_parent(self.root, rel, create=False, verified=None)
        try:
            os.chmod(rel.rsplit("/", 1)[-1], mode, dir_fd=dfd, follow_symlinks=False)
        except NotImplementedError:  # pragma: no cover - lchmod missing on Linux
            os.chmod(rel.rsplit("/", 1)[-1], mode, dir_fd=dfd)
        finally:
            os.close(dfd)

    def move(self, src: str, dst: str) -> None:
        check_path(src)
        check_path(dst)
        sfd = _walk_parent(self.root, src, create=False, verified=None)
        dfd = _walk_parent(self.root, dst, create=True, verified=None)
        try:
            os.rename(src.rsplit("/", 1)[-1], dst.rsplit("/", 1)[-1], src_dir_fd=sfd, dst_dir_fd=dfd)
        finally:
            os.close(sfd)
            os.close(dfd)

    def set_aside(self, rel: str, folder: str) -> Path | None:
        """Move ``rel`` to ``.hotspare/<folder>/<rel>`` (trash or quarantine); never
        overwrite something already there. Returns where it went."""
        check_path(rel)
        if self.stat(rel) is None:
            return None
        dest = self.root / AGENT_DIR / folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        n = 1
        while dest.exists() or dest.is_symlink():
            dest = dest.with_name(f"{Path(rel).name}.{n}")
            n += 1
        sfd = _walk_parent(self.root, rel, create=False, verified=None)
        try:
            os.rename(rel.rsplit("/", 1)[-1], dest, src_dir_fd=sfd)
        finally:
            os.close(sfd)
        return dest

    def flush(self) -> None:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            sync_filesystem(fd)
        finally:
            os.close(fd)


def _clear_folder_in_way(dfd: int, name: str) -> None:
    """A file replacing an (empty) folder of the same name: remove the folder."""
    with contextlib.suppress(OSError):
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(name, dir_fd=dfd)


def remove_stale_tmp(root: Path, keep: Callable[[str], bool]) -> int:
    """Delete temp files left by a killed transfer unless ``keep(name)`` (resumable)."""
    removed = 0
    for folder, dirs, files in os.walk(root):
        if Path(folder) == root:
            dirs[:] = [d for d in dirs if d != AGENT_DIR]
        for f in files:
            if f.startswith(TMP_PREFIX) and not keep(f):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, f))
                    removed += 1
    return removed


def purge_trash(root: Path, retention: float, now: float | None = None) -> int:
    """Remove trash day-folders older than ``retention`` seconds."""
    trash = root / AGENT_DIR / "trash"
    now = time.time() if now is None else now
    removed = 0
    if not trash.is_dir():
        return 0
    for day in trash.iterdir():
        with contextlib.suppress(OSError):
            if now - day.stat().st_mtime > retention:
                shutil.rmtree(day)
                removed += 1
    return removed


def iter_chunks(fd: int, start: int, length: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    os.lseek(fd, start, os.SEEK_SET)
    left = length
    while left > 0:
        data = os.read(fd, min(chunk, left))
        if not data:
            break
        left -= len(data)
        yield data
