"""Access-log formats: Apache combined (parsable by the usual regex) and JSON lines."""

from __future__ import annotations

import json
import re
from pathlib import Path

from router.proxy.accesslog import AccessLog, AccessRecord
from tests.helpers import wait_for

from .conftest import svc

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
