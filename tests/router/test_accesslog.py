"""Access-log formats: Apache combined (parsable by the usual regex) and JSON lines."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import signal
import time
from pathlib import Path

import pytest

from router.proxy.accesslog import FLUSH_INTERVAL, AccessLog, AccessRecord
from tests.helpers import wait_for

from .conftest import svc
from .fuzzstack import Stack

N_REQUESTS = 300

COMBINED = re.compile(
    r'^(?P<h>\S+) \S+ \S+ \[(?P<t>[^\]]+)\] "(?P<r>(?:[^"\\]|\\.)*)" (?P<s>\d{3}) (?P<b>\d+|-) '
    r'"(?P<ref>(?:[^"\\]|\\.)*)" "(?P<ua>(?:[^"\\]|\\.)*)" rid=(?P<rid>\S+) rt=(?P<rt>[\d.]+)$'
)


def _rec(**kw: object) -> AccessRecord:
    base: dict[str, object] = dict(
        peer="127.0.0.1", method="GET", target="/a", version="HTTP/1.1", status=200, bytes_sent=12,
        referer="", user_agent='evil "agent"\n', request_id="r1", duration=0.0123, service="app", backend="a",
    )
    base.update(kw)
    return AccessRecord(**base)  # type: ignore[arg-type]


def test_combined_format_escapes_and_parses(tmp_path: Path) -> None:
    log = AccessLog(str(tmp_path / "a.log"))
    line = log.format(_rec(), 1_700_000_000.0)
    m = COMBINED.match(line)
    assert m, line
    assert (m["r"], m["s"], m["b"], m["ref"], m["rid"]) == ("GET /a HTTP/1.1", "200", "12", "-", "r1")
    assert m["ua"] == 'evil \\"agent\\"\\x0a'
    assert log.format(_rec(bytes_sent=0), 1_700_000_000.0).split('" ')[1].startswith("200 - ")
    log.close()


def test_json_format(tmp_path: Path) -> None:
    log = AccessLog(str(tmp_path / "a.log"), "json")
    doc = json.loads(log.format(_rec(), 1_700_000_000.0))
    assert doc["status"] == 200 and doc["request_id"] == "r1" and doc["backend"] == "a"
    log.write(_rec())
    log.close()
    assert json.loads((tmp_path / "a.log").read_text())["user_agent"] == 'evil "agent"\n'


async def test_router_writes_json_lines(backend, router, client, tmp_path: Path) -> None:
    url = await backend()
    _, base = await router([svc(url)], log={"access_log": str(tmp_path / "j.log"), "access_format": "json"})
    async with client.get(base + "/j?x=1", headers={"X-Request-ID": "json-1"}) as resp:
        assert resp.status == 200
    path = tmp_path / "j.log"
    text = await wait_for(lambda: path.exists() and path.read_text(), what="a JSON access-log line")
    doc = json.loads(text.splitlines()[0])
    assert (doc["method"], doc["target"], doc["status"], doc["request_id"], doc["service"]) == ("GET", "/j?x=1", 200, "json-1", "app")


def test_formats_are_byte_identical_to_the_contract(tmp_path: Path) -> None:
    log = AccessLog(str(tmp_path / "a.log"))
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(1_700_000_000))
    assert log.format(_rec(), 1_700_000_000.25) == (
        f'127.0.0.1 - - [{stamp}] "GET /a HTTP/1.1" 200 12 "-" "evil \\"agent\\"\\x0a" rid=r1 rt=0.012300'
    )
    log.fmt = "json"
    assert log.format(_rec(), 1_700_000_000.25) == (
        '{"time":1700000000.25,"remote":"127.0.0.1","method":"GET","target":"/a","version":"HTTP/1.1",'
        '"status":200,"bytes":12,"referer":"","user_agent":"evil \\"agent\\"\\n","request_id":"r1",'
        '"duration":0.0123,"service":"app","backend":"a"}'
    )
    log.close()


async def test_lines_are_batched_and_flushed_within_100ms(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = AccessLog(str(path))
    loop = asyncio.get_running_loop()
    for i in range(3):
        log.write(_rec(request_id=f"r{i}"))
    assert path.read_bytes() == b"", "a line was written before its batch"
    handle = log._flush_handle
    assert handle is not None and handle.when() - loop.time() <= FLUSH_INTERVAL == 0.1
    text = await wait_for(lambda: path.read_text().count("\n") == 3 and path.read_text(), timeout=5,
                          interval=0.005, what="the batch of 3 lines")
    assert [line.split("rid=")[1].split()[0] for line in text.splitlines()] == ["r0", "r1", "r2"]
    log.write(_rec(request_id="last"))
    log.close()  # flushes what the timer has not
    assert path.read_text().count("\n") == 4


@pytest.mark.timeout(60)
def test_sigterm_right_after_the_last_answer_loses_no_line(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    stack = Stack(tmp_path, log={"access_log": str(path)})
    try:
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=5)
        for i in range(N_REQUESTS):
            conn.request("GET", f"/n{i}", headers={"Host": "app", "X-Request-ID": f"sig-{i}"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
        proc = stack.router.proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        conn.close()
    finally:
        stack.close()
    rids = re.findall(r"rid=(sig-\d+) ", path.read_text())
    assert rids == [f"sig-{i}" for i in range(N_REQUESTS)]


def test_standard_output_is_written_in_whole_lines_of_at_most_pipe_buf() -> None:
    """Rule 4: several worker processes share one pipe; a piece of at most PIPE_BUF
    bytes, cut at a line end, is written by the kernel whole."""
    from router.proxy.accesslog import PIPE_BUF, _pieces

    lines = [(f"line {i} " + "x" * (i * 37 % 300)).encode() + b"\n" for i in range(400)]
    data = b"".join(lines)
    pieces = _pieces(data)
    assert b"".join(pieces) == data
    assert all(len(p) <= PIPE_BUF and p.endswith(b"\n") for p in pieces)
    assert len(pieces) > 1
    long = b"y" * (PIPE_BUF + 10) + b"\n"
    assert _pieces(b"a\n" + long + b"b\n") == [b"a\n", long, b"b\n"]  # a long line alone
    assert _pieces(b"") == []
