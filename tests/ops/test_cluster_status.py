"""The cluster in ``/v1/status``, on the status page and in ``hotspare status``, drawn from
a fake RouterControl (the real pair is tests/cluster's): what a router of a pair shows,
and that a router alone shows nothing new."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from router.admin.control import (
    BackendStatistics,
    ClusterStatistics,
    MemberStatistics,
    RouterControl,
    RouterStatistics,
    ServiceStatistics,
)
from router.admin.page import render_status_page
from router.admin.status import build_status
from router.cli.client import format_status
from router.config import Config, parse_config
from router.failover.controller import ServiceController
from router.failover.feed import EventFeed
from router.failover.state import StateFile

PAIR = ClusterStatistics(
    name="r1", etcd_ok=True, etcd_error=None,
    endpoints=("http://root:s3cret@10.0.0.1:2379", "https://10.0.0.2:2379"),
    members=(MemberStatistics("r1", True, "10.0.0.1:9100", {"app": {"a": "up", "b": "up"}}),
             MemberStatistics("r2", True, "10.0.0.2:9100", {"app": {"a": "down", "b": "suspect"}})),
    deciders={"app": "r1", "crm": None}, decides=("app",),
)


class FakeRouter:
    """Just enough of a router for the status document (a RouterControl for mypy)."""

    def __init__(self, tmp_path: Path, cluster: ClusterStatistics | None) -> None:
        self._config = parse_config({
            "listen": ["127.0.0.1:0"], "state_file": str(tmp_path / "state.json"),
            "services": [{"name": "app", "backends": [{"name": "a", "url": "http://127.0.0.1:1"},
                                                      {"name": "b", "url": "http://127.0.0.1:2"}]}]})
        self._cluster = cluster
        self._feed = EventFeed()
        self._state_file = StateFile(tmp_path / "state.json")
        self.forwarded: list[tuple[str, str, dict[str, Any]]] = []

    @property
    def config(self) -> Config:
        return self._config

    @property
    def controllers(self) -> Mapping[str, ServiceController]:
        return {}

    @property
    def state_file(self) -> StateFile:
        return self._state_file

    @property
    def events(self) -> EventFeed:
        return self._feed

    def reload(self, config: Config) -> None:
        self._config = config

    def statistics(self) -> RouterStatistics:
        backends = (BackendStatistics("a", "http://127.0.0.1:1", True), BackendStatistics("b", "http://127.0.0.1:2", None))
        return RouterStatistics((ServiceStatistics("app", "a", 4, "active", backends),))

    def cluster_statistics(self) -> ClusterStatistics | None:
        return self._cluster

    def decides(self, service: str) -> bool:
        return self._cluster is None or service in self._cluster.decides

    async def forward_command(self, service: str, command: str, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.forwarded.append((service, command, args))
        return 200, {}


def document(tmp_path: Path, cluster: ClusterStatistics | None) -> dict[str, Any]:
    router: RouterControl = FakeRouter(tmp_path, cluster)  # mypy: the fake is a RouterControl
    return build_status(router)


def text_of(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def test_status_shows_the_cluster(tmp_path: Path) -> None:
    cluster = document(tmp_path, PAIR)["cluster"]
    assert cluster == {
        "name": "r1",
        "etcd": {"ok": True, "endpoints": ["http://10.0.0.1:2379", "https://10.0.0.2:2379"], "error": None},
        "members": [{"name": "r1", "live": True, "admin": "10.0.0.1:9100", "views": {"app": {"a": "up", "b": "up"}}},
                    {"name": "r2", "live": True, "admin": "10.0.0.2:9100",
                     "views": {"app": {"a": "down", "b": "suspect"}}}],
        "deciders": {"app": "r1", "crm": None},
        "this_router_decides": ["app"],
    }


def test_a_router_alone_shows_no_cluster(tmp_path: Path) -> None:
    doc = document(tmp_path, None)
    assert doc["cluster"] is None
    page = render_status_page(doc)
    assert 'class="cluster"' not in page and "Cluster" not in text_of(page)
    assert "CLUSTER" not in format_status(doc, now=0.0)


def test_page_has_the_cluster_panel(tmp_path: Path) -> None:
    page = render_status_page(document(tmp_path, PAIR))
    text = text_of(page)
    assert 'class="cluster"' in page and "Cluster seen from r1" in text
    assert "etcd reachable" in text and "s3cret" not in page
    assert re.search(r'data-service="app">r1 \(this router\)', page)
    assert re.search(r'data-service="crm"><span class="bad">nobody</span>', page)
    r2 = re.search(r'<tr data-member="r2">(.*?)</tr>', page)
    assert r2 is not None
    assert '<td class="view bad">down</td>' in r2.group(1) and '<td class="view warn">suspect</td>' in r2.group(1)
    assert "app/a" in text and "app/b" in text
    assert page.index('class="cluster"') < page.index('class="service"')  # the pair first


def test_etcd_unreachable_is_a_red_banner_with_the_error_redacted(tmp_path: Path) -> None:
    down = ClusterStatistics(
        name="r2", etcd_ok=False, etcd_error="no endpoint answered within 2s (postgresql://fence:pw@db/x)",
        endpoints=("http://127.0.0.1:2379",), members=(), deciders={"app": None}, decides=())
    doc = document(tmp_path, down)
    assert doc["cluster"]["etcd"]["ok"] is False and ":pw@" not in doc["cluster"]["etcd"]["error"]
    page = render_status_page(doc)
    assert 'class="bad etcd-down"' in page and "UNREACHABLE" in page
    assert "will not fail over until etcd answers again" in text_of(page)
    assert "No member is registered in etcd" in page and ":pw@" not in page


def test_hostile_names_are_escaped(tmp_path: Path) -> None:
    evil = ClusterStatistics(
        name="r1", etcd_ok=True, etcd_error=None, endpoints=(),
        members=(MemberStatistics("<script>x</script>", False, "<b>", {"app": {"<i>": "up"}}),),
        deciders={"app": "<script>y</script>"}, decides=())
    page = render_status_page(document(tmp_path, evil))
    assert "<script>x" not in page and "<script>y" not in page and "<b>" not in page and "<i>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert '<td class="bad">gone</td>' in page


def test_cli_status_shows_the_cluster_lines(tmp_path: Path) -> None:
    out = format_status(document(tmp_path, PAIR), now=0.0)
    assert "CLUSTER (seen from r1)" in out
    assert "  etcd: ok" in out
    assert "  deciders: app: r1 (this router), crm: NOBODY" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("ROUTER", "r1 ", "r2 "))}
    assert rows["ROUTER"] == ["ROUTER", "LEASE", "ADMIN", "app/a", "app/b"]
    assert rows["r2"] == ["r2", "live", "10.0.0.2:9100", "down", "suspect"]
    down = ClusterStatistics(name="r2", etcd_ok=False, etcd_error="no endpoint answered", endpoints=(),
                             members=(), deciders={}, decides=())
    assert ("etcd: UNREACHABLE (no endpoint answered): no failover until it answers"
            in format_status(document(tmp_path, down), now=0.0))
