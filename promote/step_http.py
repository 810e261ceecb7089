"""The HTTP-speaking steps: ``http``, ``wait_healthy`` and ``agent``.

``http`` contract:
  One request (``method``, default POST; ``url``, ``headers``, ``body`` or ``json``,
  templates rendered). **Success**: the response status is in ``expect_status`` (default
  2xx). **Failure**: any other status, or no response (connection refused, TLS error,
  reset). **Timeout**: no complete response within the step's timeout. The first 64 KiB
  of the response body is kept as the step's output. TLS is verified unless
  ``verify_tls: false``; ``ca_file`` names a private CA.

``wait_healthy`` contract:
  Probe ``url`` (default the new active's readiness URL, ``{new.health_url}``) every
  ``interval``. **Success**: ``successes`` probes in a row (default 3) answered with a
  status in ``expect_status`` (default 200-399), each within ``probe_timeout``. A bad
  probe resets the count. **Timeout**: the step's timeout passes first (the usual
  outcome when the new active never becomes ready). It never fails early: a server
  still starting refuses connections for a while.

``agent`` contract (the replication agent implements the other side):
  ``POST {agent_url}/v1/actions/{action}`` with ``Authorization: Bearer <replication
  token>`` and JSON ``{"service", "epoch", "node"}`` (``node`` = the name of the node the
  agent runs on). Actions: ``stop-app`` (on the old active, a fencing step) and
  ``final-sync`` (on the new one). **Success**: status 200 with JSON ``{"ok": true}``.
  **Failure**: any other status or body (``"error"`` from the body is reported), no
  agent URL for that node, no replication token, or no response. **Timeout**: the step's
  timeout.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import aiohttp

from .attempt import Attempt, Runtime
from .config import AgentOptions, HttpOptions, Step, WaitHealthyOptions
from .errors import StepFailed
from .templates import render

__all__ = ["agent_request", "run_agent", "run_http", "run_wait_healthy"]

_BODY_KEEP = 64 * 1024


def _ssl_for(opts: HttpOptions | WaitHealthyOptions | AgentOptions) -> ssl.SSLContext | bool:
    if not opts.verify_tls:
        return False
    if opts.ca_file is not None:
        return ssl.create_default_context(cafile=str(opts.ca_file))
    return True


def _render_json(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return render(value, values)
    if isinstance(value, dict):
        return {k: _render_json(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_json(v, values) for v in value]
    return value


def http_request(opts: HttpOptions, values: dict[str, str]) -> dict[str, Any]:
    """Method, URL and keyword arguments of the request, templates rendered."""
    req: dict[str, Any] = {
        "method": opts.method,
        "url": render(opts.url, values),
        "headers": {k: render(v, values) for k, v in opts.headers.items()},
    }
    if opts.body is not None:
        req["data"] = render(opts.body, values).encode()
    elif opts.json_body is not None:
        req["json"] = _render_json(opts.json_body, values)
    return req


async def run_http(step: Step, rt: Runtime, attempt: Attempt) -> None:
    opts = step.http
    assert opts is not None
    req = http_request(opts, dict(rt.values))
    method, url = req.pop("method"), req.pop("url")
    try:
        async with rt.http.request(
            method, url, ssl=_ssl_for(opts), allow_redirects=False, **req
        ) as resp:
            attempt.http_status = resp.status
            body = await _read_capped(resp)
            attempt.output.write(body)
    except (aiohttp.ClientError, OSError) as exc:
        raise StepFailed(f"{method} {url}: no response ({_describe(exc)})") from None
    if resp.status not in opts.expect_status:
        raise StepFailed(
            f"{method} {url} answered {resp.status}, expected {_statuses(opts.expect_status)}"
        )


async def run_wait_healthy(step: Step, rt: Runtime, attempt: Attempt) -> None:
    opts = step.wait_healthy
    assert opts is not None
    url = render(opts.url, dict(rt.values))
    timeout = aiohttp.ClientTimeout(total=opts.probe_timeout)
    in_a_row = probes = 0
    while True:
        probes += 1
        try:
            async with rt.http.request(
                opts.method, url, ssl=_ssl_for(opts), timeout=timeout, allow_redirects=False
            ) as resp:
                attempt.http_status = resp.status
                good = resp.status in opts.expect_status
                last = f"status {resp.status}"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            good, last = False, _describe(exc)
        in_a_row = in_a_row + 1 if good else 0
        attempt.note = f"{url}: {in_a_row}/{opts.successes} good probes in a row ({probes} probes, last: {last})"
        if in_a_row >= opts.successes:
            return
        await asyncio.sleep(opts.interval)


def agent_request(
    opts: AgentOptions, rt_values: dict[str, str], agent_url: str
) -> tuple[str, dict[str, Any]]:
    """URL and JSON body of an agent call."""
    node = rt_values[f"{opts.target}.name"]
    body = {"service": rt_values["service"], "epoch": int(rt_values["epoch"]), "node": node}
    return f"{agent_url.rstrip('/')}/v1/actions/{opts.action}", body


async def run_agent(step: Step, rt: Runtime, attempt: Attempt) -> None:
    opts = step.agent
    assert opts is not None
    values = dict(rt.values)
    agent_url = values[f"{opts.target}.agent"]
    node = values[f"{opts.target}.name"]
    if not agent_url:
        raise StepFailed(
            f"backend {node!r} has no agent URL (backends[].agent); cannot {opts.action}"
        )
    if not rt.agent_token:
        raise StepFailed(
            "no replication token configured (replication.token); cannot call the agent"
        )
    url, body = agent_request(opts, values, agent_url)
    headers = {"Authorization": f"Bearer {rt.agent_token}"}
    try:
        async with rt.http.post(
            url, json=body, headers=headers, ssl=_ssl_for(opts), allow_redirects=False
        ) as resp:
            attempt.http_status = resp.status
            raw = await _read_capped(resp)
            attempt.output.write(raw)
    except (aiohttp.ClientError, OSError) as exc:
        raise StepFailed(f"agent of {node} at {url}: no response ({_describe(exc)})") from None
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = None
    ok = isinstance(answer, dict) and answer.get("ok") is True
    if resp.status == 200 and ok:
        return
    error = answer.get("error") if isinstance(answer, dict) else None
    why = f": {error}" if error else (' (expected JSON {"ok": true})' if resp.status == 200 else "")
    raise StepFailed(f"agent of {node} refused {opts.action}: status {resp.status}{why}")


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    """The body's first ``_BODY_KEEP`` bytes (the rest is not read)."""
    data = bytearray()
    while len(data) < _BODY_KEEP:
        chunk = await resp.content.read(_BODY_KEEP - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "probe timed out"
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _statuses(codes: frozenset[int]) -> str:
    for first in range(100, 600, 100):
        if codes == frozenset(range(first, first + 100)):
            return f"{first // 100}xx"
    return ", ".join(str(c) for c in sorted(codes)[:10]) + (" ..." if len(codes) > 10 else "")
