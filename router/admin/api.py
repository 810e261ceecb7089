"""The admin listener: the ``/v1/`` API, ``GET /metrics`` and the status page at ``/``.

Rules:

1. Reads need no token: ``GET /``, ``GET /metrics``, ``GET /v1/status``,
   ``GET /v1/promotions`` (but without the token its steps' output, details, alarms and
   reasons are ``null`` and the run says ``"redacted": true``: they may quote what a
   program printed). Everything that changes state needs
   ``Authorization: Bearer <admin.token>`` (``hmac.compare_digest``): missing or wrong is
   401 with a JSON error; with no ``admin.token`` configured every such call is refused
   (403, saying to configure it). The token is read at each call, so a reload that
   changes it applies at once.
2. Every answer is JSON (except ``/`` and ``/metrics``); every error is
   ``{"error": "..."}`` naming what was wrong: unknown service or backend 404, bad body
   400, a move the failover machine turns down 409 with its reason.
3. Operator requests go to the service's failover machine as events, synchronously:
   the machine either takes the event (its actions are performed at once, in order, by
   the controller's one dispatcher) or raises and changes nothing, so a refusal is
   answered 409 before anything moved. A dry run asks a copy of the machine.
4. No secret in an answer: promotion records go through :class:`promote.redact.Redactor`
   (the configured steps' secrets, the admin and replication tokens, DSN patterns) even
   with the token, so records written before redaction existed are covered too.
5. A state file that cannot be written refuses the operator's move with 503 and the
   cause (the machine is unchanged, the controller raised the alarm). A reload (``POST
   /v1/reload`` and SIGHUP alike, :func:`reload_from_source`) re-checks the state file
   against the new config first; a refusal keeps the running config, logs one line,
   raises an alarm on every service and answers 400 (config) or 409 (state file).
6. ``/v1/status`` and the status page are the same document
   (:func:`status_document`), built from snapshots; agents' freshness comes from a
   cache (:mod:`.status`), so a dead agent never slows either.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hotspare.causes import Cause
from promote.audit import AuditLog
from promote.redact import Redactor, step_secrets
from router import metrics
from router.config import ServiceConfig, load_config
from router.errors import ConfigError, StateFileError
from router.failover.machine import (
    AdminConfirmFenced,
    AdminFailover,
    AdminResume,
    AdminSwitchover,
    BackendDown,
    BackendUp,
    Event,
    FailoverError,
    State,
)
from router.failover.state import ServiceState
from router.health.detector import Health

from .page import render_status_page
from .plan import PlanInput, switchover_plan
from .status import AgentFreshness, EventLog, build_status

if TYPE_CHECKING:
    from router.admin.control import RouterControl
    from router.failover.controller import ServiceController

__all__ = ["ROUTER_KEY", "build_admin_app", "status_document"]

log = logging.getLogger("hotspare.admin")

ROUTER_KEY: web.AppKey[RouterControl] = web.AppKey("router")
AGENTS_KEY: web.AppKey[AgentFreshness] = web.AppKey("agents", AgentFreshness)
EVENTS_KEY: web.AppKey[EventLog] = web.AppKey("events", EventLog)
MAINT_KEY: web.AppKey[dict[tuple[str, str], float]] = web.AppKey("maintenance", dict)

AGENT_WAIT = 0.3  # longest a status read waits for fresh agent answers (else: cached)

# Fields of a promotion record that may quote a program's output or an error message.
_PRIVATE_RUN_FIELDS = ("alarms", "reason")
_PRIVATE_STEP_FIELDS = ("output", "detail")
SETTLE_RECHECK = 1.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **extra}


def status_document(
    router: RouterControl,
    agents: AgentFreshness | None = None,
    events: EventLog | None = None,
    maintenance: dict[tuple[str, str], float] | None = None,
) -> dict[str, Any]:
    """The ``GET /v1/status`` JSON (the status page draws exactly this)."""
    return build_status(router, agents, events, maintenance)


# -- plumbing ---------------------------------------------------------------------------------


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="hotspare"'} if exc.status == 401 else None
        return web.json_response(exc.body, status=exc.status, headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": f"{exc.reason}: {request.method} {request.path}"}, status=exc.status)


def _authorize(request: web.Request) -> None:
    token = request.app[ROUTER_KEY].config.admin.token
    if not token:
        raise ApiError(403, "state-changing calls are refused: no admin token is configured; "
                            "set admin.token (or admin.token_file) in the deployment file")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <admin.token>'")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "wrong bearer token")


def _mutating(handler: Handler) -> Handler:
    async def checked(request: web.Request) -> web.StreamResponse:
        _authorize(request)
        return await handler(request)

    return checked


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError as exc:
        raise ApiError(400, f"request body: expected JSON, got invalid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"request body: expected a JSON object, got {type(body).__name__}")
    return body


def _field(body: dict[str, Any], key: str, kind: type, default: Any = ...) -> Any:
    if key not in body:
        if default is ...:
            raise ApiError(400, f"request body: '{key}' is required")
        return default
    value = body[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ApiError(400, f"request body: '{key}' expected {kind.__name__}, got {value!r}")
    return value


def _service(request: web.Request) -> tuple[ServiceConfig, ServiceController]:
    router = request.app[ROUTER_KEY]
    name = request.match_info["name"]
    ctl = router.controllers.get(name)
    if ctl is None:
        raise ApiError(404, f"no service {name!r} (services: {', '.join(router.controllers) or 'none'})")
    return router.config.service(name), ctl


def _backend(svc: ServiceConfig, name: str) -> str:
    names = [b.name for b in svc.backends]
    if name not in names:
        raise ApiError(404, f"service {svc.name!r} has no backend {name!r} (backends: {', '.join(names)})")
    return name


def _apply(ctl: ServiceController, event: Event) -> None:
    """Give the machine one operator event now: a refusal becomes 409 and changes nothing;
    a state file that cannot be written becomes 503 and changes nothing (rule 5);
    otherwise the controller's one dispatcher performs the actions."""
    m = ctl.machine
    try:
        ctl.apply(event)
    except FailoverError as exc:
        raise ApiError(409, str(exc), state=m.state.value) from None
    except StateFileError as exc:
        m = ctl.machine
        raise ApiError(503, f"{exc}; nothing was changed: {ctl.service.name} stays {m.state.value} with "
                            f"{m.active} active at epoch {m.epoch}",
                       state=m.state.value, active=m.active, epoch=m.epoch) from None


