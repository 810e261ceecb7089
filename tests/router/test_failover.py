"""The failover state machine as playbooks: a list of events with a fake clock in, the
whole list of actions each one produced out. No sockets, no sleeps."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from hotspare.causes import Cause
from router.failover.diagram import render
from router.failover.handlers import HANDLERS, Move
from router.failover.machine import (
    TRANSITIONS,
    AbortInflight,
    Action,
    AdminConfirmFenced,
    AdminDrain,
    AdminFailover,
    AdminReady,
    AdminResume,
    AdminSwitchover,
    BackendDown,
    BackendUp,
    CancelTimer,
    Event,
    FailoverMachine,
    FailoverSettings,
    HoldTraffic,
    IllegalEvent,
    PersistState,
    PromotionFailed,
    PromotionOnHold,
    PromotionSucceeded,
    RaiseAlarm,
    RecordFailover,
    Refused,
    RefuseHeld,
    RefuseTraffic,
    ReleaseHeld,
    RouteTo,
    RunPromotion,
    SetTimer,
    State,
    StateChanged,
    Timer,
    TimerFired,
)

REPO = Path(__file__).resolve().parents[2]
SETTINGS = FailoverSettings(backends=("a", "b"), hold_down=300.0, hold_max_time=10.0, retry_after=5)


def machine(active: str = "a", epoch: int = 0, **kw: object) -> FailoverMachine:
    settings = dataclasses.replace(SETTINGS, **kw)  # type: ignore[arg-type]
    return FailoverMachine(settings, active, epoch)


def play(m: FailoverMachine, steps: list[tuple[Event, list[Action]]]) -> None:
    """Feed each event; its actions must be exactly the expected list."""
    for i, (event, expected) in enumerate(steps):
        got = m.handle(event)
        assert got == expected, f"step {i} ({event}): got {got}"


def promoting(old: str, new: str, epoch: int, cause: Cause, trigger: str = "failover",
              abort: bool = True, source: State = State.ACTIVE) -> list[Action]:
    out: list[Action] = [
        StateChanged(source, State.PROMOTING, old, epoch, cause,
                     f"promoting {new} in place of {old} ({trigger}, {cause}, epoch {epoch})"),
        PersistState(old, epoch),  # the new token is on disk before the pipeline runs
        CancelTimer(Timer.HOLD_DOWN),
        HoldTraffic(),
        SetTimer(Timer.HOLD, 10.0),
    ]
    if abort:
        out.append(AbortInflight(old))
    out.append(RunPromotion(old, new, epoch, cause, trigger))  # type: ignore[arg-type]
    return out


def promoted(old: str, new: str, epoch: int, cause: Cause, seconds: float) -> list[Action]:
    return [
        PersistState(new, epoch),
        StateChanged(State.PROMOTING, State.ACTIVE, new, epoch, Cause.PROMOTED,
                     f"{new} is the active (epoch {epoch}), was {old}"),
        CancelTimer(Timer.HOLD),
        RouteTo(new, epoch),
        ReleaseHeld(new, epoch),
        RecordFailover(old, new, cause, seconds),
    ]


def test_start_routes_to_the_persisted_active() -> None:
    m = machine("b", 7)
    assert m.start() == [RouteTo("b", 7)]
    assert (m.state, m.active, m.epoch) == (State.ACTIVE, "b", 7)


def test_active_dies_spare_is_promoted_epoch_persisted_before_traffic_moves() -> None:
    m = machine()
    play(m, [
        (BackendDown(10.0, "a", Cause.TRAFFIC_ERRORS, since=9.75), promoting("a", "b", 1, Cause.TRAFFIC_ERRORS)),
        (PromotionSucceeded(10.5), promoted("a", "b", 1, Cause.TRAFFIC_ERRORS, 0.75)),
    ])
    actions = promoted("a", "b", 1, Cause.TRAFFIC_ERRORS, 0.75)
    assert actions.index(PersistState("b", 1)) < actions.index(RouteTo("b", 1))
    assert (m.state, m.active, m.epoch) == (State.ACTIVE, "b", 1)


def test_no_automatic_failback_when_the_old_active_returns() -> None:
    m = machine()
    m.handle(BackendDown(10.0, "a", Cause.PROBE_FAILED))
    m.handle(PromotionSucceeded(11.0))
    play(m, [(BackendUp(50.0, "a"), [])])
    assert (m.state, m.active, m.epoch) == (State.ACTIVE, "b", 1)


def test_spare_that_fails_its_probes_is_never_promoted() -> None:
    m = machine()
    msg = "active a DOWN (probe_failed) and no spare passes its probes; not failing over"
    play(m, [
        (BackendDown(1.0, "b", Cause.PROBE_FAILED, detail="connect refused"),
         [RaiseAlarm(Cause.SPARE_UNHEALTHY, "spare b DOWN (connect refused): no failover possible while it stays down")]),
        (BackendDown(2.0, "a", Cause.PROBE_FAILED), [
            StateChanged(State.ACTIVE, State.DEGRADED, "a", 0, Cause.SPARE_UNHEALTHY, msg),
            RefuseTraffic(503, 5, msg),
            RaiseAlarm(Cause.SPARE_UNHEALTHY, msg),
        ]),
    ])
    assert m.snapshot().cause is Cause.SPARE_UNHEALTHY
    # The spare coming back while the active is still down: now promote it.
    play(m, [(BackendUp(3.0, "b"), promoting("a", "b", 1, Cause.PROBE_FAILED, source=State.DEGRADED))])


def test_degraded_service_recovers_when_its_active_passes_probes_again() -> None:
    m = machine()
    m.handle(BackendDown(1.0, "b", Cause.PROBE_FAILED))
    m.handle(BackendDown(2.0, "a", Cause.PROBE_FAILED))
    play(m, [(BackendUp(3.0, "a"), [
        StateChanged(State.DEGRADED, State.ACTIVE, "a", 0, Cause.RECOVERED, "a passes its probes again"),
        CancelTimer(Timer.HOLD), CancelTimer(Timer.HOLD_DOWN), RouteTo("a", 0), ReleaseHeld("a", 0),
    ])])
    assert m.epoch == 0


def test_failed_promotion_degrades_refuses_held_and_is_not_retried() -> None:
    m = machine()
    m.handle(BackendDown(1.0, "a", Cause.PROBE_FAILED))
    msg = "promotion of b failed (b not ready after 30s); a stays active but DOWN"
    play(m, [
        (PromotionFailed(31.0, "b not ready after 30s"), [
            StateChanged(State.PROMOTING, State.DEGRADED, "a", 1, Cause.PROMOTION_FAILED, msg),
            CancelTimer(Timer.HOLD),
            RefuseHeld(503, 5, "promotion of b failed"),
            RefuseTraffic(503, 5, "promotion of b failed"),
            RaiseAlarm(Cause.PROMOTION_FAILED, msg + ": an operator must act"),
        ]),
        # b flapping back up does not start another attempt on its own.
        (BackendDown(32.0, "b", Cause.PROBE_FAILED), []),
        (BackendUp(33.0, "b"), []),
    ])
    # The failed attempt burned epoch 1: the next one will use 2.
    assert (m.state, m.active, m.epoch) == (State.DEGRADED, "a", 1)
    assert m.handle(AdminFailover(40.0, "b"))[-1] == RunPromotion("a", "b", 2, Cause.ADMIN, "manual")


def test_failed_switchover_goes_back_to_the_healthy_old_active() -> None:
    m = machine()
    m.handle(AdminSwitchover(1.0, "b"))
    msg = "promotion of b failed (final sync failed); a passes its probes and stays active"
    play(m, [(PromotionFailed(3.0, "final sync failed"), [
        StateChanged(State.PROMOTING, State.ACTIVE, "a", 1, Cause.PROMOTION_FAILED, msg),
        CancelTimer(Timer.HOLD), RouteTo("a", 1), ReleaseHeld("a", 1), RaiseAlarm(Cause.PROMOTION_FAILED, msg),
    ])])


def test_hold_down_after_a_failover_then_failover_when_it_ends() -> None:
    m = machine()
    m.handle(BackendDown(0.0, "a", Cause.PROBE_FAILED))
    m.handle(PromotionSucceeded(1.0))
    m.handle(BackendUp(20.0, "a"))  # a repaired: it is the spare now
    msg = ("active b DOWN (traffic_errors); no automatic failover within hold_down (300s) "
           "of the last one: 200s left")
    play(m, [
        (BackendDown(101.0, "b", Cause.TRAFFIC_ERRORS, since=101.0), [
            StateChanged(State.ACTIVE, State.DEGRADED, "b", 1, Cause.HOLD_DOWN, msg),
            SetTimer(Timer.HOLD_DOWN, 200.0),
            RefuseTraffic(503, 5, msg),
            RaiseAlarm(Cause.HOLD_DOWN, msg),
        ]),
        (TimerFired(301.0, Timer.HOLD), []),  # stale timer of another kind: ignored
        (TimerFired(301.0, Timer.HOLD_DOWN),
         promoting("b", "a", 2, Cause.TRAFFIC_ERRORS, source=State.DEGRADED)),
        (PromotionSucceeded(302.0), promoted("b", "a", 2, Cause.TRAFFIC_ERRORS, 201.0)),
    ])


def test_hold_timeout_refuses_held_requests_but_promotion_goes_on() -> None:
    m = machine()
    m.handle(BackendDown(0.0, "a", Cause.PROBE_FAILED))
    msg = "promotion of b still running after 10s"
    play(m, [
        (TimerFired(10.0, Timer.HOLD), [
            RefuseHeld(503, 5, msg), RefuseTraffic(503, 5, msg),
            RaiseAlarm(Cause.HOLD_TIMEOUT, msg + ": refusing held requests"),
        ]),
        (PromotionSucceeded(12.0), promoted("a", "b", 1, Cause.PROBE_FAILED, 12.0)),
    ])


def test_planned_switchover_lets_inflight_requests_finish() -> None:
    m = machine()
    play(m, [
        (AdminSwitchover(5.0, "b"), promoting("a", "b", 1, Cause.ADMIN, "switchover", abort=False)),
        (PromotionSucceeded(6.0), promoted("a", "b", 1, Cause.ADMIN, 1.0)),
    ])


def test_switchover_to_an_unhealthy_or_unknown_backend_is_refused_and_changes_nothing() -> None:
    m = machine()
    m.handle(BackendDown(1.0, "b", Cause.PROBE_FAILED))
    before = m.snapshot()
    with pytest.raises(Refused, match="b fails its health checks"):
        m.handle(AdminSwitchover(2.0, "b"))
    with pytest.raises(Refused, match="unknown backend 'c'"):
        m.handle(AdminSwitchover(2.0, "c"))
    with pytest.raises(Refused, match="a is already the active backend"):
        m.handle(AdminFailover(2.0, "a"))
    assert m.snapshot() == before


def test_illegal_events_raise_and_change_nothing() -> None:
    m = machine()
    before = m.snapshot()
    for event in (PromotionSucceeded(1.0), PromotionFailed(1.0, "x"), AdminResume(1.0)):
        with pytest.raises(IllegalEvent, match=f"{type(event).__name__} is not allowed in state active"):
            m.handle(event)
    assert m.snapshot() == before
    m.handle(BackendDown(2.0, "a", Cause.PROBE_FAILED))
    promoting_snapshot = m.snapshot()
    with pytest.raises(IllegalEvent, match="AdminSwitchover is not allowed in state promoting"):
        m.handle(AdminSwitchover(3.0, "a"))
    assert m.snapshot() == promoting_snapshot


def test_fence_hold_waits_for_an_operator() -> None:
    m = machine()
    m.handle(BackendDown(0.0, "a", Cause.TRAFFIC_ERRORS, since=0.0))
    msg = ("fencing a failed (exit 1); traffic held until an operator confirms it is fenced "
           "(failover to b) or resumes a")
    play(m, [
        (PromotionOnHold(2.0, "exit 1"), [
            StateChanged(State.PROMOTING, State.FENCE_HOLD, "a", 1, Cause.FENCE_FAILED, msg),
            RaiseAlarm(Cause.FENCE_FAILED, msg),
        ]),
        (TimerFired(10.0, Timer.HOLD), [
            RefuseHeld(503, 5, "waiting for an operator to confirm fencing"),
            RefuseTraffic(503, 5, "waiting for an operator to confirm fencing"),
        ]),
        (AdminConfirmFenced(60.0), [
            StateChanged(State.FENCE_HOLD, State.PROMOTING, "a", 1, Cause.ADMIN,
                         "operator confirmed a is fenced; resuming the promotion of b (epoch 1)"),
            HoldTraffic(), SetTimer(Timer.HOLD, 10.0),
            RunPromotion("a", "b", 1, Cause.TRAFFIC_ERRORS, "failover", resume=True),
        ]),
        (PromotionSucceeded(61.0), promoted("a", "b", 1, Cause.TRAFFIC_ERRORS, 61.0)),
    ])


def test_fence_hold_operator_may_start_a_new_promotion_with_a_new_epoch() -> None:
    m = FailoverMachine(FailoverSettings(backends=("a", "b", "c")), "a", 0)
    m.handle(BackendDown(0.0, "a", Cause.PROBE_FAILED))
    m.handle(PromotionOnHold(2.0, "exit 1"))
    play(m, [(AdminFailover(9.0, "c"), promoting("a", "c", 2, Cause.ADMIN, "manual", source=State.FENCE_HOLD))])


def test_operator_resume_from_fence_hold_keeps_the_old_active() -> None:
    m = machine()
    m.handle(BackendDown(0.0, "a", Cause.PROBE_FAILED))
    m.handle(PromotionOnHold(1.0, "fence timed out"))
    play(m, [(AdminResume(5.0), [
        StateChanged(State.FENCE_HOLD, State.ACTIVE, "a", 1, Cause.ADMIN, "operator resumed a"),
        CancelTimer(Timer.HOLD), CancelTimer(Timer.HOLD_DOWN), RouteTo("a", 1), ReleaseHeld("a", 1),
    ])])
    with pytest.raises(IllegalEvent, match="AdminConfirmFenced is not allowed in state active"):
        m.handle(AdminConfirmFenced(6.0))


def test_automatic_off_only_raises_an_alarm() -> None:
    m = machine(automatic=False)
    play(m, [(BackendDown(1.0, "a", Cause.PROBE_FAILED, detail="3 probes failed"), [
        RaiseAlarm(Cause.AUTOMATIC_OFF,
                   "active a DOWN (3 probes failed); automatic failover is off: an operator must act"),
    ])])
    assert (m.state, m.active) == (State.ACTIVE, "a")


def test_first_healthy_spare_in_config_order_is_chosen() -> None:
    m = FailoverMachine(FailoverSettings(backends=("a", "b", "c")), "a", 4)
    m.handle(BackendDown(1.0, "b", Cause.PROBE_FAILED))
    actions = m.handle(BackendDown(2.0, "a", Cause.PROBE_FAILED))
    assert actions[-1] == RunPromotion("a", "c", 5, Cause.PROBE_FAILED, "failover")


def test_bad_construction_is_named() -> None:
    with pytest.raises(ValueError, match=r"active backend 'z' is not one of \['a', 'b'\]"):
        FailoverMachine(SETTINGS, "z", 0)


def test_every_table_entry_has_a_handler_and_every_handler_an_entry() -> None:
    entries = {(state, event_type) for state, by_event in TRANSITIONS.items() for event_type in by_event}
    assert set(HANDLERS) == entries


def fields(m: FailoverMachine) -> dict[str, object]:
    """Every field of the machine, deep-copied: an in-place change would show too."""
    return {name: copy.deepcopy(getattr(m, name)) for name in FailoverMachine.__slots__}


def test_illegal_and_refused_events_leave_every_field_unchanged() -> None:
    m = machine()
    m.handle(AdminDrain(0.5, "b"))
    m.handle(BackendDown(1.0, "b", Cause.PROBE_FAILED))
    before = fields(m)
    illegal: list[Event] = [PromotionSucceeded(2.0), AdminConfirmFenced(2.0)]
    for event in illegal:
        with pytest.raises(IllegalEvent):
            m.handle(event)
        assert fields(m) == before
    refused: list[Event] = [AdminSwitchover(2.0, "b"), AdminFailover(2.0, "a"), AdminDrain(2.0, "a"),
                            AdminReady(2.0, "z"), BackendUp(2.0, "z")]
    for event in refused:
        with pytest.raises(Refused):
            m.handle(event)
        assert fields(m) == before
    m.handle(AdminFailover(3.0, "b"))  # forced: the operator's word; now PROMOTING
    before = fields(m)
    promoting_refusals: list[Event] = [AdminSwitchover(4.0, "b"), AdminResume(4.0), AdminDrain(4.0, "a")]
    for bad in promoting_refusals:
        with pytest.raises((IllegalEvent, Refused)):
            m.handle(bad)
        assert fields(m) == before


def test_a_move_the_table_does_not_allow_raises_and_is_not_committed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table is the transition: a handler proposing a target its entry does not list
    (a bug) is refused by the machine, and nothing it proposed is kept."""
    def rogue(c, e):  # type: ignore[no-untyped-def]
        return Move(State.DEGRADED, dataclasses.replace(c.facts, epoch=99, active="b"), [RouteTo("b", 99)])

    monkeypatch.setitem(HANDLERS, (State.ACTIVE, TimerFired), rogue)  # type: ignore[arg-type]
    m = machine()
    before = fields(m)
    with pytest.raises(IllegalEvent, match="active --TimerFired--> degraded is not in TRANSITIONS"):
        m.handle(TimerFired(1.0, Timer.HOLD))
    assert fields(m) == before


