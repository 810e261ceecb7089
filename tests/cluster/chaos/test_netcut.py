"""The link cutter on real sockets: a portal reaches its target, a cut stops exactly the
links opened through that portal (new and established), healing restores them, and no
rule outlives the run."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest

from .netcut import PREFIX, NetCut, _ipt, sweep_stale


@pytest.fixture
def net(netcut_ok: None) -> Iterator[NetCut]:
    n = NetCut()
    n.open()
    try:
        yield n
    finally:
        n.close()


@pytest.fixture
def server() -> Iterator[socket.socket]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        yield s
    finally:
        s.close()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=0.5)


def test_a_cut_stops_only_its_own_portal(net: NetCut, server: socket.socket) -> None:
    target = server.getsockname()[1]
    mine, other = net.portal(target), net.portal(target)
    c1 = connect(mine)
    peer, _ = server.accept()
    peer.sendall(b"hello")
    assert c1.recv(5) == b"hello"
    net.cut(mine)
    assert net.is_cut(mine)
    peer.sendall(b"again")  # an established link: the answer never arrives
    with pytest.raises(TimeoutError):
        c1.recv(5)
    with pytest.raises(TimeoutError):
        connect(mine)  # a new link through the cut portal: the SYN is dropped
    c2 = connect(other)  # the same target through another portal: untouched
    peer2, _ = server.accept()
    peer2.sendall(b"other")
    assert c2.recv(5) == b"other"
    net.heal(mine)
    c3 = connect(mine)
    peer3, _ = server.accept()
    peer3.sendall(b"back!")
    assert c3.recv(5) == b"back!"
    for s in (c1, c2, c3, peer, peer2, peer3):
        s.close()


def test_close_removes_every_rule(netcut_ok: None) -> None:
    n = NetCut()
    n.open()
    n.cut(n.portal(1))
    n.close()
    for table in ("filter", "nat"):
        assert n.chain not in _ipt("-t", table, "-S").stdout


def test_chains_of_dead_runs_are_swept(netcut_ok: None) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    chain = f"{PREFIX}{proc.pid}"
    _ipt("-t", "filter", "-N", chain)
    _ipt("-t", "filter", "-I", "OUTPUT", "-j", chain)
    assert f"filter/{chain}" in sweep_stale()
    assert chain not in _ipt("-t", "filter", "-S").stdout
