"""The agents' replication freshness as the router sees it, and the gauge drawn from it.

Rules:

1. Each agent's own ``GET /v1/status`` (bearer replication token) is fetched by ONE
   named task the admin app owns (``admin:agents``, started with the app, cancelled at
   its cleanup: :func:`agents_context`): a round every ``interval`` seconds, each fetch
   bounded by ``timeout``. Readers (status, page, dry run) read the last answers
   (:meth:`AgentFreshness.snapshot`) and never wait, so a dead agent never slows them.
2. After every round ``hotspare_replication_lag_seconds`` is redrawn from that round:
   each root the spare mirrors gets its lag; a series whose lag is unknown now (agent
   dead or silent, not mirroring, the spare changed) is removed, not left at its last
   value. A scrape of ``/metrics`` alone is never staler than one round.
3. A round that fails (a bug) is logged and the next one comes anyway;
   ``CancelledError`` always propagates.
4. Each answer keeps ``last_answered_at`` (the last round the agent answered at all) and,
   while it does not answer, ``unreachable_since``: its last answer, or the first round
   that tried if it never answered (:func:`remember`). Its lag is then unknown, never 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp

from router import metrics

if TYPE_CHECKING:
    from router.admin.control import RouterControl, RouterStatistics
    from router.config import Config

__all__ = ["AgentFreshness", "LagGauge", "agents_context", "lag_series", "remember", "summarize_agent"]

log = logging.getLogger("hotspare.admin")

Series = dict[tuple[str, str], float]  # (service, root) -> lag seconds


def summarize_agent(body: Any) -> dict[str, Any]:
    """An agent's ``/v1/status`` reduced to what the router shows: its role and, for each
    root it mirrors, the lag; ``lag_seconds`` is the worst root's."""
    if not isinstance(body, Mapping):
        return {"reachable": True, "error": f"unexpected answer {str(body)[:80]!r}"}
    roots: dict[str, float] = {}
    in_sync = True
    pending = 0
    errors = []
    for r in body.get("roots") or []:
        if not isinstance(r, Mapping) or r.get("role") != "sink":
            continue
        lag = r.get("lag_seconds")
        if isinstance(lag, (int, float)) and not isinstance(lag, bool):
            roots[str(r.get("name"))] = float(lag)
        in_sync = in_sync and bool(r.get("in_sync"))
        pending += int(r.get("pending") or 0)
        if r.get("error"):
            errors.append(f"{r.get('name')}: {r.get('error')}")
    mirroring = body.get("role") == "sink"
    return {
        "reachable": True,
        "role": body.get("role"),
        "epoch": body.get("epoch"),
        "in_sync": in_sync if mirroring else None,
        "pending": pending if mirroring else None,
        "lag_seconds": max(roots.values()) if roots else None,
        "roots": roots,
        "error": "; ".join(errors) or None,
    }


def remember(previous: Mapping[str, Any] | None, answer: dict[str, Any]) -> dict[str, Any]:
    """``answer`` with the times of rule 4 carried over from the ``previous`` one."""
    prev = previous or {}
    if answer.get("reachable", True):
        return {**answer, "last_answered_at": answer.get("checked_at"), "unreachable_since": None}
    last = prev.get("last_answered_at")
    since = prev.get("unreachable_since") or last or answer.get("checked_at")
    return {**answer, "last_answered_at": last, "unreachable_since": since}


def lag_series(stats: RouterStatistics, config: Config, answers: Mapping[str, Mapping[str, Any]]) -> Series:
    """What the lag gauge should show now: the spare's roots, as its agent last said."""
    out: Series = {}
    for s in stats.services:
        spare = next((b.name for b in s.backends if b.name != s.active), None)
        sc = next((c for c in config.services if c.name == s.name), None)
        agent = next((b.agent for b in sc.backends if b.name == spare), None) if sc else None
        roots = (answers.get(agent) or {}).get("roots") if agent else None
        for root, lag in (roots or {}).items():
            out[(s.name, root)] = lag
    return out


class LagGauge:
    """``hotspare_replication_lag_seconds`` as this admin app last drew it (rule 2)."""

    def __init__(self) -> None:
        self._shown: set[tuple[str, str]] = set()

    def draw(self, series: Series) -> None:
        for labels, value in series.items():
            metrics.REPLICATION_LAG.labels(*labels).set(value)
        for labels in self._shown - series.keys():
            metrics.REPLICATION_LAG.remove(*labels)  # unknown now: no stale number
        self._shown = set(series)


class AgentFreshness:
    """Last known status of every agent named in the config (agent URL -> summary, with
    ``checked_at``), refreshed by :meth:`run`."""

    def __init__(self, interval: float = 1.0, timeout: float = 1.0) -> None:
        self.interval = interval
        self.timeout = timeout
        self._cache: dict[str, dict[str, Any]] = {}
        self.gauge = LagGauge()

    def get(self, agent_url: str) -> dict[str, Any] | None:
        return self._cache.get(agent_url)

    def snapshot(self) -> Mapping[str, Mapping[str, Any]]:
        return dict(self._cache)

    async def run(self, router: RouterControl) -> None:
        """Rounds until cancelled (rule 1); the gauge follows every round (rule 2)."""
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    await self.refresh(router, session)
                    self.gauge.draw(lag_series(router.statistics(), router.config, self._cache))
                except Exception:  # rule 3: a bug in one round must not end the refreshes
                    log.exception("agent status refresh failed")
                await asyncio.sleep(self.interval)  # pacing between rounds, not a wait for a condition

    async def refresh(self, router: RouterControl, session: aiohttp.ClientSession) -> None:
        """One round: every agent of the config, at once."""
        config = router.config
        if config.replication is None:
            self._cache = {}
            return
        token = config.replication.token
        urls = sorted({b.agent for s in config.services for b in s.backends if b.agent})
        results = await asyncio.gather(*(self._fetch(session, u, token) for u in urls))
        self._cache = {u: remember(self._cache.get(u), r) for u, r in zip(urls, results, strict=True)}

    async def _fetch(self, session: aiohttp.ClientSession, url: str, token: str | None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        checked = time.time()
        try:
            async with session.get(url.rstrip("/") + "/v1/status", headers=headers) as r:
                if r.status != 200:
                    text = (await r.text())[:200]
                    return {"reachable": True, "checked_at": checked,
                            "error": f"agent answered {r.status}: {text}"}
                body = await r.json(content_type=None)
        except TimeoutError:
            return {"reachable": False, "checked_at": checked, "error": f"no answer within {self.timeout:g}s"}
        except (aiohttp.ClientError, ValueError) as exc:
            return {"reachable": False, "checked_at": checked,
                    "error": f"unreachable: {type(exc).__name__}: {exc}".rstrip(": ")}
        return {**summarize_agent(body), "checked_at": checked}


def agents_context(
    freshness: AgentFreshness, router: RouterControl
) -> Callable[[Any], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` entry: the refresh task lives as long as the app."""

    async def ctx(app: Any) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(freshness.run(router), name="admin:agents")
        try:
            yield
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # we are being cancelled too: let it through
            freshness.gauge.draw({})  # this router no longer vouches for any lag

    return ctx
