"""The cluster's store: a service's decisions and promotion progress written to etcd,
each write guarded (docs/cluster.md).

Rules:

1. Every write is ONE transaction comparing ``create_revision(services/<svc>/decider)``
   with this router's term (the decider key's create_revision when it won the campaign)
   AND the record's ``mod_revision`` with the one last read or written here (0: the key
   must not exist yet). A deposed decider's write, or a write racing another router's,
   fails and changes nothing: two routers never both move a service to a new epoch.
2. A failed comparison is :class:`~router.failover.store.StoreDeposed` (and the node is
   told, so it stops deciding and re-reads); etcd unreachable is
   :class:`~router.failover.store.StoreError`. Either way the controller puts its machine
   back (controller rule 2).
3. A decision that changes nothing that followers apply (active, epoch, mode, state,
   refusal) is not written again.
4. Promotion progress (``services/<svc>/promotion``): ``running`` at the start of a run,
   again with the step's index BEFORE each step (the step runs only if that write
   succeeded: exactly once per epoch), the outcome at the end. The end's write may fail
   (logged): a run left ``running`` is reported by the next decider, never re-run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from router.failover.events import RunPromotion
from router.failover.runs import PromotionOutcome
from router.failover.store import Decision, StoreDeposed, StoreError

from .etcd import Compare, EtcdClient, EtcdError, Op
from .keys import Keys
from .records import PromotionRecord, StateRecord

__all__ = ["ClusterStore", "Guard"]

log = logging.getLogger("hotspare.cluster")


@dataclass(slots=True)
class Guard:
    """What this router's writes of one service compare (rule 1)."""

    term: int  # create_revision of the decider key this router holds
    state_rev: int = 0  # mod_revision of services/<svc>/state last read or written (0: absent)
    promotion_rev: int = 0
    written: Decision | None = None  # the last decision written (rule 3)
    run_id: str | None = None  # of the promotion run in progress, once the pipeline named it


class ClusterStore:
    """A :class:`~router.failover.store.StateStore` and
    :class:`~router.failover.store.PromotionHooks` over etcd."""

    def __init__(self, client: EtcdClient, keys: Keys, name: str,
                 on_deposed: Callable[[str, str], None], clock: Callable[[], float] = time.time,
                 on_written: Callable[[str, Decision], None] | None = None) -> None:
        self.client, self.keys, self.name = client, keys, name
        self.guards: dict[str, Guard] = {}  # the services this router decides
        self._on_deposed = on_deposed
        self._on_written = on_written
        self._clock = clock

    async def _write(self, service: str, key: str, rev: int, value: bytes, what: str) -> int:
        """Rule 1: the guarded put; returns the new mod_revision."""
        g = self.guards.get(service)
        if g is None:
            raise StoreDeposed(f"etcd {key}: this router does not decide {service}; {what} not written")
        compare = [Compare.create_revision(self.keys.decider(service), "==", g.term),
                   Compare.mod_revision(key, "==", rev)]
        try:
            res = await self.client.txn(compare, [Op.put(key, value)])
        except EtcdError as exc:
            raise StoreError(f"etcd {key}: {what} not written: {exc}") from None
        if not res.succeeded:
            why = f"etcd {key}: {what} not written: another router decides {service} now, or wrote first"
            self._on_deposed(service, why)
            raise StoreDeposed(why)
        return res.revision

    async def save(self, service: str, decision: Decision) -> None:
        g = self.guards.get(service)
        plain = replace(decision, persist=False)
        if g is not None and g.written == plain:
            return  # rule 3
        record = StateRecord.of(decision, self.name, self._clock())
        rev = await self._write(service, self.keys.state(service), g.state_rev if g else 0, record.encode(),
                                f"{decision.active} active at epoch {decision.epoch} ({decision.mode})")
        g = self.guards[service]
        g.state_rev, g.written = rev, plain
        if self._on_written is not None:
            self._on_written(service, plain)

    # -- promotion progress (rule 4) ------------------------------------------------------

    async def put_promotion(self, service: str, record: PromotionRecord) -> None:
        """Rule 4: one guarded write of the promotion record."""
        g = self.guards.get(service)
        what = f"promotion of epoch {record.epoch} {record.status}" + (
            "" if record.next_step is None else f" at step {record.next_step}")
        rev = await self._write(service, self.keys.promotion(service), g.promotion_rev if g else 0,
                                record.encode(), what)
        g = self.guards[service]
        g.promotion_rev = rev
        g.run_id = record.run_id or g.run_id

    async def _progress(self, service: str, run: RunPromotion, status: str,
                        run_id: str | None = None, step: int | None = None) -> None:
        g = self.guards.get(service)
        run_id = run_id or (g.run_id if g is not None else None)
        await self.put_promotion(service, PromotionRecord(run.epoch, run.old, run.new, run.cause.value, run_id,
                                                          step, status, self.name, self._clock()))

    async def started(self, service: str, run: RunPromotion) -> None:
        g = self.guards.get(service)
        if g is not None:
            g.run_id = None
        await self._progress(service, run, "running")

    async def before_step(self, service: str, run: RunPromotion, run_id: str, index: int) -> None:
        await self._progress(service, run, "running", run_id, index)

    async def ended(self, service: str, run: RunPromotion, outcome: PromotionOutcome) -> None:
        try:
            await self._progress(service, run, outcome.outcome, outcome.run_id, outcome.next_step)
        except StoreError as exc:
            log.error("service %s: the end of the promotion of epoch %d (%s) was not recorded: %s",
                      service, run.epoch, outcome.outcome, exc)
