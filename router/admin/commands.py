"""The operator commands, carried out here: ``execute(router, service, command, args)``.

Rules:

1. This is the ONE local implementation of ``switchover``, ``failover``,
   ``confirm-fenced``, ``resume``, ``drain`` and ``ready``. The admin API's handlers call
   it when this router decides the service; in a pair, the decider's command queue
   (router/cluster/commands.py) calls it for a command any router received. The token
   check is the API's, before either.
2. ``args`` may come from another process (an etcd record): every field is checked here
   again (type, known backend, no unknown key); a bad one is 400 and nothing is done.
3. Nothing raises to the caller: the answer is ``(HTTP status, JSON body)``, errors as
   ``{"error": ...}`` naming what was wrong (404 unknown service or backend, 409 a move
   the machine turns down, 503 the state could not be written; the machine is then
   unchanged).
4. Operator events go to the machine through ``ServiceController.apply`` (awaited when
   it is a coroutine): the machine takes the event or raises and changes nothing.
5. A move that starts a promotion is answered when the service has settled, at most as
   long as its steps and hold may take; ``"wait": false`` answers at once (202 while
   promoting).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from router.errors import StateFileError
from router.failover.machine import (
    AdminConfirmFenced,
    AdminDrain,
    AdminFailover,
    AdminReady,
    AdminResume,
    AdminSwitchover,
    Event,
    FailoverError,
    State,
)
from router.health.detector import Health

from .errors import ApiError

if TYPE_CHECKING:
    from router.admin.control import RouterControl
    from router.config import ServiceConfig
    from router.failover.controller import ServiceController

__all__ = ["ARGS", "COMMANDS", "SETTLE_MARGIN", "backend_of", "execute", "service_of"]

log = logging.getLogger("hotspare.admin")

SETTLE_MARGIN = 5.0  # seconds a move's answer may wait beyond its steps and hold time

# Each command's arguments: name -> (type, required).
ARGS: dict[str, dict[str, tuple[type, bool]]] = {
    "switchover": {"to": (str, True), "wait": (bool, False)},
    "failover": {"to": (str, True), "wait": (bool, False)},
    "confirm-fenced": {"wait": (bool, False)},
    "resume": {},
    "drain": {"backend": (str, True)},
    "ready": {"backend": (str, True)},
}
COMMANDS = frozenset(ARGS)

Answer = tuple[int, dict[str, Any]]


async def execute(router: RouterControl, service: str, command: str, args: dict[str, Any]) -> Answer:
    """Carry out one operator command on this router's machine of ``service`` (rule 1)."""
    try:
        svc, ctl = service_of(router, service)
        _check_args(command, args)
        return await _RUNNERS[command](router, svc, ctl, args)
    except ApiError as exc:
        return exc.status, exc.body


def service_of(router: RouterControl, name: str) -> tuple[ServiceConfig, ServiceController]:
    ctl = router.controllers.get(name)
    if ctl is None:
        raise ApiError(404, f"no service {name!r} (services: {', '.join(router.controllers) or 'none'})")
    return router.config.service(name), ctl


def _check_args(command: str, args: dict[str, Any]) -> None:
    spec = ARGS.get(command)
    if spec is None:
        raise ApiError(400, f"unknown command {command!r} (commands: {', '.join(sorted(COMMANDS))})")
    if not isinstance(args, dict):
        raise ApiError(400, f"{command}: arguments: expected a JSON object, got {type(args).__name__}")
    unknown = sorted(str(k) for k in args if k not in spec)
    if unknown:
        raise ApiError(400, f"{command}: unknown argument(s) {', '.join(unknown)} (known: {', '.join(spec) or 'none'})")
    for key, (kind, required) in spec.items():
        if key not in args:
            if required:
                raise ApiError(400, f"request body: '{key}' is required")
            continue
        value = args[key]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ApiError(400, f"request body: '{key}' expected {kind.__name__}, got {value!r}")


def backend_of(svc: ServiceConfig, name: str) -> str:
    names = [b.name for b in svc.backends]
    if name not in names:
        raise ApiError(404, f"service {svc.name!r} has no backend {name!r} (backends: {', '.join(names)})")
    return name


async def _apply(ctl: ServiceController, event: Event) -> None:
    """Rule 4: a refusal becomes 409 and changes nothing; a state that cannot be written
    becomes 503 and changes nothing; otherwise the controller performs the actions."""
    m = ctl.machine
    try:
        res: object = ctl.apply(event)
        if inspect.isawaitable(res):
            await res
    except FailoverError as exc:
        raise ApiError(409, str(exc), state=m.state.value) from None
    except StateFileError as exc:
        m = ctl.machine
        raise ApiError(503, f"{exc}; nothing was changed: {ctl.service.name} stays {m.state.value} with "
                            f"{m.active} active at epoch {m.epoch}",
                       state=m.state.value, active=m.active, epoch=m.epoch) from None


