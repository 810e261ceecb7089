"""Fixtures of the chaos tests: ``world`` is a started chaos world (kit.py) of three
routers on a fresh three-member etcd, ``world2`` the same with two routers; either is
closed (processes reaped, iptables rules removed) whatever the test did. Without root or
iptables the tests are skipped with the reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ..conftest import EtcdFactory
from .kit import World
from .netcut import unavailable


@pytest.fixture
def netcut_ok() -> None:
    reason = unavailable()
    if reason:
        pytest.skip(reason)


async def _world(root: Path, etcd_factory: EtcdFactory, routers: tuple[str, ...]) -> AsyncIterator[World]:
    w = World(root, etcd_factory(3), routers)
    try:
        await w.start()
        yield w
    finally:
        await w.close()


@pytest.fixture
async def world(tmp_path: Path, etcd_factory: EtcdFactory, netcut_ok: None) -> AsyncIterator[World]:
    async for w in _world(tmp_path / "world", etcd_factory, ("r1", "r2", "r3")):
        yield w


@pytest.fixture
async def world2(tmp_path: Path, etcd_factory: EtcdFactory, netcut_ok: None) -> AsyncIterator[World]:
    async for w in _world(tmp_path / "world", etcd_factory, ("r1", "r2")):
        yield w
