"""Secrets out of everything a promotion leaves behind: audit records, log lines, error
messages, dry-run plans, API answers.

Rules:

1. Two passes, both always applied. First the *known* secrets (:func:`step_secrets`:
   the values of a step's ``env`` and ``http.headers`` whose names say secret, the
   password of every ``sql.dsn``, plus the tokens the caller adds) are replaced
   wherever they appear, whatever the program printed around them. Then *patterns*
   catch what nobody declared: the password of a URL (``scheme://user:***@host``),
   ``password=***`` of a libpq or ODBC DSN (``PWD=***``), and ``NAME=***`` /
   ``NAME: ***`` for a name containing TOKEN, PASSWORD, PASSWD, SECRET, PWD, API_KEY or
   AUTHORIZATION (``Authorization: Bearer ***``).
2. A known secret shorter than :data:`MIN_SECRET_LEN` characters is not searched for
   (replacing "1" everywhere would destroy the text and still reveal nothing); the
   patterns still apply to it.
3. Redaction is for text leaving the router; the step itself still gets its secrets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

__all__ = ["MASK", "MIN_SECRET_LEN", "Redactor", "dsn_password", "redact_dsn", "step_secrets"]

MASK = "***"
MIN_SECRET_LEN = 4

_SECRET_NAME = re.compile(r"(?i)token|passw(or)?d|secret|pwd|api[-_]?key|authorization|credential")
_URL_PASSWORD = re.compile(r"(?i)([a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^@\s]*@")
# libpq key=value (password=secret, password='sec ret') and ODBC (PWD=secret;, PWD={sec;ret}).
_KV_PASSWORD = re.compile(
    r"(?i)\b((?:ssl)?(?:password|pwd)\s*=\s*)('(?:\\.|[^'])*'|\{(?:\}\}|[^}])*\}|[^\s&;]+)"
)
# NAME=value / NAME: value for a name that says secret (env dumps, "export X=...", headers).
_NAMED = re.compile(
    r"(?i)\b([A-Z0-9_.\-]*(?:TOKEN|PASSWORD|PASSWD|SECRET|PWD|API[-_]?KEY|AUTHORIZATION)[A-Z0-9_.\-]*)"
    r"(\s*[=:]\s*)(?:(Bearer|Basic)\s+)?(\"[^\"]*\"|'[^']*'|[^\s,;&\"']+)"
)


def redact_dsn(dsn: str) -> str:
    """``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db``; ``password=***`` of a
    key=value DSN; ODBC ``PWD=***``; a ``?password=`` query parameter too."""
    dsn = _URL_PASSWORD.sub(rf"\1{MASK}@", dsn)
    return _KV_PASSWORD.sub(rf"\1{MASK}", dsn)


def dsn_password(dsn: str) -> str | None:
    """The password a DSN carries (URL userinfo as written, ``password=`` or ``PWD=``)."""
    m = _URL_PASSWORD.search(dsn)
    if m is not None:
        value = m.group(0)[len(m.group(1)):-1]
        return value or None
    m = _KV_PASSWORD.search(dsn)
    if m is None:
        return None
    value = m.group(2)
    if len(value) >= 2 and value[0] + value[-1] in ("''", "{}"):
        value = value[1:-1]
    return value or None


def step_secrets(steps: Iterable[Any]) -> set[str]:
    """The secrets a list of :class:`~promote.config.Step` declares (rule 1)."""
    out: set[str] = set()
    for step in steps:
        for name, value in (getattr(step, "env", None) or {}).items():
            if _SECRET_NAME.search(name):
                out.add(str(value))
        http = getattr(step, "http", None)
        if http is not None:
            for name, value in http.headers.items():
                if _SECRET_NAME.search(name):
                    out.add(str(value))
                    out.add(str(value).partition(" ")[2])  # "Bearer xyz": xyz alone too
        sql = getattr(step, "sql", None)
        if sql is not None and sql.dsn:
            out.add(sql.dsn)
            pw = dsn_password(sql.dsn)
            if pw:
                out.update((pw, unquote(pw)))  # as written, and as a driver may quote it
    return {s for s in out if s}


class Redactor:
    """``redactor.text(s)`` / ``redactor.value(obj)``: rule 1 on a string or on every
    string inside a JSON-like value."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        known = {s for s in secrets if s and len(s) >= MIN_SECRET_LEN}
        # Longest first: a DSN goes before the password inside it.
        self._known: Sequence[str] = sorted(known, key=len, reverse=True)

    def text(self, s: str) -> str:
        for secret in self._known:
            if secret in s:
                s = s.replace(secret, MASK)
        s = redact_dsn(s)
        return _NAMED.sub(_named, s)

    def value(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            return {k: self.value(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.value(v) for v in obj]
        return obj


def _named(m: re.Match[str]) -> str:
    scheme = f"{m.group(3)} " if m.group(3) else ""
    return f"{m.group(1)}{m.group(2)}{scheme}{MASK}"
