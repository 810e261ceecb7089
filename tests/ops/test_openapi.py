"""docs/openapi.yaml checked against the live answers of a real Router: every path of the
document is called, and every answer must match the schema the document gives for its
path, method, status and content type."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import yaml

from router.admin import history
from tests.helpers import wait_for
from tests.ops.kit import ADMIN_TOKEN, App, StandInAgent, running_router, sink_status, write_config

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"


def test_the_contract_check_can_fail() -> None:
    c = Contract()
    with pytest.raises(AssertionError, match="services/0: 'backends' is a required property"):
        c.check("GET", "/v1/status", 200, "application/json",
                {"generated_at": 1.0, "unfinished_promotions": [], "events": [],
                 "services": [{"name": "app", "active": "a", "epoch": 0, "state": "active"}]})
    with pytest.raises(AssertionError, match="answered 418, not documented"):
        c.check("GET", "/v1/status", 418, "application/json", {})


class Contract:
    def __init__(self) -> None:
        self.doc: dict[str, Any] = yaml.safe_load(DOC_PATH.read_text())
        jsonschema.Draft202012Validator.check_schema(self.doc["components"]["schemas"]["Status"])
        self.root = jsonschema.Draft202012Validator(self.doc)
        self.seen: set[tuple[str, str]] = set()

    def template_of(self, path: str) -> str:
        for template in self.doc["paths"]:
            pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            if re.match(pattern, path):
                return str(template)
        raise AssertionError(f"{path} is not in docs/openapi.yaml")

    def check(self, method: str, path: str, status: int, content_type: str, body: Any) -> None:
        template = self.template_of(path)
        op = self.doc["paths"][template].get(method.lower())
        assert op is not None, f"{method} {template} is not in docs/openapi.yaml"
        response = op["responses"].get(str(status))
        assert response is not None, f"{method} {template} answered {status}, not documented"
        if "$ref" in response:
            response = self.doc["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
        media = response["content"].get(content_type)
        assert media is not None, f"{method} {template} {status}: {content_type} not documented"
        if content_type == "application/json":
            errors = list(self.root.evolve(schema=media["schema"]).iter_errors(body))
            assert not errors, f"{method} {path} {status}: " + "; ".join(
                f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])
        self.seen.add((template, method.lower()))


@pytest.fixture
async def setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, aiohttp.ClientSession, Contract]]:
    monkeypatch.setattr(history, "SAMPLE_SECONDS", 0.2)  # points within the test's time
    a, b = App("a"), App("b")
    await a.start()
    await b.start()
    agent_b = StandInAgent(sink_status(lag=0.2))
    await agent_b.start()
    bs = [{"name": "a", "url": a.url}, {"name": "b", "url": b.url, "agent": agent_b.url}]
    path = write_config(tmp_path, bs, replication=True,
                        promote=[{"name": "warm", "exec": ["/bin/true"]}])
    async with running_router(path) as (_, _, admin), aiohttp.ClientSession() as s:
        yield admin, s, Contract()
    await agent_b.stop()
    await b.stop()
    await a.stop()


async def call(s: aiohttp.ClientSession, c: Contract, admin: str, method: str, path: str,
               body: Any = None, token: str | None = ADMIN_TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with s.request(method, admin + path, json=body, headers=headers) as r:
        data: Any = await r.json() if r.content_type == "application/json" else await r.text()
        c.check(method, path.split("?")[0], r.status, r.content_type, data)
        return r.status, data


async def test_live_answers_match_the_openapi_document(
    setup: tuple[str, aiohttp.ClientSession, Contract]
) -> None:
    admin, s, c = setup

    async def probed_and_fresh() -> bool:
        _, doc = await call(s, c, admin, "GET", "/v1/status", token=None)
        svc = doc["services"][0]
        return all(b["healthy"] for b in svc["backends"]) and svc["backends"][1]["replication"] is not None

    await wait_for(probed_and_fresh, what="probes and agent status")  # type: ignore[arg-type]
    assert (await call(s, c, admin, "GET", "/", token=None))[0] == 200
    assert (await call(s, c, admin, "GET", "/metrics", token=None))[0] == 200
    assert (await call(s, c, admin, "POST", "/v1/services/app/switchover", {"to": "b"}, token=None))[0] == 401
    assert (await call(s, c, admin, "POST", "/v1/services/app/switchover", {"to": "b"}, token="bad"))[0] == 401
    assert (await call(s, c, admin, "POST", "/v1/services/zz/switchover", {"to": "b"}))[0] == 404
    assert (await call(s, c, admin, "POST", "/v1/services/app/switchover", {}))[0] == 400
    assert (await call(s, c, admin, "POST", "/v1/services/app/switchover", {"to": "b", "dry_run": True}))[0] == 200
    assert (await call(s, c, admin, "POST", "/v1/services/app/failover", {"to": "b", "dry_run": True}))[0] == 200
    assert (await call(s, c, admin, "POST", "/v1/services/app/confirm-fenced"))[0] == 409
    assert (await call(s, c, admin, "POST", "/v1/services/app/resume"))[0] == 409
    assert (await call(s, c, admin, "POST", "/v1/services/app/backends/b/drain"))[0] == 200
    assert (await call(s, c, admin, "POST", "/v1/services/app/backends/a/drain"))[0] == 409
    assert (await call(s, c, admin, "POST", "/v1/services/app/backends/q/ready"))[0] == 404
    assert (await call(s, c, admin, "POST", "/v1/services/app/backends/b/ready"))[0] == 200
    assert (await call(s, c, admin, "POST", "/v1/services/app/switchover", {"to": "b"}))[0] == 200
    assert (await call(s, c, admin, "POST", "/v1/services/app/failover", {"to": "a"}))[0] == 200
    assert (await call(s, c, admin, "POST", "/v1/services/app/failover", {"to": "a"}))[0] == 409
    assert (await call(s, c, admin, "GET", "/v1/promotions", token=None))[0] == 200
    assert (await call(s, c, admin, "GET", "/v1/promotions?limit=x", token=None))[0] == 400
    assert (await call(s, c, admin, "POST", "/v1/reload"))[0] == 200
    _, doc = await call(s, c, admin, "GET", "/v1/status", token=None)
    assert any(e["kind"] == "notice" and e["message"].startswith("configuration reloaded") for e in doc["events"])

    async def history_with_points_and_marks() -> Any:
        _, h = await call(s, c, admin, "GET", "/v1/history", token=None)
        svc = h["services"][0] if h["services"] else {}
        return h if svc.get("points") and len(svc.get("marks", [])) >= 2 else None

    h = await wait_for(history_with_points_and_marks, what="history points and the two moves' marks")
    assert [m["kind"] for m in h["services"][0]["marks"]][-2:] == ["switchover", "switchover"]
    assert h["services"][0]["backends"][:2] == ["a", "b"] and h["services"][0]["roots"] == ["jobs"]
    documented = {(p, m) for p, ops in c.doc["paths"].items() for m in ops}
    assert documented == c.seen, f"not exercised: {sorted(documented - c.seen)}"
