"""The admin listener (minimal): ``GET /metrics`` and ``GET /v1/status``, no token.

Both read :meth:`Router.statistics` / the one metrics registry, so they never disagree
with each other or with the tests. State-changing endpoints (bearer token) come later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import metrics

if TYPE_CHECKING:
    from .server import Router

__all__ = ["build_admin_app", "status_document"]

ROUTER_KEY: web.AppKey[Router] = web.AppKey("router")


def status_document(router: Router) -> dict[str, Any]:
    stats = router.statistics()
    return {
        "services": [
            {
                "name": s.name,
                "active": s.active,
                "epoch": s.epoch,
                "state": s.state,
                "backends": [{"name": b.name, "url": b.url, "healthy": b.healthy} for b in s.backends],
            }
            for s in stats.services
        ]
    }


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _status(request: web.Request) -> web.Response:
    return web.json_response(status_document(request.app[ROUTER_KEY]))


def build_admin_app(router: Router) -> web.Application:
    app = web.Application()
    app[ROUTER_KEY] = router
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/v1/status", _status)
    return app
