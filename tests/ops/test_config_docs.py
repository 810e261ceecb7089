"""docs/configuration.md is generated from the config models and must be current."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.cli import config_docs
from router.config import Config


def test_configuration_reference_is_up_to_date() -> None:
    current = config_docs.OUTPUT.read_text(encoding="utf-8")
    assert current == config_docs.generate(), (
        "docs/configuration.md is out of date: run `python -m router.cli.config_docs`"
    )


def test_every_top_level_key_and_nested_key_is_documented() -> None:
    text = config_docs.generate()
    for name, field in Config.model_fields.items():
        if not field.exclude:
            assert f"| `{name}` |" in text, name
    # Defaults and units come from the models.
    assert re.search(r"\| `interval` \| duration \| `1s` \|", text)
    assert re.search(r"\| `max_bytes` \| size \| `64MiB` \|", text)
    assert "## services[].health" in text and "## replication.roots[]" in text
    assert "**required**" in text


def test_stale_extra_description_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(config_docs.EXTRA, "services[].no_such_key", "x")
    with pytest.raises(ValueError, match=r"services\[\]\.no_such_key"):
        config_docs.generate()


def test_check_mode_reports_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "configuration.md"
    assert config_docs.main(["--output", str(out)]) == 0
    assert config_docs.main(["--check", "--output", str(out)]) == 0
    out.write_text(out.read_text() + "edited by hand\n")
    assert config_docs.main(["--check", "--output", str(out)]) == 1
    assert "out of date" in capsys.readouterr().err
