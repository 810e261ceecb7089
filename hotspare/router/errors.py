"""The router's own exceptions. Low-level errors (aiohttp, OSError) become these at the
edge, once, and carry what they mean for the client (the status to answer with)."""

from __future__ import annotations

from pathlib import Path


class ConfigError(Exception):
    """The deployment file is not valid. ``errors`` holds one line per problem, each
    starting with its dotted key path."""

    def __init__(self, errors: list[str], source: Path | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(self.errors))

    def report(self) -> str:
        head = f"{self.source}: " if self.source else ""
        n = len(self.errors)
        lines = [f"{head}{n} configuration error{'s' if n != 1 else ''}:"]
        lines += [f"  {e}" for e in self.errors]
        return "\n".join(lines)


class StateFileError(Exception):
    """The state file exists but cannot be read or trusted. The router stops: a silent
    reset to the first backend could send traffic to a fenced node."""
