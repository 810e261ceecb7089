"""Raw-socket tools for attacking a real router from outside (tests/router/test_fuzz.py,
tests/router/test_attacks.py, bench/fuzz_bench.py).

Rules:

1. Everything is synchronous and thread-based, so a hypothesis test drives it from the
   test thread with no event loop: the backends and decoys are threads with blocking
   sockets; the router is a real ``hotspare router -c FILE`` subprocess (fuzzstack.py).
2. The recording backend parses HTTP/1.1 itself (no aiohttp), so what it records is what
   the router really sent, and it is never stricter or laxer than we say: it records
   request line, headers and body length, answers 200 with ``X-Recorded: 1`` and counts
   the router's health probes apart (they use their own unguessable path).
3. A decoy is a listener no request may ever reach: it only counts connections.
4. Every wait is a deadline; every socket and thread is closed by its owner's ``close()``.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

RECORDED_BODY = b"ok\n"
_HEAD_LIMIT = 1 << 20


class _Lines:
    """Buffered reads from a blocking socket (the backend's side of a connection)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def until(self, sep: bytes, limit: int) -> bytes:
        while (i := self.buf.find(sep)) < 0:
            if len(self.buf) > limit:
                raise ValueError(f"no {sep!r} within {limit} bytes")
            self._fill()
        out = bytes(self.buf[: i + len(sep)])
        del self.buf[: i + len(sep)]
        return out

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


@dataclass(frozen=True)
class Recorded:
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body_len: int
    complete: bool

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


class _Listener:
    """An accept loop in a daemon thread; ``handle`` runs in a thread per connection."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(1024)
        self.sock.settimeout(0.1)  # so the loop sees ``close()`` promptly
        self.host, self.port = host, self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name=f"listener {self.port}")
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            counted = self.counts(conn)
            with self._lock:
                self.accepted += counted
                self._conns.add(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.handle(conn)
        except (OSError, EOFError, ValueError):
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def counts(self, conn: socket.socket) -> bool:
        """Whether this connection counts in ``accepted``."""
        return True

    def handle(self, conn: socket.socket) -> None:
        """A decoy: nothing to say; the connection is closed at once."""

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        with self._lock:
            for conn in list(self._conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _hex_endpoint(host: str, port: int) -> str:
    """An IPv4 endpoint as /proc/net/tcp writes it ("0100007F:1F90")."""
    packed = socket.inet_aton(host)
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def socket_owner(local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The pid of the process whose TCP socket goes from ``local`` to ``remote`` (None
    when it cannot be found: closed already, or another namespace)."""
    want = (_hex_endpoint(*local), _hex_endpoint(*remote))
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1], fields[2]) == want:
            inode = fields[9]
            break
    if inode is None:
        return None
    link = f"socket:[{inode}]"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) == link for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    return None


class Decoy(_Listener):
    """A listener no request may ever reach. ``accepted`` counts the connections that
    the process ``suspect()`` names opened (or that cannot be attributed: counted, to be
    safe); a connection from some other program on the machine, which happened to pick
    this ephemeral port, goes to ``foreign`` instead and fails nothing."""

    def __init__(self, host: str = "127.0.0.1", suspect: Callable[[], int | None] = lambda: None) -> None:
        self.suspect = suspect
        self.foreign = 0
        super().__init__(host)

    def counts(self, conn: socket.socket) -> bool:
        pid = self.suspect()
        if pid is None:
            return True
        try:
            owner = socket_owner(conn.getpeername(), conn.getsockname())
        except OSError:
            return True
        if owner is not None and owner != pid:
            self.foreign += 1
            return False
        return True


