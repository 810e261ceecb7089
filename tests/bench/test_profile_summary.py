"""py-spy collapsed-stack summary (pure: fed text in py-spy's raw format)."""

from __future__ import annotations

import pytest

from bench.profile_summary import format_profile, summarise

RAW = """\
main (/x/.venv/lib/python3.11/site-packages/router/cli.py:10);handle (/work/main/router/proxy.py:150);_write (/usr/lib/python3.11/site-packages/aiohttp/http_writer.py:104) 6
main (/x/.venv/lib/python3.11/site-packages/router/cli.py:10);handle (/work/main/router/proxy.py:151);handle (/work/main/router/proxy.py:160) 3
main (/x/.venv/lib/python3.11/site-packages/router/cli.py:10) 1
"""


def test_self_and_inclusive_shares() -> None:
    p = summarise(RAW)
    assert p.samples == 10
    assert p.self_by_function["aiohttp/http_writer.py _write"] == 6
    assert p.self_by_function["router/proxy.py handle"] == 3
    # Recursion (handle twice on one stack) counts once per sample.
    assert p.inclusive_by_function["router/proxy.py handle"] == 9
    assert p.inclusive_by_function["router/cli.py main"] == 10
    assert p.self_by_file == {"aiohttp/http_writer.py": 6, "router/proxy.py": 3, "router/cli.py": 1}
    text = format_profile(p)
    assert "60.0%  aiohttp/http_writer.py _write" in text


def test_bad_line_names_its_number() -> None:
    with pytest.raises(ValueError, match="line 2"):
        summarise("a (f.py:1) 3\nno count here\n")
