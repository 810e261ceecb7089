"""Unit tests of service lookup (no sockets)."""

from __future__ import annotations

from typing import Any

from router.config import parse_config
from router.proxy.routes import ServiceTable, normalize_host


def _table(services: list[dict[str, Any]]) -> ServiceTable:
    cfg = parse_config({"listen": ["127.0.0.1:0"], "services": services})
    # The lookup only needs names; stand-in runtime objects (any object with .name).
    runtimes = {s.name: s for s in cfg.services}
    return ServiceTable(cfg, runtimes)  # type: ignore[arg-type]


def _svc(name: str, prefix: str = "/", hosts: list[str] | None = None) -> dict[str, Any]:
    return {"name": name, "path_prefix": prefix, "hosts": hosts or [], "backends": [{"name": "a", "url": "http://127.0.0.1:1"}]}


def test_normalize_host() -> None:
    assert normalize_host("Lib.Example:8080") == "lib.example"
    assert normalize_host("[::1]:80") == "::1"
    assert normalize_host("lib.example.") == "lib.example"


def test_lookup() -> None:
    t = _table([_svc("root"), _svc("api", "/api/"), _svc("v2", "/api/v2", ["lib.example"]), _svc("only", "/only", ["x.example"])])

    def name(host: str, path: str) -> str | None:
        rt = t.lookup(host, path)
        return rt.name if rt is not None else None

    assert name("a", "/") == "root"
    assert name("a", "/api") == "api"
    assert name("a", "/api/") == "api"
    assert name("a", "/apix") == "root"
    assert name("lib.example:1", "/api/v2/q") == "v2"
    assert name("lib.example", "/api/v3") == "api"
    assert name("x.example", "/") == "root"  # host table misses: any-host services answer
    assert name("x.example", "/only/1") == "only"
    assert name("y.example", "/only/1") == "root"


def test_lookup_without_catch_all_misses() -> None:
    t = _table([_svc("api", "/api", ["lib.example"])])
    assert t.lookup("lib.example", "/") is None
    assert t.lookup("other", "/api") is None
