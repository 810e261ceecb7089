"""The reconcile planner, changes log and role tracker: pure decisions, no I/O."""

from __future__ import annotations

import os

import pytest

from replication.changes import ChangeLog, Debouncer
from replication.paths import UnsafePath, check_path, decode_wire, encode_wire
from replication.planner import (
    Chmod,
    Copy,
    Delete,
    DeletesRefused,
    Entry,
    Move,
    Policy,
    Quarantine,
    Skip,
    link_leaves_root,
    plan,
)
from replication.role import Role, RoleTracker

A = Entry(10, 1_000, 0o644)
A2 = Entry(11, 2_000, 0o644)
B = Entry(20, 3_000, 0o600)


def test_copies_new_and_changed_files_and_deletes_removed_ones() -> None:
    source = {"new.txt": A, "changed.txt": A2, "same.txt": B}
    old = Entry(5, 500, 0o644)
    replica = {"changed.txt": A, "same.txt": B, "gone.txt": old}
    synced = {"changed.txt": A, "same.txt": B, "gone.txt": old}
    p = plan(source, replica, synced, Policy(max_delete_free=5))
    assert p.actions == (Copy("changed.txt", A2), Copy("new.txt", A), Delete("gone.txt"))
    assert p.refused is None


def test_mode_only_difference_is_a_chmod_not_a_copy() -> None:
    p = plan({"f": Entry(10, 1_000, 0o755)}, {"f": A}, {"f": A}, Policy())
    assert p.actions == (Chmod("f", 0o755),)


def test_locally_changed_file_is_quarantined_before_overwrite() -> None:
    local = Entry(99, 5_000, 0o644)
    p = plan({"f": A2}, {"f": local}, {"f": A}, Policy(quarantine_tag="epoch-3"))
    assert p.actions == (Quarantine("f", "epoch-3"), Copy("f", A2))


def test_local_only_file_never_synced_is_quarantined_not_deleted() -> None:
    p = plan({}, {"mine": A}, {}, Policy(quarantine_tag="epoch-2"))
    assert p.actions == (Quarantine("mine", "epoch-2"),)


def test_role_reversal_without_sync_point_quarantines_every_difference() -> None:
    source = {"shared": A, "updated": A2}
    replica = {"shared": A, "updated": A, "only-old-active": B}
    p = plan(source, replica, None, Policy(former_active=True, quarantine_tag="epoch-7", max_delete_free=5))
    assert p.actions == (
        Quarantine("updated", "epoch-7"),
        Quarantine("only-old-active", "epoch-7"),
        Copy("updated", A2),
    )


def test_first_sync_of_plain_replica_overwrites_and_trashes() -> None:
    p = plan({"f": A2}, {"f": A, "extra": B}, None, Policy(max_delete_free=5))
    assert p.actions == (Copy("f", A2), Delete("extra"))


def test_mass_delete_is_refused_but_copies_still_happen() -> None:
    replica = {f"f{i}": A for i in range(100)}
    p = plan({"new": B}, replica, dict(replica), Policy(max_delete_share=0.5, max_delete_free=10))
    assert p.refused == DeletesRefused(100, 100, 0.5)
    assert p.actions == (Copy("new", B),)
    assert "refused to remove 100 of 100" in str(p.refused)


def test_deletes_within_share_are_allowed() -> None:
    replica = {f"f{i}": A for i in range(100)}
    source = {f"f{i}": A for i in range(60)}
    p = plan(source, replica, dict(replica), Policy(max_delete_share=0.5, max_delete_free=10))
    assert p.refused is None
    assert len(p.of(Delete)) == 40


def test_small_tree_may_lose_a_few_files_below_the_free_allowance() -> None:
    p = plan({}, {"a": A, "b": B}, {"a": A, "b": B}, Policy(max_delete_share=0.1, max_delete_free=2))
    assert p.refused is None and p.of(Delete) == [Delete("a"), Delete("b")]


def test_feed_scope_uses_whole_replica_for_the_guard() -> None:
    p = plan({}, {"x": A}, {"x": A}, Policy(max_delete_share=0.5, max_delete_free=0),
             scope=["x"], replica_total=1000)
    assert p.actions == (Delete("x"),)


def test_rename_becomes_local_move() -> None:
    p = plan({"new/name": B}, {"old/name": B}, {"old/name": B}, Policy())
    assert p.actions == (Move("old/name", "new/name", B),)


