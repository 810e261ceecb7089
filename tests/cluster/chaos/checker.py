"""The chaos checker: reads what everybody recorded and lists every violation.

Rules (each a kind of violation; ``check`` returns them all, never stops at the first):

1. ``two-backends``: one epoch answered by two different backends (backend logs and
   client answers together).
2. ``no-epoch``: a backend answered a forwarded request that carried no
   ``X-Hotspare-Epoch``.
3. ``epoch-backwards``: through one router, a request sent after another request's answer
   came back carries an older epoch. (Requests in flight together may be answered in any
   order; only "answered, then sent" is an order the router must keep.)
4. ``step-twice``: a promotion step started twice for one epoch (the exec step's own log),
   or two ``run_start`` of new runs (not resumptions) for one epoch in the audit logs of
   all routers together.
5. ``post-twice``: one POST executed twice (by one backend or two).
6. ``state-write``: in etcd's history, a write of ``services/<svc>/state`` or
   ``promotion`` whose ``by`` is not the router holding ``decider`` at that revision, an
   epoch that goes down, or one epoch routed (mode ``route``) to two actives. (A
   ``hold`` record of a promotion carries the new epoch with the old active: nobody is
   routed by it.)

Notes (reported, not violations): an epoch handed to a promotion ``old -> new`` and later
routed to another backend than ``new``. A FAILED run does that by the machine's design
(router/failover/machine.py rule 4: the old active goes on at the attempt's epoch); an
INTERRUPTED run never does (its epoch is burned: router/cluster/steer.py rule 3).

Failed requests are counted (``Verdict.failed``), not violations: each test says how
many it accepts and when.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .records import Answer, EtcdEvent, Sent, StepRun

SHOWN = 5  # examples kept per kind of violation


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)    # per router
    failed: Counter[str] = field(default_factory=Counter)  # per router: not a 200
    outcomes: Counter[str] = field(default_factory=Counter)  # failed ones: "502", "ClientOSError"..
    epochs: dict[int, str] = field(default_factory=dict)   # epoch -> backend that answered it
    # (epoch, active, at) of the first write that routed each epoch, in order
    state_epochs: list[tuple[int, str, float]] = field(default_factory=list)
    state_log: list[str] = field(default_factory=list)  # every state/promotion write, for the report
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, found: Sequence[str]) -> None:
        for text in found[:SHOWN]:
            self.violations.append(f"{kind}: {text}")
        if len(found) > SHOWN:
            self.violations.append(f"{kind}: ... and {len(found) - SHOWN} more")

    def summary(self) -> str:
        lines = [f"sent {sum(self.sent.values())}, failed {sum(self.failed.values())} "
                 f"({', '.join(f'{r}: {self.failed[r]}/{self.sent[r]}' for r in sorted(self.sent))}; "
                 f"{dict(self.outcomes.most_common())}); "
                 f"epochs {sorted(self.epochs.items())}; violations {len(self.violations)}"]
        lines += [f"  {v}" for v in self.violations]
        lines += [f"  note: {n}" for n in self.notes]
        if self.violations:
            lines += ["etcd writes:", *(f"  {w}" for w in self.state_log)]
        return "\n".join(lines)


def _epoch(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def two_backends(answers: Iterable[Answer], sent: Iterable[Sent], verdict: Verdict) -> list[str]:
    seen: dict[int, set[str]] = defaultdict(set)
    for a in answers:
        e = _epoch(a.epoch)
        if e is not None:
            seen[e].add(a.backend)
    for s in sent:
        e = _epoch(s.epoch)
        if s.ok and e is not None and s.backend:
            seen[e].add(s.backend)
    verdict.epochs = {e: ",".join(sorted(b)) for e, b in sorted(seen.items())}
    return [f"epoch {e} answered by {sorted(b)}" for e, b in sorted(seen.items()) if len(b) > 1]


def no_epoch(answers: Iterable[Answer]) -> list[str]:
    return [f"{a.backend} answered {a.req} ({a.router}) at {a.t:.3f} without an epoch" for a in answers
            if _epoch(a.epoch) is None]


def epoch_backwards(sent: Iterable[Sent]) -> list[str]:
    by_router: dict[str, list[tuple[float, float, int, str]]] = defaultdict(list)
    for s in sent:
        e = _epoch(s.epoch)
        if s.ok and e is not None:
            by_router[s.router].append((s.sent, s.done, e, s.req))
    found = []
    for router, recs in sorted(by_router.items()):
        recs.sort()
        done: list[tuple[float, int, str]] = []  # heap of (done, epoch, req) not yet passed
        best: tuple[int, str] | None = None      # highest epoch answered before "now"
        for t_sent, t_done, e, req in recs:
            while done and done[0][0] < t_sent:
                _, de, dreq = heapq.heappop(done)
                if best is None or de > best[0]:
                    best = (de, dreq)
            if best is not None and e < best[0]:
                found.append(f"{router}: {req} sent at {t_sent:.3f} got epoch {e} after {best[1]} got {best[0]}")
            heapq.heappush(done, (t_done, e, req))
    return found


def step_twice(steps: Iterable[StepRun], audit_starts: Iterable[dict[str, Any]]) -> list[str]:
    found = []
    starts = Counter((s.step, s.epoch) for s in steps if s.phase == "start")
    found += [f"step {st} started {n} times for epoch {e}" for (st, e), n in sorted(starts.items()) if n > 1]
    runs = Counter(d.get("epoch") for d in audit_starts if not d.get("resumes"))
    found += [f"{n} promotion runs started for epoch {e} (audit logs)" for e, n in sorted(runs.items(), key=str)
              if n > 1]
    return found


def post_twice(answers: Iterable[Answer]) -> list[str]:
    posts = Counter(a.req for a in answers if a.method == "POST" and a.req)
    return [f"POST {q} executed {n} times" for q, n in sorted(posts.items()) if n > 1]


def state_writes(history: Iterable[EtcdEvent], prefix: str, service: str, verdict: Verdict) -> list[str]:
    base = f"{prefix}/services/{service}/"
    holder: str | None = None
    found: list[str] = []
    actives: dict[int, str] = {}
    promoted: dict[int, str] = {}  # epoch -> the backend its promotion was promoting
    last_epoch = -1
    for ev in history:
        if ev.key == base + "decider":
            holder = ev.value.decode(errors="replace") if ev.type == "put" else None
        elif ev.key in (base + "state", base + "promotion") and ev.type == "put":
            try:
                value = json.loads(ev.value)
            except ValueError:
                found.append(f"rev {ev.rev}: {ev.key} is not JSON: {ev.value[:80]!r}")
                continue
            verdict.state_log.append(f"rev {ev.rev} {ev.key.rsplit('/', 1)[1]} decider={holder} {value}")
            if value.get("by") != holder:
                found.append(f"rev {ev.rev}: {ev.key.rsplit('/', 1)[1]} written by {value.get('by')!r} "
                             f"while the decider was {holder!r}")
            if ev.key != base + "state":
                promoted.setdefault(int(value.get("epoch", -1)), str(value.get("new")))
                continue
            epoch, active = int(value.get("epoch", -1)), str(value.get("active"))
            if epoch < last_epoch:
                found.append(f"rev {ev.rev}: state epoch went from {last_epoch} down to {epoch}")
            routed = value.get("mode") == "route"
            if routed and actives.setdefault(epoch, active) != active:
                found.append(f"rev {ev.rev}: epoch {epoch} routed to {active}, earlier to {actives[epoch]}")
            if routed and promoted.get(epoch, active) != active:
                verdict.notes.append(f"rev {ev.rev}: epoch {epoch} was handed to a promotion of "
                                     f"{promoted[epoch]}, then routed to {active}")
                promoted[epoch] = active
            if routed and all(e != epoch for e, _, _ in verdict.state_epochs):
                verdict.state_epochs.append((epoch, active, float(value.get("at", 0.0))))
            last_epoch = max(last_epoch, epoch)
    return found


def check(
    answers: Sequence[Answer], sent: Sequence[Sent], steps: Sequence[StepRun],
    audit_starts: Sequence[dict[str, Any]], history: Sequence[EtcdEvent], prefix: str, service: str = "app",
) -> Verdict:
    v = Verdict()
    for s in sent:
        v.sent[s.router] += 1
        if not s.ok:
            v.failed[s.router] += 1
            v.outcomes[str(s.status) if s.status is not None else (s.error.split(":")[0] or "in flight")] += 1
    v.add("two-backends", two_backends(answers, sent, v))
    v.add("no-epoch", no_epoch(answers))
    v.add("epoch-backwards", epoch_backwards(sent))
    v.add("step-twice", step_twice(steps, audit_starts))
    v.add("post-twice", post_twice(answers))
    v.add("state-write", state_writes(history, prefix, service, v))
    return v
