"""Relative paths inside a root: checking them, and carrying them on the wire.

Rules:

1. Inside the agent a path is a ``str`` relative to its root, with ``/`` separators,
   decoded from the file system's bytes with ``os.fsdecode`` (surrogateescape), so a
   name that is not UTF-8 survives a round trip unchanged.
2. On the wire (JSON, query strings) a path is the percent-encoding of its raw bytes
   (RFC 3986: unreserved characters and ``/`` stay as they are, every other byte is
   ``%XX``). It is plain ASCII, whatever the name: JSON parsers and proxies never see a
   lone surrogate or a control character.
3. A path is safe when it is relative, has no empty, ``.`` or ``..`` component, no NUL,
   and does not enter the agent's own folder (``.hotspare``) or name the marker. Links
   are checked on the disk, by :func:`replication.fileio.open_in_root`.
4. Every check raises :class:`UnsafePath` saying what was wrong with which path.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from urllib.parse import quote_from_bytes, unquote_to_bytes

__all__ = [
    "AGENT_DIR",
    "PathTooLong",
    "UnsafePath",
    "check_path",
    "decode_wire",
    "encode_wire",
    "hidden_reason",
    "is_excluded",
    "is_internal",
]

# The agent's own folder at the top of each root: temp files of bundles, trash,
# quarantine, the sync point. Never served, never mirrored.
AGENT_DIR = ".hotspare"
# Temp files of transfers live beside their target; they start with this.
TMP_PREFIX = ".hstmp-"


# Linux's own limits (NAME_MAX, PATH_MAX): no longer name can exist on the disk, so a
# longer one is refused before any system call sees it.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096


class UnsafePath(ValueError):
    """A path that must not be read or written. ``str()`` says which and why."""

    status = 400

    def __init__(self, path: str, why: str) -> None:
        self.path = path
        self.why = why
        shown = encode_wire_lenient(path)
        if len(shown) > 200:
            shown = shown[:200] + "..."
        super().__init__(f"unsafe path {shown!r}: {why}")


class PathTooLong(UnsafePath):
    """A path or name longer than the file system allows (HTTP 414)."""

    status = 414


def encode_wire(path: str) -> str:
    """``"a b/é"`` -> ``"a%20b/%C3%A9"``; undecodable bytes -> their ``%XX``."""
    return quote_from_bytes(os.fsencode(path), safe="/")


def encode_wire_lenient(path: str) -> str:
    try:
        return encode_wire(path)
    except (UnicodeError, TypeError):
        return repr(path)


def decode_wire(text: str) -> str:
    """Inverse of :func:`encode_wire`, then :func:`check_path`."""
    if not text.isascii():
        raise UnsafePath(text, "expected a percent-encoded ASCII path")
    return check_path(os.fsdecode(unquote_to_bytes(text)))


def check_path(path: str) -> str:
    """Return ``path`` if it is a safe relative path in a root, else raise UnsafePath."""
    if not path:
        raise UnsafePath(path, "empty path")
    if "\0" in path:
        raise UnsafePath(path, "contains a NUL byte")
    try:
        raw = os.fsencode(path)
    except UnicodeError:
        raise UnsafePath(path, "is not a file-system name (unpaired surrogate)") from None
    if len(raw) > MAX_PATH_BYTES:
        raise PathTooLong(path, f"{len(raw)} bytes long; expected at most {MAX_PATH_BYTES}")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise UnsafePath(path, "absolute path; expected a path relative to the root")
    if "\\" in path and os.sep == "\\":  # pragma: no cover - POSIX only project
        raise UnsafePath(path, "backslash separator")
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePath(path, f"has a {part or 'empty'!r} component; expected a plain path")
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise PathTooLong(path, f"has a name of {len(os.fsencode(part))} bytes; expected at most "
                                    f"{MAX_NAME_BYTES}")
    if parts[0] == AGENT_DIR:
        raise UnsafePath(path, f"inside the agent's own folder {AGENT_DIR!r}")
    if parts[-1].startswith(TMP_PREFIX):
        raise UnsafePath(path, "names a transfer temp file")
    return path


def is_internal(path: str, marker: str) -> bool:
    """True for the agent's own files: its folder, temp files and the root marker."""
    return (
        path == marker
        or path == AGENT_DIR
        or path.startswith(AGENT_DIR + "/")
        or path.rsplit("/", 1)[-1].startswith(TMP_PREFIX)
    )


def is_excluded(path: str, patterns: Iterable[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def hidden_reason(path: str, marker: str, patterns: Iterable[str]) -> str | None:
    """Why ``path`` is never served or recorded, or None. A scan does not enter an
    excluded folder, so every folder on the way counts, not only the file itself."""
    if is_internal(path, marker):
        return "is the agent's own file (marker, .hotspare folder or temp file)"
    pats = list(patterns)
    if not pats:
        return None
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if is_excluded(prefix, pats):
            what = "is" if i == len(parts) else f"lies in folder {prefix!r}, which is"
            return f"{what} excluded by replication.roots[].exclude"
    return None
