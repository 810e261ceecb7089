"""The cumulative mass-delete guard of one replica root. No I/O, no clock.

A guard that looks at one plan at a time is blind to an ``rm -rf`` on the active while
the agents run: the change feed brings the deletions in many small batches, each well
under the limit. This guard counts them together.

Rules:

1. A *window* starts when a full reconcile finishes cleanly; ``baseline`` is the
   replica's file count then. Every removal (delete, or quarantine of a file the source
   no longer has) applied since counts against it, from the feed or from a reconcile.
2. A plan's removals are admitted when the window's removals plus the plan's stay
   within ``max_free``, or within ``max_share`` of the baseline. Otherwise the guard
   *trips*: that plan's removals, and every later plan's, are held (copies and updates
   go on) until an operator confirms.
3. The planner's own per-plan refusal trips the guard too, so one confirmation covers
   both, and one alarm shows both.
4. A confirmation admits every removal until the next clean full reconcile (which
   applies what was held, since the source no longer has those files); that reconcile
   starts a new window.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DeleteGuard", "GuardState"]


@dataclass(frozen=True, slots=True)
class GuardState:
    """What the status endpoint and the alarm say."""

    tripped: bool
    confirmed: bool
    baseline: int | None
    removed: int  # applied in this window
    held: int  # removals refused since the guard tripped (plans may repeat paths)


class DeleteGuard:
    def __init__(self, max_share: float, max_free: int) -> None:
        self.max_share = max_share
        self.max_free = max_free
        self.baseline: int | None = None
        self.removed = 0
        self.held = 0
        self.tripped = False
        self.confirmed = False

    def state(self) -> GuardState:
        return GuardState(self.tripped, self.confirmed, self.baseline, self.removed, self.held)

    def within(self, removals: int, replica_files: int) -> bool:
        """Would ``removals`` more stay within the limits (rule 2)? ``replica_files``
        stands in for the baseline before the first window."""
        total = self.removed + removals
        base = self.baseline if self.baseline is not None else replica_files
        return total <= self.max_free or total <= self.max_share * base

    def admit(self, removals: int, replica_files: int) -> bool:
        """May a plan with ``removals`` removals apply them? False trips the guard."""
        if removals == 0 or self.confirmed:
            return True
        if not self.tripped and self.within(removals, replica_files):
            return True
        self.trip(removals)
        return False

    def trip(self, removals: int) -> None:
        self.tripped = True
        self.held += removals

    def applied(self, removals: int) -> None:
        self.removed += removals

    def confirm(self) -> int:
        """The operator's go-ahead; returns how many removals were held. Raises
        ``ValueError`` when nothing is held (a confirmation must not pre-approve)."""
        if not self.tripped:
            raise ValueError("the delete guard has not tripped; nothing to confirm")
        held = self.held
        self.tripped, self.confirmed, self.held = False, True, 0
        return held

    def reconciled(self, replica_files: int, clean: bool) -> None:
        """A full reconcile finished; a clean one (all applied, nothing held) starts a
        new window (rule 1) and ends a confirmation (rule 4)."""
        if clean and not self.tripped:
            self.baseline, self.removed, self.confirmed = replica_files, 0, False