def _trial(ctl: ServiceController, event: Event) -> str | None:
    """What the machine would answer, asked of a copy: None if it would take the event."""
    try:
        copy.deepcopy(ctl.machine).handle(event)
    except FailoverError as exc:
        return str(exc)
    return None


def _result(
    ctl: ServiceController, svc: ServiceConfig, old: str, to: str | None, alarms_before: int
) -> tuple[int, dict[str, Any]]:
    m = ctl.machine
    body: dict[str, Any] = {"service": svc.name, "from": old, "to": to,
                            "epoch": m.epoch, "state": m.state.value, "active": m.active}
    new_alarms = ctl.alarms[alarms_before:]
    if m.state is State.PROMOTING:
        return 202, {**body, "outcome": "promoting"}
    if m.state is State.ACTIVE and m.active != old:
        return 200, {**body, "outcome": "promoted"}
    outcome = {State.FENCE_HOLD: "fence_hold", State.DEGRADED: "degraded"}.get(m.state, "failed")
    reason = new_alarms[-1] if new_alarms else f"the service is {m.state.value} with {m.active} active"
    # The promotion ran but its result could not be recorded: the router's fault, not the run's.
    unwritten = next((a for a in new_alarms if a.startswith("state_write_failed:")), None)
    if unwritten is not None:
        return 503, {**body, "outcome": outcome, "error": f"{outcome}: {unwritten}"}
    return 500, {**body, "outcome": outcome, "error": f"{outcome}: {reason}"}


async def _settle(ctl: ServiceController, svc: ServiceConfig, events: EventLog) -> None:
    """Wait while the promotion runs, at most as long as its steps and readiness wait may
    take. Every change of state is logged (and so reaches the event log); the controller
    offers no completion signal of its own, so the machine is also re-checked every
    ``SETTLE_RECHECK`` seconds in case logging is turned down below WARNING."""
    steps = sum(s.timeout * (s.retries + 1) for s in svc.promote)
    deadline = time.monotonic() + steps + svc.failover.hold.max_time + 5.0
    while ctl.machine.state is State.PROMOTING:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(events.next_event(), min(left, SETTLE_RECHECK))


# -- reads ------------------------------------------------------------------------------------


async def _document(request: web.Request) -> dict[str, Any]:
    app = request.app
    router = app[ROUTER_KEY]
    await app[AGENTS_KEY].refresh(router, AGENT_WAIT)
    return status_document(router, app[AGENTS_KEY], app[EVENTS_KEY], app[MAINT_KEY])


async def _status(request: web.Request) -> web.Response:
    return web.json_response(await _document(request))


async def _page(request: web.Request) -> web.Response:
    html = render_status_page(await _document(request))
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _promotions(request: web.Request) -> web.Response:
    router = request.app[ROUTER_KEY]
    service = request.query.get("service") or None
    if service is not None and service not in router.controllers:
        raise ApiError(404, f"no service {service!r} (services: {', '.join(router.controllers)})")
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        raise ApiError(400, f"limit: expected an integer, got {request.query['limit']!r}") from None
    full = _token_given(request)
    audit = AuditLog(router.config.audit_log_path)
    runs = await asyncio.to_thread(audit.history, service)
    redactor = _redactor(router)
    out = [_run_view(dataclasses.asdict(r), r.finished, redactor, full)
           for r in runs[-max(0, limit):]] if limit else []
    return web.json_response({"audit_log": str(audit.path), "bad_lines": audit.bad_lines, "runs": out})


