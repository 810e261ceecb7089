"""Issue 10, replication agent: the pure pieces (no I/O) - the cumulative delete guard,
Range parsing, path limits, hidden paths, the router's epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

from replication.deleteguard import DeleteGuard
from replication.paths import PathTooLong, UnsafePath, check_path, hidden_reason
from replication.planner import Copy, Delete, DeletesRefused, Entry, Policy, Quarantine, plan
from replication.protocol import RangeError, parse_range
from replication.role import router_epoch

E = Entry(10, 1_000, 0o644)

# -- the cumulative delete guard ----------------------------------------------------------


def test_feed_batches_each_under_the_limit_trip_the_guard_together() -> None:
    g = DeleteGuard(max_share=0.5, max_free=3)
    g.reconciled(200, clean=True)  # a window over 200 replica files
    admitted = []
    for _ in range(10):  # an rm -rf arriving 30 files per feed batch
        ok = g.admit(30, 200)
        admitted.append(ok)
        if ok:
            g.applied(30)
    assert admitted == [True, True, True, False, False, False, False, False, False, False]
    assert g.removed == 90 and g.tripped and g.held == 7 * 30


def test_a_tripped_guard_holds_even_small_batches_until_confirmed() -> None:
    g = DeleteGuard(0.5, 3)
    g.reconciled(10, clean=True)
    assert not g.admit(8, 10)
    assert not g.admit(1, 10), "once tripped, every removal waits for the operator"
    assert g.admit(0, 10), "a plan without removals always runs"
    g.reconciled(10, clean=True)
    assert g.tripped, "a reconcile does not clear the alarm; only an operator does"
    assert g.confirm() == 9
    assert not g.tripped and g.confirmed
    assert g.admit(10_000, 10), "confirmed: the held removals (and the next ones) go ahead"
    g.reconciled(2, clean=True)
    assert not g.confirmed and g.baseline == 2 and g.removed == 0


def test_within_the_free_count_or_the_share_is_admitted() -> None:
    g = DeleteGuard(0.5, 10)
    g.reconciled(1000, clean=True)
    assert g.admit(400, 1000)
    g.applied(400)
    assert g.admit(100, 1000)  # 500 of 1000: at the share, not over it
    g.applied(100)
    assert not g.admit(1, 1000)
    small = DeleteGuard(0.5, 10)
    small.reconciled(4, clean=True)
    assert small.admit(4, 4), "a small tree may lose all of its files (max_free)"


def test_a_window_starts_at_each_clean_reconcile_and_no_earlier() -> None:
    g = DeleteGuard(0.5, 3)
    assert g.admit(40, 100), "before the first window the plan's own replica count is the base"
    g.applied(40)
    g.reconciled(60, clean=False)
    assert g.removed == 40
    g.reconciled(60, clean=True)
    assert g.removed == 0 and g.baseline == 60


def test_confirming_an_untripped_guard_is_refused() -> None:
    g = DeleteGuard(0.5, 3)
    with pytest.raises(ValueError, match="nothing to confirm"):
        g.confirm()
    assert not g.confirmed, "a confirmation never pre-approves future removals"


def test_plan_without_removals_keeps_copies_and_updates() -> None:
    old = Entry(5, 500)
    source = {"new.txt": E, "changed.txt": E}
    replica = {"changed.txt": old, "gone1": old, "gone2": old, "mine": old}
    synced = {"changed.txt": Entry(4, 400), "gone1": old, "gone2": old}
    p = plan(source, replica, synced, Policy(max_delete_free=100))
    # changed.txt was edited locally: quarantined AND copied (not a removal); mine: a removal
    assert p.removals() == 3
    held = p.without_removals(DeletesRefused(3, 4, 0.5, already=7))
    assert Copy("new.txt", E) in held.actions and Copy("changed.txt", E) in held.actions
    assert Quarantine("changed.txt", "epoch-0") in held.actions
    assert not [a for a in held.actions if isinstance(a, Delete)]
    assert Quarantine("mine", "epoch-0") not in held.actions
    assert held.counts["delete"] == 0 and held.counts["quarantine"] == 1
    assert "on top of 7 removed since the last full reconcile" in str(held.refused)


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(("header", "start"), [(None, 0), ("", 0), ("bytes=0-", 0), ("bytes=123-", 123),
                                               (" bytes=5- ", 5)])
def test_range_accepted(header: str | None, start: int) -> None:
    assert parse_range(header) == start


@pytest.mark.parametrize(("header", "says"), [
    ("bytes=0-1,5-", "several"), ("bytes=9-3", "after end"), ("bytes=0-3", "open-ended"),
    ("bytes=-5", "expected 'bytes=N-'"), ("bytes=\u00b2-", "expected"), ("lines=1-", "expected"),
    ("bytes=" + "1" * 21 + "-", "expected"), ("bytes=1", "expected"),
])
def test_range_refused_with_the_reason(header: str, says: str) -> None:
    with pytest.raises(RangeError, match=says):
        parse_range(header)


def test_overlong_paths_and_names_are_their_own_error() -> None:
    with pytest.raises(PathTooLong, match="expected at most 4096"):
        check_path("abcdefg/" * 600 + "x")
    with pytest.raises(PathTooLong, match="name of 256 bytes"):
        check_path("d/" + "n" * 256)
    with pytest.raises(PathTooLong, match="name of 256 bytes"):
        check_path("\u00e9" * 128)  # 128 characters, 256 bytes
    assert check_path("n" * 255) == "n" * 255
    with pytest.raises(UnsafePath) as info:
        check_path("x" * 100_000)
    assert len(str(info.value)) < 400, "the message does not echo a huge path back"


@pytest.mark.parametrize(("path", "hidden"), [
    ("a.tmp", True), ("sub/a.tmp", True), ("cache", True), ("cache/x", True), ("sub/cache/x", True),
    (".hotspare-root", True), (".hotspare/state.sqlite", True), ("d/.hstmp-1", True),
    ("sub/.hotspare-root", False), ("cachex/y", False), ("ok.idx", False),
])
def test_hidden_paths_include_everything_under_an_excluded_folder(path: str, hidden: bool) -> None:
    assert (hidden_reason(path, ".hotspare-root", ["*.tmp", "cache"]) is not None) is hidden


def test_router_epoch_is_read_for_this_nodes_service_only() -> None:
    status = {"services": [
        {"name": "other", "epoch": 99, "backends": [{"name": "x"}]},
        {"name": "app", "epoch": 4, "backends": [{"name": "a"}, {"name": "b"}]},
    ]}
    assert router_epoch(status, "b") == 4
    assert router_epoch(status, "zz") is None
    assert router_epoch({"services": [{"epoch": "4", "backends": [{"name": "a"}]}]}, "a") is None
    assert router_epoch({"services": [{"epoch": True, "backends": [{"name": "a"}]}]}, "a") is None
    assert router_epoch("garbage", "a") is None


async def test_a_tripped_guard_is_remembered_by_the_next_sink_of_the_root(tmp_path: Path) -> None:
    import aiohttp

    from replication.sink import RootSink, SinkSettings
    from replication.syncstate import SyncState

    st = SyncState(tmp_path)
    st.put("deletes_held", "1")
    st.close()
    async with aiohttp.ClientSession() as session:
        sink = RootSink("jobs", tmp_path, "http://127.0.0.1:1", "t", session, SinkSettings())
        try:
            assert sink.guard.tripped and sink.status()["deletes_refused"]
            sink.confirm_deletes()
            assert sink.state.get("deletes_held") == "0"
        finally:
            sink.close()
