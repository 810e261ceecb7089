"""``check-config --env-file FILE``: read ``NAME=value`` lines, the format of systemd's
``EnvironmentFile=`` (deploy/systemd: ``/etc/hotspare/env``), so the file that gives the
service its secrets is the one the check reads. Values are never printed: an error
names the line, not its content.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from router.errors import ConfigError

__all__ = ["read_env_file"]

_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)")


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """``NAME=value`` per line; blank lines and ``#``/``;`` comments are skipped."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"{p}: cannot read the env file: {why}"], p) from None
    values: dict[str, str] = {}
    errors: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        m = _LINE.fullmatch(line)
        if m is None:
            first = line.split("=", 1)[0].split()[0] if line.split("=", 1)[0].split() else ""
            extra = "; systemd's EnvironmentFile takes no 'export'" if first == "export" else ""
            errors.append(f"{p}:{number}: expected NAME=value (the value is not shown){extra}")
            continue
        values[m.group(1)] = _unquote(m.group(2))
    if errors:
        raise ConfigError(errors, p)
    return values