def test_a_drained_spare_is_no_failover_target_until_ready_whatever_its_probes_say() -> None:
    """The bug of issue 11: drain used to be a fake DOWN that the next good probe undid."""
    m = machine()
    msg = ("active a DOWN (probe_failed) and no spare passes its probes outside maintenance "
           "(drained: b); not failing over")
    play(m, [
        (AdminDrain(1.0, "b"), []),
        (BackendDown(2.0, "b", Cause.PROBE_FAILED, detail="restarting"),
         [RaiseAlarm(Cause.SPARE_UNHEALTHY, "spare b DOWN (restarting): no failover possible while it stays down")]),
        (BackendUp(3.0, "b"), []),  # probes pass again: still in maintenance
        (BackendDown(4.0, "a", Cause.PROBE_FAILED), [
            StateChanged(State.ACTIVE, State.DEGRADED, "a", 0, Cause.SPARE_UNHEALTHY, msg),
            RefuseTraffic(503, 5, msg),
            RaiseAlarm(Cause.SPARE_UNHEALTHY, msg),
        ]),
        (BackendDown(5.0, "b", Cause.PROBE_FAILED), []),
        (BackendUp(6.0, "b"), []),  # in DEGRADED too: a good probe does not end maintenance
    ])
    assert m.snapshot().maintenance == ("b",)
    with pytest.raises(Refused, match="b is in maintenance"):
        m.handle(AdminSwitchover(7.0, "b"))
    play(m, [(AdminReady(8.0, "b"), promoting("a", "b", 1, Cause.PROBE_FAILED, source=State.DEGRADED))])
    assert m.snapshot().maintenance == ()