def test_rename_is_a_copy_when_deletes_are_refused() -> None:
    replica = {"old": B}
    p = plan({"new": B}, replica, dict(replica), Policy(max_delete_share=0.0, max_delete_free=0))
    assert p.refused is not None
    assert p.actions == (Copy("new", B),)


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../etc/passwd", "'..'"),
        ("a/../../b", "'..'"),
        ("/etc/passwd", "absolute"),
        ("a//b", "empty"),
        ("./a", "'.'"),
        ("a\0b", "NUL"),
        (".hotspare/state.sqlite", "agent's own folder"),
        ("dir/.hstmp-r123", "temp file"),
    ],
)
def test_unsafe_source_paths_are_skipped_with_reason(path: str, why: str) -> None:
    p = plan({path: A, "ok": A}, {}, None, Policy())
    first = p.actions[0]
    assert isinstance(first, Skip) and first.path == path
    assert why in first.reason
    assert p.actions[1:] == (Copy("ok", A),)


@pytest.mark.parametrize(
    ("path", "target", "leaves"),
    [
        ("a/link", "../b", False),
        ("a/link", "../../b", True),
        ("link", "/etc/passwd", True),
        ("link", "..", True),
        ("a/b/link", "../../c/d", False),
        ("link", "x/../../y", True),
    ],
)
def test_links_leaving_the_root_are_refused(path: str, target: str, leaves: bool) -> None:
    assert link_leaves_root(path, target) is leaves
    p = plan({path: Entry(0, 1, 0o777, target)}, {}, None, Policy())
    kinds = [type(a) for a in p.actions]
    assert kinds == ([Skip] if leaves else [Copy])


def test_odd_and_non_utf8_names_are_plain_paths_and_round_trip_on_the_wire() -> None:
    raw = b"caf\xe9 \xff%20?#&=\n"  # latin-1 byte, invalid UTF-8, URL-special chars, newline
    name = "dir/" + os.fsdecode(raw)
    assert check_path(name) == name
    wire = encode_wire(name)
    assert wire.isascii() and "\n" not in wire and " " not in wire
    assert decode_wire(wire) == name
    assert os.fsencode(decode_wire(wire)) == b"dir/" + raw
    p = plan({name: A}, {}, None, Policy())
    assert p.actions == (Copy(name, A),)


@pytest.mark.parametrize("wire", ["%2E%2E/x", "a/%2e%2e/b", "%2Fetc", "a%00b", "é"])
def test_wire_decoding_refuses_encoded_traversal(wire: str) -> None:
    with pytest.raises(UnsafePath):
        decode_wire(wire)


def test_change_log_numbers_changes_and_resets_stale_readers() -> None:
    log = ChangeLog("run1", capacity=3)
    assert log.record("a", A, 1.0) is not None
    assert log.record("a", A, 2.0) is None  # same state: no change
    log.record("b", B, 3.0)
    log.record("a", None, 4.0)
    assert [(c.seq, c.path, c.entry) for c in log.since(1, "run1") or []] == [(2, "b", B), (3, "a", None)]
    assert log.since(3, "run1") == []
    assert log.since(0, "other-run") is None
    log.record("c", A, 5.0)
    log.record("d", A, 6.0)
    assert log.since(0, "run1") is None  # fell out of the window: reset
    assert log.known == {"b": B, "c": A, "d": A}


def test_rescan_holds_files_still_being_written() -> None:
    log = ChangeLog("r")
    log.record("old", A, 0.0)
    changes = log.replace_all({"new": B, "writing": A2}, 1.0, hold=["writing"])
    assert [(c.path, c.entry) for c in changes] == [("old", None), ("new", B)]
    assert "writing" not in log.known


def test_debouncer_ships_only_after_quiet_period() -> None:
    d = Debouncer(0.1)
    d.touch("f", 10.0)
    assert d.due(10.05) == []
    d.touch("f", 10.05)
    assert d.due(10.1) == []
    assert d.next_due() == pytest.approx(10.15)
    assert d.due(10.16) == ["f"]
    assert len(d) == 0


def _status(active: str, epoch: int) -> dict[str, object]:
    return {"services": [{"name": "app", "active": active, "epoch": epoch, "state": "active",
                          "backends": [{"name": "a", "url": "x", "healthy": True},
                                       {"name": "b", "url": "y", "healthy": True}]}]}


def test_role_tracker_follows_active_and_keeps_role_when_router_is_down() -> None:
    t = RoleTracker("a")
    ch = t.observe(_status("a", 1), 0.0)
    assert ch is not None and ch.new == Role("source", "app", "a", 1)
    assert t.observe(_status("a", 1), 1.0) is None
    t.router_failed("connection refused", 2.0)
    assert t.role.kind == "source" and not t.router_ok and t.unreachable_since == 2.0
    ch = t.observe(_status("b", 2), 3.0)
    assert ch is not None and ch.reversal and ch.new == Role("sink", "app", "b", 2)
    assert t.router_ok


def test_role_tracker_names_a_node_missing_from_the_router() -> None:
    t = RoleTracker("zz")
    assert t.observe(_status("a", 1), 0.0) is None
    assert t.role.kind == "unknown"
    assert "no service" in (t.router_error or "") and "'zz'" in (t.router_error or "")
