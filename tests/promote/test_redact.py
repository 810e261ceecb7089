"""What leaves a promotion run is redacted: DSN passwords in every form, declared secrets
wherever a program prints them, and NAME=value secrets nobody declared."""

from __future__ import annotations

import pytest

from promote.config import Step
from promote.redact import Redactor, dsn_password, redact_dsn, step_secrets


@pytest.mark.parametrize(("dsn", "expected"), [
    ("postgresql://app:s3cret@db:5432/lib", "postgresql://app:***@db:5432/lib"),
    ("postgres://app:p%40ss/w@db/lib", "postgres://app:***@db/lib"),
    ("postgresql://:only-pw@db/lib", "postgresql://:***@db/lib"),
    ("postgresql://db/lib?user=app&password=s3cret&sslmode=require",
     "postgresql://db/lib?user=app&password=***&sslmode=require"),
    ("host=db user=app password=s3cret dbname=lib", "host=db user=app password=*** dbname=lib"),
    ("host=db password='sec ret' dbname=lib", "host=db password=*** dbname=lib"),
    ("DRIVER={ODBC Driver 18};SERVER=db;UID=u;PWD={a;b}};X};Encrypt=yes",
     "DRIVER={ODBC Driver 18};SERVER=db;UID=u;PWD=***;Encrypt=yes"),
    ("Server=db;User Id=u;Password=s3cret;", "Server=db;User Id=u;Password=***;"),
])
def test_every_dsn_form_loses_its_password(dsn: str, expected: str) -> None:
    assert redact_dsn(dsn) == expected
    pw = dsn_password(dsn)
    assert pw is not None and pw not in expected


def test_declared_secrets_are_replaced_wherever_they_appear() -> None:
    steps = [
        Step.model_validate({"name": "x", "exec": ["true"], "env": {"API_TOKEN": "tok-123456", "MODE": "fast"}}),
        Step.model_validate({"name": "h", "http": {"url": "http://127.0.0.1:1/", "headers": {
            "Authorization": "Bearer hdr-abcdef", "X-Trace": "trace-1"}}}),
        Step.model_validate({"name": "s", "fence": False, "sql": {"dsn": "postgresql://u:dbpw-9876@db/x"}}),
    ]
    secrets = step_secrets(steps)
    assert {"tok-123456", "hdr-abcdef", "dbpw-9876"} <= secrets
    assert "fast" not in secrets and "trace-1" not in secrets
    r = Redactor([*secrets, "admin-tok", "ab"])
    text = r.text("got tok-123456 and hdr-abcdef; pw dbpw-9876; admin admin-tok; short ab stays; mode fast")
    assert text == "got *** and ***; pw ***; admin ***; short ab stays; mode fast"


def test_named_secrets_nobody_declared_are_caught_by_pattern() -> None:
    r = Redactor()
    assert r.text("export PGPASSWORD=hunter22 DB_SECRET: xyz") == "export PGPASSWORD=*** DB_SECRET: ***"
    assert r.text("Authorization: Bearer abc.def.ghi") == "Authorization: Bearer ***"
    assert r.text('api_key="k-1 2 3" next') == "api_key=*** next"
    assert r.text("3 tokens ended, password authentication failed") == "3 tokens ended, password authentication failed"


def test_json_values_are_redacted_throughout() -> None:
    r = Redactor(["secret-value"])
    doc = {"a": ["x secret-value", {"b": "postgresql://u:pw@h/d"}], "n": 3, "none": None}
    assert r.value(doc) == {"a": ["x ***", {"b": "postgresql://u:***@h/d"}], "n": 3, "none": None}
