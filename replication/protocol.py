"""The agent's wire format, in one place (documented in docs/replication.md).

- Paths: percent-encoded bytes (:mod:`replication.paths`).
- An entry in JSON: ``{"p": path, "s": size, "m": mtime_ns, "o": mode}`` plus
  ``"l": link target`` (percent-encoded) for a link; a deletion in the feed is
  ``{"p": path, "del": true}``.
- ``GET /v1/roots/{root}/file?path=P`` answers the file's bytes followed by a 36-byte
  trailer: ``HSOK`` + the SHA-256 of the whole file, or ``HSCH`` + 32 zero bytes when
  the file changed while it was read (the receiver discards it). A trailer inside the
  body (rather than an HTTP trailer, which aiohttp cannot read) lets the source hash
  while it streams: no second read. ``Range: bytes=N-`` resumes; the digest still
  covers the whole file.
- ``POST /v1/roots/{root}/bundle`` with ``{"paths": [...]}`` streams many small files:
  per file a JSON line ``{"p", "st", "s", "m", "o"}`` (``st``: ok, missing, busy,
  unsafe, large), and for ``ok`` exactly ``s`` bytes then the 32-byte SHA-256.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from .paths import decode_wire, encode_wire
from .planner import Entry

TRAILER_OK = b"HSOK"
TRAILER_CHANGED = b"HSCH"
TRAILER_LEN = 36
H_SIZE = "X-Hotspare-Size"
H_MTIME = "X-Hotspare-Mtime-Ns"
H_MODE = "X-Hotspare-Mode"


class ProtocolError(Exception):
    """The peer answered something this agent cannot use; the message says what."""


class RangeError(ValueError):
    """A ``Range`` header the source does not serve (HTTP 416); says what was wrong."""


# Only what a resuming sink sends: one open-ended range. ASCII digits only (``str.isdigit``
# accepts superscripts that ``int`` refuses); 20 digits is more than any file size.
_RANGE = re.compile(r"bytes=([0-9]{1,20})-([0-9]{0,20})")


def parse_range(value: str | None) -> int:
    """The start offset of ``Range: bytes=N-`` (0 without the header)."""
    if not value:
        return 0
    shown = f"{value[:80]!r}" + ("..." if len(value) > 80 else "")
    text = value.strip()
    if "," in text:
        raise RangeError(f"Range: expected one range 'bytes=N-', got several: {shown}")
    m = _RANGE.fullmatch(text)
    if m is None:
        raise RangeError(f"Range: expected 'bytes=N-' (N a byte offset), got {shown}")
    start = int(m[1])
    if m[2]:
        if int(m[2]) < start:
            raise RangeError(f"Range: start {start} is after end {int(m[2])} in {shown}")
        raise RangeError(f"Range: only an open-ended 'bytes=N-' is served, got {shown}")
    return start


def entry_json(path: str, entry: Entry | None) -> dict[str, Any]:
    if entry is None:
        return {"p": encode_wire(path), "del": True}
    out: dict[str, Any] = {"p": encode_wire(path), "s": entry.size, "m": entry.mtime_ns, "o": entry.mode}
    if entry.link is not None:
        out["l"] = encode_wire(entry.link)
    return out


def parse_entry(obj: Any) -> tuple[str, Entry | None]:
    """Inverse of :func:`entry_json`. Raises UnsafePath for a bad path, ProtocolError
    for a malformed object."""
    if not isinstance(obj, dict) or not isinstance(obj.get("p"), str):
        raise ProtocolError(f"expected an entry object with a 'p' string, got {obj!r:.100}")
    path = decode_wire(obj["p"])
    if obj.get("del"):
        return path, None
    try:
        size, mtime, mode = int(obj["s"]), int(obj["m"]), int(obj["o"])
    except (KeyError, TypeError, ValueError):
        raise ProtocolError(f"entry {obj['p']!r}: expected integer s, m, o") from None
    link = obj.get("l")
    if link is not None:
        link = os.fsdecode(unquote_to_bytes(str(link)))
    return path, Entry(size, mtime, mode, link)
