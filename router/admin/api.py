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
3. Operator requests are carried out by :func:`.commands.execute` (the one local
   implementation) when this router decides the service (always, without a
   ``cluster:`` section); otherwise the decider of the pair carries them out
   (``router.forward_command``, router/cluster/commands.py) and its answer is given.
   Either way the machine takes the event or raises and changes nothing, so a refusal
   is answered 409 before anything moved. The token check comes first; a request's
   body, service and backend are checked here before anything is sent on. A dry run
   asks a copy of this router's machine. Drained backends are the failover layer's
   admin state (``ctl.drained``: the machine's, on a follower the shared record's), not
   a record of the API's.
4. No secret in an answer: promotion records (:mod:`.promotions`) go through ``Redactor``
   (the configured steps' secrets, the admin and replication tokens, DSN patterns) even
   with the token, so records written before redaction existed are covered too.
5. A state file that cannot be written refuses the operator's move with 503 and the
   cause (the machine is unchanged, the controller raised the alarm). A reload is
   :mod:`.reload` (``POST /v1/reload`` and SIGHUP alike).
6. ``/v1/status`` and the status page are the same document
   (:func:`status_document`), built from ``router.statistics()`` and the event feed;
   agents' freshness comes from a cache that the app's own task refreshes, with the
   replication-lag gauge, on a timer (:mod:`.agents`), so a dead agent never slows
   either and ``/metrics`` alone is never stale.
7. A move that starts a promotion is answered when the service has settled
   (``ServiceController.wait_settled``), at most as long as its steps and readiness
   wait may take; ``"wait": false`` answers at once (202 while promoting).
8. ``GET /v1/history`` (no token) is the last minutes the app's own sampler kept
   (:mod:`.history`, task ``admin:history``); the page draws it as charts.
"""

from __future__ import annotations

import copy
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from router import metrics
from router.config import ServiceConfig
from router.failover.machine import AdminFailover, AdminSwitchover, Event, FailoverError

from .agents import AgentFreshness, agents_context
from .commands import backend_of, execute, service_of
from .errors import ApiError
from .history import Sampler, history_context
from .page import render_status_page
from .plan import PlanInput, make_plan
from .promotions import promotion_history
from .reload import reload_from_source
from .status import Replication, build_status

if TYPE_CHECKING:
    from router.admin.control import RouterControl
    from router.failover.controller import ServiceController

__all__ = ["ROUTER_KEY", "ApiError", "build_admin_app", "reload_from_source", "status_document"]

ROUTER_KEY: web.AppKey[RouterControl] = web.AppKey("router")
AGENTS_KEY: web.AppKey[AgentFreshness] = web.AppKey("agents", AgentFreshness)
HISTORY_KEY: web.AppKey[Sampler] = web.AppKey("history", Sampler)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def status_document(router: RouterControl, replication: Replication | None = None,
                    maintenance: dict[tuple[str, str], float] | None = None) -> dict[str, Any]:
    """The ``GET /v1/status`` JSON (the status page draws exactly this)."""
    return build_status(router, replication, maintenance)


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
    return service_of(request.app[ROUTER_KEY], request.match_info["name"])


def _trial(ctl: ServiceController, event: Event) -> str | None:
    """What the machine would answer, asked of a copy: None if it would take the event."""
    try:
        copy.deepcopy(ctl.machine).handle(event)
    except FailoverError as exc:
        return str(exc)
    return None


# -- reads ------------------------------------------------------------------------------------


def _document(request: web.Request) -> dict[str, Any]:
    app = request.app
    return status_document(app[ROUTER_KEY], app[AGENTS_KEY].snapshot(), maintenance_of(app[ROUTER_KEY]))


def maintenance_of(router: RouterControl) -> dict[tuple[str, str], float]:
    """The drained backends, from each machine (its own admin state: rule 3)."""
    return {(name, b): 0.0 for name, ctl in router.controllers.items() for b in ctl.drained}


async def _status(request: web.Request) -> web.Response:
    return web.json_response(_document(request))


async def _page(request: web.Request) -> web.Response:
    html = render_status_page(_document(request), request.app[HISTORY_KEY].history.view(time.time()))
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})


async def _history(request: web.Request) -> web.Response:
    return web.json_response(request.app[HISTORY_KEY].history.view(time.time()))


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
    return web.json_response(await promotion_history(router, service, limit, full))


def _token_given(request: web.Request) -> bool:
    """A read that may show more with the token: none is fine, a wrong one is 401."""
    if "Authorization" not in request.headers:
        return False
    _authorize(request)
    return True


# -- operator actions ---------------------------------------------------------------------


async def _command(request: web.Request, command: str, args: dict[str, Any]) -> web.Response:
    """Rule 3: carried out here when this router decides the service, else by the
    decider of the pair (router/cluster/commands.py); the answer is the same either way."""
    router = request.app[ROUTER_KEY]
    svc, _ = service_of(router, request.match_info["name"])
    if router.decides(svc.name):
        status, body = await execute(router, svc.name, command, args)
    else:
        status, body = await router.forward_command(svc.name, command, args)
    return web.json_response(body, status=status)


async def _switchover(request: web.Request) -> web.Response:
    return await _move(request, "switchover")


async def _failover(request: web.Request) -> web.Response:
    return await _move(request, "failover")


async def _move(request: web.Request, kind: str) -> web.Response:
    svc, ctl = _service(request)
    body = await _body(request)
    to = backend_of(svc, _field(body, "to", str))
    if _field(body, "dry_run", bool, False):
        now = time.monotonic()
        event: Event = AdminSwitchover(now, to) if kind == "switchover" else AdminFailover(now, to)
        return web.json_response(_dry_run(request, svc, kind, to, _trial(ctl, event)))
    return await _command(request, kind, {"to": to, "wait": _field(body, "wait", bool, True)})


def _dry_run(request: web.Request, svc: ServiceConfig, kind: str, to: str, refusal: str | None) -> dict[str, Any]:
    """The plan (:mod:`.plan`), from the router's one snapshot and the agents' cache."""
    stats = next(s for s in request.app[ROUTER_KEY].statistics().services if s.name == svc.name)
    target = next(b for b in stats.backends if b.name == to)
    agent = svc.backend(to).agent
    plan = make_plan(PlanInput(
        service=svc, kind="switchover" if kind == "switchover" else "failover",
        state=stats.state, active=stats.active, epoch=stats.epoch, target=to,
        target_healthy=target.healthy if target.probe is not None else None,
        target_maintenance=to in request.app[ROUTER_KEY].controllers[svc.name].drained,
        replication=request.app[AGENTS_KEY].get(agent) if agent else None,
        refusal=refusal,
    ))
    return plan.answer()


async def _confirm_fenced(request: web.Request) -> web.Response:
    _service(request)
    body = await _body(request)
    return await _command(request, "confirm-fenced", {"wait": _field(body, "wait", bool, True)})


async def _resume(request: web.Request) -> web.Response:
    return await _command(request, "resume", {})


async def _drain(request: web.Request) -> web.Response:
    svc, _ = _service(request)
    return await _command(request, "drain", {"backend": backend_of(svc, request.match_info["backend"])})


async def _ready(request: web.Request) -> web.Response:
    svc, _ = _service(request)
    return await _command(request, "ready", {"backend": backend_of(svc, request.match_info["backend"])})


async def _reload(request: web.Request) -> web.Response:
    return web.json_response(await reload_from_source(request.app[ROUTER_KEY], "the admin API"))


# -- the app ----------------------------------------------------------------------------------


def build_admin_app(router: RouterControl) -> web.Application:
    app = web.Application(middlewares=[_errors])
    app[ROUTER_KEY] = router
    app[AGENTS_KEY] = agents = AgentFreshness()
    app.cleanup_ctx.append(agents_context(agents, router))  # the refresh task: rule 6
    app[HISTORY_KEY] = sampler = Sampler()
    app.cleanup_ctx.append(history_context(sampler, router))  # the sampling task: rule 8
    r = app.router
    r.add_get("/", _page)
    r.add_get("/metrics", _metrics)
    r.add_get("/v1/status", _status)
    r.add_get("/v1/history", _history)
    r.add_get("/v1/promotions", _promotions)
    r.add_post("/v1/services/{name}/switchover", _mutating(_switchover))
    r.add_post("/v1/services/{name}/failover", _mutating(_failover))
    r.add_post("/v1/services/{name}/confirm-fenced", _mutating(_confirm_fenced))
    r.add_post("/v1/services/{name}/resume", _mutating(_resume))
    r.add_post("/v1/services/{name}/backends/{backend}/drain", _mutating(_drain))
    r.add_post("/v1/services/{name}/backends/{backend}/ready", _mutating(_ready))
    r.add_post("/v1/reload", _mutating(_reload))
    return app
