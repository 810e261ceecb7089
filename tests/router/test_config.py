"""The deployment file loader: the DESIGN's minimal file as written, and errors that name
their key path, what was expected and what was found."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hotspare.configtypes import parse_duration, parse_size
from router.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
MINIMAL = REPO / "deploy" / "examples" / "minimal.yaml"
ENV = {"HOTSPARE_ADMIN_TOKEN": "admin-secret", "HOTSPARE_REPLICATION_TOKEN": "repl-secret"}


def errors_of(data: object, **kw: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env=ENV, **kw)  # type: ignore[arg-type]
    return info.value.errors


def base(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "listen": ["127.0.0.1:8080"],
        "services": [{"name": "app", "backends": [{"name": "a", "url": "http://127.0.0.1:8001"}]}],
    }
    data.update(overrides)
    return data


def test_minimal_design_file_is_accepted_as_written() -> None:
    config = load_config(MINIMAL, env=ENV)
    assert [lst.address for lst in config.listen] == ["127.0.0.1:8080"]
    assert config.admin.listen == "127.0.0.1:9100"
    assert config.admin.token == "admin-secret"
    assert config.state_file == MINIMAL.parent / "hotspare-state.json"
    (svc,) = config.services
    assert [b.name for b in svc.backends] == ["a", "b"]
    assert svc.backends[1].agent == "http://127.0.0.1:9102"
    assert (svc.health.path, svc.health.interval, svc.health.rise, svc.health.fall) == ("/health", 1.0, 2, 3)
    assert svc.promote[0].name == "fence"
    assert config.replication is not None
    assert [r.name for r in config.replication.roots] == ["jobs", "index"]


def test_unset_environment_variable_names_key_and_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(MINIMAL, env={"HOTSPARE_REPLICATION_TOKEN": "x"})
    assert info.value.errors == [
        "admin.token: expected environment variable HOTSPARE_ADMIN_TOKEN to be set "
        "(referenced as ${HOTSPARE_ADMIN_TOKEN}), found it unset"
    ]


def test_every_error_is_reported_with_its_key_path() -> None:
    data = base()
    data["services"] = [
        {
            "name": "app",
            "backends": [{"name": "a", "url": "ftp://x"}],
            "health": {"fall": 0, "interval": "3 weeks", "bogus": 1},
        }
    ]
    assert sorted(errors_of(data)) == sorted(
        [
            "services[0].backends[0].url: expected an http:// or https:// URL with a host, got 'ftp://x'",
            "services[0].health.fall: expected a number >= 1, got 0",
            "services[0].health.interval: expected a duration like '250ms', '2s' or '5m', got '3 weeks'",
            "services[0].health.bogus: unknown key (check its spelling and its place in the file)",
        ]
    )


def test_unknown_top_level_key_and_missing_required_key() -> None:
    errs = errors_of({"listen": ["127.0.0.1:1"], "servcies": [], "zzz": 1})
    assert "zzz: unknown key (check its spelling and its place in the file)" in errs
    # "services: required key is missing" only repeats the misspelling: not printed.
    assert errs == ["servcies: unknown key; did you mean 'services'?", "zzz: unknown key (check its spelling and its place in the file)"]
    assert errors_of({"listen": ["127.0.0.1:1"]}) == ["services: required key is missing"]


def test_duplicate_backend_and_service_names_are_refused() -> None:
    svc = {"name": "app", "backends": [{"name": "a", "url": "http://h:1"}, {"name": "a", "url": "http://h:2"}]}
    assert errors_of(base(services=[svc])) == [
        "services[0].backends[1].name: expected a backend name used once, got 'a' again "
        "(first at services[0].backends[0].name)"
    ]
    svc2 = {"name": "app", "hosts": ["x"], "backends": [{"name": "a", "url": "http://h:1"}]}
    svc3 = {"name": "other", "backends": [{"name": "a", "url": "http://h:1"}]}
    assert errors_of(base(services=[svc3, svc2, {**svc2, "hosts": ["X"]}])) == [
        "services[2].name: expected a service name used once, got 'app' again (first at services[1].name)",
        "services[2]: expected each route (hosts and path_prefix) once, got the same as services[1] "
        "(give one of them other hosts or another path_prefix)",
    ]


def test_durations_and_sizes() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("2s") == 2.0
    assert parse_duration("5m") == 300.0
    assert parse_duration(3) == 3.0
    assert parse_duration("1.5") == 1.5
    assert parse_size("64KiB") == 65536
    assert parse_size("10MB") == 10_000_000
    assert parse_size("1g") == 2**30
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration("soon")
    with pytest.raises(ValueError, match="expected a size"):
        parse_size("lots")


def test_status_sets_accept_classes() -> None:
    data = base()
    data["services"][0]["health"] = {"expect_status": [200, "3xx"]}  # type: ignore[index]
    data["services"][0]["failover"] = {"fail_on_status": ["5xx"]}  # type: ignore[index]
    svc = parse_config(data, env=ENV).services[0]
    assert svc.health.expect_status == frozenset({200, *range(300, 400)})
    assert svc.failover.fail_on_status == frozenset(range(500, 600))


def test_token_file_is_read_and_relative_to_config(tmp_path: Path) -> None:
    (tmp_path / "admin.token").write_text("from-file\n")
    cfg = tmp_path / "hotspare.yaml"
    cfg.write_text(
        "listen: ['127.0.0.1:8080']\n"
        "admin: {token_file: admin.token}\n"
        "services: [{name: app, backends: [{name: a, url: 'http://127.0.0.1:1'}]}]\n"
    )
    assert load_config(cfg, env={}).admin.token == "from-file"
    (tmp_path / "admin.token").write_text("")
    with pytest.raises(ConfigError, match=r"admin: token_file .*admin.token' is empty"):
        load_config(cfg, env={})


def test_https_listener_needs_cert_and_key() -> None:
    errs = errors_of(base(listen=[{"address": "127.0.0.1:8443", "cert": "c.pem"}]))
    assert errs == ["listen[0]: expected both cert and key for an HTTPS listener, got only one"]


def test_yaml_problems_name_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("listen: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(cfg)
    cfg.write_text("listen: ['127.0.0.1:1']\nlisten: ['127.0.0.1:2']\n")
    with pytest.raises(ConfigError, match="key 'listen' given twice"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.yaml")


def test_check_config_command_exit_codes(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", **ENV}
    ok = subprocess.run(
        [sys.executable, "-m", "hotspare", "check-config", str(MINIMAL)],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: ['nope']\nservices: [{name: app, backends: []}]\n")
    res = subprocess.run(
        [sys.executable, "-m", "hotspare", "check-config", str(bad)],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert res.returncode == 2
    assert "2 configuration errors" in res.stderr
    assert "listen[0].address: expected 'host:port'" in res.stderr
    assert "services[0].backends: expected at least 1 item(s), got []" in res.stderr