def _result(ctl: ServiceController, svc: ServiceConfig, old: str, to: str | None, alarms_before: int) -> Answer:
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


async def _settle(ctl: ServiceController, svc: ServiceConfig) -> None:
    """Rule 5: wait until the service settles (the controller's own completion signal)."""
    steps = sum(s.timeout * (s.retries + 1) for s in svc.promote)
    await ctl.wait_settled(steps + svc.failover.hold.max_time + SETTLE_MARGIN)


async def _move(router: RouterControl, svc: ServiceConfig, ctl: ServiceController, args: dict[str, Any],
                kind: str) -> Answer:
    to = backend_of(svc, args["to"])
    now = time.monotonic()
    event: Event = AdminSwitchover(now, to) if kind == "switchover" else AdminFailover(now, to)
    if kind == "switchover" and to in ctl.drained:
        raise ApiError(409, f"{to} is in maintenance (drained); POST /v1/services/{svc.name}/backends/{to}/ready first")
    old, alarms_before = ctl.machine.active, len(ctl.alarms)
    await _apply(ctl, event)
    log.warning("service %s: operator %s to %s started (epoch %d)", svc.name, kind, to, ctl.machine.epoch)
    if args.get("wait", True):
        await _settle(ctl, svc)
    status, result = _result(ctl, svc, old, to, alarms_before)
    return status, {**result, "dry_run": False}


async def _switchover(router: RouterControl, svc: ServiceConfig, ctl: ServiceController, args: dict[str, Any]) -> Answer:
    return await _move(router, svc, ctl, args, "switchover")


async def _failover(router: RouterControl, svc: ServiceConfig, ctl: ServiceController, args: dict[str, Any]) -> Answer:
    return await _move(router, svc, ctl, args, "failover")


async def _confirm_fenced(router: RouterControl, svc: ServiceConfig, ctl: ServiceController,
                          args: dict[str, Any]) -> Answer:
    old, to = ctl.machine.active, ctl.machine.snapshot().target
    alarms_before = len(ctl.alarms)
    await _apply(ctl, AdminConfirmFenced(time.monotonic()))
    log.warning("service %s: operator confirmed %s is fenced", svc.name, old)
    if args.get("wait", True):
        await _settle(ctl, svc)
    return _result(ctl, svc, old, to, alarms_before)


async def _resume(router: RouterControl, svc: ServiceConfig, ctl: ServiceController, args: dict[str, Any]) -> Answer:
    await _apply(ctl, AdminResume(time.monotonic()))
    log.warning("service %s: operator resumed %s", svc.name, ctl.machine.active)
    m = ctl.machine
    return 200, {"service": svc.name, "active": m.active, "epoch": m.epoch, "state": m.state.value}


async def _drain(router: RouterControl, svc: ServiceConfig, ctl: ServiceController, args: dict[str, Any]) -> Answer:
    b = backend_of(svc, args["backend"])
    if b == ctl.machine.active:
        raise ApiError(409, f"{b} is the active backend of {svc.name}; switch over to another backend "
                            f"first (POST /v1/services/{svc.name}/switchover)")
    # Maintenance is the machine's own admin state: no failover or switchover target,
    # whatever its probes say, until ready.
    was = b in ctl.drained
    await _apply(ctl, AdminDrain(time.monotonic(), b))
    if not was:
        log.warning("service %s: backend %s drained for maintenance: not a failover target until ready",
                    svc.name, b)
    return 200, {"service": svc.name, "backend": b, "maintenance": True}


async def _ready(router: RouterControl, svc: ServiceConfig, ctl: ServiceController, args: dict[str, Any]) -> Answer:
    b = backend_of(svc, args["backend"])
    if ctl.checker.started and ctl.checker.health(b) is Health.DOWN:
        raise ApiError(409, f"{b} fails its health checks; it becomes a failover target again once its "
                            "probes pass")
    was = b in ctl.drained
    await _apply(ctl, AdminReady(time.monotonic(), b))  # may fail over to b at once (degraded for want of it)
    if was:
        log.warning("service %s: backend %s ready again after maintenance", svc.name, b)
    return 200, {"service": svc.name, "backend": b, "maintenance": False}


Runner = Callable[["RouterControl", "ServiceConfig", "ServiceController", dict[str, Any]], Awaitable[Answer]]
_RUNNERS: dict[str, Runner] = {
    "switchover": _switchover,
    "failover": _failover,
    "confirm-fenced": _confirm_fenced,
    "resume": _resume,
    "drain": _drain,
    "ready": _ready,
}
