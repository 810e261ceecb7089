"""When a decider must stop deciding (router/cluster/lease.py), with given times."""

from __future__ import annotations

from router.cluster.lease import LeaseClock


def test_no_keepalive_yet_means_no_deciding() -> None:
    clock = LeaseClock(ttl=4.0)
    assert clock.deadline is None
    assert not clock.may_decide(0.0)
    assert clock.left(0.0) == 0.0
    assert clock.interval == 4.0 / 3


def test_the_deadline_counts_from_when_the_keepalive_was_sent_not_answered() -> None:
    clock = LeaseClock(ttl=4.0)
    clock.succeeded(sent_at=100.0)  # answered much later: still counts from 100
    assert clock.deadline == 100.0 + 4.0 - 1.0
    assert clock.may_decide(102.99)
    assert not clock.may_decide(103.0)
    assert clock.left(102.5) == 0.5


def test_a_late_answer_of_an_older_keepalive_never_moves_the_deadline_back() -> None:
    clock = LeaseClock(ttl=6.0)
    clock.succeeded(sent_at=10.0)
    clock.succeeded(sent_at=8.0)
    assert clock.deadline == 10.0 + 6.0 - 1.5


def test_a_lost_lease_stops_deciding_at_once_until_a_new_success() -> None:
    clock = LeaseClock(ttl=5.0)
    clock.succeeded(sent_at=1.0)
    clock.lost()
    assert not clock.may_decide(1.1)
    clock.succeeded(sent_at=2.0)
    assert clock.may_decide(2.1)


def test_the_deadline_is_before_the_server_could_expire_the_lease() -> None:
    for ttl in (2.0, 5.0, 30.0):
        clock = LeaseClock(ttl)
        clock.succeeded(sent_at=0.0)
        assert clock.deadline is not None and clock.deadline < ttl
