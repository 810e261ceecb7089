"""Generated raw requests (issue 10): what tests/router/fuzzrun.py sends to a real router
and checks the invariants against. Shared by tests/router/test_fuzz.py (bounded, CI) and
bench/fuzz_bench.py (long runs).

Rules:

1. A generated input is one to three raw request messages sent on one fresh connection.
   Each message knows what the issue says must never be forwarded (CONNECT, HTTP/0.9,
   authority-form, ``*``, ``@host``, relative targets, invalid framing, malformed field
   lines) and carries a marker (header ``X-Fuzz-Reject`` or ``fuzz-reject`` in its
   target) that the recording backend must never see.
2. A message knows whether the router can answer it before the client hangs up: an
   HTTP/0.9 line never ends its head, so it is never answered (``answered=False``) and the
   client need not wait out a silence for it (tests/router/fuzzkit.py ``exchange``).
3. How inputs are sent and what is checked after each: tests/router/fuzzrun.py.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import TypeVar

from hypothesis import strategies as st

REJECT = b"X-Fuzz-Reject: 1"
T = TypeVar("T")
_TCHAR = set((string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~").encode())


@dataclass(frozen=True)
class Message:
    raw: bytes
    method: str
    must_reject: bool
    nominated: tuple[tuple[str, str], ...] = ()  # (name, client value) Connection nominated
    answered: bool = True  # False: its head never ends (HTTP/0.9), so no answer can come


@dataclass(frozen=True)
class FuzzInput:
    messages: tuple[Message, ...]

    @property
    def raw(self) -> bytes:
        return b"".join(m.raw for m in self.messages)

    @property
    def methods(self) -> list[str]:
        return [m.method for m in self.messages]

    @property
    def answers(self) -> int:
        """Answers the router can give before it sees EOF (only the last message may be
        one it cannot answer: the leading ones are clean)."""
        return sum(m.answered for m in self.messages)

    def __repr__(self) -> str:
        """What hypothesis prints as the falsifying example: a Python expression of the
        raw bytes, long runs written as ``b'L' * 8000`` so it stays readable."""
        parts = []
        for m in _RUNS.finditer(self.raw):
            run, lit = m.group(1), m.group(3)
            parts.append(f"{run[:1]!r} * {len(run)}" if run else repr(lit))
        return f"FuzzInput({' + '.join(parts) or repr(b'')})"


_RUNS = re.compile(rb"((.)\2{31,})|((?:(?!(.)\4{31}).)+)", re.S)


# -- strategies --------------------------------------------------------------------------

_TOKEN = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
_VALID_METHODS = ["GET", "GET", "GET", "POST", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS",
                  "TRACE", "M-SEARCH", "PROPFIND"]
methods = (
    st.sampled_from(_VALID_METHODS).map(str.encode),
    st.one_of(
        st.sampled_from([b"CONNECT", b"get", b"Get", b"FOO"]),
        st.binary(min_size=0, max_size=6),
        st.text(alphabet="GET(){}<>@,;:\\\"/[]?=é", max_size=6).map(lambda t: t.encode()),
    ),
)
# Pieces of a path: valid URI characters and %-encodings, then bytes no URI may hold.
_odd = [b"%2e%2e/", b"%2F", b"%00", b"%zz", b"%", b"..", b"/", b"?", b";", b"a", b"b=1&c", b"~",
        b"%0d%0a", b"%C3%A9"]
_odder = [b"#", b"\\", b"\xc3\xa9", b"\xff", b"\x7f", b"\x00", b"\t", b"{}", b"|", b"^", b'"']
origin_targets = st.lists(st.sampled_from(_odd), max_size=12).map(lambda parts: b"/" + b"".join(parts))
odd_targets = st.lists(st.sampled_from(_odd + _odder), min_size=1, max_size=12).map(lambda parts: b"/" + b"".join(parts))
long_targets = st.integers(1000, 8000).map(lambda n: b"/" + b"L" * n)  # under the 8190 default
huge_targets = st.integers(8000, 20_000).map(lambda n: b"/" + b"L" * n)


def targets(d1: int, d2: int) -> tuple[st.SearchStrategy[tuple[bytes, bool]], st.SearchStrategy[tuple[bytes, bool]]]:
    """(request-target, must be refused) with the decoys embedded where a target can:
    (forwardable, refused) strategies."""
    forwardable = st.sampled_from([
        f"http://127.0.0.1:{d1}/x".encode(), f"http://127.0.0.2:{d2}/x?q=1".encode(),
        b"http://other-host/", f"http://127.0.0.1:{d1}".encode(), f"HTTP://127.0.0.2:{d2}/y".encode(),
        f"//127.0.0.1:{d1}/x".encode(), f"//127.0.0.2:{d2}".encode(),
    ])
    refused = st.sampled_from([
        f"127.0.0.1:{d1}".encode(), f"127.0.0.2:{d2}".encode(), b"other-host:443", b"*",
        f"@127.0.0.1:{d1}".encode(), f"@127.0.0.2:{d2}/x".encode(), b"x/y", b"?a=1", b"",
    ])
    return (
        st.one_of(origin_targets, origin_targets, origin_targets, forwardable, long_targets).map(lambda t: (t, False)),
        st.one_of(
            refused.map(lambda t: (t, True)),
            st.one_of(odd_targets, huge_targets, st.just(f"http://u@127.0.0.1:{d1}/z".encode())).map(lambda t: (t, False)),
        ),
    )


versions = (
    st.sampled_from([b"HTTP/1.1"] * 3 + [b"HTTP/1.0"]),
    st.sampled_from([None, b"HTTP/2.0", b"HTTP/1.2", b"HTTP/3", b"http/1.1", b"HTTP/01.1", b"HTTP/1.1 x",
                     b"HTX/1.1", b""]),
)
_names = st.one_of(
    st.sampled_from([b"X-A", b"X-B", b"Accept", b"User-Agent", b"Cookie", b"Expect", b"Upgrade", b"TE",
                     b"Trailer", b"Proxy-Connection", b"Keep-Alive", b"Range", b"Content-Type"]),
    st.text(alphabet=_TOKEN, min_size=1, max_size=20).map(str.encode),
)
_bad_names = st.sampled_from([b"", b"X Bad", b"X-A ", b"X-\x00", b"X-\xc3\xa9", b"X(Y)"])
_values = (
    st.one_of(
        st.text(alphabet=string.ascii_letters + string.digits + " ,;=/.-", max_size=30).map(str.encode),
        st.sampled_from([b"", b"100-continue", b"websocket", b"bytes=0-1", b" padded ", b"\xe9\xff"]),
    ),
    st.one_of(
        st.sampled_from([b"a\r\n folded", b"a\rb", b"a\nb", b"a\x00b"]),
        st.integers(100, 20_000).map(lambda n: b"v" * n),
    ),
)


def _pick(draw: st.DrawFn, clean: bool, pair: tuple[st.SearchStrategy[T], st.SearchStrategy[T]]) -> T:
    """A clean message takes the valid choice; a wild one either, half and half."""
    if clean or draw(st.booleans()):
        return draw(pair[0])
    return draw(pair[1])


@st.composite
def header_lines(draw: st.DrawFn, clean: bool) -> tuple[list[bytes], bool]:
    """Ordinary header lines (some malformed); True if one is a malformed field line."""
    if not clean and draw(st.integers(0, 5)) == 0:  # many: one draw, not hundreds
        n = draw(st.integers(50, 300))
        return [b"X-Many-%d: %d" % (i, i) for i in range(n)], False
    lines, bad = [], False
    for _ in range(draw(st.integers(0, 5))):
        if not clean and draw(st.integers(0, 5)) == 0:
            name, bad = draw(_bad_names), True
        else:
            name = draw(_names)
        lines.append(name + b": " + _pick(draw, clean, _values))
    return lines, bad


# (header lines, body, must be refused) for each kind of framing
def _framing(body: bytes, kind: str) -> tuple[list[bytes], bytes, bool]:
    n = len(body)
    chunked = (f"{n:x}\r\n".encode() + body + b"\r\n" if n else b"") + b"0\r\n\r\n"
    table: dict[str, tuple[list[bytes], bytes, bool]] = {
        "none": ([], b"", False),
        "cl": ([f"Content-Length: {n}".encode()], body, False),
        "cl_short": ([f"Content-Length: {n + 7}".encode()], body, False),
        "cl_long": ([f"Content-Length: {n}".encode()], body + b"EXTRA\r\n", False),
        "cl_negative": ([b"Content-Length: -1"], body, True),
        "cl_dup_same": ([f"Content-Length: {n}".encode()] * 2, body, False),
        "cl_conflict": ([f"Content-Length: {n}".encode(), f"Content-Length: {n + 1}".encode()], body, True),
        "cl_garbage": ([b"Content-Length: +" + str(n).encode()], body, True),
        "cl_hex": ([b"Content-Length: 0x" + f"{n:x}".encode()], body, True),
        "chunked": ([b"Transfer-Encoding: chunked"], chunked, False),
        "chunked_case": ([b"Transfer-Encoding: Chunked"], chunked, False),
        "chunked_bad_size": ([b"Transfer-Encoding: chunked"], b"zz\r\n" + body + b"\r\n0\r\n\r\n", False),
        "chunked_huge_size": ([b"Transfer-Encoding: chunked"], b"ffffffffffffffffffff\r\nab\r\n0\r\n\r\n", False),
        "chunked_no_crlf": ([b"Transfer-Encoding: chunked"], f"{n + 1:x}\r\n".encode() + body + b"X0\r\n\r\n", False),
        "te_and_cl": ([b"Transfer-Encoding: chunked", f"Content-Length: {n}".encode()], chunked, False),
        "te_not_final": ([b"Transfer-Encoding: chunked, gzip"], chunked, True),
        "te_gzip": ([b"Transfer-Encoding: gzip"], body, True),
        "te_identity": ([b"Transfer-Encoding: identity"], body, True),
        "te_twice": ([b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"], chunked, True),
        "te_space": ([b"Transfer-Encoding : chunked"], chunked, True),
    }
    return table[kind]


framings = (
    st.sampled_from(["none"] * 4 + ["cl"] * 2 + ["chunked", "chunked_case"]),
    st.sampled_from([
        "cl_dup_same", "cl_short", "cl_long", "cl_negative", "cl_conflict", "cl_garbage", "cl_hex", "chunked_bad_size",
        "chunked_huge_size", "chunked_no_crlf", "te_and_cl", "te_not_final", "te_gzip", "te_identity",
        "te_twice", "te_space",
    ]),
)
_NOMINABLE = [b"X-Nom-A", b"X-Nom-B", b"X-Forwarded-For", b"X-Real-IP", b"Forwarded", b"X-Forwarded-Host"]


@st.composite
def nominations(draw: st.DrawFn, clean: bool) -> tuple[list[bytes], tuple[tuple[str, str], ...]]:
    """A Connection header nominating some headers that are then sent too (a clean one
    never says close: a pipeline would end there)."""
    names = draw(st.lists(st.sampled_from(_NOMINABLE), unique=True, max_size=3))
    tokens = [b"keep-alive", b"Upgrade"] + ([] if clean else [b"close"])
    extra = draw(st.lists(st.sampled_from(tokens), unique=True, max_size=1))
    if not names and not extra:
        return [], ()
    pairs = tuple((n.decode(), "6.6.6.6" if n == b"X-Forwarded-For" else "nv-" + draw(st.text(alphabet=string.ascii_lowercase + string.digits, min_size=6, max_size=6))) for n in names)
    lines = [b"Connection: " + b", ".join([*names, *extra])] + [f"{n}: {v}".encode() for n, v in pairs]
    return lines, pairs


@st.composite
def messages(draw: st.DrawFn, d1: int, d2: int, clean: bool | None = None) -> Message:
    """Clean messages are likely forwarded, wild ones likely refused; half and half
    unless ``clean`` says."""
    clean = draw(st.booleans()) if clean is None else clean
    method = _pick(draw, clean, methods)
    target, reject = _pick(draw, clean, targets(d1, d2))
    version = _pick(draw, clean, versions)
    if version is None:  # HTTP/0.9: a request line and nothing else
        return Message(method + b" /fuzz-reject" + target + b"\r\n", method.decode("latin-1"), True, answered=False)
    lines, bad_line = draw(header_lines(clean))
    nom_lines, nominated = draw(nominations(clean))
    fr_lines, body, bad_framing = _framing(draw(st.binary(max_size=64)), _pick(draw, clean, framings))
    host = _pick(draw, clean, _hosts(d1, d2))
    reject = reject or bad_line or bad_framing or method == b"CONNECT" or bool(set(method) - _TCHAR) or not method
    head = [method + b" " + target + b" " + version] + ([b"Host: " + host] if host is not None else [])
    head += [*lines, *nom_lines, *fr_lines] + ([REJECT] if reject else [])
    eol = b"\r\n" if clean or draw(st.booleans()) else b"\n"
    raw = eol.join(head) + eol + eol + body
    return Message(raw, method.decode("latin-1"), reject, nominated)


def _hosts(d1: int, d2: int) -> tuple[st.SearchStrategy[bytes | None], st.SearchStrategy[bytes | None]]:
    return (
        st.sampled_from([b"localhost", f"127.0.0.1:{d1}".encode(), f"127.0.0.2:{d2}".encode(), b"other-host"]),
        st.sampled_from([b"", b"h:99999", b"a b", None]),
    )


def fuzz_inputs(d1: int, d2: int) -> st.SearchStrategy[FuzzInput]:
    """One message, or a pipeline of two or three whose leading ones are clean (a
    refused first message would close the connection before the rest is read)."""
    one = messages(d1, d2)
    leading = st.lists(messages(d1, d2, clean=True), min_size=1, max_size=2)
    return st.one_of(
        one.map(lambda m: FuzzInput((m,))),
        st.tuples(leading, one).map(lambda p: FuzzInput((*p[0], p[1]))),
    )