def _token_given(request: web.Request) -> bool:
    """A read that may show more with the token: none is fine, a wrong one is 401."""
    if "Authorization" not in request.headers:
        return False
    _authorize(request)
    return True


def _redactor(router: RouterControl) -> Redactor:
    cfg = router.config
    steps = [step for sc in cfg.services for step in sc.promote]
    repl = cfg.replication.token if cfg.replication else None
    return Redactor([*step_secrets(steps), cfg.admin.token, repl])


def _run_view(run: dict[str, Any], finished: bool, redactor: Redactor, full: bool) -> dict[str, Any]:
    """One run for ``GET /v1/promotions`` (rules 1 and 4)."""
    run = redactor.value(run)
    if not full:
        for key in _PRIVATE_RUN_FIELDS:
            run[key] = None
        for step in run["steps"]:
            for key in _PRIVATE_STEP_FIELDS:
                step[key] = None
    return {**run, "finished": finished, "redacted": not full}


# -- operator actions ---------------------------------------------------------------------


async def _switchover(request: web.Request) -> web.Response:
    return await _move(request, "switchover")


async def _failover(request: web.Request) -> web.Response:
    return await _move(request, "failover")


async def _move(request: web.Request, kind: str) -> web.Response:
    svc, ctl = _service(request)
    body = await _body(request)
    to = _backend(svc, _field(body, "to", str))
    dry_run = _field(body, "dry_run", bool, False)
    wait = _field(body, "wait", bool, True)
    now = time.monotonic()
    event: Event = AdminSwitchover(now, to) if kind == "switchover" else AdminFailover(now, to)
    maintenance = request.app[MAINT_KEY]
    if dry_run:
        bcfg = svc.backend(to)
        agents = request.app[AGENTS_KEY]
        await agents.refresh(request.app[ROUTER_KEY], AGENT_WAIT)
        snap = ctl.machine.snapshot()
        health = ctl.checker.health(to) if ctl.checker.started else None
        plan = switchover_plan(PlanInput(
            service=svc, kind="switchover" if kind == "switchover" else "failover",
            state=snap.state.value, active=snap.active, epoch=snap.epoch, target=to,
            target_healthy=None if health is None else (health is not Health.DOWN and dict(snap.healthy)[to]),
            target_maintenance=(svc.name, to) in maintenance,
            replication=agents.get(bcfg.agent) if bcfg.agent else None,
            refusal=_trial(ctl, event),
        ))
        return web.json_response(plan)
    if kind == "switchover" and (svc.name, to) in maintenance:
        raise ApiError(409, f"{to} is in maintenance (drained); POST /v1/services/{svc.name}/backends/{to}/ready first")
    old, alarms_before = ctl.machine.active, len(ctl.alarms)
    _apply(ctl, event)
    log.warning("service %s: operator %s to %s started (epoch %d)", svc.name, kind, to, ctl.machine.epoch)
    if wait:
        await _settle(ctl, svc, request.app[EVENTS_KEY])
    status, result = _result(ctl, svc, old, to, alarms_before)
    return web.json_response({**result, "dry_run": False}, status=status)


async def _confirm_fenced(request: web.Request) -> web.Response:
    svc, ctl = _service(request)
    body = await _body(request)
    old, to = ctl.machine.active, ctl.machine.snapshot().target
    alarms_before = len(ctl.alarms)
    _apply(ctl, AdminConfirmFenced(time.monotonic()))
    log.warning("service %s: operator confirmed %s is fenced", svc.name, old)
    if _field(body, "wait", bool, True):
        await _settle(ctl, svc, request.app[EVENTS_KEY])
    status, result = _result(ctl, svc, old, to, alarms_before)
    return web.json_response(result, status=status)


async def _resume(request: web.Request) -> web.Response:
    svc, ctl = _service(request)
    _apply(ctl, AdminResume(time.monotonic()))
    log.warning("service %s: operator resumed %s", svc.name, ctl.machine.active)
    m = ctl.machine
    return web.json_response({"service": svc.name, "active": m.active, "epoch": m.epoch, "state": m.state.value})


