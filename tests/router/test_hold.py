"""The hold queue's bookkeeping: pure, with a fake clock."""

from __future__ import annotations

import pytest

from router.config import FailoverConfig
from router.failover.hold import Admitted, HoldLimits, HoldQueue, Refusal


def queue(max_requests: int = 3, max_bytes: int = 100, max_time: float = 10.0) -> HoldQueue[int]:
    return HoldQueue(HoldLimits(max_requests, max_bytes, max_time), retry_after=5)


def test_limits_come_from_the_config() -> None:
    assert HoldLimits.from_config(FailoverConfig()) == HoldLimits(1000, 64 * 1024 * 1024, 10.0)


def test_admit_until_the_count_bound_then_refuse_with_503_and_retry_after() -> None:
    q = queue()
    assert [q.admit(i, 0, 1.0) for i in range(3)] == [Admitted(11.0)] * 3
    assert q.admit(3, 0, 1.0) == Refusal(503, 5, "hold queue full (3 requests)")
    assert len(q) == 3


def test_byte_bound_counts_kept_bodies_and_frees_them_on_remove() -> None:
    q = queue()
    assert q.admit(1, 60, 0.0) == Admitted(10.0)
    assert q.admit(2, 41, 0.0) == Refusal(503, 5, "hold queue over its 100 bytes")
    assert q.admit(3, 40, 0.0) == Admitted(10.0)
    assert q.bytes == 100
    assert q.remove(1) is True
    assert q.remove(1) is False
    assert q.bytes == 40
    assert q.admit(2, 41, 0.0) == Admitted(10.0)


def test_expired_requests_leave_the_queue_at_their_deadline() -> None:
    q = queue()
    q.admit(1, 10, 0.0)
    q.admit(2, 10, 4.0)
    assert q.next_deadline() == 10.0
    assert q.expired(9.99) == []
    assert q.expired(10.0) == [1]
    assert (len(q), q.bytes, q.next_deadline()) == (1, 10, 14.0)


def test_release_is_in_arrival_order_and_empties_the_queue() -> None:
    q = queue(max_requests=10)
    for key in (5, 3, 9):
        q.admit(key, 1, 0.0)
    q.remove(3)
    assert q.release_all() == [5, 9]
    assert (len(q), q.bytes, q.next_deadline()) == (0, 0, None)


def test_refuse_all_empties_the_queue() -> None:
    q = queue()
    q.admit(1, 1, 0.0)
    q.admit(2, 1, 0.0)
    assert q.refuse_all() == [1, 2]
    assert len(q) == 0
    assert q.refusal("promotion failed") == Refusal(503, 5, "promotion failed")


def test_zero_max_requests_holds_nothing() -> None:
    assert isinstance(queue(max_requests=0).admit(1, 0, 0.0), Refusal)


def test_admitting_a_key_twice_or_a_negative_size_is_a_bug() -> None:
    q = queue()
    q.admit(1, 0, 0.0)
    with pytest.raises(ValueError, match="request 1 is already held"):
        q.admit(1, 0, 0.0)
    with pytest.raises(ValueError, match="size: expected bytes >= 0, got -1"):
        q.admit(2, -1, 0.0)
