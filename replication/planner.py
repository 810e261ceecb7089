"""The reconcile planner: given the source's manifest, the replica's, and the last sync
point, decide what to copy, delete, quarantine or refuse. No I/O, no clock.

Rules:

1. A file is *the same* on both sides when size and mtime (ns) match (and, for links,
   the target). Mode alone differing is a ``Chmod``, not a copy.
2. The sync point is what the replica held right after it last applied the source's
   version of each path. A replica file that differs from its sync-point entry (or has
   none) was changed *locally*: it is never overwritten or deleted, it is moved to
   quarantine first. With no sync point at all, a former active (role reversal) treats
   every file as locally changed; a plain replica treats none as such (first sync).
3. Removals from their place (deletes, and quarantines of files the source lacks) are
   guarded: more than ``max_delete_share`` of the replica's files, and more than
   ``max_delete_free`` files, is refused as a whole (``DeletesRefused``), while copies
   still happen. A source that looks empty is far more likely unmounted than emptied.
4. A path the source sends that is unsafe (``..``, absolute, a link leading out of the
   root) becomes ``Skip`` with the reason; it is never acted on.
5. A copy whose content already sits on the replica under a path about to be deleted
   becomes a local ``Move`` (a rename on the source costs no transfer).
6. Actions come out in a stable order: quarantines, moves, copies (by path), chmods,
   deletes, so a plan is easy to test and to log.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .paths import UnsafePath, check_path

__all__ = [
    "Action",
    "Chmod",
    "Copy",
    "Delete",
    "DeletesRefused",
    "Entry",
    "Move",
    "Plan",
    "Policy",
    "Quarantine",
    "Skip",
    "link_leaves_root",
    "plan",
]


@dataclass(frozen=True, slots=True)
class Entry:
    """One file (or symlink) of a manifest."""

    size: int
    mtime_ns: int
    mode: int = 0o644
    link: str | None = None  # target, for a symbolic link

    def same_content(self, other: Entry) -> bool:
        if self.link is not None or other.link is not None:
            return self.link == other.link
        return self.size == other.size and self.mtime_ns == other.mtime_ns


@dataclass(frozen=True, slots=True)
class Copy:
    path: str
    entry: Entry


@dataclass(frozen=True, slots=True)
class Move:
    src: str
    dst: str
    entry: Entry


@dataclass(frozen=True, slots=True)
class Chmod:
    path: str
    mode: int


@dataclass(frozen=True, slots=True)
class Delete:
    path: str


@dataclass(frozen=True, slots=True)
class Quarantine:
    path: str
    tag: str


@dataclass(frozen=True, slots=True)
class Skip:
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeletesRefused:
    would_remove: int
    replica_files: int
    max_share: float
    # Removals already applied since the last full reconcile (the cumulative guard).
    already: int = 0

    def __str__(self) -> str:
        since = f" on top of {self.already} removed since the last full reconcile" if self.already else ""
        return (
            f"refused to remove {self.would_remove} of {self.replica_files} replica files{since} "
            f"(more than {self.max_share:.0%}); the source root may be unmounted or wrong; "
            "removals are held until an operator confirms them"
        )


Action = Copy | Move | Chmod | Delete | Quarantine | Skip


@dataclass(frozen=True, slots=True)
class Policy:
    max_delete_share: float = 0.5
    max_delete_free: int = 10
    # This replica was the active before (role reversal): no sync point means every
    # local file is its own.
    former_active: bool = False
    # Quarantine folder name (by epoch), e.g. "epoch-7".
    quarantine_tag: str = "epoch-0"


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    refused: DeletesRefused | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def copies(self) -> list[Copy]:
        return [a for a in self.actions if isinstance(a, Copy)]

    def of(self, kind: type[Action]) -> list[Action]:
        return [a for a in self.actions if isinstance(a, kind)]

    def removals(self) -> int:
        """Files this plan takes away from their place: deletes, and quarantines of
        files the source lacks (a quarantine followed by a copy only sets one aside)."""
        copied = {a.path for a in self.actions if isinstance(a, Copy)}
        return sum(1 for a in self.actions
                   if isinstance(a, Delete) or (isinstance(a, Quarantine) and a.path not in copied))

    def without_removals(self, refused: DeletesRefused) -> Plan:
        """This plan with its removals held back (copies and the rest still happen)."""
        copied = {a.path for a in self.actions if isinstance(a, Copy)}
        kept = tuple(a for a in self.actions
                     if not isinstance(a, Delete) and not (isinstance(a, Quarantine) and a.path not in copied))
        quarantined = sum(1 for a in kept if isinstance(a, Quarantine))
        return Plan(kept, refused, {**self.counts, "delete": 0, "quarantine": quarantined})


def link_leaves_root(path: str, target: str) -> bool:
    """True if a link at ``path`` (relative to the root) pointing at ``target`` resolves
    outside the root, lexically. The manifest never descends into linked folders, so
    the lexical answer is the real one."""
    if target.startswith("/") or "\0" in target:
        return True
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return joined == ".." or joined.startswith("../")


def _unsafe(path: str, entry: Entry) -> str | None:
    try:
        check_path(path)
    except UnsafePath as exc:
        return exc.why
    if entry.link is not None and link_leaves_root(path, entry.link):
        return f"link to {entry.link!r} leads out of the root"
    return None


def plan(
    source: Mapping[str, Entry],
    replica: Mapping[str, Entry],
    synced: Mapping[str, Entry] | None,
    policy: Policy,
    *,
    scope: Iterable[str] | None = None,
    replica_total: int | None = None,
) -> Plan:
    """Decide the actions that make ``replica`` mirror ``source``.

    ``scope`` limits the decision to those paths (following the change feed); then
    ``replica_total`` is the replica's whole file count, for the delete guard.
    """
    paths = sorted(set(scope) if scope is not None else set(source) | set(replica))
    total = replica_total if replica_total is not None else len(replica)

    def locally_changed(path: str, have: Entry) -> bool:
        if synced is None:
            return policy.former_active
        was = synced.get(path)
        return was is None or not was.same_content(have)

    skips: list[Action] = []
    quarantines: list[Action] = []
    copies: dict[str, Copy] = {}
    chmods: list[Action] = []
    deletes: dict[str, Delete] = {}
    removals: list[Quarantine] = []  # quarantines of files the source lacks
    for path in paths:
        want = source.get(path)
        have = replica.get(path)
        if want is not None:
            why = _unsafe(path, want)
            if why is not None:
                skips.append(Skip(path, why))
                continue
        if want is None and have is None:
            continue
        if want is None:
            assert have is not None
            if locally_changed(path, have):
                removals.append(Quarantine(path, policy.quarantine_tag))
            else:
                deletes[path] = Delete(path)
            continue
        if have is None:
            copies[path] = Copy(path, want)
        elif want.same_content(have):
            if want.link is None and (want.mode & 0o7777) != (have.mode & 0o7777):
                chmods.append(Chmod(path, want.mode & 0o7777))
        else:
            if locally_changed(path, have):
                quarantines.append(Quarantine(path, policy.quarantine_tag))
            copies[path] = Copy(path, want)

    refused = None
    n_remove = len(deletes) + len(removals)
    if n_remove > policy.max_delete_free and n_remove > policy.max_delete_share * total:
        refused = DeletesRefused(n_remove, total, policy.max_delete_share)
        deletes.clear()
        removals.clear()

    moves: list[Action] = []
    if deletes:
        by_content: dict[tuple[int, int], list[str]] = {}
        for path in deletes:
            have = replica[path]
            if have.link is None and have.size > 0:
                by_content.setdefault((have.size, have.mtime_ns), []).append(path)
        for path, copy in list(copies.items()):
            if path in replica or copy.entry.link is not None:
                continue
            candidates = by_content.get((copy.entry.size, copy.entry.mtime_ns))
            if candidates:
                src = candidates.pop(0)
                del deletes[src]
                del copies[path]
                moves.append(Move(src, path, copy.entry))

    actions: tuple[Action, ...] = (
        *skips,
        *quarantines,
        *removals,
        *moves,
        *copies.values(),
        *chmods,
        *deletes.values(),
    )
    counts = {
        "copy": len(copies),
        "move": len(moves),
        "delete": len(deletes),
        "quarantine": len(quarantines) + len(removals),
        "chmod": len(chmods),
        "skip": len(skips),
    }
    return Plan(actions, refused, counts)