class RecordingBackend(_Listener):
    """A raw HTTP/1.1 backend that records every request the router sends it."""

    def __init__(self, name: str, probe_path: str) -> None:
        self.name, self.probe_path = name, probe_path
        self.requests: list[Recorded] = []
        self.heads = 0  # request heads seen (a head counts before its body arrives)
        self.probes = 0
        self.problems: list[str] = []
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handle(self, conn: socket.socket) -> None:
        lines = _Lines(conn)
        while not self._stop.is_set():
            try:
                head = lines.until(b"\r\n\r\n", _HEAD_LIMIT)
            except EOFError:
                return
            method, target, version, headers = self._parse_head(head)
            probe = target == self.probe_path
            with self._lock:
                if probe:
                    self.probes += 1
                else:
                    self.heads += 1
            body_len, complete = self._read_body(lines, headers)
            if not probe:
                with self._lock:
                    self.requests.append(Recorded(method, target, version, tuple(headers), body_len, complete))
            if not complete:
                return
            conn.sendall(self._answer(method))
            if any(k.lower() == "connection" and "close" in v.lower() for k, v in headers):
                return

    def _parse_head(self, head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
        text = head.decode("latin-1")
        first, *rest = text[:-4].split("\r\n")
        parts = first.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._problem(f"backend {self.name}: unparsable request line {first[:200]!r}")
            raise ValueError(first)
        if not parts[1].startswith("/"):
            self._problem(f"backend {self.name}: request-target not origin-form: {parts[1][:200]!r}")
        headers: list[tuple[str, str]] = []
        for line in rest:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip() or "\n" in line or "\r" in line:
                self._problem(f"backend {self.name}: bad header line {line[:200]!r}")
            headers.append((name, value.strip()))
        return parts[0], parts[1], parts[2], headers

    def _read_body(self, lines: _Lines, headers: list[tuple[str, str]]) -> tuple[int, bool]:
        te = ",".join(v for k, v in headers if k.lower() == "transfer-encoding").lower()
        cls = [v for k, v in headers if k.lower() == "content-length"]
        if te and cls:
            self._problem(f"backend {self.name}: both Transfer-Encoding {te!r} and Content-Length {cls}")
        try:
            if te:
                if te.strip() != "chunked":
                    self._problem(f"backend {self.name}: Transfer-Encoding {te!r}")
                    return 0, False
                return self._read_chunked(lines), True
            if len(set(cls)) > 1 or (cls and not cls[0].isdigit()):
                self._problem(f"backend {self.name}: Content-Length {cls}")
                return 0, False
            n = int(cls[0]) if cls else 0
            lines.exactly(n)
            return n, True
        except EOFError:
            return 0, False

    @staticmethod
    def _read_chunked(lines: _Lines) -> int:
        total = 0
        while True:
            size = int(lines.until(b"\r\n", 4096).split(b";")[0].strip(), 16)
            if size == 0:
                while lines.until(b"\r\n", _HEAD_LIMIT) != b"\r\n":  # trailers
                    pass
                return total
            lines.exactly(size + 2)
            total += size

    def _answer(self, method: str) -> bytes:
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Length: {len(RECORDED_BODY)}\r\n"
            f"X-Recorded: 1\r\nX-Backend: {self.name}\r\n\r\n"
        ).encode()
        return head if method == "HEAD" else head + RECORDED_BODY

    def _problem(self, text: str) -> None:
        with self._lock:
            self.problems.append(text)

    def snapshot(self) -> tuple[int, int, int]:
        """(heads, recorded requests, problems) so far, to diff around one input."""
        with self._lock:
            return self.heads, len(self.requests), len(self.problems)


# -- the client side -----------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    body_len: int

    @property
    def recorded(self) -> bool:
        """Came from a recording backend (the router did not make it)."""
        return "x-recorded" in self.headers


@dataclass
class Exchange:
    raw: bytes
    ended: str  # closed, reset, quiet, deadline, complete, eof (closed after our EOF)
    responses: list[Response] = field(default_factory=list)
    garbled: bytes = b""  # bytes after the last response that parse as no response

    @property
    def heads(self) -> list[tuple[int, bool]]:
        """(status, came from a recording backend) of every response head in ``raw``,
        found by pattern so a body we could not frame hides none (HTTP/0.9 lines too)."""
        return [
            (int(m.group(1)), b"\r\nx-recorded:" in m.group(0).lower())
            for m in _STATUS_HEAD.finditer(self.raw)
        ]


