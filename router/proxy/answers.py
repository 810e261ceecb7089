"""Answers the router gives itself when it cannot forward: the page a refused request
gets while its service switches to the standby (browsers get HTML that reloads itself
after Retry-After seconds; other clients a line of text).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from router.failover.director import NoRoute

__all__ = ["Reply", "refusal_reply", "switching_page", "wants_html"]


def wants_html(accept: str | None) -> bool:
    """True if the Accept header lists text/html (or text/*) with a non-zero q."""
    if not accept:
        return False
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        if media not in ("text/html", "text/*", "application/xhtml+xml"):
            continue
        q = 1.0
        for p in parts[1:]:
            if p.lower().startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


def switching_page(service: str, retry_after: int) -> str:
    """The page a browser sees while its service switches to the standby server."""
    name = html.escape(service)
    seconds = max(1, retry_after)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{seconds}">
<title>{name}: switching to the standby server</title>
<style>body{{font-family:sans-serif;max-width:36em;margin:4em auto;line-height:1.5;color:#222}}</style>
</head>
<body>
<h1>One moment, please</h1>
<p>{name} is switching to its standby server. This page will reload by itself in
{seconds} second{"s" if seconds != 1 else ""}.</p>
<p>If you were logged in, you may need to log in again.</p>
</body>
</html>
"""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def refusal_reply(refusal: NoRoute, service: str, accept: str | None) -> Reply:
    """The whole answer to a refused request: status, Retry-After, page or text."""
    headers: list[tuple[str, str]] = [("Retry-After", str(refusal.retry_after)), ("Cache-Control", "no-store")]
    if wants_html(accept):
        body = switching_page(service, refusal.retry_after).encode("utf-8")
        headers.append(("Content-Type", "text/html; charset=utf-8"))
    else:
        body = (f"{service} is switching to its standby server ({refusal.reason}); "
                f"retry in {refusal.retry_after} s\n").encode()
        headers.append(("Content-Type", "text/plain; charset=utf-8"))
    return Reply(refusal.status, tuple(headers), body)