def test_maintenance_bookkeeping_in_every_state_and_the_active_cannot_be_drained() -> None:
    m = FailoverMachine(FailoverSettings(backends=("a", "b", "c")), "a", 0)
    with pytest.raises(Refused, match="a is the active backend"):
        m.handle(AdminDrain(0.0, "a"))
    play(m, [
        (AdminDrain(1.0, "b"), []),
        (AdminReady(1.5, "c"), []),  # never drained: nothing to do
        (BackendDown(2.0, "a", Cause.PROBE_FAILED), promoting("a", "c", 1, Cause.PROBE_FAILED)),
        (AdminReady(3.0, "b"), []),
        (AdminDrain(3.5, "b"), []),
        (PromotionOnHold(4.0, "exit 1"), [
            StateChanged(State.PROMOTING, State.FENCE_HOLD, "a", 1, Cause.FENCE_FAILED,
                         "fencing a failed (exit 1); traffic held until an operator confirms it is fenced "
                         "(failover to c) or resumes a"),
            RaiseAlarm(Cause.FENCE_FAILED, "fencing a failed (exit 1); traffic held until an operator "
                       "confirms it is fenced (failover to c) or resumes a"),
        ]),
        (AdminReady(5.0, "b"), []),
    ])
    assert (m.state, m.maintenance) == (State.FENCE_HOLD, frozenset())


def test_diagram_in_docs_is_generated_from_the_table() -> None:
    text = render()
    for state in State:
        assert state.name in text
    assert "PROMOTING --> ACTIVE: PromotionSucceeded" in text
    assert (REPO / "docs" / "failover-states.md").read_text() == text, (
        "docs/failover-states.md is stale: run python -m router.failover.diagram > docs/failover-states.md"
    )
    out = subprocess.run([sys.executable, "-m", "router.failover.diagram"],
                         capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout == text
