"""Which sessions belong to the old active: the match both drivers use, from the step's
options and the promotion's template values (every value later a bound parameter)."""

from __future__ import annotations

import ipaddress

from promote.config import SqlOptions
from promote.errors import StepFailed
from promote.templates import render

__all__ = ["describe_match", "sql_match"]


def sql_match(opts: SqlOptions, values: dict[str, str]) -> tuple[str | None, str | None, list[str]]:
    """The bound parameters of :data:`FIND_SESSIONS` (address, application_name, databases)."""
    address: str | None = None
    if opts.match_address:
        raw = values["old.address"]
        try:
            address = str(ipaddress.ip_address(raw))
        except ValueError:
            raise StepFailed(
                f"the old active's address {raw!r} is not an IP address; set backends[].address "
                "to the address the database sees it connect from"
            ) from None
    app = render(opts.application_name, values) if opts.application_name is not None else None
    return address, app, list(opts.databases)


def describe_match(address: str | None, app: str | None, databases: list[str]) -> str:
    parts = []
    if address is not None:
        parts.append(f"client_addr {address}")
    if app is not None:
        parts.append(f"application_name {app!r}")
    where = " and ".join(parts)
    return where + (f" on database(s) {', '.join(databases)}" if databases else "")
