"""The state file with real files: first start, round trip, atomic replace, and every
way a file can be bad (truncated, garbage, unknown backend) ending in a clear error."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from router.config import ServiceConfig, parse_config
from router.errors import StateFileError
from router.failover.state import ServiceState, StateFile


def services() -> list[ServiceConfig]:
    config = parse_config({
        "listen": ["127.0.0.1:1"],
        "services": [
            {"name": "app", "backends": [{"name": "a", "url": "http://127.0.0.1:1"},
                                         {"name": "b", "url": "http://127.0.0.1:2"}]},
            {"name": "api", "path_prefix": "/api", "backends": [{"name": "x", "url": "http://127.0.0.1:3"},
                                                                 {"name": "y", "url": "http://127.0.0.1:4"}]},
        ],
    })
    return list(config.services)


def test_missing_file_is_a_first_start_on_the_first_backends(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state.json")
    assert sf.load(services()) == {"app": ServiceState("a", 0), "api": ServiceState("x", 0)}
    assert not (tmp_path / "state.json").exists()


def test_save_then_load_in_a_new_process_view(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    sf = StateFile(path)
    sf.load(services())
    sf.save("app", "b", 1)
    sf.save("api", "y", 4)
    doc = json.loads(path.read_text())
    assert doc == {"version": 1, "services": {"api": {"active": "y", "epoch": 4}, "app": {"active": "b", "epoch": 1}}}
    again = StateFile(path).load(services())
    assert again == {"app": ServiceState("b", 1), "api": ServiceState("y", 4)}
    # No temporary file is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_save_replaces_by_rename_so_a_reader_never_sees_half_a_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    sf = StateFile(path)
    sf.load(services())
    sf.save("app", "b", 1)
    inode = path.stat().st_ino
    held_open = path.open("rb")  # a reader holding the old file keeps reading the old one
    sf.save("app", "a", 2)
    assert path.stat().st_ino != inode
    assert json.loads(held_open.read())["services"]["app"] == {"active": "b", "epoch": 1}
    held_open.close()
    assert StateFile(path).load(services())["app"] == ServiceState("a", 2)


def test_a_service_added_to_the_config_starts_fresh_and_unknown_ones_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"version": 1, "services": {"app": {"active": "b", "epoch": 3},
                                                           "gone": {"active": "q", "epoch": 9}}}))
    sf = StateFile(path)
    assert sf.load(services()) == {"app": ServiceState("b", 3), "api": ServiceState("x", 0)}
    sf.save("app", "a", 4)
    assert json.loads(path.read_text())["services"]["gone"] == {"active": "q", "epoch": 9}


def test_bare_mapping_form_is_read(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"app": {"active": "b", "epoch": 2}}')
    assert StateFile(path).load(services())["app"] == ServiceState("b", 2)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the state file is empty (truncated?)"),
        (b'{"version": 1, "services": {"app": {"active": "b", "ep', "not valid JSON (Unterminated string"),
        (b"\x00\xff\xfe garbage", "not UTF-8 text (bad byte at offset 1)"),
        (b"[1, 2]", "expected a JSON object, found list"),
        (b'{"version": 2, "services": {}}', "version: expected 1, found 2"),
        (b'{"version": 1, "services": {"app": {"active": "c", "epoch": 1}}}',
         "service 'app' has active backend 'c', which the config does not name (expected one of ['a', 'b'])"),
        (b'{"version": 1, "services": {"app": {"active": "a", "epoch": -1}}}',
         "services.app.epoch: expected an integer >= 0, found -1"),
        (b'{"version": 1, "services": {"app": {"active": "a", "epoch": "3"}}}',
         "services.app.epoch: expected an integer >= 0, found '3'"),
        (b'{"version": 1, "services": {"app": {"active": 5, "epoch": 3}}}',
         "services.app.active: expected a backend name, found 5"),
        (b'{"version": 1, "services": {"app": "b"}}', "services.app: expected {active, epoch}, found 'b'"),
        (b'{"version": 1, "services": {"app": {"active": "a", "epoch": 1, "x": 1}}}',
         "services.app: unknown key(s) ['x']"),
    ],
)
def test_bad_file_is_an_error_naming_the_file_and_the_problem(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(StateFileError) as info:
        StateFile(path).load(services())
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert path.read_bytes() == content  # never a silent reset


def test_truncated_real_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    sf = StateFile(path)
    sf.load(services())
    sf.save("app", "b", 5)
    full = path.read_bytes()
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(StateFileError, match="truncated or corrupt"):
        StateFile(path).load(services())


def _load_as(uid: int, gid: int, path: Path) -> str:
    """Load the state file in a forked child running as ``uid``/``gid``; return what
    happened (the error text, or "loaded"). Root reads any file whatever its mode, so the
    test drops to an unprivileged user for the read."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(r)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
            try:
                StateFile(path).load(services())
                msg = "loaded"
            except StateFileError as exc:
                msg = str(exc)
            os.write(w, msg.encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    return out


def test_unreadable_file_is_an_error() -> None:
    folder = Path(tempfile.mkdtemp(prefix="hotspare-state-"))
    try:
        folder.chmod(0o755)  # traversable by the unprivileged reader
        path = folder / "state.json"
        path.write_text("{}")
        path.chmod(0)
        uid, gid = (65534, 65534) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
        assert "cannot read the state file: Permission denied" in _load_as(uid, gid, path)
        assert path.read_text() == "{}"  # never a silent reset
    finally:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


def test_a_directory_in_place_of_the_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.mkdir()
    with pytest.raises(StateFileError, match=f"{path}: cannot read the state file: Is a directory"):
        StateFile(path).load(services())


def test_write_failure_is_a_state_file_error_and_keeps_the_old_state(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "state.json"
    sf = StateFile(path)
    sf.load(services())
    with pytest.raises(StateFileError, match="cannot write the state file: No such file or directory"):
        sf.save("app", "b", 1)
    assert sf.get("app") == ServiceState("a", 0)


# -- one holder ---------------------------------------------------------------------------------


def test_a_second_holder_is_refused_with_the_file_and_the_holders_pid(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    first, second = StateFile(path), StateFile(path)
    first.acquire()
    try:
        assert (tmp_path / "state.json.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(StateFileError, match=rf"{path}: held by another router \(pid {os.getpid()}, lock "):
            second.acquire()
        second.load(services())  # reading needs no lock (hotspare status, doctor)
    finally:
        first.release()
    second.acquire()  # released: free for the next router
    second.release()


def test_a_lock_file_that_cannot_be_opened_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "state.json.lock").mkdir()
    with pytest.raises(StateFileError, match=r"cannot open the lock file .*state\.json\.lock: Is a directory"):
        StateFile(tmp_path / "state.json").acquire()


# -- the check before a reload ------------------------------------------------------------------


def test_reload_check_refuses_a_config_without_the_running_active(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state.json")
    sf.load(services())
    new = [s for s in services() if s.name == "api"]
    sf.check(new, {"api": ServiceState("y", 4)})  # y is still there
    only_x = new[0].model_copy(update={"backends": new[0].backends[:1]})
    with pytest.raises(StateFileError, match=r"service 'api' has active backend 'y' \(epoch 4\), which the new config"):
        sf.check([only_x], {"api": ServiceState("y", 4)})


def test_reload_check_reads_the_file_again(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    sf = StateFile(path)
    sf.load(services())
    sf.save("app", "b", 2)
    path.write_text("{garbage")
    with pytest.raises(StateFileError, match="not valid JSON"):
        sf.check(services(), {})
    assert sf.get("app") == ServiceState("b", 2)  # nothing changed in memory
