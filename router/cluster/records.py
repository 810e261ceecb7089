"""The JSON records the routers keep in etcd, as validated dataclasses.

Rules:

1. One codec per record: ``encode`` (compact JSON, keys sorted) and ``decode`` (bytes
   from etcd -> the dataclass). ``decode`` checks every field (type, range, allowed
   values, no unknown key, at most :data:`MAX_RECORD_BYTES`) and raises
   :class:`RecordError` naming the key and the field: a bad value in etcd is an alarm
   for a person (``cluster_state_invalid``), never a crash and never a silent reset.
2. ``services/<svc>/state`` (:class:`StateRecord`) is THE source of truth of a service's
   active backend and epoch; it also carries the traffic mode followers apply.
3. ``services/<svc>/promotion`` (:class:`PromotionRecord`): one run per epoch, written
   before each step; ``running`` found by a new decider means the run was interrupted.
4. ``members/<router>`` (:class:`MemberRecord`): what one router sees of each backend.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router.failover.hold import Refusal
from router.failover.store import Decision

__all__ = [
    "HEALTH_WORDS",
    "MODES",
    "PROMOTION_STATUSES",
    "STATES",
    "MemberRecord",
    "PromotionRecord",
    "RecordError",
    "StateRecord",
]

MAX_RECORD_BYTES = 64 * 1024
MODES = ("route", "hold", "refuse")
STATES = ("active", "promoting", "fence_hold", "degraded")
PROMOTION_STATUSES = ("running", "promoted", "failed", "fence_hold", "interrupted")
HEALTH_WORDS = ("up", "suspect", "down", "unknown")


class RecordError(ValueError):
    """A record in etcd is not what it must be (rule 1)."""


class _Fields:
    """Reads one JSON object's fields, each error naming ``where`` and the field."""

    def __init__(self, raw: bytes, where: str, known: tuple[str, ...]) -> None:
        self.where = where
        if len(raw) > MAX_RECORD_BYTES:
            raise RecordError(f"{where}: {len(raw)} bytes, more than {MAX_RECORD_BYTES}")
        try:
            doc: Any = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecordError(f"{where}: not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise RecordError(f"{where}: expected a JSON object, found {type(doc).__name__}")
        unknown = sorted(set(doc) - set(known))
        if unknown:
            raise RecordError(f"{where}: unknown key(s) {unknown}")
        self.doc: dict[str, Any] = doc

    def fail(self, name: str, expected: str) -> RecordError:
        return RecordError(f"{self.where}: {name}: expected {expected}, found {self.doc.get(name)!r:.80}")

    def text(self, name: str, allowed: tuple[str, ...] = (), *, optional: bool = False) -> Any:
        v = self.doc.get(name)
        if v is None and optional:
            return None
        if not isinstance(v, str) or not v or (allowed and v not in allowed):
            raise self.fail(name, f"one of {list(allowed)}" if allowed else "a non-empty string")
        return v

    def integer(self, name: str, *, optional: bool = False, low: int = 0, high: int = 2**62) -> Any:
        v = self.doc.get(name)
        if v is None and optional:
            return None
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
            raise self.fail(name, f"an integer {low}..{high}")
        return v

    def names(self, name: str) -> tuple[str, ...]:
        """An optional list of distinct non-empty strings (absent: empty), sorted."""
        v = self.doc.get(name, [])
        if not isinstance(v, list) or len(v) > 64 or not all(isinstance(x, str) and x for x in v) \
                or len(set(v)) != len(v):
            raise self.fail(name, "a list of distinct backend names")
        return tuple(sorted(v))

    def number(self, name: str) -> float:
        v = self.doc.get(name)
        if not isinstance(v, int | float) or isinstance(v, bool) or not 0 <= v < 1e11:
            raise self.fail(name, "a unix time >= 0")
        return float(v)


def _dump(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True, slots=True)
class StateRecord:
    active: str
    epoch: int
    mode: str  # route | hold | refuse
    state: str  # the decider's machine state
    refusal: Refusal | None
    by: str  # the router that wrote it
    at: float  # unix time of the write
    drained: tuple[str, ...] = ()  # backends drained by an operator, sorted

    @classmethod
    def of(cls, d: Decision, by: str, at: float) -> StateRecord:
        return cls(d.active, d.epoch, d.mode, d.state, d.refusal, by, at, d.drained)

    def decision(self) -> Decision:
        return Decision(self.active, self.epoch, self.mode, self.state, self.refusal, drained=self.drained)

    def encode(self) -> bytes:
        r = self.refusal
        refusal = None if r is None else {"status": r.status, "retry_after": r.retry_after, "reason": r.reason}
        return _dump({"active": self.active, "epoch": self.epoch, "mode": self.mode, "state": self.state,
                      "refusal": refusal, "by": self.by, "at": self.at, "drained": list(self.drained)})

    @classmethod
    def decode(cls, raw: bytes, where: str) -> StateRecord:
        f = _Fields(raw, where, ("active", "epoch", "mode", "state", "refusal", "by", "at", "drained"))
        refusal = None
        r = f.doc.get("refusal")
        if r is not None:
            g = _Fields(json.dumps(r).encode(), f"{where}: refusal", ("status", "retry_after", "reason"))
            refusal = Refusal(g.integer("status", low=100, high=599), g.integer("retry_after", high=86400),
                              g.text("reason"))
        return cls(f.text("active"), f.integer("epoch"), f.text("mode", MODES), f.text("state", STATES),
                   refusal, f.text("by"), f.number("at"), f.names("drained"))


@dataclass(frozen=True, slots=True)
class PromotionRecord:
    epoch: int
    old: str
    new: str
    cause: str
    run_id: str | None
    next_step: int | None  # the step about to run (or that ran last); None before the first
    status: str  # running | promoted | failed | fence_hold | interrupted
    by: str
    updated: float

    def encode(self) -> bytes:
        return _dump({"epoch": self.epoch, "old": self.old, "new": self.new, "cause": self.cause,
                      "run_id": self.run_id, "next_step": self.next_step, "status": self.status,
                      "by": self.by, "updated": self.updated})

    @classmethod
    def decode(cls, raw: bytes, where: str) -> PromotionRecord:
        f = _Fields(raw, where, ("epoch", "old", "new", "cause", "run_id", "next_step", "status", "by", "updated"))
        return cls(f.integer("epoch"), f.text("old"), f.text("new"), f.text("cause"),
                   f.text("run_id", optional=True), f.integer("next_step", optional=True, high=10_000),
                   f.text("status", PROMOTION_STATUSES), f.text("by"), f.number("updated"))


@dataclass(frozen=True, slots=True)
class MemberRecord:
    name: str
    admin: str  # host:port of its admin API
    started: float
    views: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    epochs: Mapping[str, int] = field(default_factory=dict)
    etcd_ok: bool = True

    def encode(self) -> bytes:
        return _dump({"name": self.name, "admin": self.admin, "started": self.started,
                      "views": {s: dict(v) for s, v in self.views.items()}, "epochs": dict(self.epochs),
                      "etcd_ok": self.etcd_ok})

    @classmethod
    def decode(cls, raw: bytes, where: str) -> MemberRecord:
        f = _Fields(raw, where, ("name", "admin", "started", "views", "epochs", "etcd_ok"))
        views, epochs, ok = f.doc.get("views", {}), f.doc.get("epochs", {}), f.doc.get("etcd_ok", True)
        if not isinstance(views, dict) or not all(
            isinstance(v, dict) and all(isinstance(b, str) and h in HEALTH_WORDS for b, h in v.items())
            for v in views.values()
        ):
            raise f.fail("views", f"{{service: {{backend: one of {list(HEALTH_WORDS)}}}}}")
        if not isinstance(epochs, dict) or not all(
            isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in epochs.values()
        ):
            raise f.fail("epochs", "{service: integer >= 0}")
        if not isinstance(ok, bool):
            raise f.fail("etcd_ok", "true or false")
        return cls(f.text("name"), f.text("admin"), f.number("started"), views, epochs, ok)
