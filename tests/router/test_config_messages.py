"""What check-config prints (issue 14): every error in one run, cross-entry ones
included; no error that only repeats an earlier one; "did you mean" for a misspelt key;
unset variables named once with the command that sets them; ``--env-file``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from router.config import ConfigError, load_config, parse_config, read_env_file

REPO = Path(__file__).resolve().parents[2]
DISTRICT = REPO / "deploy" / "examples" / "district.yaml"


def failure(data: object, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env=env or {})
    return info.value


def service(**overrides: object) -> dict[str, object]:
    svc: dict[str, object] = {"name": "app", "backends": [{"name": "a", "url": "http://127.0.0.1:8001"}]}
    svc.update(overrides)
    return svc


def test_field_error_and_duplicate_backend_name_in_one_run() -> None:
    backends = [{"name": "a", "url": "http://127.0.0.1:1"}, {"name": "a", "url": "http://127.0.0.1:2"}]
    data = {"listen": ["127.0.0.1:8080"], "services": [service(backends=backends, health={"fall": 0})]}
    assert failure(data).errors == [
        "services[0].health.fall: expected a number >= 1, got 0",
        "services[0].backends[1].name: expected a backend name used once, got 'a' again "
        "(first at services[0].backends[0].name)",
    ]


def test_duplicate_root_names_named_once_beside_a_field_error() -> None:
    roots = [{"name": "jobs", "path": "/srv/a"}, {"name": "jobs", "path": "/srv/b"}]
    data = {"listen": ["127.0.0.1:8080"], "services": [service()], "replication": {"token": "t", "roots": roots}}
    assert failure(data).errors == [
        "replication.roots[1].name: expected a root name used once, got 'jobs' again "
        "(first at replication.roots[0].name)"
    ]
    data["replication"]["roots"][0]["bogus"] = 1  # type: ignore[index]
    assert failure(data).errors == [
        "replication.roots[0].bogus: unknown key (check its spelling and its place in the file)",
        "replication.roots[1].name: expected a root name used once, got 'jobs' again "
        "(first at replication.roots[0].name)",
    ]


def test_unknown_key_says_which_key_it_likely_meant() -> None:
    promote = [{"name": "p", "sql": {"dsnn": "postgresql://u@db/x"}}]
    backends = [{"name": "a", "url": "http://127.0.0.1:1", "agnet": "http://127.0.0.1:2"}]
    data = {"listen": ["127.0.0.1:8080"], "services": [service(helth={}, backends=backends, promote=promote)]}
    assert sorted(failure(data).errors) == sorted([
        "services[0].helth: unknown key; did you mean 'health'?",
        "services[0].backends[0].agnet: unknown key; did you mean 'agent'?",
        "services[0].promote[0].sql.dsnn: unknown key; did you mean 'dsn'?",
    ])


def test_unset_variable_is_not_repeated_by_the_check_of_its_value() -> None:
    step = {"name": "clear", "sql": {"dsn": "${DB_DSN}"}}
    data = {"listen": ["127.0.0.1:8080"], "admin": {"token": "${ADMIN_TOKEN}"}, "services": [service(promote=[step])]}
    err = failure(data)
    assert err.errors == [
        "admin.token: expected environment variable ADMIN_TOKEN to be set (referenced as ${ADMIN_TOKEN}), found it unset",
        "services[0].promote[0].sql.dsn: expected environment variable DB_DSN to be set "
        "(referenced as ${DB_DSN}), found it unset",
    ]
    assert err.hints == [
        "2 environment variables are unset (ADMIN_TOKEN, DB_DSN); set them with:",
        "  export ADMIN_TOKEN=$(openssl rand -hex 32) DB_DSN='...'",
        "  (replace each '...' with its real value)",
    ]
    assert err.report().endswith("\n".join(err.hints))


def test_each_unset_variable_is_named_once_in_the_hint() -> None:
    data = {"listen": ["127.0.0.1:8080"], "admin": {"token": "${APP_TOKEN}"}, "services": [service()],
            "replication": {"token": "${APP_TOKEN}"}}
    err = failure(data)
    assert len(err.errors) == 2  # one per key that refers to it
    assert err.hints == ["1 environment variable is unset (APP_TOKEN); set it with:",
                         "  export APP_TOKEN=$(openssl rand -hex 32)"]


def test_env_file_format_and_errors_that_never_show_a_value(tmp_path: Path) -> None:
    f = tmp_path / "env"
    f.write_text("# comment\n; comment\n\nA=1\nB='two words'\nC=\"x=y\"\n")
    assert read_env_file(f) == {"A": "1", "B": "two words", "C": "x=y"}
    f.write_text("A=1\nexport B=s3cret\nnot a line s3cret\n")
    with pytest.raises(ConfigError) as info:
        read_env_file(f)
    assert info.value.errors == [
        f"{f}:2: expected NAME=value (the value is not shown); systemd's EnvironmentFile takes no 'export'",
        f"{f}:3: expected NAME=value (the value is not shown)",
    ]
    assert "s3cret" not in info.value.report()


def check_config(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hotspare", "check-config", *args],
                          capture_output=True, text=True, env={"PATH": os.defpath, **env}, timeout=60, cwd=REPO)


def test_env_file_values_win_over_the_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "hotspare.yaml"
    cfg.write_text("listen: ['${LISTEN}']\nservices: [{name: app, backends: [{name: a, url: 'http://127.0.0.1:1'}]}]\n")
    env_file = tmp_path / "site.env"
    env_file.write_text("LISTEN=127.0.0.1:8080\n")
    res = check_config("--env-file", str(env_file), str(cfg), env={"LISTEN": "bad"})
    assert res.returncode == 0, res.stderr
    # Without the file the environment's value is checked (and fails).
    res = check_config(str(cfg), env={"LISTEN": "bad"})
    assert res.returncode == 2
    assert "listen[0].address: expected 'host:port' (like '127.0.0.1:8080'), got 'bad'" in res.stderr
    assert load_config(cfg, env={"LISTEN": "127.0.0.1:1"}).listen[0].address == "127.0.0.1:1"


def test_unset_variables_hint_names_the_env_file_beside_the_config() -> None:
    res = check_config(str(DISTRICT.relative_to(REPO)), env={})
    assert res.returncode == 2
    assert "sql: dsn: expected a PostgreSQL URI" not in res.stderr  # the knock-on of the unset DSN
    assert res.stderr.splitlines()[-3:] == [
        "  export HOTSPARE_ADMIN_TOKEN=$(openssl rand -hex 32) HOTSPARE_DB_DSN='...' "
        "HOTSPARE_REPLICATION_TOKEN=$(openssl rand -hex 32)",
        "  (replace each '...' with its real value)",
        "or read them from deploy/examples/example.env: hotspare check-config --env-file "
        "deploy/examples/example.env deploy/examples/district.yaml",
    ]
