"""The vocabulary every config section shares: strict models, durations, sizes, secrets.

Rules:

1. Every model forbids unknown keys and is frozen: a config, once loaded, never changes;
   a reload builds a new one.
2. Durations are written ``250ms``, ``2s``, ``5m``, ``1h``; a bare number is seconds.
   They load as ``float`` seconds.
3. Sizes are written ``512``, ``64KiB``, ``10MB``, ``1GiB`` (also ``k``/``m``/``g``
   shorthands, binary); they load as ``int`` bytes.
4. A secret is either a value (usually ``"${ENV_NAME}"``) or ``*_file: PATH``; the
   ``${...}`` substitution happens before validation, in :mod:`router.config`.

This module imports nothing of ours, so ``promote`` and ``replication`` may use it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

__all__ = ["ByteSize", "Duration", "StrictModel", "parse_duration", "parse_size", "read_secret"]


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """``"250ms"`` -> 0.25; ``"2s"`` -> 2.0; ``"5m"`` -> 300.0; ``3`` -> 3.0."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '250ms', '2s' or '5m', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"expected a duration >= 0, got {value!r}")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"expected a duration like '250ms', '2s' or '5m', got {value!r}")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE_UNITS_DECIMAL = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_size(value: Any) -> int:
    """``"64KiB"`` -> 65536; ``"10MB"`` -> 10_000_000; ``"1g"`` -> 2**30; ``512`` -> 512."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like '64KiB' or '10MiB', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"expected a size >= 0, got {value!r}")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            number, prefix, suffix = float(m.group(1)), m.group(2).lower(), (m.group(3) or "")
            units = _SIZE_UNITS_DECIMAL if suffix.lower() == "b" else _SIZE_UNITS
            return int(number * units[prefix])
    raise ValueError(f"expected a size like '64KiB' or '10MiB', got {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]


def read_secret(value: str | None, file: Path | None, where: str) -> str:
    """Return the secret given inline or in a file (its first line, stripped).

    Raises ``ValueError`` naming ``where`` when neither or both are given, or the file
    cannot be read or is empty.
    """
    if value is not None and file is not None:
        raise ValueError(f"give either {where} or {where}_file, not both")
    if value is None and file is None:
        raise ValueError(f"expected {where} or {where}_file, found neither")
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{where}_file {str(file)!r} cannot be read: {exc.strerror}") from None
        lines = text.splitlines()
        secret = lines[0].strip() if lines else ""
        if not secret:
            raise ValueError(f"{where}_file {str(file)!r} is empty")
        return secret
    assert value is not None
    if not value:
        raise ValueError(f"{where} is empty")
    return value
