"""Generated request ids: unique, plain (they pass sane_request_id when echoed back),
not the same across processes, and a fork never repeats its parent's ids."""

from __future__ import annotations

import os
import subprocess
import sys

from router.proxy.headers import new_request_id, sane_request_id


def test_ids_are_unique_plain_and_24_hex_digits() -> None:
    ids = [new_request_id() for _ in range(10000)]
    assert len(set(ids)) == len(ids)
    for rid in ids[:5] + ids[-5:]:
        assert len(rid) == 24
        int(rid, 16)
        assert sane_request_id(rid) == rid


def test_a_client_id_is_kept_and_a_bad_one_replaced() -> None:
    assert sane_request_id("abc-123") == "abc-123"
    replaced = sane_request_id("has space")
    assert replaced != "has space" and len(replaced) == 24


def test_two_processes_do_not_share_a_prefix() -> None:
    code = "from router.proxy.headers import new_request_id as n; print(n())"
    a, b = (subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
            for _ in range(2))
    assert a[:16] != b[:16], (a, b)


def test_a_forked_child_gets_a_new_prefix() -> None:
    parent = new_request_id()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one id and leave without running pytest's teardown
        os.write(w, new_request_id().encode())
        os._exit(0)
    os.close(w)
    try:
        child = os.read(r, 64).decode()
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    assert len(child) == 24
    assert child[:16] != parent[:16]
