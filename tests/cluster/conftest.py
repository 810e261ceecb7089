"""Fixtures of the cluster tests: a real etcd cluster on free loopback ports.

Every test here needs the ``etcd`` program (Debian's etcd-server, installed by
``scripts/system-deps``). Without it the session FAILS with the reason: a missing etcd
must never turn the cluster tests into a silent pass.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack

from .etcdkit import EtcdCluster

EtcdFactory = Callable[..., EtcdCluster]


@pytest.fixture(scope="session", autouse=True)
def _etcd_installed() -> None:
    missing = [p for p in ("etcd", "etcdctl") if shutil.which(p) is None]
    if missing:
        pytest.fail(
            f"tests/cluster need {' and '.join(missing)} on PATH, not found; install them with "
            "./scripts/system-deps (as root) or `apt-get install etcd-server etcd-client`",
            pytrace=False,
        )


@pytest.fixture
def etcd_factory(tmp_path: Path) -> Iterator[EtcdFactory]:
    """Start clusters of any size (``etcd_factory(members=1)``); all stopped at the end."""
    started: list[EtcdCluster] = []

    def make(members: int = 3, **kwargs: object) -> EtcdCluster:
        cluster = EtcdCluster(tmp_path / f"etcd{len(started)}", members, **kwargs)  # type: ignore[arg-type]
        started.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in reversed(started):
        cluster.stop()


@pytest.fixture
def etcd_cluster(etcd_factory: EtcdFactory) -> EtcdCluster:
    """A started three-member etcd cluster (stopped after the test)."""
    return etcd_factory(3)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """Backends and router processes of one test (tests/e2e/conftest.py), all stopped after it."""
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        await s.close()