async def _drain(request: web.Request) -> web.Response:
    svc, ctl = _service(request)
    b = _backend(svc, request.match_info["backend"])
    if b == ctl.machine.active:
        raise ApiError(409, f"{b} is the active backend of {svc.name}; switch over to another backend "
                            f"first (POST /v1/services/{svc.name}/switchover)")
    maintenance = request.app[MAINT_KEY]
    if (svc.name, b) not in maintenance:
        maintenance[(svc.name, b)] = time.time()
        log.warning("service %s: backend %s drained for maintenance: not a failover target until ready",
                    svc.name, b)
        # The machine treats it as down (no failover to it) until /ready says otherwise.
        _apply(ctl, BackendDown(time.monotonic(), b, Cause.ADMIN, None, "maintenance (drained by an operator)"))
    return web.json_response({"service": svc.name, "backend": b, "maintenance": True})


async def _ready(request: web.Request) -> web.Response:
    svc, ctl = _service(request)
    b = _backend(svc, request.match_info["backend"])
    if ctl.checker.started and ctl.checker.health(b) is Health.DOWN:
        raise ApiError(409, f"{b} fails its health checks; it becomes a failover target again once its "
                            "probes pass")
    maintenance = request.app[MAINT_KEY]
    if maintenance.pop((svc.name, b), None) is not None:
        log.warning("service %s: backend %s ready again after maintenance", svc.name, b)
    _apply(ctl, BackendUp(time.monotonic(), b))
    return web.json_response({"service": svc.name, "backend": b, "maintenance": False})


async def _reload(request: web.Request) -> web.Response:
    return web.json_response(await reload_from_source(request.app[ROUTER_KEY], "the admin API"))


async def reload_from_source(router: RouterControl, via: str) -> dict[str, Any]:
    """Reload the router from its file, the same way for SIGHUP and ``POST /v1/reload``
    (rule 5): the answer's body, or :class:`ApiError` after one log line and an alarm.
    The running config is kept whole on any refusal; the router never stops for it."""
    path = router.config.source
    if path is None:
        raise ApiError(409, "this router was not started from a file; nothing to reload")
    try:
        new = await asyncio.to_thread(load_config, path)
    except ConfigError as exc:
        metrics.RELOAD_FAILURES.labels("config").inc()
        log.error("reload refused (%s), keeping the running config: %s", via, "; ".join(exc.errors))
        raise ApiError(400, f"{path}: reload refused, the running config is kept", errors=exc.errors) from None
    try:
        await asyncio.to_thread(router.state_file.check, new.services, _running_states(router))
        _check_targets(router, new.services)
        router.reload(new)
    except StateFileError as exc:
        metrics.RELOAD_FAILURES.labels("state_file").inc()
        log.error("reload refused (%s), keeping the running config: %s", via, exc)
        for ctl in router.controllers.values():
            ctl.alarms.append(f"reload_refused: {exc}")
        raise ApiError(409, f"reload refused, the running config is kept: {exc}", errors=[str(exc)]) from None
    log.warning("configuration reloaded from %s through %s", path, via)
    return {"reloaded": True, "source": str(path), "services": [s.name for s in new.services]}


def _running_states(router: RouterControl) -> dict[str, ServiceState]:
    return {name: ServiceState(ctl.machine.active, ctl.machine.epoch) for name, ctl in router.controllers.items()}


def _check_targets(router: RouterControl, services: list[ServiceConfig]) -> None:
    """A promotion under way must still find its target in the new config."""
    for sc in services:
        ctl = router.controllers.get(sc.name)
        target = ctl.machine.snapshot().target if ctl is not None else None
        if target is not None and target not in {b.name for b in sc.backends}:
            raise StateFileError(f"service {sc.name!r} is promoting {target!r}, which the new config does "
                                 f"not name; reload after the promotion ends")


# -- the app ----------------------------------------------------------------------------------


def build_admin_app(router: RouterControl) -> web.Application:
    app = web.Application(middlewares=[_errors])
    app[ROUTER_KEY] = router
    app[AGENTS_KEY] = AgentFreshness()
    app[EVENTS_KEY] = events = EventLog()
    app[MAINT_KEY] = {}
    events.attach()

    async def cleanup(app: web.Application) -> None:
        events.detach()
        await app[AGENTS_KEY].close()

    app.on_cleanup.append(cleanup)
    r = app.router
    r.add_get("/", _page)
    r.add_get("/metrics", _metrics)
    r.add_get("/v1/status", _status)
    r.add_get("/v1/promotions", _promotions)
    r.add_post("/v1/services/{name}/switchover", _mutating(_switchover))
    r.add_post("/v1/services/{name}/failover", _mutating(_failover))
    r.add_post("/v1/services/{name}/confirm-fenced", _mutating(_confirm_fenced))
    r.add_post("/v1/services/{name}/resume", _mutating(_resume))
    r.add_post("/v1/services/{name}/backends/{backend}/drain", _mutating(_drain))
    r.add_post("/v1/services/{name}/backends/{backend}/ready", _mutating(_ready))
    r.add_post("/v1/reload", _mutating(_reload))
    return app