_STATUS_HEAD = re.compile(rb"HTTP/\d(?:\.\d)? (\d{3})[^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n")


def parse_responses(raw: bytes, methods: list[str]) -> tuple[list[Response], bytes, bool]:
    """Final responses in ``raw`` (1xx skipped); ``methods[i]`` tells a HEAD answer apart.
    Returns (responses, unparsed rest, whether the last one is known to be whole)."""
    out: list[Response] = []
    pos = 0
    while pos < len(raw):
        start, end = pos, raw.find(b"\r\n\r\n", pos)
        if end < 0 or not raw.startswith(b"HTTP/1.", pos):
            return out, raw[pos:], False
        lines = raw[pos:end].decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.\d (\d{3})", lines[0])
        if m is None:
            return out, raw[pos:], False
        status, headers = int(m.group(1)), _header_dict(lines[1:])
        pos = end + 4
        if status < 200:
            continue
        head_only = status in (204, 304) or (len(out) < len(methods) and methods[len(out)] == "HEAD")
        if head_only or raw.startswith(b"HTTP/1.", pos):
            out.append(Response(status, headers, 0))
            continue
        if "content-length" in headers:
            n = int(headers["content-length"][0])
            if pos + n > len(raw):
                return out, raw[start:], False
            out.append(Response(status, headers, n))
            pos += n
            continue
        # Chunked or close-delimited: router-made pages are small and whole on close.
        out.append(Response(status, headers, len(raw) - pos))
        return out, b"", False
    return out, b"", True


def _header_dict(lines: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in lines:
        k, _, v = line.partition(":")
        out.setdefault(k.strip().lower(), []).append(v.strip())
    return out


def connect(port: int, source: str | None = None, host: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source is not None:
        s.bind((source, 0))
    s.settimeout(timeout)
    s.connect((host, port))
    return s


def exchange(
    port: int, data: bytes, methods: list[str], *, answers: int | None = None, quiet: float = 0.3,
    deadline: float = 1.5,
) -> Exchange:
    """Send ``data`` on a fresh connection and read until the router closes, every
    expected response is in (``len(methods)``), ``quiet`` s of silence, or ``deadline``.

    ``answers`` (fewer than ``len(methods)``) says the trailing messages cannot be answered
    before EOF (an HTTP/0.9 line never ends its head): once that many are in, we half-close
    and read until the router closes ("eof"), which it does in a millisecond, instead of
    waiting out ``quiet``. EOF is never sent earlier: the router drops pipelined requests
    it has not answered when it sees one."""
    expect = len(methods) if answers is None else min(answers, len(methods))
    s = connect(port)
    end_at = time.monotonic() + deadline
    raw, ended, eof_sent = bytearray(), "deadline", False
    try:
        try:
            s.sendall(data)
        except OSError:  # the router answered and closed mid-send: read what it said
            pass
        while (left := end_at - time.monotonic()) > 0:
            responses, _, whole = parse_responses(bytes(raw), methods)
            done = whole and len(responses) >= expect
            # 10 ms after the last expected answer: what a smuggled request would bring.
            s.settimeout(min(left, 0.01 if done and not eof_sent else quiet))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                if done and expect < len(methods) and not eof_sent:
                    eof_sent = _half_close(s)
                    if eof_sent:
                        continue
                ended = "complete" if done else "quiet"
                break
            except ConnectionResetError:
                ended = "reset"
                break
            if not chunk:
                ended = "eof" if eof_sent else "closed"
                break
            raw += chunk
    finally:
        s.close()
    responses, rest, _ = parse_responses(bytes(raw), methods)
    return Exchange(bytes(raw), ended, responses, rest)


def _half_close(s: socket.socket) -> bool:
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        return False
    return True


def read_until_closed(s: socket.socket, deadline: float) -> tuple[bytes, bool]:
    """Everything the peer sends until it closes (True) or ``deadline`` (monotonic) passes."""
    got = bytearray()
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return bytes(got), True
        if not chunk:
            return bytes(got), True
        got += chunk
    return bytes(got), False
