"""The optional ``cluster:`` section: defaults, and errors that name the key path, what
was expected and what was found. Pure: no etcd needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from router.config import ConfigError, parse_config

ENV = {"ETCD_PASSWORD": "etcd-pw-123"}


def base(cluster: Any = None, **overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "listen": ["127.0.0.1:8080"],
        "services": [{"name": "app", "backends": [{"name": "a", "url": "http://127.0.0.1:8001"}]}],
    }
    if cluster is not None:
        data["cluster"] = cluster
    data.update(overrides)
    return data


def etcd(**kw: object) -> dict[str, object]:
    return {"endpoints": ["http://127.0.0.1:2379"], **kw}


def errors_of(cluster: Any, env: dict[str, str] = ENV) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(base(cluster), env=env)
    return info.value.errors


def one_error(cluster: Any) -> str:
    errors = errors_of(cluster)
    assert len(errors) == 1, errors
    return errors[0]


def test_no_cluster_section_is_none() -> None:
    assert parse_config(base(), env=ENV).cluster is None


def test_defaults() -> None:
    cfg = parse_config(base({"name": "r1", "etcd": etcd()}), env=ENV).cluster
    assert cfg is not None
    assert (cfg.name, cfg.lease_ttl, cfg.quorum) == ("r1", 5.0, "majority")
    e = cfg.etcd
    assert (e.prefix, e.timeout, e.username, e.password, e.tls) == ("/hotspare/default", 2.0, None, None, False)


def test_full_section(tmp_path: Path) -> None:
    cluster = {
        "name": "router-b",
        "etcd": etcd(
            endpoints=["https://10.0.0.1:2379", "https://10.0.0.2:2379/", "https://10.0.0.3:2379"],
            prefix="/hotspare/district-a", username="hotspare", password="${ETCD_PASSWORD}",
            ca_file="ca.pem", cert_file="c.pem", key_file="c.key", timeout="1500ms",
        ),
        "lease_ttl": "10s",
        "quorum": 2,
    }
    cfg = parse_config(base(cluster), env=ENV, base_dir=tmp_path).cluster
    assert cfg is not None
    assert cfg.etcd.endpoints[1] == "https://10.0.0.2:2379"
    assert cfg.etcd.password == "etcd-pw-123" and cfg.etcd.tls
    assert cfg.etcd.ca_file == tmp_path / "ca.pem" and cfg.etcd.timeout == 1.5
    assert (cfg.lease_ttl, cfg.quorum) == (10.0, 2)
    assert "etcd-pw-123" not in repr(cfg) and "etcd-pw-123" not in str(cfg)


def test_password_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    cluster = {"name": "r1", "etcd": etcd(username="u", password_file="pw")}
    cfg = parse_config(base(cluster), env=ENV, base_dir=tmp_path).cluster
    assert cfg is not None and cfg.etcd.password == "from-file"


@pytest.mark.parametrize(
    ("cluster", "path", "says"),
    [
        ({"name": "R1", "etcd": etcd()}, "cluster.name", "lowercase letters, digits, '_' and '-'"),
        ({"name": "-r", "etcd": etcd()}, "cluster.name", "got '-r'"),
        ({"name": "r1"}, "cluster.etcd", "required"),
        ({"name": "r1", "etcd": {"endpoints": []}}, "cluster.etcd.endpoints", "at least 1"),
        ({"name": "r1", "etcd": {"endpoints": ["etcd:2379"]}}, "cluster.etcd.endpoints[0]", "http://"),
        ({"name": "r1", "etcd": {"endpoints": ["ftp://h:1"]}}, "cluster.etcd.endpoints[0]", "http://"),
        ({"name": "r1", "etcd": etcd(prefix="/x/")}, "cluster.etcd.prefix", "no trailing '/'"),
        ({"name": "r1", "etcd": etcd(prefix="x")}, "cluster.etcd.prefix", "got 'x'"),
        ({"name": "r1", "etcd": etcd(username="u")}, "cluster.etcd", "both username and password"),
        ({"name": "r1", "etcd": etcd(password="p")}, "cluster.etcd", "got only a password"),
        ({"name": "r1", "etcd": etcd(cert_file="c.pem")}, "cluster.etcd", "both cert_file and key_file"),
        ({"name": "r1", "etcd": etcd(timeout="0s")}, "cluster.etcd.timeout", "expected a number > 0"),
        ({"name": "r1", "etcd": etcd(), "lease_ttl": "1s"}, "cluster.lease_ttl", "whole seconds >= 2"),
        ({"name": "r1", "etcd": etcd(), "lease_ttl": "2500ms"}, "cluster.lease_ttl", "got 2.5s"),
        ({"name": "r1", "etcd": etcd(), "quorum": "most"}, "cluster.quorum", "'majority', 'all' or an integer"),
        ({"name": "r1", "etcd": etcd(), "quorum": 0}, "cluster.quorum", "got 0"),
        ({"name": "r1", "etcd": etcd(), "quorum": True}, "cluster.quorum", "got True"),
        ({"name": "r1", "etcd": etcd(), "members": 3}, "cluster.members", ""),
        ({"name": "r1", "etcd": etcd(endpoint="http://h:1")}, "cluster.etcd.endpoint", ""),
    ],
)
def test_errors_name_the_key(cluster: dict[str, Any], path: str, says: str) -> None:
    error = one_error(cluster)
    assert error.startswith(path + ":"), error
    assert says in error, error


def test_unset_password_variable_names_the_key() -> None:
    errors = errors_of({"name": "r1", "etcd": etcd(username="u", password="${ETCD_PASSWORD}")}, env={})
    assert any(e.startswith("cluster.etcd.password:") and "ETCD_PASSWORD" in e for e in errors), errors


def test_wrong_password_never_printed() -> None:
    errors = errors_of({"name": "r1", "etcd": etcd(password="hunter2-secret", cert_file="x")})
    assert errors and all("hunter2-secret" not in e for e in errors), errors
