"""File-system helpers on real files: link refusal on both sides, trash, temp files, leases."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from replication import fileio
from replication.paths import UnsafePath
from replication.planner import Entry


def test_replica_never_writes_through_a_linked_folder(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "sub").symlink_to(outside)
    w = fileio.ReplicaWriter(root)
    with pytest.raises(UnsafePath, match="is a link"):
        w.open_tmp("sub/evil.txt", "t1")
    assert list(outside.iterdir()) == []


def test_source_refuses_links_anywhere_in_the_path(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "real" / "f").write_text("ok")
    (root / "alias").symlink_to(root / "real")
    (root / "flink").symlink_to(root / "real" / "f")
    fd = fileio.open_in_root(root, "real/f")
    os.close(fd)
    for bad in ("alias/f", "flink"):
        with pytest.raises(UnsafePath):
            fileio.open_in_root(root, bad)


def test_placed_file_keeps_mtime_and_mode_and_set_aside_never_overwrites(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    w = fileio.ReplicaWriter(root)
    for content in (b"one", b"two"):
        fd, _ = w.open_tmp("d/f.txt", "tag")
        os.write(fd, content)
        os.close(fd)
        e = Entry(len(content), 1_500_000_000_123_456_789, 0o640)
        w.place("d/f.txt", "tag", e)
        st = (root / "d" / "f.txt").stat()
        assert (st.st_mtime_ns, st.st_mode & 0o777) == (e.mtime_ns, 0o640)
        w.set_aside("d/f.txt", "trash/day")
    kept = sorted(p.read_bytes() for p in (root / ".hotspare" / "trash" / "day" / "d").iterdir())
    assert kept == [b"one", b"two"]
    assert not list((root / "d").glob(".hstmp-*"))


def test_trash_older_than_retention_is_purged(tmp_path: Path) -> None:
    root = tmp_path / "root"
    old, new = root / ".hotspare" / "trash" / "2020-01-01", root / ".hotspare" / "trash" / "today"
    old.mkdir(parents=True)
    new.mkdir(parents=True)
    (old / "f").write_text("x")
    os.utime(old, (time.time() - 10 * 86400, time.time() - 10 * 86400))
    assert fileio.purge_trash(root, 7 * 86400) == 1
    assert not old.exists() and new.exists()


def test_stale_temp_files_are_removed_unless_resumable(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / ".hstmp-keep").write_text("partial")
    (root / "a" / ".hstmp-old").write_text("junk")
    assert fileio.remove_stale_tmp(root, lambda name: name == ".hstmp-keep") == 1
    assert sorted(p.name for p in (root / "a").iterdir()) == [".hstmp-keep"]


def test_lease_sees_a_file_open_for_writing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_text("x")
    with open(root / "f", "a"):
        assert fileio.path_is_busy(root, "f") is True
    assert fileio.path_is_busy(root, "f") is False


def test_scan_lists_files_and_links_but_not_agent_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_text("x")
    (root / "l").symlink_to("d/f")
    (root / ".hotspare-root").write_text("")
    (root / ".hotspare").mkdir()
    (root / ".hotspare" / "state.sqlite").write_text("")
    (root / "d" / ".hstmp-1").write_text("")
    (root / "d" / "skip.tmp").write_text("")
    got = fileio.scan(root, ".hotspare-root", ["*.tmp"])
    assert sorted(got) == ["d/f", "l"]
    assert got["l"].link == "d/f" and got["d/f"].link is None
