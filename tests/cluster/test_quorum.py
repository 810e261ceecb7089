"""The failover quorum (router/cluster/quorum.py), without sockets."""

from __future__ import annotations

import pytest

from router.cluster.quorum import Quorum, required


@pytest.mark.parametrize(("rule", "live", "need"), [
    ("majority", 1, 1), ("majority", 2, 2), ("majority", 3, 2), ("majority", 4, 3), ("majority", 5, 3),
    ("all", 1, 1), ("all", 3, 3), (1, 3, 1), (2, 3, 2), (5, 3, 3), (2, 1, 1), ("majority", 0, 1),
])
def test_required(rule: str | int, live: int, need: int) -> None:
    assert required(rule, live) == need


@pytest.mark.parametrize("rule", ["most", 0, -1, True])
def test_a_bad_rule_is_an_error_naming_it(rule: object) -> None:
    with pytest.raises(ValueError, match="quorum: expected"):
        required(rule, 2)  # type: ignore[arg-type]


def views(**seen: str) -> dict[str, dict[str, dict[str, str]]]:
    """r1="down" -> {"r1": {"app": {"a": "down", "b": "up"}}}."""
    return {router: {"app": {"a": word, "b": "up"}} for router, word in seen.items()}


def test_two_routers_need_both_one_router_cut_off_from_the_active_fences_nothing() -> None:
    q = Quorum("majority")
    assert not q.down(views(r1="down", r2="up"), "app", "a")
    assert q.down(views(r1="down", r2="down"), "app", "a")
    assert q.describe(views(r1="down", r2="up"), "app", "a") == \
        "seen down by r1 (1 of 2 live routers, 2 needed)"


def test_when_the_other_router_leaves_one_is_enough() -> None:
    assert Quorum("majority").down(views(r1="down"), "app", "a")


def test_suspect_and_unknown_are_not_down() -> None:
    q = Quorum("majority")
    assert not q.down(views(r1="down", r2="suspect", r3="unknown"), "app", "a")
    assert q.down(views(r1="down", r2="down", r3="unknown"), "app", "a")


def test_three_routers_all_and_an_integer() -> None:
    v = views(r1="down", r2="down", r3="up")
    assert not Quorum("all").down(v, "app", "a")
    assert Quorum(2).down(v, "app", "a")
    assert Quorum(1).down(views(r1="up", r2="down", r3="up"), "app", "a")


def test_a_router_without_a_view_of_the_service_does_not_count_as_down() -> None:
    v = {"r1": {"app": {"a": "down"}}, "r2": {}}
    assert not Quorum("majority").down(v, "app", "a")
    assert Quorum("majority").seen_down_by(v, "app", "a") == ("r1",)
