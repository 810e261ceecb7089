"""Checks across entries of the deployment file: names used once, one service per route.

They read the raw tree (after ``${NAME}`` substitution, before the models), so they run
even when some field elsewhere is invalid: pydantic skips a model's own validators when
one of its fields fails, and ``check-config`` promises every error in one run. An entry
too malformed to compare (a name that is not a string) is skipped: its field error says
what is wrong with it. Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ROOT_DUPLICATES", "cross_errors"]

# The replication model's own message for the same fault (replication/config.py), left
# out of the report when this module has already named the entry.
ROOT_DUPLICATES = "expected unique root names"


def _entries(node: Any) -> list[tuple[int, Mapping[str, Any]]]:
    if not isinstance(node, list):
        return []
    return [(i, e) for i, e in enumerate(node) if isinstance(e, Mapping)]


def _unique_names(node: Any, where: str, what: str) -> list[str]:
    first: dict[str, int] = {}
    errors: list[str] = []
    for i, entry in _entries(node):
        name = entry.get("name")
        if not isinstance(name, str):
            continue
        if name in first:
            errors.append(
                f"{where}[{i}].name: expected {what} name used once, got {name!r} again "
                f"(first at {where}[{first[name]}].name)"
            )
        else:
            first[name] = i
    return errors


def _route(service: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    hosts = service.get("hosts", [])
    prefix = service.get("path_prefix", "/")
    if hosts is None:
        hosts = []
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        return None
    if not isinstance(prefix, str):
        return None
    return tuple(sorted(h.strip().lower() for h in hosts)), prefix.strip()


def _unique_routes(services: Any) -> list[str]:
    seen: dict[tuple[tuple[str, ...], str], int] = {}
    errors: list[str] = []
    for i, svc in _entries(services):
        route = _route(svc)
        if route is None:
            continue
        if route in seen:
            j = seen[route]
            errors.append(
                f"services[{i}]: expected each route (hosts and path_prefix) once, got the same "
                f"as services[{j}] (give one of them other hosts or another path_prefix)"
            )
        else:
            seen[route] = i
    return errors


def cross_errors(data: Mapping[str, Any]) -> list[str]:
    """Every cross-entry error of the (substituted) raw tree, each with its key path."""
    services = data.get("services")
    errors = _unique_names(services, "services", "a service")
    errors += _unique_routes(services)
    for i, svc in _entries(services):
        errors += _unique_names(svc.get("backends"), f"services[{i}].backends", "a backend")
    replication = data.get("replication")
    if isinstance(replication, Mapping):
        errors += _unique_names(replication.get("roots"), "replication.roots", "a root")
    return errors
