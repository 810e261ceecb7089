"""Step options are validated at load, through the router's one config loader, and
errors name the key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from router.config import parse_config
from router.errors import ConfigError

DESIGN_STEP = {
    "name": "fence",
    "exec": ["/usr/local/bin/fence-old", "{old.name}"],
    "timeout": "20s",
}


def config(steps: Any, base_dir: Path | None = None, **service: Any) -> Any:
    data = {
        "listen": ["127.0.0.1:8080"],
        "services": [{
            "name": "app",
            "backends": [{"name": "a", "url": "http://127.0.0.1:8001"},
                         {"name": "b", "url": "http://127.0.0.1:8002"}],
            "promote": steps, **service,
        }],
    }  # fmt: skip
    return parse_config(data, base_dir=base_dir, env={"PG_DSN": "postgresql://u:p@db/x"})


def errors(steps: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(steps)
    return info.value.errors


def test_design_minimal_step_is_accepted_as_written() -> None:
    svc = config([DESIGN_STEP]).services[0]
    [step] = svc.promote
    assert (step.kind, step.exec, step.timeout, step.is_fence) == (
        "exec", ["/usr/local/bin/fence-old", "{old.name}"], 20.0, True,
    )  # fmt: skip
    assert svc.fence_failure == "hold"


def test_every_step_type_loads_with_defaults() -> None:
    steps = config([
        {"name": "kill", "sql": {"dsn": "${PG_DSN}", "application_name": "lib@{old.name}"}},
        {"name": "stop", "agent": "stop-app"},
        {"name": "sync", "agent": {"action": "final-sync"}},
        {"name": "ready", "wait_healthy": True},
        {"name": "hook", "http": {"url": "{new.url}/warm", "expect_status": [200, "3xx"]}},
        {"name": "sh", "exec": "echo {new.name}", "shell": True, "retries": 2, "backoff": "250ms"},
    ]).services[0].promote  # fmt: skip
    assert [(s.kind, s.is_fence) for s in steps] == [
        ("sql", True), ("agent", True), ("agent", False), ("wait_healthy", False),
        ("http", False), ("exec", False),
    ]  # fmt: skip
    assert steps[0].sql is not None and steps[0].sql.dsn == "postgresql://u:p@db/x"
    assert steps[4].http is not None and 302 in steps[4].http.expect_status
    assert steps[4].http.method == "POST"
    assert steps[5].backoff == 0.25 and steps[5].retries == 2


def test_dsn_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "dsn").write_text("postgresql://u:s3cret@db/x\n")
    [step] = (
        config([{"name": "k", "sql": {"dsn_file": "dsn"}}], base_dir=tmp_path).services[0].promote
    )
    assert step.sql is not None and step.sql.dsn == "postgresql://u:s3cret@db/x"


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({"name": "f", "exec": ["/x", "{old.nmae}"]}, "services[0].promote[0].exec: argument 1: unknown template {old.nmae}"),
        ({"name": "f", "exec": "echo hi"}, "services[0].promote[0]: step 'f': exec is a string but shell is not true"),
        ({"name": "f", "exec": []}, "services[0].promote[0].exec: expected a non-empty argv list"),
        ({"name": "f", "exec": 5}, "services[0].promote[0].exec: expected an argv list of strings"),
        ({"name": "f"}, "services[0].promote[0]: step 'f': expected exactly one of exec, http, sql, wait_healthy, agent, found none"),
        ({"name": "f", "exec": ["/x"], "agent": "stop-app"}, "found exec, agent"),
        ({"name": "f", "agent": "stop-app", "shell": True}, "shell: only valid in exec steps"),
        ({"name": "f", "exec": ["/x"], "timeout": "0s"}, "services[0].promote[0].timeout: expected a duration > 0"),
        ({"name": "f", "exec": ["/x"], "on_failure": "ignore"}, "services[0].promote[0].on_failure: expected 'abort' or 'continue'"),
        ({"name": "f", "exec": ["/x"], "retries": -1}, "services[0].promote[0].retries: expected a number >= 0"),
        ({"name": "f", "exec": ["/x"], "colour": 1}, "services[0].promote[0].colour: unknown key"),
        ({"name": "f", "sql": {"dsn": "mysql://x"}}, "services[0].promote[0].sql: dsn: expected a PostgreSQL URI"),
        ({"name": "f", "sql": {}}, "services[0].promote[0].sql: expected dsn or dsn_file, found neither"),
        ({"name": "f", "sql": {"dsn": "${PG_DSN}", "match_address": False}}, "found neither (the step would match every session)"),
        ({"name": "f", "sql": {"dsn": "${PG_DSN}", "application_name": "{who}"}}, "services[0].promote[0].sql.application_name: unknown template {who}"),
        ({"name": "f", "http": {"url": "ftp://x"}}, "services[0].promote[0].http.url: expected an http:// or https:// URL"),
        ({"name": "f", "http": {"url": "http://x", "expect_status": ["9xx"]}}, "services[0].promote[0].http.expect_status: expected status codes like 200 or '2xx', got '9xx'"),
        ({"name": "f", "http": {"url": "http://x", "body": "a", "json": {}}}, "give either body or json, not both"),
        ({"name": "f", "wait_healthy": {"successes": 0}}, "services[0].promote[0].wait_healthy.successes: expected a number >= 1"),
        ({"name": "f", "agent": "reboot"}, "services[0].promote[0].agent.action: expected 'stop-app' or 'final-sync', got 'reboot'"),
    ],
)  # fmt: skip
def test_bad_options_name_their_key_path(step: dict[str, Any], expected: str) -> None:
    errs = errors([step])
    assert any(expected in e for e in errs), errs


def test_fence_can_be_set_explicitly_and_fence_failure_validated() -> None:
    steps = config(
        [
            {**DESIGN_STEP, "fence": False},
            {"name": "pdu", "http": {"url": "http://pdu/off"}, "fence": True},
        ]
    )
    assert [s.is_fence for s in steps.services[0].promote] == [False, True]
    with pytest.raises(ConfigError) as info:
        config([], fence_failure="ignore")
    assert (
        "services[0].fence_failure: expected 'hold' or 'proceed', got 'ignore'"
        in info.value.errors[0]
    )
