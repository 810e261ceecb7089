"""``hotspare doctor``'s network checks: backends' health paths, agents (token, roots,
free space, clock) and the SQL steps' databases.

Rules:

1. Every call has a timeout (``--timeout``, default 3 s); nothing here can hang the
   command. Proxies from the environment are ignored, like the other commands do.
2. These functions gather facts and hand them to the verdicts of ``doctor_model``; the
   messages are decided there.
3. A check that cannot be made because another failed is SKIP and names that one, so a
   dead agent is one failed check, not four.
4. Secrets: the replication token is sent, never shown; a DSN is shown redacted and any
   driver error passes through :class:`promote.redact.Redactor` first.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from promote.redact import Redactor, dsn_password, redact_dsn
from router.config import BackendConfig, Config
from router.health.probes import probe_url

from .doctor_model import Check, Status, free_space_verdict, health_verdict, skew_verdict

__all__ = ["check_agents", "check_backends", "check_sql"]


def _session(limit: float, ssl_ctx: ssl.SSLContext | bool | None = None) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=limit),
        connector=aiohttp.TCPConnector(ssl=True if ssl_ctx is None else ssl_ctx),
        trust_env=False,
    )


def _error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        return f"cannot connect: {os.strerror(err.errno) if err.errno else err}"
    return f"{type(exc).__name__}: {exc}"


# -- backends ----------------------------------------------------------------------------


async def check_backends(config: Config, limit: float) -> list[Check]:
    jobs = [_backend(svc.name, b, svc.health, limit) for svc in config.services for b in svc.backends]
    return list(await asyncio.gather(*jobs))


def _backend_ssl(b: BackendConfig) -> ssl.SSLContext | bool:
    if not b.url.startswith("https://"):
        return True
    if not b.verify_tls:
        return False
    return ssl.create_default_context(cafile=str(b.ca_file) if b.ca_file else None)


async def _backend(service: str, b: BackendConfig, health: Any, limit: float) -> Check:
    cid, url = f"backend:{service}/{b.name}", probe_url(b, health)
    try:
        async with _session(limit, _backend_ssl(b)) as s, s.request(health.method, url) as r:
            body = await r.text(errors="replace") if health.expect_body else ""
            ok = health.expect_body is None or health.expect_body in body
            return health_verdict(cid, url, r.status, None, health.expect_status, ok, health.expect_body)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return health_verdict(cid, url, None, _error(exc), health.expect_status)


# -- agents ------------------------------------------------------------------------------


@dataclass
class _Agent:
    node: str
    url: str
    check: Check | None = None
    clock: tuple[float, float] | None = None  # (skew, uncertainty)
    disks: dict[str, dict[str, Any] | Check] = field(default_factory=dict)


async def check_agents(config: Config, limit: float, max_skew: float) -> list[Check]:
    nodes: dict[str, str] = {}
    for svc in config.services:
        for b in svc.backends:
            if b.agent:
                nodes.setdefault(b.name, b.agent)
    if not nodes:
        return []
    rep = config.replication
    if rep is None or not rep.token:
        return [Check(f"agent:{n}", Status.FAIL, f"{u}: the config has no replication token to call it with",
                      "add a replication: section with token (or token_file) and roots") for n, u in nodes.items()]
    tls = rep.tls
    ctx: ssl.SSLContext | bool = ssl.create_default_context(
        cafile=str(tls.ca_file) if tls.ca_file else None) if tls.verify else False
    agents = [_Agent(n, u) for n, u in nodes.items()]
    roots = [r.name for r in rep.roots]
    async with _session(limit, ctx) as s:
        await asyncio.gather(*(_agent(s, a, rep.token, roots) for a in agents))
    return _agent_checks(agents, roots, rep.marker_file, max_skew)


async def _agent(s: aiohttp.ClientSession, a: _Agent, token: str, roots: list[str]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    cid, url = f"agent:{a.node}", f"{a.url}/v1/status"
    try:
        t0 = time.time()
        async with s.get(url, headers=headers) as r:
            t1 = time.time()
            body = await r.json(content_type=None) if r.status == 200 else None
            date = r.headers.get("Date")
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        a.check = Check(cid, Status.FAIL, f"{a.url}: agent unreachable ({_error(exc)})",
                        f"start it on {a.node} (systemctl start hotspare-agent@{a.node}) or fix "
                        "the backend's agent URL and the firewall")
        return
    if r.status == 401:
        a.check = Check(cid, Status.FAIL, f"{a.url}: token mismatch (the agent answered 401)",
                        "give the agent and this config the same replication token "
                        "(HOTSPARE_REPLICATION_TOKEN in /etc/hotspare/env on both hosts)")
        return
    if body is None or not isinstance(body, dict):
        a.check = Check(cid, Status.FAIL, f"{url} answered {r.status}, expected 200 with the agent's status",
                        "is that address a hotspare agent? check the backend's agent URL")
        return
    role = body.get("role", "?")
    a.check = Check(cid, Status.PASS, f"{a.url}: answered with the token (role {role}, epoch {body.get('epoch')})")
    if date:
        try:
            ts = parsedate_to_datetime(date).timestamp()
            # Date has whole seconds: the agent's time was in [ts, ts + 1).
            a.clock = (ts + 0.5 - (t0 + t1) / 2, (t1 - t0) / 2 + 0.5)
        except (TypeError, ValueError):
            pass
    for root in roots:
        a.disks[root] = await _disk(s, a, root, headers)


async def _disk(s: aiohttp.ClientSession, a: _Agent, root: str, headers: dict[str, str]) -> dict[str, Any] | Check:
    cid, url = f"root:{a.node}/{root}", f"{a.url}/v1/roots/{root}/disk"
    try:
        t0 = time.time()
        async with s.get(url, headers=headers) as r:
            t1 = time.time()
            body = await r.json(content_type=None) if r.content_type == "application/json" else None
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        return Check(cid, Status.FAIL, f"{url}: {_error(exc)}",
                     "a large root takes time to walk: try a longer --timeout")
    if r.status == 404 and isinstance(body, dict) and "error" in body:
        return Check(cid, Status.FAIL, f"agent {a.node} has no root {root}: its config differs from this one",
                     "give every host the same deployment file and restart the agent")
    if r.status != 200 or not isinstance(body, dict):
        return Check(cid, Status.WARN, f"{url} answered {r.status}: the agent predates the disk check",
                     "upgrade hotspare on that node to check its roots from here")
    if isinstance(body.get("now"), int | float):
        # The agent's own clock, read while answering: better than Date's whole seconds.
        a.clock = (float(body["now"]) - (t0 + t1) / 2, (t1 - t0) / 2)
    return body


def _agent_checks(agents: list[_Agent], roots: list[str], marker: str, max_skew: float) -> list[Check]:
    needed = {root: max((int(d.get("largest_file_bytes") or 0) for a in agents
                         if isinstance(d := a.disks.get(root), dict)), default=0) for root in roots}
    out: list[Check] = []
    for a in agents:
        assert a.check is not None
        out.append(a.check)
        if a.check.status is not Status.PASS:
            why = f"not checked: agent {a.node} did not answer (see agent:{a.node})"
            out += [Check(f"root:{a.node}/{r}", Status.SKIP, why) for r in roots]
            out.append(Check(f"clock:{a.node}", Status.SKIP, why))
            continue
        for root in roots:
            d = a.disks[root]
            if isinstance(d, Check):
                out.append(d)
                continue
            free = d.get("free_bytes")
            out.append(free_space_verdict(f"root:{a.node}/{root}", str(d.get("path")), bool(d.get("exists")),
                                          bool(d.get("marker")), marker,
                                          int(free) if isinstance(free, int) else None, needed[root]))
        if a.clock is None:
            out.append(Check(f"clock:{a.node}", Status.SKIP, "the agent gave no time to compare with"))
        else:
            out.append(skew_verdict(f"clock:{a.node}", a.clock[0], a.clock[1], max_skew))
    return out


# -- SQL steps ---------------------------------------------------------------------------


async def check_sql(config: Config, limit: float) -> list[Check]:
    jobs = [_sql(f"sql:{svc.name}/{step.name}", step.sql.driver, step.sql.secret_dsn, limit)
            for svc in config.services for step in svc.promote if step.sql is not None]
    return list(await asyncio.gather(*jobs))


async def _sql(cid: str, driver: str, dsn: str, limit: float) -> Check:
    shown = redact_dsn(dsn)
    if driver != "postgresql":
        return Check(cid, Status.SKIP, f"{driver} DSNs are not checked by doctor yet ({shown})")
    import asyncpg  # here: only deployments with sql steps pay for the import

    redact = Redactor([dsn, dsn_password(dsn)])
    try:
        conn = await asyncio.wait_for(asyncpg.connect(dsn, timeout=limit), limit + 1)
    except (OSError, TimeoutError) as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        return Check(cid, Status.FAIL, redact.text(f"{shown}: cannot connect ({why})"),
                     "check the host and port of the dsn, that the database runs, and the firewall")
    except Exception as exc:  # the driver's own errors: login refused, no such database...
        return Check(cid, Status.FAIL, redact.text(f"{shown}: refused ({type(exc).__name__}: {exc})"),
                     "check the user, password and database of the dsn (pg_hba.conf on the server)")
    await conn.close()
    return Check(cid, Status.PASS, f"{shown}: connected")
